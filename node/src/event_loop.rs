//! The one loop that owns the swarm and drives the role's state machine.
//!
//! Every byte that enters or leaves a node passes here: swarm events become role inputs, role actions
//! become publishes, requests, replies, commits and events, in the order the role returned them.
//! Each batch commits all its records in one transaction (group commit) before any of its replies,
//! publishes or sends go out; after a failed commit, the batch publishes and sends nothing and every
//! reply in it says "unavailable": nothing is acknowledged that is not durable. Requests that arrive
//! together on [`rpc`] streams are handled as one batch, so one commit serves many requesters.

use crate::behaviour::{Behaviour, BehaviourEvent, GRAYLIST_THRESHOLD};
use crate::commit::{self, Committer};
use crate::keys;
use crate::limits::{Admit, Limiter, MAX_STRIKES, PENALTY_SCORE, STRIKE_WINDOW_MS};
use crate::rpc;
use crate::{http, metrics, status};
use crate::{Command, NodeEvent};
use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, Multiaddr, PeerId, Swarm};
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::role::Opened;
use otpmesh_protocol::role::{
    self, Action, Answer, DecryptJob, Event, Heard, Inbound, InboundId, Input, Millis, Record,
    Role, Tag, Typed, Verdict,
};
use otpmesh_protocol::seal::PrivateKey;
use otpmesh_protocol::wire::{
    self, Gossip, Refusal, Request, Response, WireError, GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC,
};
use rand_core::CryptoRngCore;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

/// How often the role's timers are checked.
pub const TICK: Duration = Duration::from_millis(100);
/// Events dropped for want of a reader are logged at most this often.
pub const DROPS_LOGGED_EVERY_MS: Millis = 10_000;
/// How often lost connections to configured peers are redialed.
pub const REDIAL_EVERY_MS: Millis = 2_000;
/// A failed dial to a configured peer is retried after this long, then twice as long each time
/// up to [`REDIAL_EVERY_MS`] (a peer dialled before it listened need not wait a whole period).
pub const REDIAL_FIRST_RETRY_MS: Millis = 200;
/// Gossip waiting for a subscribed peer; the oldest is dropped beyond this.
pub const MAX_UNPUBLISHED: usize = 64;
/// Addresses remembered per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers whose addresses are remembered.
pub const MAX_ADDRESSED_PEERS: usize = 4096;
/// Requests from streams handled (and committed) together.
pub const MAX_BATCH: usize = 256;
/// Peers with a stream dispatcher at once.
pub const MAX_RPC_PEERS: usize = 256;
/// How long a stopping node gives the requests in flight (commit and reply) before it closes.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping node keeps its connections open at least, answering "stopping" to what
/// arrives, so that a requester mid-request hears why rather than a closed connection.
pub const STOP_LINGER: Duration = Duration::from_millis(200);
/// How often gossip that found no subscribed peer is tried again.
pub const FLUSH_EVERY_MS: Millis = 1_000;
/// A turn of the loop that takes this long or longer is logged ([`EventLoop::timed`]).
pub const SLOW_TURN: Duration = Duration::from_millis(50);

