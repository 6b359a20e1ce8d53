//! A deterministic simulator: the real role state machines (real RSA, real records) over a
//! simulated network in virtual time, with every choice drawn from one seed.
//!
//! ```text
//! Config { seed, contributors, distributors, requesters, rounds, requests, faults }
//!   ─► identities, the generator's RSA key, inputs: all from the seed
//!   ─► loop: the earliest of (next arrival, next tick)
//!        arrival ─► the role's gossip / request / response ─► its actions:
//!            Publish ─► every subscriber of the topic · Send ─► the network (timeout if lost)
//!            Reply ─► the network · Persist ─► the node's records (what a crash keeps)
//!            Decrypt ─► opened at once with the generator's key · Emit ─► the checker
//!        tick (every TICK_MS) ─► every live role, expired requests answered "timeout"
//!        faults: loss, dup (each message) · crash (a distributor restarts from its records)
//!                · partition (a distributor cut off, then healed)
//!   ─► each delivered round: `requests` one-shot OTP requests, each OTP verified, then replayed
//!   ─► Report: counts, virtual and wall time, violations, a trace hash over every delivery
//! ```
//! Invariants checked as the run goes ([`check`]): no OTP accepted twice; every sealed transcript
//! checks against its secret and the transcripts chain; an OTP a requester was given is never
//! forgotten by its distributor across a crash (its first verification is not `wrong`).
//!
//! Both modes: with `threshold`, N generators deal the round key from the contributors' dealings,
//! requesters combine T partials, and a `quorum unavailable` is a violation whenever no more than
//! N − T distributors were ever unreachable and no message was lost or duplicated.

pub mod check;
pub mod net;

use crate::mesh::MeshConfig;
use crate::phrase::{ClientId, UserInput};
use crate::role::distributor::Restored;
use crate::role::pick;
use crate::role::{
    self, threshold, Action, Distributor, Event, Failure, InboundId, Millis, Record, Requester,
    Role, Verdict,
};
use crate::round::RoundId;
use crate::round::MAX_ROUND_CONTRIBUTORS;
use crate::seal::PrivateKey;
use crate::wire::{Response, VerifyResult, GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC};
use check::Checker;
use libp2p_identity::{Keypair, PeerId};
use net::{Address, Arrival, Faults, Message, Net};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How often every role's timer fires (virtual ms).
pub const TICK_MS: Millis = 100;
/// A request with no answer by then is answered "timeout", as libp2p's request-response does.
pub const REQUEST_TIMEOUT_MS: Millis = 10_000;
/// Most virtual time a run goes on after its last request, for deliveries still under way.
pub const DRAIN_MS: Millis = 3 * REQUEST_TIMEOUT_MS;
/// Requests for a round go out this long after it sealed, even if not every generator reported
/// it delivered.
pub const DELIVERY_GRACE_MS: Millis = 5_000;
/// How long a crashed distributor stays down, and a partition lasts.
pub const OUTAGE_MS: Millis = 3_000;
/// Virtual time a run may take per round before it gives up.
pub const MAX_ROUND_MS: Millis = 120_000;
/// What a distributor subscribes to.
const DISTRIBUTOR_TOPICS: [&str; 2] = [GOSSIP_TOPIC, USED_TOPIC];
/// The largest simulation a run builds.
pub const MAX_NODES: u32 = 100_000;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub contributors: u32,
    pub distributors: u32,
    pub requesters: u32,
    pub rounds: u32,
    /// OTP requests after each delivered round, spread over the requesters and distributors.
    pub requests: u32,
    pub faults: Faults,
    pub rsa_bits: usize,
    /// A deliberate bug, for the tests that show the checker catches it: the first distributor
    /// answers a replayed OTP `accepted` (a double acceptance; single mode).
    pub sabotage: bool,
    /// Threshold mode, T of N: N generators and N distributors (`distributors` is then N).
    pub threshold: Option<crate::threshold::Params>,
}

/// A configuration no run can be built from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Counts(String),
    #[error("the simulated mesh config: {0}")]
    Mesh(String),
    #[error("the generator's RSA key: {0}")]
    Key(String),
}

