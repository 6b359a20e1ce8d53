//! Threshold mode's roles wired together by a deterministic simulator: n generators with their own
//! RSA keys, n distributors, contributors and requesters; no network, no clock, no disk. A hook
//! lets a test tamper with what a node publishes or answers. Shared by `threshold_roles.rs` and
//! `threshold_attacks.rs` (each uses a part of it).
#![allow(dead_code)]

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::mesh::{MeshConfig, Threshold};
use otpmesh_protocol::phrase::{ClientId, UserInput};
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::{
    self, threshold, Action, Distributor, Event, InboundId, Record, Role, Tag, Verdict,
};
use otpmesh_protocol::round::{RoundId, Transcript};
use otpmesh_protocol::seal::PrivateKey;
use otpmesh_protocol::threshold::Params;
use otpmesh_protocol::wire::{Gossip, Request, Response, VerifyResult};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

pub const N: usize = 5;
pub const T: u32 = 3;

pub fn keys() -> &'static [PrivateKey] {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..N as u64)
            .map(|i| PrivateKey::generate(2048, &mut ChaCha20Rng::seed_from_u64(100 + i)).unwrap())
            .collect()
    })
}

pub fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

pub enum Msg {
    Gossip(PeerId, Gossip),
    Request(PeerId, PeerId, Tag, Request),
    Response(PeerId, PeerId, Tag, Result<Response, String>),
}

/// Sees (and may change) every message a node sends; false drops it.
pub type Hook = Box<dyn FnMut(&PeerId, &mut Msg) -> bool>;

