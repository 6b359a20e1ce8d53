//! The simulated mesh every simulation runs on: the real role state machines, the network
//! between them, and virtual time. What a run does with it (a load, a scenario, a test) is an
//! [`Observer`]: it sees every event as it is emitted and may change the world from there.
//!
//! ```text
//! step(observer): the earliest of (next arrival, next tick) ─► now
//!   arrival ─► deliver: down? refused · cut or blocked? dropped · gossip ─► check_gossip ─► role
//!              request ─► role (its reply goes back by the net) · response ─► the asker
//!   tick ─► expired requests answered "timeout" ─► observer.tick ─► every live node and session
//! run(at, actions): Publish ─► each subscriber · Send ─► the net (deadline REQUEST_TIMEOUT_MS)
//!   Reply ─► the asker · Persist ─► records · Decrypt ─► opened now
//!   Emit ─► observer.event (the trace takes its kind) · AskInput ─► observer.asked_input
//! ```
//! A node is a peer id with a role (session 0); a session is a one-shot client on a peer
//! (a requester's command). A crashed node keeps its records and its subscriptions: what is sent
//! to it is refused or lost until it is added again.

use super::net::{Address, Arrival, Faults, Message, Net};
use crate::mesh::MeshConfig;
use crate::role::{self, Action, Answer, Event, Heard, Inbound, InboundId, Millis, Record};
use crate::role::{Role, Tag, Verdict};
use crate::round::RoundId;
use crate::seal::PrivateKey;
use crate::wire::{self, Gossip, Request, Response};
use libp2p_identity::PeerId;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How often every role's timer fires (virtual ms).
pub const TICK_MS: Millis = 100;
/// A request with no answer by then is answered "timeout", as libp2p's request-response does.
pub const REQUEST_TIMEOUT_MS: Millis = 10_000;

/// What a run does as the world moves. Every method has a default: an observer states only what
/// it cares about.
pub trait Observer {
    /// A role at `at` emitted `event`.
    fn event(&mut self, _world: &mut World, _at: Address, _event: Event) {}
    /// `at` judged gossip from `from`: every verdict but the role's accept of a good message.
    fn judged(&mut self, _world: &mut World, _at: PeerId, _from: PeerId, _verdict: &Verdict) {}
    /// A contributor asks its user for the integer of `round`.
    fn asked_input(&mut self, _world: &mut World, _at: PeerId, _round: RoundId) {}
    /// Before the nodes' timers fire, every [`TICK_MS`].
    fn tick(&mut self, _world: &mut World) {}
    /// A publish, send or reply `at` is about to make; the observer may change it, or drop it
    /// by answering false (a fault, or a deliberate bug a test shows the checks catch).
    /// [`World::asker`] tells whom a reply goes to.
    fn outgoing(&mut self, _world: &World, _at: Address, _action: &mut Action) -> bool {
        true
    }
    /// `message` from `from` is about to reach `to`; false loses it on the way (a fault at
    /// one recipient, where [`Observer::outgoing`] drops it for all).
    fn incoming(&mut self, _from: Address, _to: Address, _message: &Message) -> bool {
        true
    }
}

/// The nodes, the network and the clock.
pub struct World {
    pub mesh: Arc<MeshConfig>,
    pub now: Millis,
    pub rng: ChaCha20Rng,
    pub net: Net,
    next_tick: Millis,
    nodes: BTreeMap<PeerId, Box<dyn Role + Send>>,
    /// Each node's RSA key, for its decryptions.
    keys: BTreeMap<PeerId, Arc<PrivateKey>>,
    /// Each topic's subscribers (a crashed node stays subscribed: what is sent to it is lost).
    subscribers: BTreeMap<&'static str, BTreeSet<PeerId>>,
    sessions: BTreeMap<Address, Box<dyn Role + Send>>,
    next_session: u64,
    /// What each node made durable, in order (a restart replays it).
    pub records: BTreeMap<PeerId, Vec<Record>>,
    /// Crashed or stopped nodes: a request to one is refused.
    pub down: BTreeSet<PeerId>,
    /// Nodes cut off from everyone: what they send or are sent is lost.
    pub cut: BTreeSet<PeerId>,
    /// Pairs that refuse each other (either order): gossip between them is lost, a request refused.
    blocked: BTreeSet<(PeerId, PeerId)>,
    /// Inbound requests awaiting a reply: (node, inbound id) → who asked, with which tag.
    inbound: BTreeMap<(PeerId, u64), (Address, Tag)>,
    next_inbound: u64,
    /// Outbound requests awaiting an answer: (asker, tag) → (deadline, the peer asked).
    outbound: BTreeMap<(Address, Tag), (Millis, PeerId)>,
    trace: blake3::Hasher,
}

