//! The scenario backend on the simulator (`otpmesh scenario run FILE --sim`): every node's real
//! role state machine, built from its data dir as a process builds it (identity, RSA key, redb
//! store), on `otpmesh_protocol::sim::World` in virtual time. What a role makes durable is
//! committed to its store after every step, so a kill loses only what a process would lose and a
//! restart restores from the store. The runner reads the same lines a node prints.
//!
//! ```text
//! runner ── start/kill/control/ask/check ──► Simulated ── World::add/crash/input/open_session
//!   ▲                                            │ step(): World::step ─► commit new records
//!   └──────────── next_line(): (node, Line) ◄─── Seen (the world's observer)
//! ```

use super::layout::Planned;
use crate::line::{Line, Process};
use anyhow::{anyhow, Context};
use otpmesh_node::control::ControlLine;
use otpmesh_node::simulated::{self, Durable};
use otpmesh_node::{NodeConfig, NodeEvent};
use otpmesh_protocol::phrase::UserInput;
use otpmesh_protocol::role::{verifier::Outcome, Action, Answer, Control, Event, Input, Millis};
use otpmesh_protocol::role::{Rng, Role, Tag, Typed, Verdict};
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::sim::net::{Address, Faults};
use otpmesh_protocol::sim::{Observer, World};
use otpmesh_protocol::wire::{Request, Response};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Lines waiting for the runner; past this the oldest are dropped (and counted).
pub const MAX_LINES: usize = 1 << 20;

/// The world's observer: what a node would print, and the answers one-shots wait for.
#[derive(Default)]
struct Seen {
    names: HashMap<libp2p::PeerId, String>,
    lines: VecDeque<(String, Option<Line>)>,
    dropped: u64,
    /// Events of one-shot sessions, and verifiers' decisions, by where they happened.
    answers: HashMap<Address, Vec<Event>>,
}

impl Seen {
    fn line(&mut self, name: String, line: Option<Line>) {
        if self.lines.len() >= MAX_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back((name, line));
    }

    fn node_line(&mut self, peer: &libp2p::PeerId, event: NodeEvent) {
        if let Some(name) = self.names.get(peer).cloned() {
            self.line(name, Some(Line::Node(event)));
        }
    }
}

impl Observer for Seen {
    fn event(&mut self, _world: &mut World, at: Address, event: Event) {
        if at.session != 0 || matches!(event, Event::CheckDecided { .. }) {
            self.answers.entry(at).or_default().push(event.clone());
        }
        if at.session == 0 {
            self.node_line(&at.peer, NodeEvent::Role(event));
        }
    }

    fn judged(
        &mut self,
        _world: &mut World,
        at: libp2p::PeerId,
        from: libp2p::PeerId,
        v: &Verdict,
    ) {
        // A node reports only what it rejects (ignored gossip is not the sender's fault).
        if let Verdict::Reject(reason) = v {
            let event = NodeEvent::GossipRejected {
                peer: from,
                reason: reason.clone(),
            };
            self.node_line(&at, event);
        }
    }

    fn asked_input(&mut self, _world: &mut World, at: libp2p::PeerId, round: RoundId) {
        self.node_line(&at, NodeEvent::InputNeeded { round });
    }
}

/// A one-off client session that sends one request and keeps the answer (as a command's endpoint
/// calls a node once: the kdc steps).
struct Call {
    to: libp2p::PeerId,
    request: Option<Request>,
    answer: Arc<Mutex<Option<Result<Response, String>>>>,
}

impl Role for Call {
    fn start(&mut self, _now: Millis, _rng: &mut dyn Rng) -> Vec<Action> {
        let to = self.to;
        self.request
            .take()
            .map(|request| Action::Send {
                peer: to,
                tag: Tag(1),
                request,
            })
            .into_iter()
            .collect()
    }

    fn response(&mut self, _now: Millis, answer: Answer, _rng: &mut dyn Rng) -> Vec<Action> {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer.response);
        Vec::new()
    }
}

/// A node that runs on the simulator: its peer id and its store.
struct Running {
    peer: libp2p::PeerId,
    store: Durable,
}

pub struct Simulated {
    seed: u64,
    /// Made at the first start, from that node's mesh config.
    world: Option<World>,
    seen: Seen,
    running: HashMap<String, Running>,
    /// How many of each peer's records are in its store.
    committed: HashMap<libp2p::PeerId, usize>,
    next_ticket: u64,
}

fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as Millis
}

impl Simulated {
    /// Every choice the world makes (latencies, the roles' randomness) is drawn from `seed`;
    /// virtual time starts at the wall clock's now, so codes and records carry real dates.
    pub fn new(seed: u64) -> Simulated {
        Simulated {
            seed,
            world: None,
            seen: Seen::default(),
            running: HashMap::new(),
            committed: HashMap::new(),
            next_ticket: 0,
        }
    }

    /// The world and its observer.
    fn world(&mut self) -> anyhow::Result<(&mut World, &mut Seen)> {
        let world = self
            .world
            .as_mut()
            .ok_or_else(|| anyhow!("no node has started on the simulator yet"))?;
        Ok((world, &mut self.seen))
    }

    /// Virtual time, as time since the Unix epoch.
    pub fn clock(&self) -> Duration {
        Duration::from_millis(self.world.as_ref().map_or_else(now_ms, |w| w.now))
    }

    pub fn next_line(&mut self) -> Option<(String, Option<Line>)> {
        self.seen.lines.pop_front()
    }

    /// Starts (or restarts) `node` from its data dir.
    pub fn start(&mut self, node: &Planned) -> anyhow::Result<()> {
        let config = node
            .config
            .as_ref()
            .ok_or_else(|| anyhow!("{} does not run as a node", node.name))?;
        let parts = simulated::parts(config).with_context(|| format!("starting {}", node.name))?;
        let seed = self.seed;
        let world = self.world.get_or_insert_with(|| {
            let mesh = Arc::new(config.mesh.clone());
            World::new(mesh, seed, now_ms(), Faults::default())
        });
        let peer = parts.peer_id;
        if let Some(key) = parts.rsa {
            world.set_key(peer, key);
        }
        self.seen.names.insert(peer, node.name.clone());
        let started = Process::Started {
            peer_id: peer,
            role: format!("{:?}", node.role).to_lowercase(),
            metrics: None,
            radius: None,
            http: None,
        };
        self.seen
            .line(node.name.clone(), Some(Line::Process(started)));
        let listening = NodeEvent::Listening {
            addr: node.addr.clone(),
        };
        self.seen
            .line(node.name.clone(), Some(Line::Node(listening)));
        // Each running node sees the other subscribe, as gossipsub tells both ends.
        for (name, other) in &self.running {
            let saw = |peer| Some(Line::Node(NodeEvent::Subscribed { peer }));
            self.seen.line(node.name.clone(), saw(other.peer));
            self.seen.line(name.clone(), saw(peer));
        }
        world.add(peer, parts.role, &parts.topics, &mut self.seen);
        self.running.insert(
            node.name.clone(),
            Running {
                peer,
                store: parts.store,
            },
        );
        self.commit()
    }