pub struct Sim {
    pub mesh: Arc<MeshConfig>,
    pub roles: HashMap<PeerId, Box<dyn Role + Send>>,
    /// Every role runs with a beacon keeper beside it.
    pub beacon: bool,
    pub keys: HashMap<PeerId, &'static PrivateKey>,
    pub order: Vec<PeerId>,
    pub down: HashSet<PeerId>,
    pub now: u64,
    pub rng: ChaCha20Rng,
    pub queue: VecDeque<Msg>,
    pub pending: HashMap<(PeerId, u64), (PeerId, Tag)>,
    pub next_inbound: u64,
    pub records: HashMap<PeerId, Vec<Record>>,
    pub events: Vec<(PeerId, Event)>,
    pub hook: Option<Hook>,
    /// (recipient, gossip kind) pairs that are lost on the way.
    pub lost: HashSet<(PeerId, &'static str)>,
    pub distributors: Vec<PeerId>,
    pub requesters: Vec<PeerId>,
    /// Every gossip message published: (time, author, kind).
    pub published: Vec<(u64, PeerId, &'static str)>,
    /// The generators' identity keys (a test may play a corrupt coordinator).
    pub identities: HashMap<PeerId, Keypair>,
}

impl Sim {
    pub fn new(contributors: u32) -> Sim {
        Sim::build(contributors, false)
    }

    pub fn build(contributors: u32, beacon: bool) -> Sim {
        Sim::with(contributors, beacon, |_| {})
    }

    /// A mesh of `contributors`, its settings changed by `tweak` before it is validated.
    pub fn with(contributors: u32, beacon: bool, tweak: impl FnOnce(&mut MeshConfig)) -> Sim {
        let identities: Vec<Keypair> = (0..N).map(|_| Keypair::generate_ed25519()).collect();
        let generators: Vec<PeerId> = identities.iter().map(|k| k.public().to_peer_id()).collect();
        let distributors: Vec<PeerId> = (0..N).map(|_| peer()).collect();
        let requesters: Vec<PeerId> = (0..2).map(|_| peer()).collect();
        let contributor_ids: Vec<PeerId> = (0..contributors).map(|_| peer()).collect();
        let mut mesh =
            MeshConfig::listing(&generators, &distributors, &requesters, &contributor_ids);
        mesh.settings.deadline_ms = 10_000;
        mesh.settings.complaint_ms = 2_000;
        mesh.settings.round_interval_ms = 60_000;
        mesh.settings.threshold = Some(Threshold(Params::new(T, N as u32).unwrap()));
        tweak(&mut mesh);
        mesh.validate().unwrap();
        let mesh = Arc::new(mesh);
        let mut sim = Sim {
            mesh: mesh.clone(),
            roles: HashMap::new(),
            beacon,
            keys: HashMap::new(),
            order: Vec::new(),
            down: HashSet::new(),
            now: 1_700_000_000_000,
            rng: ChaCha20Rng::seed_from_u64(7),
            queue: VecDeque::new(),
            pending: HashMap::new(),
            next_inbound: 0,
            records: HashMap::new(),
            events: Vec::new(),
            hook: None,
            lost: HashSet::new(),
            distributors: distributors.clone(),
            requesters,
            published: Vec::new(),
            identities: identities
                .iter()
                .map(|k| (k.public().to_peer_id(), k.clone()))
                .collect(),
        };
        for (i, g) in generators.iter().enumerate() {
            sim.keys.insert(*g, &keys()[i]);
            let identity = identities[i].clone();
            let role = threshold::Generator::new(
                identity,
                mesh.clone(),
                keys()[i].public().clone(),
                None,
                None,
            )
            .unwrap();
            sim.add(*g, Box::new(role));
        }
        for d in &distributors {
            let role = Distributor::new(*d, mesh.clone(), Restored::default());
            sim.add(*d, Box::new(role));
        }
        for (i, c) in contributor_ids.iter().enumerate() {
            let input = Some(UserInput(100 + i as i128));
            let role =
                threshold::Contributor::new(ClientId(i as u32 + 1), input, mesh.clone()).unwrap();
            sim.add(*c, Box::new(role));
        }
        sim
    }

    pub fn add(&mut self, id: PeerId, mut role: Box<dyn Role + Send>) {
        if self.beacon {
            let keeper = threshold::Keeper::restore(self.mesh.clone(), vec![], vec![]);
            role = Box::new(threshold::Beaconed::new(id, role, keeper));
        }
        let actions = role.start(self.now, &mut self.rng);
        if !self.order.contains(&id) {
            self.order.push(id);
        }
        self.roles.insert(id, role);
        self.run(id, actions);
    }

    pub fn push(&mut self, at: PeerId, mut msg: Msg) {
        if let Some(hook) = &mut self.hook {
            if !hook(&at, &mut msg) {
                return;
            }
        }
        self.queue.push_back(msg);
    }

    pub fn run(&mut self, at: PeerId, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Publish(m) => {
                    self.published.push((self.now, at, m.kind()));
                    self.push(at, Msg::Gossip(at, m))
                }
                Action::Send { peer, tag, request } => {
                    self.push(at, Msg::Request(at, peer, tag, request))
                }
                Action::Reply { to, response } => {
                    let (peer, tag) = self.pending.remove(&(at, to.0)).expect("pending request");
                    self.push(at, Msg::Response(at, peer, tag, Ok(response)));
                }
                Action::Persist(r) => self.records.entry(at).or_default().push(r),
                Action::Decrypt(job) => {
                    assert!(job.share.is_some(), "threshold generators open shares only");
                    let opened = job.open(self.keys[&at], &mut self.rng);
                    let role = self.roles.get_mut(&at).unwrap();
                    let actions = role.decrypted(self.now, job, opened);
                    self.run(at, actions);
                }
                Action::Emit(e) => self.events.push((at, e)),
                Action::AskInput { .. } => panic!("inputs are fixed"),
            }
        }
    }