impl World {
    /// An empty world at virtual time `now`, every choice drawn from `seed`.
    pub fn new(mesh: Arc<MeshConfig>, seed: u64, now: Millis, faults: Faults) -> World {
        World {
            mesh,
            now,
            rng: ChaCha20Rng::seed_from_u64(seed),
            net: Net::new(faults),
            next_tick: now + TICK_MS,
            nodes: BTreeMap::new(),
            keys: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_session: 0,
            records: BTreeMap::new(),
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            blocked: BTreeSet::new(),
            inbound: BTreeMap::new(),
            next_inbound: 0,
            outbound: BTreeMap::new(),
            trace: blake3::Hasher::new_derive_key("otpmesh/1 sim trace"),
        }
    }

    /// A world without latency or faults: what a role sends arrives at once, in the order sent,
    /// and time moves only by [`World::step`] (a test's world).
    pub fn instant(mesh: Arc<MeshConfig>, seed: u64, now: Millis) -> World {
        let mut world = World::new(mesh, seed, now, Faults::default());
        world.net = Net::with_latency(Faults::default(), (0, 0));
        world
    }

    /// Gives `peer` its RSA key (a generator's: what its decryptions open with).
    pub fn set_key(&mut self, peer: PeerId, key: Arc<PrivateKey>) {
        self.keys.insert(peer, key);
    }

    pub fn key(&self, peer: &PeerId) -> Option<&Arc<PrivateKey>> {
        self.keys.get(peer)
    }