/// What one run came to.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub seed: u64,
    pub faults: String,
    pub virtual_ms: Millis,
    pub wall_ms: u128,
    pub messages: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub rounds_sealed: u32,
    pub rounds_failed: u32,
    /// Sealed rounds some generator holding its share never handed over (deliveries and
    /// handovers are retried until acknowledged, and the run drains them: 0 unless a
    /// distributor stayed unreachable).
    pub rounds_undelivered: u32,
    /// Threshold mode: (generator, round) pairs without a share (the generator never got one of
    /// Q's dealings, even from the coordinator); the round is served by the other shareholders.
    pub shares_unavailable: u32,
    pub otps_issued: u32,
    pub otps_accepted: u32,
    pub replays_refused: u32,
    pub requests_failed: u32,
    pub crashes: u32,
    pub partitions: u32,
    pub violations: Vec<String>,
    /// blake3 over every delivery and event kind, in order: one seed, one hash.
    pub trace: String,
}

/// What a one-shot client session is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Request,
    /// The first presentation of an OTP (`round`, `distributor`, `otp` in the checker).
    Verify(u64),
    /// Its replay.
    Replay(u64),
}

struct Session {
    role: Box<dyn Role + Send>,
    purpose: Purpose,
}

/// The simulated mesh.
pub struct Sim {
    config: Config,
    mesh: Arc<MeshConfig>,
    /// Each generator's RSA key.
    keys: BTreeMap<PeerId, PrivateKey>,
    rng: ChaCha20Rng,
    now: Millis,
    net: Net,
    /// The coordinator (the only generator in single mode): its events count for the round.
    generator: PeerId,
    generators: Vec<PeerId>,
    distributors: Vec<PeerId>,
    requesters: Vec<PeerId>,
    /// Every node, in a fixed order (BTreeMap: iteration never depends on hashing).
    nodes: BTreeMap<PeerId, Box<dyn Role + Send>>,
    /// Each topic's subscribers (a crashed node stays subscribed: what is sent to it is lost).
    subscribers: BTreeMap<&'static str, BTreeSet<PeerId>>,
    sessions: BTreeMap<Address, Session>,
    next_session: u64,
    records: BTreeMap<PeerId, Vec<Record>>,
    down: BTreeSet<PeerId>,
    cut: BTreeSet<PeerId>,
    /// Inbound requests awaiting a reply: (node, inbound id) → who asked, with which tag.
    inbound: BTreeMap<(PeerId, u64), (Address, role::Tag)>,
    next_inbound: u64,
    /// Outbound requests awaiting an answer: (asker, tag) → (deadline, the peer asked).
    outbound: BTreeMap<(Address, role::Tag), (Millis, PeerId)>,
    /// Faults scheduled: (at, what).
    outages: Vec<(Millis, Outage)>,
    checker: Checker,
    /// Per round, the generators that delivered it (all of them: the round is delivered).
    delivered_by: BTreeMap<u64, BTreeSet<PeerId>>,
    /// Threshold mode: the generators that reported they hold no share of each round.
    unavailable: BTreeMap<u64, BTreeSet<PeerId>>,
    /// When the coordinator sealed each round.
    sealed_at: BTreeMap<u64, Millis>,
    /// The most distributors unreachable at once so far.
    max_unreachable: usize,
    trace: blake3::Hasher,
    report: Report,
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    Crash(PeerId),
    Restart(PeerId),
    Cut(PeerId),
    Heal(PeerId),
}

fn identity(seed: u64, what: &str, i: u32) -> PeerId {
    keypair(seed, what, i).public().to_peer_id()
}

fn keypair(seed: u64, what: &str, i: u32) -> Keypair {
    let mut h = blake3::Hasher::new_derive_key("otpmesh/1 sim identity");
    h.update(&seed.to_be_bytes());
    h.update(what.as_bytes());
    h.update(&i.to_be_bytes());
    let bytes = *h.finalize().as_bytes();
    Keypair::ed25519_from_bytes(bytes).expect("32 bytes make an ed25519 key")
}