    pub fn settle(&mut self) {
        while let Some(msg) = self.queue.pop_front() {
            match msg {
                Msg::Gossip(from, message) => {
                    if self.down.contains(&from) {
                        continue;
                    }
                    for id in self.order.clone() {
                        if id == from
                            || self.down.contains(&id)
                            || self.lost.contains(&(id, message.kind()))
                        {
                            continue;
                        }
                        if role::check_gossip(&self.mesh, &from, &message) != Verdict::Accept {
                            continue;
                        }
                        let role = self.roles.get_mut(&id).unwrap();
                        let (_, actions) = role.gossip(self.now, from, &message, &mut self.rng);
                        self.run(id, actions);
                    }
                }
                Msg::Request(from, to, tag, request) => {
                    if self.down.contains(&to) || !self.roles.contains_key(&to) {
                        let refused =
                            Msg::Response(to, from, tag, Err("connection refused".into()));
                        self.queue.push_back(refused);
                        continue;
                    }
                    self.next_inbound += 1;
                    self.pending.insert((to, self.next_inbound), (from, tag));
                    let id = InboundId(self.next_inbound);
                    let role = self.roles.get_mut(&to).unwrap();
                    let actions = role.request(self.now, from, id, request, &mut self.rng);
                    self.run(to, actions);
                }
                Msg::Response(from, to, tag, response) => {
                    if self.down.contains(&to) {
                        continue;
                    }
                    let role = self.roles.get_mut(&to).unwrap();
                    let actions = role.response(self.now, from, tag, response, &mut self.rng);
                    self.run(to, actions);
                }
            }
        }
    }

    pub fn advance(&mut self, ms: u64) {
        for _ in 0..(ms / 100) {
            self.now += 100;
            for id in self.order.clone() {
                if self.down.contains(&id) {
                    continue;
                }
                let actions = self
                    .roles
                    .get_mut(&id)
                    .unwrap()
                    .tick(self.now, &mut self.rng);
                self.run(id, actions);
            }
            self.settle();
        }
    }

    pub fn find<U>(&self, pick: impl Fn(&PeerId, &Event) -> Option<U>) -> Vec<U> {
        self.events.iter().filter_map(|(p, e)| pick(p, e)).collect()
    }

    /// Runs until the first round is sealed and stored by every live distributor.
    pub fn seal_first_round(&mut self) -> Transcript {
        for _ in 0..200 {
            self.advance(100);
            let stored = self
                .find(|p, e| matches!(e, Event::RoundStored { .. }).then_some(*p))
                .len();
            let live = self
                .distributors
                .iter()
                .filter(|d| !self.down.contains(d))
                .count();
            if stored >= live {
                break;
            }
        }
        self.records[&self
            .distributors
            .iter()
            .find(|d| !self.down.contains(d))
            .copied()
            .unwrap()]
            .iter()
            .find_map(|r| match r {
                Record::Round { transcript, .. } => Some(transcript.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a distributor stored the round: {:?}", self.events))
    }

    /// `requester` asks `distributors` for one OTP: (round, counter, otp, bad) or the failure.
    pub fn issue(
        &mut self,
        requester: PeerId,
        distributors: Vec<PeerId>,
    ) -> Result<(RoundId, u64, String, Vec<PeerId>), String> {
        self.events.clear();
        let role = threshold::Requester::issue_once(requester, self.mesh.clone(), distributors);
        self.add(requester, Box::new(role));
        self.settle();
        let out = self.find(|p, e| match e {
            Event::ThresholdOtpReceived {
                round,
                counter,
                otp,
                bad,
                ..
            } if *p == requester => Some(Ok((*round, *counter, otp.clone(), bad.clone()))),
            Event::RequestFailed { reason, .. } if *p == requester => Some(Err(reason.clone())),
            _ => None,
        });
        assert_eq!(out.len(), 1, "one answer: {:?}", self.events);
        out.into_iter().next().unwrap()
    }

    pub fn verify(
        &mut self,
        requester: PeerId,
        distributors: Vec<PeerId>,
        round: RoundId,
        counter: u64,
        code: &str,
    ) -> Result<VerifyResult, String> {
        self.events.clear();
        let role = threshold::Requester::verify_once(
            requester,
            self.mesh.clone(),
            distributors,
            round,
            counter,
            code.into(),
        );
        self.add(requester, Box::new(role));
        self.settle();
        let out = self.find(|p, e| match e {
            Event::ThresholdVerified { result, .. } if *p == requester => Some(Ok(*result)),
            Event::RequestFailed { reason, .. } if *p == requester => Some(Err(reason.clone())),
            _ => None,
        });
        assert_eq!(out.len(), 1, "one answer: {:?}", self.events);
        out.into_iter().next().unwrap()
    }

    pub fn pick(&self, list: &[PeerId], which: &[usize]) -> Vec<PeerId> {
        which.iter().map(|i| list[*i]).collect()
    }
}
