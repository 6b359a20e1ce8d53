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
//! N − T distributors were ever unreachable and no message was lost or duplicated. Every
//! long-running node (generators, distributors, contributors) keeps the beacon beside its role,
//! as a node does: two nodes holding different values for one round is a violation, and so is,
//! in a run without faults, a node left without some sealed round's value after the drain.

pub mod check;
pub mod net;
pub mod swarm;
pub mod world;

use crate::mesh::MeshConfig;
use crate::phrase::{ClientId, UserInput};
use crate::role::distributor::Restored;
use crate::role::pick;
use crate::role::{threshold, Action, Event, Failure, Millis, Record, Requester, Role, Verdict};
use crate::round::RoundId;
use crate::round::MAX_ROUND_CONTRIBUTORS;
use crate::seal::PrivateKey;
use crate::wire::{Response, VerifyResult, GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC};
use check::Checker;
use libp2p_identity::{Keypair, PeerId};
use net::{Address, Faults};
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use world::{Observer, World, REQUEST_TIMEOUT_MS, TICK_MS};

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
    /// Threshold mode: rounds with a beacon value, and the values the nodes came to hold (one
    /// per long-running node and round when every node has every round's).
    pub beacon_rounds: u32,
    pub beacon_held: u32,
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

/// The simulated mesh under its load.
pub struct Sim {
    world: World,
    load: Load,
}

/// The load a run puts on the world, and what it checks: the [`Observer`] of a [`Sim`].
struct Load {
    config: Config,
    mesh: Arc<MeshConfig>,
    /// The coordinator (the only generator in single mode): its events count for the round.
    generator: PeerId,
    generators: Vec<PeerId>,
    distributors: Vec<PeerId>,
    requesters: Vec<PeerId>,
    /// What each open session is for.
    purposes: BTreeMap<Address, Purpose>,
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
    report: Report,
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    Crash(PeerId),
    Restart(PeerId),
    Cut(PeerId),
    Heal(PeerId),
}

/// `inner` as node `id` runs it ([`pick::running`]): in threshold mode beside a beacon keeper
/// restored from the node's `records`, as a node restores it from its store.
fn running(
    id: PeerId,
    mesh: &Arc<MeshConfig>,
    inner: pick::Inner,
    records: &[Record],
) -> pick::Boxed {
    let restore = || {
        let mut entries = Vec::new();
        let mut held = Vec::new();
        for r in records {
            match r {
                Record::Beacon(e) => entries.push((**e).clone()),
                Record::Round { transcript, .. } => held.push(transcript.clone()),
                _ => {}
            }
        }
        Ok::<_, std::convert::Infallible>(threshold::Keeper::restore(mesh.clone(), entries, held))
    };
    match pick::running(id, mesh, inner, restore) {
        Ok(role) => role,
        Err(never) => match never {},
    }
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

/// The virtual time a run starts at.
const EPOCH_MS: Millis = 1_000_000_000;

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
        let mut world = World::new(mesh.clone(), seed, EPOCH_MS, config.faults.clone());
        for g in &generators {
            let key = PrivateKey::generate(config.rsa_bits, &mut world.rng)
                .map_err(|e| ConfigError::Key(e.to_string()))?;
            world.set_key(*g, Arc::new(key));
        }
        let mut load = Load {
            mesh: mesh.clone(),
            generator: generators[0],
            generators: generators.clone(),
            distributors: distributors.clone(),
            requesters,
            purposes: BTreeMap::new(),
            outages: Vec::new(),
            checker: Checker::default(),
            delivered_by: BTreeMap::new(),
            unavailable: BTreeMap::new(),
            sealed_at: BTreeMap::new(),
            max_unreachable: 0,
            report: Report {
                seed,
                faults: config.faults.to_string(),
                ..Default::default()
            },
            config,
        };
        for (g, identity) in generators.iter().zip(generator_keys) {
            let public = world.key(g).expect("just set").public().clone();
            let role = pick::generator(identity, mesh.clone(), public, pick::Restart::default())
                .map_err(|e| ConfigError::Mesh(e.to_string()))?;
            let role = running(*g, &mesh, role.into(), &[]);
            world.add(*g, role, &[GOSSIP_TOPIC, PHRASE_TOPIC], &mut load);
        }
        for d in &distributors {
            let role = pick::distributor(*d, mesh.clone(), Restored::default());
            world.add(
                *d,
                running(*d, &mesh, role, &[]),
                &DISTRIBUTOR_TOPICS,
                &mut load,
            );
        }
        for (i, c) in contributors.iter().enumerate() {
            let input = UserInput(i128::from(world.rng.next_u64() as i64));
            let client = ClientId(i as u32 + 1);
            let role = pick::contributor(client, Some(input), mesh.clone());
            world.add(
                *c,
                running(*c, &mesh, role.into(), &[]),
                &[GOSSIP_TOPIC],
                &mut load,
            );
        }
        Ok(Sim { world, load })
    }

    /// Runs until every round is done (or the time allowed runs out); the report.
    pub fn run_to_end(self) -> Report {
        let Sim {
            mut world,
            mut load,
        } = self;
        let started = std::time::Instant::now();
        let begin = world.now;
        let limit = begin + MAX_ROUND_MS * u64::from(load.config.rounds);
        while !load.done(&world) && world.now < limit {
            world.step(&mut load);
        }
        // Deliveries and handovers still under way when the last request was answered (one lost
        // near the end waits out its timeout, then goes again): a bounded drain, so that a sealed
        // round left undelivered is one the mesh could not deliver, not one the run cut short.
        // In threshold mode the drain also waits for every node's beacon value of every round.
        let drain_until = world.now + DRAIN_MS;
        while load.done(&world) && !load.settled() && world.now < drain_until {
            world.step(&mut load);
        }
        if load.config.threshold.is_some() && load.faultless() && !load.beacon_complete() {
            load.checker.violation(format!(
                "without faults, not every node came to hold every sealed round's beacon value \
                 ({} values held, {} rounds sealed, {} nodes)",
                load.checker.beacon_held(),
                load.checker.sealed.len(),
                load.long_running()
            ));
        }
        if !load.done(&world) {
            load.checker.violation(format!(
                "the run did not finish within {} s of virtual time ({} of {} rounds sealed, {} sessions open)",
                (limit - begin) / 1000,
                load.checker.sealed.len(),
                load.config.rounds,
                world.sessions_open()
            ));
        }
        let transcripts = load.transcripts(&world);
        load.checker
            .finish(&transcripts, load.config.threshold.is_none());
        let mut report = load.report;
        report.virtual_ms = world.now - begin;
        report.wall_ms = started.elapsed().as_millis();
        report.messages = world.net.sent;
        report.lost = world.net.lost;
        report.duplicated = world.net.duplicated;
        load.checker.fill(&mut report);
        report.trace = world.trace();
        report
    }
}