impl Sim {
    pub fn new(mut config: Config) -> Result<Sim, ConfigError> {
        if let Some(params) = config.threshold {
            config.distributors = params.n;
        }
        let total =
            config.contributors as u64 + config.distributors as u64 + config.requesters as u64;
        if config.contributors == 0 || config.distributors == 0 || config.requesters == 0 {
            return Err(ConfigError::Counts(
                "a simulation needs at least one contributor, distributor and requester".into(),
            ));
        }
        if total > MAX_NODES as u64 || config.rounds == 0 || config.rounds > 1000 {
            return Err(ConfigError::Counts(format!(
                "at most {MAX_NODES} nodes and 1 to 1000 rounds"
            )));
        }
        let seed = config.seed;
        let generator_keys: Vec<Keypair> = (0..config.threshold.map_or(1, |p| p.n))
            .map(|i| keypair(seed, "generator", i))
            .collect();
        let generators: Vec<PeerId> = generator_keys
            .iter()
            .map(|k| k.public().to_peer_id())
            .collect();
        let distributors: Vec<PeerId> = (0..config.distributors)
            .map(|i| identity(seed, "distributor", i))
            .collect();
        let requesters: Vec<PeerId> = (0..config.requesters)
            .map(|i| identity(seed, "requester", i))
            .collect();
        let contributors: Vec<PeerId> = (0..config.contributors)
            .map(|i| identity(seed, "contributor", i))
            .collect();
        let mut mesh = MeshConfig::listing(&generators, &distributors, &requesters, &contributors);
        mesh.settings.rsa_bits = config.rsa_bits;
        // A round holds at most MAX_ROUND_CONTRIBUTORS phrases: with more contributors listed, it
        // seals at the first that many (the rest are refused as the round is full).
        mesh.settings.quorum = config.contributors.min(MAX_ROUND_CONTRIBUTORS as u32);
        mesh.settings.deadline_ms = 20_000;
        mesh.settings.round_interval_ms = 5_000;
        mesh.settings.hash_iterations = 1000;
        mesh.settings.requests_per_peer_s = 1000;
        if let Some(params) = config.threshold {
            mesh.settings.threshold = Some(crate::mesh::Threshold(params));
            mesh.settings.complaint_ms = 2_000;
        }
        mesh.validate()
            .map_err(|e| ConfigError::Mesh(e.to_string()))?;
        let mesh = Arc::new(mesh);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut keys = BTreeMap::new();
        for g in &generators {
            let key = PrivateKey::generate(config.rsa_bits, &mut rng)
                .map_err(|e| ConfigError::Key(e.to_string()))?;
            keys.insert(*g, key);
        }
        let mut sim = Sim {
            mesh: mesh.clone(),
            keys,
            rng,
            now: 1_000_000_000,
            net: Net::new(config.faults.clone()),
            generator: generators[0],
            generators: generators.clone(),
            distributors: distributors.clone(),
            requesters,
            nodes: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_session: 0,
            records: BTreeMap::new(),
            down: BTreeSet::new(),
            cut: BTreeSet::new(),
            inbound: BTreeMap::new(),
            next_inbound: 0,
            outbound: BTreeMap::new(),
            outages: Vec::new(),
            checker: Checker::default(),
            delivered_by: BTreeMap::new(),
            unavailable: BTreeMap::new(),
            sealed_at: BTreeMap::new(),
            max_unreachable: 0,
            trace: blake3::Hasher::new_derive_key("otpmesh/1 sim trace"),
            report: Report {
                seed,
                faults: config.faults.to_string(),
                ..Default::default()
            },
            config,
        };
        for (g, identity) in generators.iter().zip(generator_keys) {
            let public = sim.keys[g].public().clone();
            let role = pick::generator(identity, mesh.clone(), public, pick::Restart::default())
                .map_err(|e| ConfigError::Mesh(e.to_string()))?;
            sim.add(*g, role, vec![GOSSIP_TOPIC, PHRASE_TOPIC]);
        }
        for d in &distributors {
            let role = pick::distributor(*d, mesh.clone(), Restored::default());
            sim.add(*d, role, DISTRIBUTOR_TOPICS.to_vec());
        }
        for (i, c) in contributors.iter().enumerate() {
            let input = UserInput(i128::from(sim.rng.next_u64() as i64));
            let client = ClientId(i as u32 + 1);
            let role = pick::contributor(client, Some(input), mesh.clone());
            sim.add(*c, role, vec![GOSSIP_TOPIC]);
        }
        Ok(sim)
    }