    /// Stops `name` abruptly: the world forgets its state, its store closes.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let running = self
            .running
            .remove(name)
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        self.world()?.0.crash(running.peer);
        self.seen.line(name.to_string(), None);
        Ok(())
    }

    fn peer(&self, name: &str) -> anyhow::Result<libp2p::PeerId> {
        self.running
            .get(name)
            .map(|r| r.peer)
            .ok_or_else(|| anyhow!("{name} is not running"))
    }

    /// Carries out a control line on `name`, as its node would.
    pub fn control(&mut self, name: &str, line: ControlLine) -> anyhow::Result<()> {
        let peer = self.peer(name)?;
        let (world, seen) = self.world()?;
        match line {
            ControlLine::OpenRound => {
                world.input(peer, seen, |role, now, _| {
                    role.control(now, Control::OpenRound)
                });
            }
            ControlLine::Input { round, value } => {
                let input: UserInput = value.parse().map_err(|e| anyhow!("{name}: input: {e}"))?;
                world.input(peer, seen, |role, now, rng| {
                    role.user_input(now, Input::new(round, input), rng)
                });
            }
            ControlLine::Block { peer: other } => world.block(peer, other, true),
            ControlLine::Unblock { peer: other } => world.block(peer, other, false),
            ControlLine::PublishRaw { hex } => {
                let bytes = hex::decode(hex).map_err(|e| anyhow!("{name}: publish_raw: {e}"))?;
                world.publish_raw(peer, bytes);
            }
        }
        self.commit()
    }

    /// Moves the world one step (an arrival or a tick) and commits what it made durable.
    pub fn step(&mut self) -> anyhow::Result<()> {
        let (world, seen) = self.world()?;
        world.step(seen);
        self.commit()
    }

    /// Steps the world until virtual time has moved `by`.
    pub fn sleep(&mut self, by: Duration) -> anyhow::Result<()> {
        let end = self.clock() + by;
        while self.clock() < end {
            self.step()?;
        }
        Ok(())
    }

    /// Commits each running node's records that are not in its store yet.
    fn commit(&mut self) -> anyhow::Result<()> {
        let Some(world) = &self.world else {
            return Ok(());
        };
        for (name, running) in &self.running {
            let Some(records) = world.records.get(&running.peer) else {
                continue;
            };
            let done = self.committed.entry(running.peer).or_default();
            if *done < records.len() {
                running
                    .store
                    .commit(&records[*done..])
                    .with_context(|| format!("{name}: committing to its store"))?;
                *done = records.len();
            }
        }
        Ok(())
    }

    /// Runs the one-shot `config` (a requester's command) as a session on its peer until `pick`
    /// finds its answer, or `within` of virtual time has passed (None).
    pub fn ask<T>(
        &mut self,
        config: &NodeConfig,
        within: Duration,
        pick: impl FnMut(Event) -> Option<T>,
    ) -> anyhow::Result<Option<T>> {
        let parts = simulated::parts(config)?;
        let end = self.clock() + within;
        let (world, seen) = self.world()?;
        let at = world.open_session(parts.peer_id, parts.role, seen);
        let answer = self.answer(at, end, pick);
        self.world()?.0.close_session(at);
        answer
    }

    /// Sends `request` from peer `from` to peer `to` in a session of its own, as a command's
    /// endpoint would: the answer (or why none came), or None if nothing came within `within` of
    /// virtual time.
    pub fn call(
        &mut self,
        from: libp2p::PeerId,
        to: libp2p::PeerId,
        request: Request,
        within: Duration,
    ) -> anyhow::Result<Option<Result<Response, String>>> {
        let slot = Arc::new(Mutex::new(None));
        let role = Call {
            to,
            request: Some(request),
            answer: Arc::clone(&slot),
        };
        let end = self.clock() + within;
        let (world, seen) = self.world()?;
        let at = world.open_session(from, Box::new(role), seen);
        let answer = loop {
            if let Some(answer) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                break Some(answer);
            }
            if self.clock() >= end {
                break None;
            }
            self.step()?;
        };
        self.world()?.0.close_session(at);
        Ok(answer)
    }

    /// Steps the world until an event at `at` gives `pick` its answer, or until `end` (None).
    fn answer<T>(
        &mut self,
        at: Address,
        end: Duration,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> anyhow::Result<Option<T>> {
        loop {
            let events = self.seen.answers.remove(&at).unwrap_or_default();
            if let Some(t) = events.into_iter().find_map(&mut pick) {
                return Ok(Some(t));
            }
            if self.clock() >= end {
                return Ok(None);
            }
            self.step()?;
        }
    }

    /// Verifier `name` decides `code` typed by `user`, as its fronts ask it: the outcome and its
    /// detail, or None if it decided nothing within `within`.
    pub fn check(
        &mut self,
        name: &str,
        user: &str,
        code: &str,
        within: Duration,
    ) -> anyhow::Result<Option<(Outcome, String)>> {
        let peer = self.peer(name)?;
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let end = self.clock() + within;
        let (world, seen) = self.world()?;
        world.input(peer, seen, |role, now, rng| {
            role.check(now, Typed::new(ticket, user, code), rng)
        });
        self.answer(Address { peer, session: 0 }, end, |e| match e {
            Event::CheckDecided {
                ticket: t,
                outcome,
                detail,
                ..
            } if t == ticket => Some((outcome, detail)),
            _ => None,
        })
    }

    /// The beacon values in running node `name`'s store, oldest first.
    pub fn beacon(&self, name: &str) -> anyhow::Result<Vec<otpmesh_protocol::beacon::Entry>> {
        let running = self
            .running
            .get(name)
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        Ok(running.store.beacon()?)
    }

    /// Every node stops; the stores close.
    pub fn stop_all(&mut self) {
        self.running.clear();
        if self.seen.dropped > 0 {
            tracing::warn!(dropped = self.seen.dropped, "simulated lines dropped");
        }
    }
}