impl Observer for Load {
    fn judged(&mut self, _world: &mut World, _at: PeerId, _from: PeerId, verdict: &Verdict) {
        self.checker.rejected(verdict);
    }

    fn tick(&mut self, world: &mut World) {
        let now = world.now;
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
            self.round_delivered(world, RoundId(round));
        }
        let due: Vec<Outage> = self
            .outages
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, o)| *o)
            .collect();
        self.outages.retain(|(at, _)| *at > now);
        for outage in due {
            self.outage(world, outage);
        }
    }

    fn outgoing(&mut self, _world: &World, at: Address, action: &mut Action) -> bool {
        if let Action::Reply { response, .. } = action {
            if self.config.sabotage && at.peer == self.distributors[0] {
                if let Response::Verified(VerifyResult::Used) = response {
                    *response = Response::Verified(VerifyResult::Accepted);
                }
            }
        }
        true
    }

    fn event(&mut self, world: &mut World, at: Address, event: Event) {
        match &event {
            Event::RoundSealed { round, .. } if at.peer == self.generator => {
                self.checker.sealed.insert(round.0);
                self.sealed_at.insert(round.0, world.now);
            }
            Event::RoundFailed { round, .. } if at.peer == self.generator => {
                self.checker.failed.insert(round.0);
            }
            Event::BeaconValue { round, value, .. } => {
                self.checker.beacon(at.peer, *round, *value);
            }
            Event::RoundDeliveredAll { round } if self.generators.contains(&at.peer) => {
                self.delivered_by
                    .entry(round.0)
                    .or_default()
                    .insert(at.peer);
                self.maybe_delivered(world, *round);
            }
            // Threshold mode: a generator that never got a dealing of Q has no share to hand over
            // (the round is served by the others); it is done with the round.
            Event::ShareUnavailable { round, .. } if self.generators.contains(&at.peer) => {
                self.report.shares_unavailable += 1;
                self.unavailable.entry(round.0).or_default().insert(at.peer);
                self.maybe_delivered(world, *round);
            }
            _ => {}
        }
        if at.session == 0 {
            return;
        }
        let Some(purpose) = self.purposes.get(&at).copied() else {
            return;
        };
        if self.session_event(world, at, purpose, &event) {
            self.purposes.remove(&at);
            world.close_session(at);
        }
    }
}