    fn add(&mut self, peer: PeerId, mut role: Box<dyn Role + Send>, topics: Vec<&'static str>) {
        let actions = role.start(self.now, &mut self.rng);
        self.nodes.insert(peer, role);
        for topic in topics {
            self.subscribers.entry(topic).or_default().insert(peer);
        }
        self.run(Address { peer, session: 0 }, actions);
    }

    /// Runs until every round is done (or the time allowed runs out); the report.
    pub fn run_to_end(mut self) -> Report {
        let started = std::time::Instant::now();
        let begin = self.now;
        let limit = begin + MAX_ROUND_MS * u64::from(self.config.rounds);
        let mut next_tick = self.now + TICK_MS;
        while !self.done() && self.now < limit {
            self.step(&mut next_tick);
        }
        // Deliveries and handovers still under way when the last request was answered (one lost
        // near the end waits out its timeout, then goes again): a bounded drain, so that a sealed
        // round left undelivered is one the mesh could not deliver, not one the run cut short.
        let drain_until = self.now + DRAIN_MS;
        while self.done() && !self.checker.all_delivered() && self.now < drain_until {
            self.step(&mut next_tick);
        }
        if !self.done() {
            self.checker.violation(format!(
                "the run did not finish within {} s of virtual time ({} of {} rounds sealed, {} sessions open)",
                (limit - begin) / 1000,
                self.checker.sealed.len(),
                self.config.rounds,
                self.sessions.len()
            ));
        }
        let transcripts = self.transcripts();
        self.checker
            .finish(&transcripts, self.config.threshold.is_none());
        let mut report = self.report;
        report.virtual_ms = self.now - begin;
        report.wall_ms = started.elapsed().as_millis();
        report.messages = self.net.sent;
        report.lost = self.net.lost;
        report.duplicated = self.net.duplicated;
        self.checker.fill(&mut report);
        report.trace = self.trace.finalize().to_hex()[..16].to_string();
        report
    }

    /// Delivers what is due next (a message or a tick), advancing virtual time to it.
    fn step(&mut self, next_tick: &mut Millis) {
        let next = self
            .net
            .next_at()
            .map_or(*next_tick, |at| at.min(*next_tick));
        self.now = next.max(self.now);
        while let Some(arrival) = self.net.pop(self.now) {
            self.deliver(arrival);
        }
        if self.now >= *next_tick {
            self.tick();
            *next_tick += TICK_MS;
        }
    }

    fn done(&self) -> bool {
        self.checker.sealed.len() + self.checker.failed.len() >= self.config.rounds as usize
            && self.checker.requested_all(self.config.rounds)
            && self.sessions.is_empty()
    }

    /// The transcripts the generator sealed, with its secrets, from its records.
    fn transcripts(&self) -> Vec<(crate::round::Transcript, crate::round::Secret)> {
        self.records
            .get(&self.generator)
            .into_iter()
            .flatten()
            .filter_map(|r| match r {
                Record::Round { transcript, secret } => Some((transcript.clone(), secret.clone())),
                _ => None,
            })
            .collect()
    }

    fn note(&mut self, what: &str, from: &Address, to: &Address) {
        self.trace.update(&self.now.to_be_bytes());
        self.trace.update(what.as_bytes());
        self.trace.update(&from.peer.to_bytes());
        self.trace.update(&from.session.to_be_bytes());
        self.trace.update(&to.peer.to_bytes());
        self.trace.update(&to.session.to_be_bytes());
    }