    /// Starts `role` as node `peer`, subscribed to `topics` (again, after a crash: up once more).
    pub fn add(
        &mut self,
        peer: PeerId,
        mut role: Box<dyn Role + Send>,
        topics: &[&'static str],
        observer: &mut dyn Observer,
    ) {
        self.down.remove(&peer);
        let actions = role.start(self.now, &mut self.rng);
        self.nodes.insert(peer, role);
        for topic in topics {
            self.subscribers.entry(topic).or_default().insert(peer);
        }
        self.run(Address { peer, session: 0 }, actions, observer);
    }

    /// Stops node `peer` abruptly: its state is gone but for its records.
    pub fn crash(&mut self, peer: PeerId) {
        self.down.insert(peer);
        self.nodes.remove(&peer);
        self.inbound.retain(|(p, _), _| *p != peer);
    }

    /// Node `peer`'s role, to look at.
    pub fn role(&self, peer: &PeerId) -> Option<&(dyn Role + Send)> {
        self.nodes.get(peer).map(|role| &**role)
    }

    /// Calls `f` on node `peer`'s role and gives back what it returns, without carrying out any
    /// action (a test that looks at what a role would do).
    pub fn with_role<R>(
        &mut self,
        peer: &PeerId,
        f: impl FnOnce(&mut (dyn Role + Send), Millis, &mut ChaCha20Rng) -> R,
    ) -> Option<R> {
        let role = self.nodes.get_mut(peer)?;
        Some(f(&mut **role, self.now, &mut self.rng))
    }

    /// Who asked `peer` the request it knows as `inbound`, with which tag (while unanswered).
    pub fn asker(&self, peer: &PeerId, inbound: InboundId) -> Option<(Address, Tag)> {
        self.inbound.get(&(*peer, inbound.0)).copied()
    }

    pub fn is_up(&self, peer: &PeerId) -> bool {
        self.nodes.contains_key(peer) && !self.down.contains(peer)
    }

    /// Blocks (or unblocks) `a` and `b` from each other.
    pub fn block(&mut self, a: PeerId, b: PeerId, blocked: bool) {
        let pair = (a.min(b), a.max(b));
        match blocked {
            true => self.blocked.insert(pair),
            false => self.blocked.remove(&pair),
        };
    }

    fn refuses(&self, a: &PeerId, b: &PeerId) -> bool {
        self.blocked.contains(&(*a.min(b), *a.max(b)))
    }

    /// The address the next session opened on `peer` gets.
    pub fn next_session(&self, peer: PeerId) -> Address {
        Address {
            peer,
            session: self.next_session + 1,
        }
    }

    /// Opens a one-shot client session with `role` on `peer`; its address.
    pub fn open_session(
        &mut self,
        peer: PeerId,
        mut role: Box<dyn Role + Send>,
        observer: &mut dyn Observer,
    ) -> Address {
        self.next_session += 1;
        let at = Address {
            peer,
            session: self.next_session,
        };
        let actions = role.start(self.now, &mut self.rng);
        self.sessions.insert(at, role);
        self.run(at, actions, observer);
        at
    }

    /// Ends session `at`: answers still owed to it are dropped when they come.
    pub fn close_session(&mut self, at: Address) {
        self.sessions.remove(&at);
        let owed: Vec<_> = self
            .outbound
            .range((at, Tag(0))..=(at, Tag(u64::MAX)))
            .map(|(k, _)| *k)
            .collect();
        for k in owed {
            self.outbound.remove(&k);
        }
    }

    pub fn sessions_open(&self) -> usize {
        self.sessions.len()
    }

    /// Feeds the trace something that happened outside the roles (a fault).
    pub fn note_fault(&mut self, what: &str) {
        self.trace.update(what.as_bytes());
    }

    /// The trace so far: 16 hex digits of blake3 over every delivery and event kind, in order.
    pub fn trace(&self) -> String {
        self.trace.finalize().to_hex()[..16].to_string()
    }

    /// Runs `input` on node `peer`'s role (a user's integer, an operator's instruction, a
    /// verifier's check) and carries out what it returns.
    pub fn input(
        &mut self,
        peer: PeerId,
        observer: &mut dyn Observer,
        input: impl FnOnce(&mut (dyn Role + Send), Millis, &mut ChaCha20Rng) -> Vec<Action>,
    ) -> bool {
        let now = self.now;
        let Some(role) = self.nodes.get_mut(&peer) else {
            return false;
        };
        let actions = input(&mut **role, now, &mut self.rng);
        self.run(Address { peer, session: 0 }, actions, observer);
        true
    }

    /// Publishes `bytes` from `from` on the gossip topic as they are (fault injection): each
    /// subscriber decodes them as a node would.
    pub fn publish_raw(&mut self, from: PeerId, bytes: Vec<u8>) {
        let bytes = Arc::new(bytes);
        let at = Address {
            peer: from,
            session: 0,
        };
        for peer in self.subscribers_of(wire::GOSSIP_TOPIC, &from) {
            let to = Address { peer, session: 0 };
            self.send(at, to, Message::Raw(Arc::clone(&bytes)));
        }
    }

    fn subscribers_of(&self, topic: &str, except: &PeerId) -> Vec<PeerId> {
        self.subscribers
            .get(topic)
            .into_iter()
            .flatten()
            .filter(|p| *p != except)
            .copied()
            .collect()
    }

    /// When the world next changes by itself: the next arrival or tick.
    pub fn next_at(&self) -> Millis {
        self.net
            .next_at()
            .map_or(self.next_tick, |at| at.min(self.next_tick))
    }

    /// Delivers what is due next (a message or a tick), advancing virtual time to it.
    pub fn step(&mut self, observer: &mut dyn Observer) {
        self.now = self.next_at().max(self.now);
        while let Some(arrival) = self.net.pop(self.now) {
            self.deliver(arrival, observer);
        }
        if self.now >= self.next_tick {
            self.tick(observer);
            self.next_tick += TICK_MS;
        }
    }

    /// Delivers every message due by now (and what they cause, if due by now too); no tick.
    pub fn settle(&mut self, observer: &mut dyn Observer) {
        while let Some(arrival) = self.net.pop(self.now) {
            self.deliver(arrival, observer);
        }
    }

    fn note(&mut self, what: &str, from: &Address, to: &Address) {
        self.trace.update(&self.now.to_be_bytes());
        self.trace.update(what.as_bytes());
        self.trace.update(&from.peer.to_bytes());
        self.trace.update(&from.session.to_be_bytes());
        self.trace.update(&to.peer.to_bytes());
        self.trace.update(&to.session.to_be_bytes());
    }

    fn deliver(&mut self, arrival: Arrival, observer: &mut dyn Observer) {
        let Arrival {
            from, to, message, ..
        } = arrival;
        self.note(message.kind(), &from, &to);
        if !observer.incoming(from, to, &message) {
            return;
        }
        let node_to = to.session == 0;
        let refused = node_to && (!self.is_up(&to.peer) || self.refuses(&from.peer, &to.peer));
        if refused {
            // A request to a dead node (or one refusing the asker) fails at once.
            if let Message::Request { tag, .. } = message {
                self.respond(from, tag, Err("connection refused".into()), observer);
            }
            return;
        }
        if self.cut.contains(&to.peer) || self.cut.contains(&from.peer) {
            return; // the partition drops it; a request times out
        }
        let now = self.now;
        match message {
            Message::Gossip(gossip) => self.gossip(from.peer, to.peer, &gossip, observer),
            Message::Raw(bytes) => match wire::decode_gossip(&bytes) {
                Ok(gossip) => self.gossip(from.peer, to.peer, &gossip, observer),
                Err(e) => {
                    let verdict = Verdict::Reject(format!("undecodable gossip: {e}"));
                    observer.judged(self, to.peer, from.peer, &verdict);
                }
            },
            Message::Request { tag, request } => {
                self.next_inbound += 1;
                let id = self.next_inbound;
                self.inbound.insert((to.peer, id), (from, tag));
                let Some(role) = self.nodes.get_mut(&to.peer) else {
                    return;
                };
                let asked = Inbound::new(from.peer, InboundId(id), request);
                let actions = role.request(now, asked, &mut self.rng);
                self.run(to, actions, observer);
            }
            Message::Response { tag, response } => self.respond(to, tag, response, observer),
        }
    }

    fn gossip(&mut self, from: PeerId, to: PeerId, gossip: &Gossip, observer: &mut dyn Observer) {
        let verdict = role::check_gossip(&self.mesh, &from, gossip);
        if verdict != Verdict::Accept {
            observer.judged(self, to, from, &verdict);
            return;
        }
        let Some(role) = self.nodes.get_mut(&to) else {
            return;
        };
        let (verdict, actions) = role.gossip(self.now, Heard::new(from, gossip), &mut self.rng);
        if verdict != Verdict::Accept {
            observer.judged(self, to, from, &verdict);
        }
        self.run(
            Address {
                peer: to,
                session: 0,
            },
            actions,
            observer,
        );
    }

    /// The answer to `to`'s request `tag`, once: a late or duplicated one is dropped.
    fn respond(
        &mut self,
        to: Address,
        tag: Tag,
        response: Result<Response, String>,
        observer: &mut dyn Observer,
    ) {
        let Some((_, peer)) = self.outbound.remove(&(to, tag)) else {
            return; // a duplicate, or after its timeout
        };
        let role = match to.session {
            0 => self.nodes.get_mut(&to.peer),
            _ => self.sessions.get_mut(&to),
        };
        if let Some(role) = role {
            let answer = Answer::new(peer, tag, response);
            let actions = role.response(self.now, answer, &mut self.rng);
            self.run(to, actions, observer);
        }
    }

    fn tick(&mut self, observer: &mut dyn Observer) {
        let now = self.now;
        let expired: Vec<(Address, Tag)> = self
            .outbound
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for (to, tag) in expired {
            self.respond(to, tag, Err("timeout".into()), observer);
        }
        observer.tick(self);
        let peers: Vec<PeerId> = self.nodes.keys().copied().collect();
        for peer in peers {
            if self.down.contains(&peer) {
                continue;
            }
            let Some(role) = self.nodes.get_mut(&peer) else {
                continue; // the observer took it down
            };
            let actions = role.tick(now, &mut self.rng);
            self.run(Address { peer, session: 0 }, actions, observer);
        }
        let sessions: Vec<Address> = self.sessions.keys().copied().collect();
        for at in sessions {
            if let Some(role) = self.sessions.get_mut(&at) {
                let actions = role.tick(now, &mut self.rng);
                self.run(at, actions, observer);
            }
        }
    }

    /// Carries out what the role at `at` asked for, in order.
    fn run(&mut self, at: Address, actions: Vec<Action>, observer: &mut dyn Observer) {
        for mut action in actions {
            if matches!(
                action,
                Action::Publish(_) | Action::Send { .. } | Action::Reply { .. }
            ) && !observer.outgoing(self, at, &mut action)
            {
                continue;
            }
            match action {
                Action::Publish(gossip) => {
                    let gossip = Arc::new(gossip);
                    for peer in self.subscribers_of(gossip.topic(), &at.peer) {
                        let to = Address { peer, session: 0 };
                        self.send(at, to, Message::Gossip(Arc::clone(&gossip)));
                    }
                }
                Action::Send { peer, tag, request } => self.ask(at, peer, tag, request),
                Action::Reply { to, response } => {
                    if let Some((asker, tag)) = self.inbound.remove(&(at.peer, to.0)) {
                        let message = Message::Response {
                            tag,
                            response: Ok(response),
                        };
                        self.send(at, asker, message);
                    }
                }
                Action::Persist(record) => self.records.entry(at.peer).or_default().push(record),
                Action::Decrypt(job) => {
                    let (Some(key), Some(role)) =
                        (self.keys.get(&at.peer), self.nodes.get_mut(&at.peer))
                    else {
                        continue;
                    };
                    let opened = job.open(key);
                    let actions = role.decrypted(self.now, job, opened);
                    self.run(at, actions, observer);
                }
                Action::Emit(event) => {
                    self.trace.update(&event_kind(&event).to_be_bytes());
                    observer.event(self, at, event);
                }
                Action::AskInput { round } => observer.asked_input(self, at.peer, round),
            }
        }
    }

    fn ask(&mut self, at: Address, peer: PeerId, tag: Tag, request: Request) {
        self.outbound
            .insert((at, tag), (self.now + REQUEST_TIMEOUT_MS, peer));
        let to = Address { peer, session: 0 };
        self.send(at, to, Message::Request { tag, request });
    }

    fn send(&mut self, from: Address, to: Address, message: Message) {
        self.net.send(self.now, from, to, message, &mut self.rng);
    }
}

/// Which kind of event, for the trace (never its contents: codes stay out of it).
fn event_kind(event: &Event) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    std::mem::discriminant(event).hash(&mut h);
    h.finish()
}