async fn recv_commit(
    commits: &mut Option<mpsc::Receiver<commit::Outcome>>,
) -> Option<commit::Outcome> {
    match commits {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

pub(crate) fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A batch's actions, held until its records are durable.
pub(crate) struct Parked {
    batch: u64,
    /// `None` while its commit runs; `Some(failed)` once known.
    failed: Option<bool>,
    actions: Vec<Action>,
}

/// Where the answer to an inbound request goes.
pub(crate) enum Reply {
    Rr(ResponseChannel<Result<Response, WireError>>),
    Rpc(rpc::Replier),
}

/// Requests that travel on the long-lived streams: a requester's traffic to distributors. Key
/// fetches and deliveries between generators and distributors stay on request-response.
fn by_stream(request: &Request) -> bool {
    !matches!(request, Request::PublicKey | Request::Deliver(_))
}

pub struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) role: Box<dyn Role + Send>,
    /// `None` for a one-shot requester, which does not join the gossip.
    pub(crate) mesh: Option<Arc<MeshConfig>>,
    pub(crate) topic: gossipsub::IdentTopic,
    /// The store's write side, on its own thread (generators and distributors).
    /// Declared before `committer` so it drops first: the commit thread, joined when the committer
    /// drops, never waits on a full outcome channel nobody reads.
    pub(crate) commits: Option<mpsc::Receiver<commit::Outcome>>,
    pub(crate) committer: Option<Committer>,
    /// Batches whose actions wait for their commit (or for an earlier batch's), oldest first.
    pub(crate) parked: VecDeque<Parked>,
    pub(crate) next_batch: u64,
    pub(crate) rsa: Option<Arc<PrivateKey>>,
    pub(crate) decrypt_slots: Arc<Semaphore>,
    pub(crate) decrypted_tx: mpsc::Sender<(DecryptJob, Opened)>,
    pub(crate) decrypted_rx: mpsc::Receiver<(DecryptJob, Opened)>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<NodeEvent>,
    /// Events dropped because nobody took them (a full channel), and when that was last logged.
    pub(crate) events_dropped: u64,
    pub(crate) events_dropped_logged_at: Millis,
    pub(crate) replies: HashMap<u64, Reply>,
    /// Verifier: the fronts' checks under way, by ticket.
    pub(crate) checks:
        HashMap<u64, tokio::sync::oneshot::Sender<(role::verifier::Outcome, String)>>,
    pub(crate) next_check: u64,
    pub(crate) next_inbound: u64,
    pub(crate) outbound: HashMap<OutboundRequestId, (Tag, PeerId)>,
    pub(crate) unpublished: VecDeque<Gossip>,
    pub(crate) addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers to stay connected to: (peer if known, address).
    pub(crate) keep: Vec<(Option<PeerId>, Multiaddr)>,
    pub(crate) blocked: HashSet<PeerId>,
    /// Per-peer request rates and penalties.
    pub(crate) limiter: Limiter,
    /// Peers whose gossip score fell below the graylist threshold (reported once each).
    pub(crate) graylisted: HashSet<PeerId>,
    pub(crate) last_flush: Millis,
    pub(crate) rng: Box<dyn CryptoRngCore + Send>,
    pub(crate) last_redial: Millis,
    pub(crate) redial_backoff: Millis,
    pub(crate) data_dir: std::path::PathBuf,
    /// Streams to serve, until `run` starts serving them.
    pub(crate) rpc_incoming: Option<libp2p_stream::IncomingStreams>,
    pub(crate) rpc_inbound_tx: mpsc::Sender<rpc::Inbound>,
    pub(crate) rpc_inbound: mpsc::Receiver<rpc::Inbound>,
    pub(crate) rpc_peers: HashMap<PeerId, mpsc::Sender<(Tag, Request)>>,
    pub(crate) rpc_done_tx: mpsc::Sender<rpc::Done>,
    pub(crate) rpc_done: mpsc::Receiver<rpc::Done>,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) libp2p_metrics: libp2p::metrics::Metrics,
    /// The `/metrics` listener and what it serves, until `run` starts serving.
    pub(crate) metrics_server: Option<(tokio::net::TcpListener, Arc<libp2p::metrics::Registry>)>,
    pub(crate) metrics_url: Option<String>,
    /// The control socket, until `run` serves it; status asks arrive on `status_asks`.
    pub(crate) control_socket: Option<status::Socket>,
    pub(crate) status_asks: mpsc::Receiver<status::Ask>,
    pub(crate) status_tx: mpsc::Sender<status::Ask>,
    pub(crate) rounds: status::Rounds,
    pub(crate) role_name: &'static str,
    pub(crate) started_at: std::time::Instant,
    /// The swarm's listeners, closed first when the node stops.
    pub(crate) listeners: Vec<libp2p::core::transport::ListenerId>,
    /// Set once stopping: requests are refused, gossip ignored, the role hears nothing more.
    pub(crate) stopping: bool,
    /// Replies handed to stream writers and not yet written.
    pub(crate) unwritten: Arc<rpc::Owed>,
}