    fn deliver(&mut self, arrival: Arrival) {
        let Arrival {
            from, to, message, ..
        } = arrival;
        self.note(message.kind(), &from, &to);
        let node_to = to.session == 0;
        if node_to && (self.down.contains(&to.peer) || !self.nodes.contains_key(&to.peer)) {
            // A request to a dead node fails at once (the connection is refused).
            if let Message::Request { tag, .. } = message {
                self.respond(from, tag, Err("connection refused".into()));
            }
            return;
        }
        if self.cut.contains(&to.peer) || self.cut.contains(&from.peer) {
            return; // the partition drops it; a request times out
        }
        let now = self.now;
        match message {
            Message::Gossip(gossip) => {
                let verdict = role::check_gossip(&self.mesh, &from.peer, &gossip);
                if verdict != Verdict::Accept {
                    self.checker.rejected(&verdict);
                    return;
                }
                let Some(role) = self.nodes.get_mut(&to.peer) else {
                    return;
                };
                let (verdict, actions) = role.gossip(now, from.peer, &gossip, &mut self.rng);
                self.checker.rejected(&verdict);
                self.run(to, actions);
            }
            Message::Request { tag, request } => {
                self.next_inbound += 1;
                let id = self.next_inbound;
                self.inbound.insert((to.peer, id), (from, tag));
                let Some(role) = self.nodes.get_mut(&to.peer) else {
                    return;
                };
                let actions = role.request(now, from.peer, InboundId(id), request, &mut self.rng);
                self.run(to, actions);
            }
            Message::Response { tag, response } => self.respond(to, tag, response),
        }
    }