impl Load {
    /// No message lost, duplicated, cut off or crashed.
    fn faultless(&self) -> bool {
        let f = &self.config.faults;
        f.loss == 0.0 && f.dup == 0.0 && !f.crash && !f.partition
    }

    /// Generators, distributors and contributors: the nodes that keep the beacon.
    fn long_running(&self) -> usize {
        self.generators.len() + self.distributors.len() + self.config.contributors as usize
    }

    fn beacon_complete(&self) -> bool {
        self.checker.beacon_complete(self.long_running())
    }

    /// Every sealed round delivered, and (threshold mode) its beacon value at every node.
    fn settled(&self) -> bool {
        self.checker.all_delivered() && (self.config.threshold.is_none() || self.beacon_complete())
    }

    fn done(&self, world: &World) -> bool {
        self.checker.sealed.len() + self.checker.failed.len() >= self.config.rounds as usize
            && self.checker.requested_all(self.config.rounds)
            && world.sessions_open() == 0
    }

    /// The transcripts the generator sealed, with its secrets, from its records.
    fn transcripts(&self, world: &World) -> Vec<(crate::round::Transcript, crate::round::Secret)> {
        world
            .records
            .get(&self.generator)
            .into_iter()
            .flatten()
            .filter_map(|r| match r {
                Record::Round { transcript, secret } => Some((transcript.clone(), secret.clone())),
                _ => None,
            })
            .collect()
    }

    fn outage(&mut self, world: &mut World, outage: Outage) {
        world.note_fault(&format!("{outage:?}"));
        let before = world.down.union(&world.cut).count();
        match outage {
            Outage::Crash(peer) => {
                world.crash(peer);
                self.report.crashes += 1;
            }
            Outage::Restart(peer) => {
                let records = world.records.get(&peer).cloned().unwrap_or_default();
                let role = pick::distributor(peer, self.mesh.clone(), Restored::replay(&records));
                let role = running(peer, &self.mesh, role, &records);
                world.add(peer, role, &DISTRIBUTOR_TOPICS, self);
            }
            Outage::Cut(peer) => {
                world.cut.insert(peer);
                self.report.partitions += 1;
            }
            Outage::Heal(peer) => {
                world.cut.remove(&peer);
            }
        }
        let after = world.down.union(&world.cut).count();
        self.max_unreachable = self.max_unreachable.max(before).max(after);
    }

    /// Delivered: every generator handed the round over, or has no share of it to hand over.
    fn maybe_delivered(&mut self, world: &mut World, round: RoundId) {
        let count = |m: &BTreeMap<u64, BTreeSet<PeerId>>| m.get(&round.0).map_or(0, |s| s.len());
        let done = count(&self.delivered_by) + count(&self.unavailable);
        if done >= self.generators.len() && self.checker.delivered.insert(round.0) {
            self.round_delivered(world, round);
        }
    }

    /// What a session's event means for its purpose; whether the session is finished.
    fn session_event(
        &mut self,
        world: &mut World,
        at: Address,
        purpose: Purpose,
        event: &Event,
    ) -> bool {
        match (event, purpose) {
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
                self.open_session(world, at.peer, Purpose::Verify(id), role);
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
                self.open_session(world, at.peer, Purpose::Verify(id), role);
                true
            }
            (
                Event::VerifyAnswered { result, .. } | Event::ThresholdVerified { result, .. },
                Purpose::Verify(id),
            ) => {
                self.checker.verified(id, *result, false);
                let role = self.presenter(at.peer, id);
                self.open_session(world, at.peer, Purpose::Replay(id), role);
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
                    // Outages are allowed here (counted in max_unreachable); lost or doubled
                    // messages are not. Not `Load::faultless`, which allows neither.
                    let lossless = self.config.faults.loss == 0.0 && self.config.faults.dup == 0.0;
                    let spare = (params.n - params.t) as usize;
                    if lossless && self.max_unreachable <= spare {
                        self.checker.violation(format!(
                            "quorum unavailable with at most {} of {} distributors ever unreachable: {reason}",
                            self.max_unreachable, params.n
                        ));
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// A round reached every distributor: its requests go out, and its faults are scheduled.
    fn round_delivered(&mut self, world: &mut World, round: RoundId) {
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
            self.open_session(world, requester, Purpose::Request, role);
        }
        let victim = self.distributors[(round.0 as usize) % d];
        // Within the round trips of the requests just sent, so the outage meets them.
        let at = world.now + 1 + world.rng.next_u64() % 80;
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

    fn open_session(
        &mut self,
        world: &mut World,
        peer: PeerId,
        purpose: Purpose,
        role: Box<dyn Role + Send>,
    ) {
        self.purposes.insert(world.next_session(peer), purpose);
        world.open_session(peer, role, self);
    }
}