impl EventLoop {
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Runs until the client asks it to stop (or every client handle is dropped).
    pub async fn run(mut self) {
        // Stream serving stops (no new streams) when the node starts stopping.
        let rpc_serving = self.rpc_incoming.take().map(|incoming| {
            let serving = rpc::serve(
                incoming,
                self.rpc_inbound_tx.clone(),
                self.unwritten.clone(),
            );
            tokio::spawn(serving).abort_handle()
        });
        // Serves until the loop ends.
        let _metrics_server = self
            .metrics_server
            .take()
            .map(|(listener, registry)| http::Serving::spawn(listener, registry));
        let _control_socket = self
            .control_socket
            .take()
            .map(|socket| status::Serving::spawn(socket, self.status_tx.clone()));
        let actions = self.role.start(now_ms(), &mut *self.rng);
        self.execute(actions);
        self.redial(now_ms());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.timed("swarm", |s| s.on_swarm(event)),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { done }) => {
                        if let Some(serving) = &rpc_serving {
                            serving.abort();
                        }
                        self.stop().await;
                        // Close the store before saying so: the outcome channel first, so the
                        // commit thread can never block on it, then the thread itself (joined).
                        drop(self.commits.take());
                        drop(self.committer.take());
                        info!("stopped");
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((job, opened)) = self.decrypted_rx.recv() => self.timed("decrypted", |s| {
                    let actions = s.role.decrypted(now_ms(), job, opened);
                    s.execute(actions);
                }),
                Some(first) = self.rpc_inbound.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match self.rpc_inbound.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let batch = batch
                        .into_iter()
                        .map(|i| (i.peer, i.request, Reply::Rpc(i.replier)))
                        .collect();
                    self.timed("requests", |s| s.on_requests(batch));
                }
                Some((batch, result)) = recv_commit(&mut self.commits) => {
                    self.timed("committed", |s| s.committed(batch, result))
                }
                Some(done) = self.rpc_done.recv() => {
                    self.answered(Answer::new(done.peer, done.tag, done.result));
                }
                Some(ask) = self.status_asks.recv() => self.on_ask(ask),
                _ = tick.tick() => self.timed("tick", EventLoop::on_tick),
            }
        }
        debug!("event loop stopped");
    }

    /// Runs one turn of the loop (`what` arrived); a turn that takes [`SLOW_TURN`] or longer
    /// is logged, since everything else waited for it.
    fn timed(&mut self, what: &'static str, turn: impl FnOnce(&mut EventLoop)) {
        let started = std::time::Instant::now();
        turn(self);
        let took = started.elapsed();
        if took >= SLOW_TURN {
            warn!(ms = took.as_millis() as u64, what, "slow event loop turn");
        }
    }

    fn on_ask(&self, ask: status::Ask) {
        match ask {
            status::Ask::Status(reply) => {
                let _ = reply.send(self.status());
            }
            status::Ask::Beacon {
                before,
                limit,
                reply,
            } => {
                let _ = reply.send(self.beacon_page(before, limit));
            }
        }
    }

    /// The beacon entries this node has durably kept before `before`, newest first, within the
    /// page's bounds (threshold mode: every long-running node keeps the chain in its store).
    fn beacon_page(&self, before: Option<u64>, limit: u32) -> status::BeaconPage {
        let threshold = self.mesh.as_ref().is_some_and(|m| m.threshold().is_some());
        let mut page = status::BeaconPage {
            threshold,
            entries: Vec::new(),
        };
        let Some(store) = self.committer.as_ref().map(Committer::store) else {
            return page;
        };
        let mut bytes = 0;
        let read = store.beacon_before(before, |e| {
            let size = serde_json::to_vec(&e).map_or(usize::MAX, |v| v.len());
            let full = page.entries.len() >= limit as usize
                || bytes + size > status::MAX_BEACON_PAGE_BYTES;
            if full && !page.entries.is_empty() || limit == 0 {
                return false;
            }
            bytes += size;
            page.entries.push(e);
            true
        });
        if let Err(e) = read {
            warn!("beacon page unreadable: {e}");
        }
        page
    }

    fn status(&self) -> status::Status {
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let storage_bytes = std::fs::metadata(self.data_dir.join(crate::store::DB_FILE))
            .ok()
            .filter(|_| self.committer.is_some())
            .map(|m| m.len());
        status::Status {
            role: self.role_name.to_string(),
            peer_id: self.peer_id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            listen: self.swarm.listeners().map(|a| a.to_string()).collect(),
            peers: peers.len(),
            connections: self
                .swarm
                .network_info()
                .connection_counters()
                .num_established() as usize,
            peer_ids: peers
                .iter()
                .take(status::MAX_LISTED_PEERS)
                .map(|p| p.to_string())
                .collect(),
            current_round: self.rounds.current.map(|r| r.0),
            last_sealed: self.rounds.to_sealed(),
            storage_bytes,
            uptime_s: self.started_at.elapsed().as_secs(),
            metrics: self.metrics_url.clone(),
        }
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        let actions = self.role.tick(now, &mut *self.rng);
        self.execute(actions);
        if now >= self.last_redial + REDIAL_EVERY_MS {
            self.redial(now);
        }
        for peer in self.limiter.expire(now) {
            info!(%peer, "penalty over");
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_application_score(&peer, 0.0);
        }
        // Gossip that found no subscribed peer (or full queues) is tried again once a second
        // (each try signs it anew), not only when a new subscription arrives.
        if !self.unpublished.is_empty() && now >= self.last_flush + FLUSH_EVERY_MS {
            self.last_flush = now;
            self.flush_unpublished();
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Input { round, input } => {
                let input = Input::new(round, input);
                let actions = self.role.user_input(now_ms(), input, &mut *self.rng);
                self.execute(actions);
            }
            Command::Control(control) => {
                let actions = self.role.control(now_ms(), control);
                self.execute(actions);
            }
            Command::Check { user, code, reply } => {
                if self.checks.len() >= role::verifier::MAX_PENDING_CHECKS {
                    let busy = (role::verifier::Outcome::Busy, "too many checks".into());
                    let _ = reply.send(busy);
                    return;
                }
                self.next_check += 1;
                let ticket = self.next_check;
                self.checks.insert(ticket, reply);
                let typed = Typed::new(ticket, &user, &code);
                let actions = self.role.check(now_ms(), typed, &mut *self.rng);
                self.execute(actions);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Block { peer } => {
                self.blocked.insert(peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Unblock { peer } => {
                self.blocked.remove(&peer);
            }
            Command::PublishRaw { bytes, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bytes);
                let _ = reply.send(result.map(|_| ()).map_err(|e| e.to_string()));
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// Dials the kept peers (`build::addresses` chose them: one side of each pair) that are not
    /// connected, with one dial per peer at a time over all its addresses: a redial while the
    /// first dial was still under way used to open a second connection, and every connection
    /// costs each message, ping and timer again.
    fn redial(&mut self, now: Millis) {
        self.last_redial = now;
        let connected = self.swarm.connected_peers().count();
        let mut dials: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for (peer, addr) in self.keep.clone() {
            match peer {
                Some(p) if self.blocked.contains(&p) || self.swarm.is_connected(&p) => {}
                Some(p) => match dials.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, addrs)) => addrs.push(addr),
                    None => dials.push((p, vec![addr])),
                },
                // An address without a PeerId: while nothing is connected.
                None if connected == 0 => {
                    if let Err(e) = self.swarm.dial(addr.clone()) {
                        debug!(%addr, error = %e, "dial failed");
                    }
                }
                None => {}
            }
        }
        for (peer, addrs) in dials {
            self.dial(peer, addrs);
        }
    }

    /// Dials `peer` over `addrs`, unless it is connected or a dial to it is under way.
    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "dial not started");
        }
    }

    fn remember_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        // Only for peers this node may talk to: a stranger with fresh keys must not grow the map.
        let listed = self
            .mesh
            .as_ref()
            .is_some_and(|m| m.known_addrs().iter().any(|(p, _)| *p == peer))
            || self.keep.iter().any(|(p, _)| *p == Some(peer));
        if !listed
            || (!self.addresses.contains_key(&peer) && self.addresses.len() >= MAX_ADDRESSED_PEERS)
        {
            return;
        }
        let known = self.addresses.entry(peer).or_default();
        if !known.contains(&addr) {
            if known.len() >= MAX_ADDRS_PER_PEER {
                known.remove(0);
            }
            known.push(addr);
        }
    }

    /// Hands `event` to whoever reads the node's events; when they fall behind it is dropped, and
    /// the drops are logged at most once per [`DROPS_LOGGED_EVERY_MS`] (a line per dropped event
    /// made a busy distributor spend its time writing its log).
    fn emit(&mut self, event: NodeEvent) {
        if self.events.try_send(event).is_err() {
            self.events_dropped += 1;
            let now = now_ms();
            if now >= self.events_dropped_logged_at + DROPS_LOGGED_EVERY_MS {
                warn!(
                    dropped = self.events_dropped,
                    "events not taken (their reader is behind or gone); dropped so far"
                );
                self.events_dropped_logged_at = now;
            }
        }
    }

    /// A node without a store (a requester) keeps its enrolment keys in files (it may share its
    /// data dir); nothing else of its is durable.
    fn persist_files(&self, records: &[Record]) -> Result<(), String> {
        records.iter().try_for_each(|record| match record {
            Record::Enrolment { peer, epoch, key } => {
                let key = key
                    .as_array()
                    .ok_or_else(|| "an enrolment key is 32 bytes".to_string())?;
                keys::store_enrolment(&self.data_dir, peer, *epoch, key).map_err(|e| e.to_string())
            }
            _ => Err("this node has no store".to_string()),
        })
    }

    fn answer(&mut self, reply: Reply, response: Response) {
        match reply {
            Reply::Rr(channel) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_response(channel, Ok(response))
                    .is_err()
                {
                    debug!("requester went away before the reply");
                }
            }
            Reply::Rpc(replier) => replier.send(&response),
        }
    }

    /// Runs a batch of the role's actions: its records become durable first (on the commit
    /// thread), then the rest runs, in order behind every earlier batch.
    fn execute(&mut self, actions: Vec<Action>) {
        let mut records = Vec::new();
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Persist(record) => records.push(record),
                other => rest.push(other),
            }
        }
        // The batch's outcome if it is known now; `None` while the commit thread has it.
        let failed = match (records.is_empty(), &self.committer) {
            (true, _) => Some(false),
            (false, Some(committer)) => {
                self.next_batch += 1;
                match committer.submit(self.next_batch, records) {
                    Ok(()) => None,
                    Err(e) => {
                        warn!(error = %e, "commit refused; nothing in this batch is acknowledged");
                        Some(true)
                    }
                }
            }
            (false, None) => match self.persist_files(&records) {
                Ok(()) => Some(false),
                Err(e) => {
                    warn!(error = %e, "commit failed; nothing in this batch is acknowledged");
                    Some(true)
                }
            },
        };
        match failed {
            Some(failed) if self.parked.is_empty() => self.run_actions(rest, failed),
            failed => self.parked.push_back(Parked {
                batch: self.next_batch,
                failed,
                actions: rest,
            }),
        }
    }

    /// A commit finished: releases every batch at the front whose outcome is known.
    fn committed(&mut self, batch: u64, result: Result<(), String>) {
        if let Err(e) = &result {
            warn!(error = %e, "commit failed; nothing in this batch is acknowledged");
        }
        if let Some(p) = self
            .parked
            .iter_mut()
            .find(|p| p.failed.is_none() && p.batch == batch)
        {
            p.failed = Some(result.is_err());
        }
        while self.parked.front().is_some_and(|p| p.failed.is_some()) {
            let p = self.parked.pop_front().expect("checked above");
            self.run_actions(p.actions, p.failed.unwrap_or(true));
        }
    }

    /// Stops gracefully, within [`STOP_GRACE`]: no new connections, streams or requests (those
    /// that come for at least [`STOP_LINGER`] are refused as "stopping"); the role hears nothing
    /// more (no round opens or seals); the requests already received are answered once their
    /// records are durable, and their replies written; then the swarm's queued messages are
    /// handed to the connections, and the connections closed (which flushes them).
    async fn stop(&mut self) {
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        // Only a node that serves others lingers (not a one-shot command).
        let serves = !self.listeners.is_empty();
        for id in std::mem::take(&mut self.listeners) {
            self.swarm.remove_listener(id);
        }
        // What arrived before the stop is served as usual; what comes after is refused.
        let mut received = Vec::new();
        while let Ok(inbound) = self.rpc_inbound.try_recv() {
            received.push((inbound.peer, inbound.request, Reply::Rpc(inbound.replier)));
        }
        let in_flight = received.len() + self.parked.len();
        info!(
            in_flight,
            "stopping: answering the requests in flight, accepting no more"
        );
        if !received.is_empty() {
            self.on_requests(received);
        }
        self.stopping = true;
        let unwritten = self.unwritten.clone();
        let linger =
            tokio::time::Instant::now() + if serves { STOP_LINGER } else { Duration::ZERO };
        loop {
            let owed = self.parked.iter().any(|p| p.failed.is_none()) || unwritten.count() > 0;
            if !owed && tokio::time::Instant::now() >= linger {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(linger), if !owed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        uncommitted = self.parked.len(),
                        unwritten = unwritten.count(),
                        "stopping: grace period over with work in flight"
                    );
                    break;
                }
                Some((batch, result)) = recv_commit(&mut self.commits) => self.committed(batch, result),
                _ = unwritten.written(), if unwritten.count() > 0 => {}
                event = self.swarm.select_next_some() => self.on_swarm(event),
                Some(first) = self.rpc_inbound.recv() => {
                    self.on_requests(vec![(first.peer, first.request, Reply::Rpc(first.replier))]);
                }
            }
        }
        // Hand what the swarm has queued (replies, use markers) to the connections.
        for _ in 0..MAX_BATCH {
            match futures::FutureExt::now_or_never(self.swarm.select_next_some()) {
                Some(event) => self.on_swarm(event),
                None => break,
            }
        }
        // A reply written to a stream may still sit in the connection's muxer: close every
        // connection (closing flushes it) and wait for them to close, within the grace.
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        while self.swarm.connected_peers().next().is_some() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                event = self.swarm.select_next_some() => self.on_swarm(event),
            }
        }
    }

    fn run_actions(&mut self, actions: Vec<Action>, store_failed: bool) {
        for action in actions {
            match action {
                Action::Persist(_) => {}
                Action::Reply { to, response } => {
                    let response = if store_failed {
                        Response::Refused(Refusal::Unavailable("storage failure".into()))
                    } else {
                        response
                    };
                    if let Some(reply) = self.replies.remove(&to.0) {
                        self.answer(reply, response);
                    }
                }
                // After a failed commit, what the role reports did not durably happen.
                Action::Emit(_) if store_failed => {}
                Action::Emit(event) => self.emit_role_event(event),
                Action::AskInput { round } => self.emit(NodeEvent::InputNeeded { round }),
                Action::Decrypt(job) => self.spawn_decrypt(job),
                _ if store_failed => {}
                Action::Publish(message) => self.publish(message),
                Action::Send { peer, tag, request } if by_stream(&request) => {
                    self.send_by_stream(peer, tag, request)
                }
                Action::Send { peer, tag, request } => {
                    let addrs = self.addresses.get(&peer).cloned().unwrap_or_default();
                    let id = self.swarm.behaviour_mut().rr.send_request_with_addresses(
                        &peer,
                        Ok(request),
                        addrs,
                    );
                    self.outbound.insert(id, (tag, peer));
                }
            }
        }
    }

    /// Queues `request` on `peer`'s stream dispatcher (started on first use), dialling the peer
    /// with the addresses this node knows so the stream has a connection to open on.
    fn send_by_stream(&mut self, peer: PeerId, tag: Tag, request: Request) {
        if !self.swarm.is_connected(&peer) {
            let addrs = self.addresses.get(&peer).cloned().unwrap_or_default();
            if !addrs.is_empty() {
                self.dial(peer, addrs);
            }
        }
        if !self.rpc_peers.contains_key(&peer) {
            if self.rpc_peers.len() >= MAX_RPC_PEERS {
                // Dropping a queue lets its dispatcher finish what it holds and stop.
                let evicted = self.rpc_peers.keys().next().copied();
                if let Some(evicted) = evicted {
                    self.rpc_peers.remove(&evicted);
                }
            }
            let (queue, queued) = mpsc::channel(rpc::MAX_QUEUED);
            let control = self.swarm.behaviour().stream.new_control();
            tokio::spawn(rpc::dispatch(
                control,
                peer,
                queued,
                self.rpc_done_tx.clone(),
            ));
            self.rpc_peers.insert(peer, queue);
        }
        let queue = &self.rpc_peers[&peer];
        if let Err(e) = queue.try_send((tag, request)) {
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => {
                    format!("{} requests already queued for {peer}", rpc::MAX_QUEUED)
                }
                mpsc::error::TrySendError::Closed(_) => {
                    self.rpc_peers.remove(&peer);
                    format!("connection to {peer} closed")
                }
            };
            self.answered(Answer::new(peer, tag, Err(reason)));
        }
    }

    /// Hands the answer to a request the role sent (or why none came) to the role.
    fn answered(&mut self, answer: Answer) {
        let actions = self.role.response(now_ms(), answer, &mut *self.rng);
        self.execute(actions);
    }

    fn emit_role_event(&mut self, event: Event) {
        self.metrics.role_event(&event, now_ms());
        if let Event::CheckDecided {
            ticket,
            outcome,
            detail,
            ..
        } = &event
        {
            if let Some(reply) = self.checks.remove(ticket) {
                let _ = reply.send((*outcome, detail.clone()));
            }
        }
        match &event {
            Event::RoundOpened { round, .. } => self.rounds.opened(*round),
            Event::RoundSealed {
                round, commitment, ..
            }
            | Event::RoundStored { round, commitment } => self.rounds.sealed(*round, *commitment),
            _ => {}
        }
        match &event {
            // The requester's own OTP is its user's output, never a log line.
            Event::OtpReceived {
                round, distributor, ..
            } => info!(%round, %distributor, "otp received"),
            Event::TotpReceived { distributor, .. } => info!(%distributor, "totp token received"),
            Event::ThresholdOtpReceived {
                round, from, bad, ..
            } => info!(%round, shareholders = ?from, bad = bad.len(), "otp combined"),
            Event::CodeReceived { round, step, .. } => info!(%round, step, "code combined"),
            Event::PasswordReceived { round, bits, .. } => {
                info!(%round, bits, "password combined")
            }
            // Every rejection: what, why, and the peer.
            Event::PhraseRejected {
                round,
                client,
                peer,
                kind,
                reason,
            } => warn!(%peer, %reason, %round, %client, kind = kind.as_str(), "phrase rejected"),
            Event::LockedOut {
                requester,
                until_ms,
            } => {
                warn!(peer = %requester, reason = "too many wrong codes", until_ms, "requester locked out")
            }
            // Asked before a round (or the round asked for) reached this distributor: routine at
            // start-up, after a restart and while a delivery is on its way, not a warning.
            Event::RequestRefused {
                peer,
                request,
                reason,
                failure: otpmesh_protocol::role::Failure::NoRound,
            } => info!(%peer, %reason, %request, "request refused"),
            Event::RequestRefused {
                peer,
                request,
                reason,
                ..
            } => warn!(%peer, %reason, %request, "request refused"),
            // A generator's key that could not be fetched is asked for again at the round's next
            // announcement: routine while a mesh starts (the round opened before that generator
            // listened). A generator that stays away fails the round, and that is a warning.
            Event::RequestFailed {
                peer,
                request,
                failure: failure @ otpmesh_protocol::role::Failure::Unreachable,
                reason,
            } if request == otpmesh_protocol::wire::Request::PublicKey.kind() => {
                info!(%peer, %reason, %request, ?failure, "request failed; asked again at the round's next announcement")
            }
            Event::RequestFailed {
                peer,
                request,
                failure,
                reason,
            } => warn!(%peer, %reason, %request, ?failure, "request failed"),
            Event::BeaconCatchUp {
                peer,
                accepted,
                problem: Some(reason),
            } => warn!(%peer, %reason, accepted, "beacon catch-up answer rejected in part"),
            // One per request: a server's access log, for debug level (the event stream has it).
            Event::OtpIssued { .. } | Event::OtpVerified { .. } => {
                debug!(event = %serde_json::to_string(&event).unwrap_or_default())
            }
            _ => info!(event = %serde_json::to_string(&event).unwrap_or_default()),
        }
        self.emit(NodeEvent::Role(event));
    }

    fn spawn_decrypt(&mut self, job: DecryptJob) {
        let Some(key) = self.rsa.clone() else {
            warn!("decrypt asked of a node without an RSA key");
            return;
        };
        let slots = self.decrypt_slots.clone();
        let done = self.decrypted_tx.clone();
        tokio::spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else {
                return;
            };
            let result = tokio::task::spawn_blocking(move || {
                let opened = job.open(&key);
                (job, opened)
            })
            .await;
            if let Ok(result) = result {
                let _ = done.send(result).await;
            }
        });
    }

    fn publish(&mut self, message: Gossip) {
        // A use marker in a mesh with no other distributor has nobody to tell: it is not signed
        // and offered to no one (an Ed25519 signature per accepted OTP, 7 % of a soaked
        // distributor's time).
        if matches!(message, Gossip::Used(_))
            && self
                .mesh
                .as_ref()
                .is_some_and(|m| m.distributors.len() <= 1)
        {
            return;
        }
        let bytes = wire::encode_gossip(&message);
        let topic = gossipsub::IdentTopic::new(message.topic());
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => debug!(kind = message.kind(), round = %message.round(), "published"),
            Err(gossipsub::PublishError::Duplicate) => {}
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
            | Err(gossipsub::PublishError::AllQueuesFull(_)) => {
                debug!(kind = message.kind(), "no subscribed peer yet; queued");
                if self.unpublished.len() >= MAX_UNPUBLISHED {
                    self.unpublished.pop_front();
                }
                self.unpublished.push_back(message);
            }
            Err(e) => warn!(error = %e, kind = message.kind(), "publish failed"),
        }
    }

    fn flush_unpublished(&mut self) {
        for message in std::mem::take(&mut self.unpublished) {
            self.publish(message);
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.emit(NodeEvent::Listening { addr: address });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if self.blocked.contains(&peer_id) || self.limiter.is_penalised(&peer_id, now_ms())
                {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if endpoint.is_dialer() {
                    self.remember_addr(peer_id, endpoint.get_remote_address().clone());
                }
                self.redial_backoff = REDIAL_FIRST_RETRY_MS;
                if num_established.get() == 1 {
                    debug!(peer = %peer_id, "connected");
                    self.emit(NodeEvent::Connected { peer: peer_id });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                debug!(peer = %peer_id, "disconnected");
                self.graylisted.remove(&peer_id);
                self.emit(NodeEvent::Disconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
                let kept = self.keep.iter().any(|(p, _)| p.is_none() || *p == peer_id);
                if kept {
                    // Bring the next redial forward, backing off while failures continue.
                    let due = (now_ms() + self.redial_backoff).saturating_sub(REDIAL_EVERY_MS);
                    self.last_redial = self.last_redial.min(due);
                    self.redial_backoff = (self.redial_backoff * 2).min(REDIAL_EVERY_MS);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossipsub(event),
            SwarmEvent::Behaviour(BehaviourEvent::Rr(event)) => self.on_rr(event),
            // A connection that stops answering pings is dead (a cut link sends no FIN): close
            // it, so the redial and the retries of pending requests start now, not when TCP
            // gives up. (A peer without ping, such as a bare requester, is left alone.)
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(error @ libp2p::ping::Failure::Timeout),
            })) => {
                debug!(%peer, %error, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Only DHT servers go into the routing table: a client handed out as a peer to dial
                // would turn a star of contributors into a full mesh.
                let serves_kad = info
                    .protocols
                    .iter()
                    .any(|p| p.as_ref() == crate::behaviour::KAD_PROTOCOL);
                for addr in info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER) {
                    if serves_kad {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                    self.remember_addr(peer_id, addr);
                }
            }
            _ => {}
        }
    }

    /// libp2p's own metrics, and the peer count. Not what a peer chooses freely and the recorder
    /// would keep as label values: the external addresses identify reports (an observed address
    /// is whatever a peer says it saw) and identify's per-peer protocols and addresses.
    fn record(&mut self, event: &SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder;
        if !matches!(
            event,
            SwarmEvent::NewExternalAddrCandidate { .. }
                | SwarmEvent::ExternalAddrConfirmed { .. }
                | SwarmEvent::ExternalAddrExpired { .. }
        ) {
            self.libp2p_metrics.record(event);
        }
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.libp2p_metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.libp2p_metrics.record(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.libp2p_metrics.record(e),
            SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. } => {
                let peers = self.swarm.connected_peers().count();
                self.metrics.peers.set(peers as i64);
            }
            _ => {}
        }
    }

    fn on_gossipsub(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let verdict = self.judge(&message, propagation_source);
                let topic = match message.topic.as_str() {
                    GOSSIP_TOPIC => GOSSIP_TOPIC,
                    PHRASE_TOPIC => PHRASE_TOPIC,
                    USED_TOPIC => USED_TOPIC,
                    _ => "other",
                };
                let result = match &verdict {
                    Verdict::Accept => "accept",
                    Verdict::Ignore(_) => "ignore",
                    Verdict::Reject(_) => "reject",
                };
                self.metrics
                    .gossip
                    .get_or_create(&metrics::Gossip { topic, result })
                    .inc();
                let acceptance = match &verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Ignore(reason) => {
                        debug!(peer = ?message.source, %reason, "gossip ignored");
                        gossipsub::MessageAcceptance::Ignore
                    }
                    Verdict::Reject(reason) => {
                        let peer = message.source.unwrap_or(propagation_source);
                        warn!(%peer, %reason, "gossip rejected");
                        self.emit(NodeEvent::GossipRejected {
                            peer,
                            reason: reason.clone(),
                        });
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                let _ = gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
                let score = gossipsub.peer_score(&propagation_source).unwrap_or(0.0);
                if score < GRAYLIST_THRESHOLD && self.graylisted.insert(propagation_source) {
                    let reason = format!("gossip score {score:.0}: its gossip is ignored");
                    self.metrics.penalties.inc();
                    warn!(peer = %propagation_source, %reason, "peer penalised");
                    self.emit(NodeEvent::PeerPenalised {
                        peer: propagation_source,
                        reason,
                    });
                } else if score >= GRAYLIST_THRESHOLD {
                    self.graylisted.remove(&propagation_source);
                }
            }
            gossipsub::Event::Subscribed { peer_id, .. } => {
                self.emit(NodeEvent::Subscribed { peer: peer_id });
                self.flush_unpublished();
            }
            _ => {}
        }
    }

    /// Decodes, checks who may send it, and lets the role judge the rest. A relay is blamed (the
    /// message rejected, which costs the relay gossip score) only for what it could have checked
    /// itself: the role's verdicts depend on state only this node has (a second phrase, another
    /// key), so when they reject a message a relay forwarded, the relay is not penalised for it.
    fn judge(&mut self, message: &gossipsub::Message, relay: PeerId) -> Verdict {
        let Some(mesh) = self.mesh.clone() else {
            return Verdict::Ignore("not following gossip".into());
        };
        if self.stopping {
            return Verdict::Ignore("stopping".into());
        }
        let Some(source) = message.source else {
            return Verdict::Reject("unsigned message".into());
        };
        let gossip = match wire::decode_gossip(&message.data) {
            Ok(g) => g,
            Err(e) => return Verdict::Reject(format!("undecodable gossip: {e}")),
        };
        match role::check_gossip(&mesh, &source, &gossip) {
            Verdict::Accept => {
                let heard = Heard::new(source, &gossip);
                let (verdict, actions) = self.role.gossip(now_ms(), heard, &mut *self.rng);
                self.execute(actions);
                if verdict == Verdict::Accept {
                    match &gossip {
                        Gossip::Open(open) => self.rounds.opened(open.round),
                        Gossip::Sealed(t) => self.rounds.sealed(t.round, t.commitment),
                        _ => {}
                    }
                }
                match verdict {
                    Verdict::Reject(reason) if relay != source => Verdict::Ignore(reason),
                    verdict => verdict,
                }
            }
            other => other,
        }
    }

    /// Hands a batch of inbound requests to the role and executes what it returns as one batch
    /// (one commit); a request the role did not answer is told so at once.
    fn on_requests(&mut self, batch: Vec<(PeerId, Result<Request, WireError>, Reply)>) {
        let mut actions = Vec::new();
        let now = now_ms();
        for (peer, request, reply) in batch {
            if self.stopping {
                self.metrics.refused("stopping");
                let refusal = Refusal::Unavailable("the node is stopping".into());
                self.answer(reply, Response::Refused(refusal));
                continue;
            }
            if self.limiter.is_penalised(&peer, now) {
                self.metrics.refused("penalised");
                let refusal = Refusal::Unavailable("penalised for exceeding request limits".into());
                self.answer(reply, Response::Refused(refusal));
                continue;
            }
            let admit = match &request {
                Ok(_) => self.limiter.admit(peer, now),
                Err(_) if self.limiter.strike(peer, now) => Admit::Penalise,
                Err(_) => Admit::Yes,
            };
            if admit == Admit::Penalise {
                self.penalise(peer, format!("{MAX_STRIKES} refused or undecodable requests within {STRIKE_WINDOW_MS} ms"));
            }
            if request.is_ok() && admit != Admit::Yes {
                self.metrics.refused("rate_limit");
                let rate = self.limiter.rate_per_s();
                let refusal =
                    Refusal::Unavailable(format!("rate limit: {rate} requests a second per peer"));
                self.answer(reply, Response::Refused(refusal));
                continue;
            }
            match request {
                Ok(request) => {
                    self.next_inbound += 1;
                    let id = self.next_inbound;
                    let asked = Inbound::new(peer, InboundId(id), request);
                    let answers = self.role.request(now_ms(), asked, &mut *self.rng);
                    if answers
                        .iter()
                        .any(|a| matches!(a, Action::Reply { to, .. } if to.0 == id))
                    {
                        self.replies.insert(id, reply);
                    } else {
                        let refusal = Refusal::Unavailable("no answer".into());
                        self.answer(reply, Response::Refused(refusal));
                    }
                    actions.extend(answers);
                }
                Err(e) => {
                    self.metrics.refused("undecodable");
                    warn!(%peer, error = %e, "undecodable request");
                    self.emit(NodeEvent::RequestRejected {
                        peer,
                        reason: e.to_string(),
                    });
                    let refusal = Refusal::Invalid(wire::bounded_reason(e.to_string()));
                    self.answer(reply, Response::Refused(refusal));
                }
            }
        }
        self.execute(actions);
    }

    /// Disconnects `peer`, refuses it for [`limits::PENALTY_MS`] and graylists its gossip.
    fn penalise(&mut self, peer: PeerId, reason: String) {
        warn!(%peer, %reason, "peer penalised");
        self.metrics.penalties.inc();
        let behaviour = self.swarm.behaviour_mut();
        behaviour
            .gossipsub
            .set_application_score(&peer, PENALTY_SCORE);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.emit(NodeEvent::PeerPenalised { peer, reason });
    }

    fn on_rr(
        &mut self,
        event: request_response::Event<Result<Request, WireError>, Result<Response, WireError>>,
    ) {
        use request_response::{Event as E, Message};
        match event {
            E::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_requests(vec![(peer, request, Reply::Rr(channel))]),
            E::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if self.stopping {
                    return;
                }
                if let Some((tag, _)) = self.outbound.remove(&request_id) {
                    let response = response.map_err(|e| format!("undecodable response: {e}"));
                    self.answered(Answer::new(peer, tag, response));
                }
            }
            E::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if self.stopping {
                    return;
                }
                if let Some((tag, _)) = self.outbound.remove(&request_id) {
                    self.answered(Answer::new(peer, tag, Err(error.to_string())));
                }
            }
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "inbound request failed")
            }
            E::ResponseSent { .. } => {}
        }
    }
}