    /// The answer to `to`'s request `tag`, once: a late or duplicated one is dropped.
    fn respond(&mut self, to: Address, tag: role::Tag, response: Result<Response, String>) {
        let Some((_, asked)) = self.outbound.remove(&(to, tag)) else {
            return; // a duplicate, or after its timeout
        };
        let role = match to.session {
            0 => self.nodes.get_mut(&to.peer),
            _ => self.sessions.get_mut(&to).map(|s| &mut s.role),
        };
        if let Some(role) = role {
            let actions = role.response(self.now, asked, tag, response, &mut self.rng);
            self.run(to, actions);
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        let expired: Vec<(Address, role::Tag)> = self
            .outbound
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for (to, tag) in expired {
            self.respond(to, tag, Err("timeout".into()));
        }
        // Users do not wait for every distributor: a round sealed DELIVERY_GRACE_MS ago is asked
        // for even if some generator never handed it over (it missed the transcript's gossip).
        let late: Vec<u64> = self
            .sealed_at
            .iter()
            .filter(|(r, at)| {
                **at + DELIVERY_GRACE_MS <= now && !self.checker.requested.contains(r)
            })
            .map(|(r, _)| *r)
            .collect();
        for round in late {
            self.round_delivered(RoundId(round));
        }
        let due: Vec<Outage> = self
            .outages
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, o)| *o)
            .collect();
        self.outages.retain(|(at, _)| *at > now);
        for outage in due {
            self.outage(outage);
        }
        let peers: Vec<PeerId> = self.nodes.keys().copied().collect();
        for peer in peers {
            if self.down.contains(&peer) {
                continue;
            }
            let role = self.nodes.get_mut(&peer).expect("listed");
            let actions = role.tick(now, &mut self.rng);
            self.run(Address { peer, session: 0 }, actions);
        }
        let sessions: Vec<Address> = self.sessions.keys().copied().collect();
        for at in sessions {
            if let Some(s) = self.sessions.get_mut(&at) {
                let actions = s.role.tick(now, &mut self.rng);
                self.run(at, actions);
            }
        }
    }

    fn outage(&mut self, outage: Outage) {
        self.trace.update(format!("{outage:?}").as_bytes());
        let before = self.down.union(&self.cut).count();
        match outage {
            Outage::Crash(peer) => {
                self.down.insert(peer);
                self.nodes.remove(&peer);
                self.inbound.retain(|(p, _), _| *p != peer);
                self.report.crashes += 1;
            }
            Outage::Restart(peer) => {
                self.down.remove(&peer);
                let records = self.records.get(&peer).cloned().unwrap_or_default();
                let role = Distributor::new(peer, self.mesh.clone(), Restored::replay(&records));
                self.add(peer, Box::new(role), DISTRIBUTOR_TOPICS.to_vec());
            }
            Outage::Cut(peer) => {
                self.cut.insert(peer);
                self.report.partitions += 1;
            }
            Outage::Heal(peer) => {
                self.cut.remove(&peer);
            }
        }
        let after = self.down.union(&self.cut).count();
        self.max_unreachable = self.max_unreachable.max(before).max(after);
    }

    /// Carries out what the role at `at` asked for, in order.
    fn run(&mut self, at: Address, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Publish(gossip) => {
                    let topic = gossip.topic();
                    let gossip = std::sync::Arc::new(gossip);
                    let subscribers: Vec<PeerId> = self
                        .subscribers
                        .get(topic)
                        .into_iter()
                        .flatten()
                        .filter(|p| **p != at.peer)
                        .copied()
                        .collect();
                    for peer in subscribers {
                        let to = Address { peer, session: 0 };
                        self.send(at, to, Message::Gossip(std::sync::Arc::clone(&gossip)));
                    }
                }
                Action::Send { peer, tag, request } => {
                    self.outbound
                        .insert((at, tag), (self.now + REQUEST_TIMEOUT_MS, peer));
                    let to = Address { peer, session: 0 };
                    self.send(at, to, Message::Request { tag, request });
                }
                Action::Reply { to, mut response } => {
                    if self.config.sabotage && at.peer == self.distributors[0] {
                        if let Response::Verified(VerifyResult::Used) = response {
                            response = Response::Verified(VerifyResult::Accepted);
                        }
                    }
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
                    let opened = job.open(key, &mut self.rng);
                    let actions = role.decrypted(self.now, job, opened);
                    self.run(at, actions);
                }
                Action::Emit(event) => self.event(at, event),
                Action::AskInput { .. } => {}
            }
        }
    }

    fn send(&mut self, from: Address, to: Address, message: Message) {
        self.net.send(self.now, from, to, message, &mut self.rng);
    }

    /// Delivered: every generator handed the round over, or has no share of it to hand over.
    fn maybe_delivered(&mut self, round: RoundId) {
        let count = |m: &BTreeMap<u64, BTreeSet<PeerId>>| m.get(&round.0).map_or(0, |s| s.len());
        let done = count(&self.delivered_by) + count(&self.unavailable);
        if done >= self.generators.len() && self.checker.delivered.insert(round.0) {
            self.round_delivered(round);
        }
    }

    fn event(&mut self, at: Address, event: Event) {
        self.trace.update(&event_kind(&event).to_be_bytes());
        match &event {
            Event::RoundSealed { round, .. } if at.peer == self.generator => {
                self.checker.sealed.insert(round.0);
                self.sealed_at.insert(round.0, self.now);
            }
            Event::RoundFailed { round, .. } if at.peer == self.generator => {
                self.checker.failed.insert(round.0);
            }
            Event::RoundDeliveredAll { round } if self.generators.contains(&at.peer) => {
                self.delivered_by
                    .entry(round.0)
                    .or_default()
                    .insert(at.peer);
                self.maybe_delivered(*round);
            }
            // Threshold mode: a generator that never got a dealing of Q has no share to hand over
            // (the round is served by the others); it is done with the round.
            Event::ShareUnavailable { round, .. } if self.generators.contains(&at.peer) => {
                self.report.shares_unavailable += 1;
                self.unavailable.entry(round.0).or_default().insert(at.peer);
                self.maybe_delivered(*round);
            }
            _ => {}
        }
        if at.session == 0 {
            return;
        }
        let Some(purpose) = self.sessions.get(&at).map(|s| s.purpose) else {
            return;
        };
        let finished = match (&event, purpose) {
            (
                Event::OtpReceived {
                    round,
                    distributor,
                    otp,
                    ..
                },
                Purpose::Request,
            ) => {
                let id = self.checker.issued(at.peer, *distributor, *round, 0, otp);
                let role = self.presenter(at.peer, id);
                self.open_session(at.peer, Purpose::Verify(id), role);
                true
            }
            (
                Event::ThresholdOtpReceived {
                    round,
                    counter,
                    otp,
                    ..
                },
                Purpose::Request,
            ) => {
                let id = self.checker.issued(at.peer, at.peer, *round, *counter, otp);
                let role = self.presenter(at.peer, id);
                self.open_session(at.peer, Purpose::Verify(id), role);
                true
            }
            (
                Event::VerifyAnswered { result, .. } | Event::ThresholdVerified { result, .. },
                Purpose::Verify(id),
            ) => {
                self.checker.verified(id, *result, false);
                let role = self.presenter(at.peer, id);
                self.open_session(at.peer, Purpose::Replay(id), role);
                true
            }
            (
                Event::VerifyAnswered { result, .. } | Event::ThresholdVerified { result, .. },
                Purpose::Replay(id),
            ) => {
                self.checker.verified(id, *result, true);
                true
            }
            (
                Event::RequestFailed {
                    failure, reason, ..
                },
                _,
            ) => {
                self.report.requests_failed += 1;
                if let (Failure::QuorumUnavailable, Some(params)) = (failure, self.config.threshold)
                {
                    let faultless = self.config.faults.loss == 0.0 && self.config.faults.dup == 0.0;
                    let spare = (params.n - params.t) as usize;
                    if faultless && self.max_unreachable <= spare {
                        self.checker.violation(format!(
                            "quorum unavailable with at most {} of {} distributors ever unreachable: {reason}",
                            self.max_unreachable, params.n
                        ));
                    }
                }
                true
            }
            _ => false,
        };
        if finished {
            self.sessions.remove(&at);
            let owed: Vec<_> = self
                .outbound
                .range((at, role::Tag(0))..=(at, role::Tag(u64::MAX)))
                .map(|(k, _)| *k)
                .collect();
            for k in owed {
                self.outbound.remove(&k);
            }
        }
    }

    /// A round reached every distributor: its requests go out, and its faults are scheduled.
    fn round_delivered(&mut self, round: RoundId) {
        if round.0 > u64::from(self.config.rounds) || !self.checker.requested.insert(round.0) {
            return; // past the run's rounds (no more load, no more faults), or already asked
        }
        let (r, d) = (self.requesters.len(), self.distributors.len());
        for i in 0..self.config.requests as usize {
            let (requester, distributor) = (self.requesters[i % r], self.distributors[i % d]);
            let role: Box<dyn Role + Send> = match self.config.threshold {
                None => Box::new(Requester::one_shot(requester, distributor)),
                Some(_) => Box::new(threshold::Requester::issue_once(
                    requester,
                    self.mesh.clone(),
                    self.distributors.clone(),
                )),
            };
            self.open_session(requester, Purpose::Request, role);
        }
        let victim = self.distributors[(round.0 as usize) % d];
        // Within the round trips of the requests just sent, so the outage meets them.
        let at = self.now + 1 + self.rng.next_u64() % 80;
        if self.config.faults.crash {
            self.outages.push((at, Outage::Crash(victim)));
            self.outages.push((at + OUTAGE_MS, Outage::Restart(victim)));
        }
        if self.config.faults.partition {
            let other = self.distributors[(round.0 as usize + 1) % d];
            self.outages.push((at, Outage::Cut(other)));
            self.outages.push((at + OUTAGE_MS, Outage::Heal(other)));
        }
    }

    /// A session presenting OTP `id`: to its issuer (single mode), or to every distributor.
    fn presenter(&self, requester: PeerId, id: u64) -> Box<dyn Role + Send> {
        let issued = self.checker.presented(id);
        match self.config.threshold {
            None => Box::new(Requester::verify_once(
                requester,
                issued.distributor,
                issued.otp,
            )),
            Some(_) => Box::new(threshold::Requester::verify_once(
                requester,
                self.mesh.clone(),
                self.distributors.clone(),
                issued.round,
                issued.counter,
                issued.otp,
            )),
        }
    }

    fn open_session(&mut self, peer: PeerId, purpose: Purpose, mut role: Box<dyn Role + Send>) {
        self.next_session += 1;
        let at = Address {
            peer,
            session: self.next_session,
        };
        let actions = role.start(self.now, &mut self.rng);
        self.sessions.insert(at, Session { role, purpose });
        self.run(at, actions);
    }
}

/// Which kind of event, for the trace (never its contents: codes stay out of it).
fn event_kind(event: &Event) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    std::mem::discriminant(event).hash(&mut h);
    h.finish()
}
