//! Threshold mode's roles on the simulator's world (`otpmesh_protocol::sim::World`) with no
//! latency: n generators with their own RSA keys, n distributors, contributors and requesters;
//! no network, no clock, no disk. A hook lets a test tamper with what a node publishes or
//! answers, and `lost` loses one kind of gossip on its way to one node. Shared by `threshold_roles.rs` and
//! `threshold_attacks.rs` (each uses a part of it).
#![allow(dead_code)]

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::mesh::{MeshConfig, Threshold};
use otpmesh_protocol::phrase::{ClientId, UserInput};
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::{pick, threshold, Action, Event, Record, Role, Tag};
use otpmesh_protocol::round::{RoundId, Transcript};
use otpmesh_protocol::seal::PrivateKey;
use otpmesh_protocol::sim::net::{Address, Message};
use otpmesh_protocol::sim::{Observer, World};
use otpmesh_protocol::threshold::Params;
use otpmesh_protocol::wire::{
    Gossip, Request, Response, VerifyResult, GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

pub const N: usize = 5;
pub const T: u32 = 3;

pub fn keys() -> &'static [Arc<PrivateKey>] {
    static KEYS: OnceLock<Vec<Arc<PrivateKey>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..N as u64)
            .map(|i| {
                let mut rng = ChaCha20Rng::seed_from_u64(100 + i);
                Arc::new(PrivateKey::generate(2048, &mut rng).unwrap())
            })
            .collect()
    })
}

pub fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

/// A message as the test's hook sees it: (author, …) for gossip, (asker, asked, tag, …) for a
/// request and (answerer, asker, tag, …) for a response.
pub enum Msg {
    Gossip(PeerId, Gossip),
    Request(PeerId, PeerId, Tag, Request),
    Response(PeerId, PeerId, Tag, Result<Response, String>),
}

/// Sees (and may change) every message a node sends; false drops it.
pub type Hook = Box<dyn FnMut(&PeerId, &mut Msg) -> bool>;

/// What the test watches and where it tampers: the world's observer.
#[derive(Default)]
pub struct Log {
    pub events: Vec<(PeerId, Event)>,
    /// Every gossip message published: (time, author, kind).
    pub published: Vec<(u64, PeerId, &'static str)>,
    pub hook: Option<Hook>,
    /// (recipient, gossip kind) pairs that are lost on the way.
    pub lost: HashSet<(PeerId, &'static str)>,
}

impl Observer for Log {
    fn event(&mut self, _world: &mut World, at: Address, event: Event) {
        self.events.push((at.peer, event));
    }

    fn outgoing(&mut self, world: &World, at: Address, action: &mut Action) -> bool {
        if let Action::Publish(m) = action {
            self.published.push((world.now, at.peer, m.kind()));
        }
        let Some(hook) = &mut self.hook else {
            return true;
        };
        let mut msg = match action {
            Action::Publish(m) => Msg::Gossip(at.peer, m.clone()),
            Action::Send { peer, tag, request } => {
                Msg::Request(at.peer, *peer, *tag, request.clone())
            }
            Action::Reply { to, response } => match world.asker(&at.peer, *to) {
                Some((asker, tag)) => Msg::Response(at.peer, asker.peer, tag, Ok(response.clone())),
                None => return true,
            },
            _ => return true,
        };
        if !hook(&at.peer, &mut msg) {
            return false;
        }
        match (action, msg) {
            (Action::Publish(m), Msg::Gossip(_, changed)) => *m = changed,
            (Action::Send { request, .. }, Msg::Request(_, _, _, changed)) => *request = changed,
            (Action::Reply { response, .. }, Msg::Response(_, _, _, changed)) => match changed {
                Ok(changed) => *response = changed,
                Err(_) => return false,
            },
            _ => unreachable!("the hook keeps the message's kind"),
        }
        true
    }

    fn incoming(&mut self, _from: Address, to: Address, message: &Message) -> bool {
        !self.lost.contains(&(to.peer, message.kind()))
    }
}

/// The threshold mesh on the simulator's world, with no latency: what a role sends arrives at
/// once, in order; time moves only when the test says so.
pub struct Sim {
    pub mesh: Arc<MeshConfig>,
    pub world: World,
    pub log: Log,
    /// Every role runs with a beacon keeper beside it.
    pub beacon: bool,
    /// Every node, in the order added.
    pub order: Vec<PeerId>,
    pub distributors: Vec<PeerId>,
    pub requesters: Vec<PeerId>,
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
            world: World::instant(mesh.clone(), 7, 1_700_000_000_000),
            log: Log::default(),
            beacon,
            order: Vec::new(),
            distributors: distributors.clone(),
            requesters,
            identities: identities
                .iter()
                .map(|k| (k.public().to_peer_id(), k.clone()))
                .collect(),
        };
        for (i, g) in generators.iter().enumerate() {
            sim.world.set_key(*g, keys()[i].clone());
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
            sim.add_inner(*d, pick::distributor(*d, mesh.clone(), Restored::default()));
        }
        for (i, c) in contributor_ids.iter().enumerate() {
            let input = Some(UserInput(100 + i as i128));
            let role =
                threshold::Contributor::new(ClientId(i as u32 + 1), input, mesh.clone()).unwrap();
            sim.add(*c, Box::new(role));
        }
        sim
    }

    /// Starts (or restarts) `role` as node `id`, on every topic (each role ignores what is not
    /// its own).
    pub fn add(&mut self, id: PeerId, role: Box<dyn Role + Send>) {
        self.add_inner(id, role.into());
    }

    /// [`Sim::add`] for a role the beacon keeper may take partials from (a distributor).
    pub fn add_inner(&mut self, id: PeerId, inner: pick::Inner) {
        let role = match self.beacon {
            true => {
                let keeper = threshold::Keeper::restore(self.mesh.clone(), vec![], vec![]);
                Box::new(threshold::Beaconed::new(id, inner, keeper))
            }
            false => inner.into_role(),
        };
        if !self.order.contains(&id) {
            self.order.push(id);
        }
        let topics = [GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC];
        self.world.add(id, role, &topics, &mut self.log);
    }

    /// Carries out `actions` as node `at`'s (what a test had a role return).
    pub fn run(&mut self, at: PeerId, actions: Vec<Action>) {
        self.world.input(at, &mut self.log, |_, _, _| actions);
    }

    /// Calls `f` on node `at`'s role, carrying out nothing it returns.
    pub fn on<R>(
        &mut self,
        at: PeerId,
        f: impl FnOnce(&mut (dyn Role + Send), u64, &mut ChaCha20Rng) -> R,
    ) -> R {
        self.world.with_role(&at, f).expect("a node")
    }

    pub fn settle(&mut self) {
        self.world.settle(&mut self.log);
    }

    /// Moves time forward by `ms`, every tick's messages delivered before the next.
    pub fn advance(&mut self, ms: u64) {
        self.settle();
        let end = self.world.now + ms;
        while self.world.next_at() <= end {
            self.world.step(&mut self.log);
        }
    }

    pub fn find<U>(&self, pick: impl Fn(&PeerId, &Event) -> Option<U>) -> Vec<U> {
        self.log
            .events
            .iter()
            .filter_map(|(p, e)| pick(p, e))
            .collect()
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
                .filter(|d| !self.world.down.contains(d))
                .count();
            if stored >= live {
                break;
            }
        }
        self.world.records[&self
            .distributors
            .iter()
            .find(|d| !self.world.down.contains(d))
            .copied()
            .unwrap()]
            .iter()
            .find_map(|r| match r {
                Record::Round { transcript, .. } => Some(transcript.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a distributor stored the round: {:?}", self.log.events))
    }

    /// `requester` asks `distributors` for one OTP: (round, counter, otp, bad) or the failure.
    pub fn issue(
        &mut self,
        requester: PeerId,
        distributors: Vec<PeerId>,
    ) -> Result<(RoundId, u64, String, Vec<PeerId>), String> {
        let role = threshold::Requester::issue_once(requester, self.mesh.clone(), distributors);
        self.session(requester, role, |e| match e {
            Event::ThresholdOtpReceived {
                round,
                counter,
                otp,
                bad,
                ..
            } => Some(Ok((*round, *counter, otp.clone(), bad.clone()))),
            Event::RequestFailed { reason, .. } => Some(Err(reason.clone())),
            _ => None,
        })
    }

    pub fn verify(
        &mut self,
        requester: PeerId,
        distributors: Vec<PeerId>,
        round: RoundId,
        counter: u64,
        code: &str,
    ) -> Result<VerifyResult, String> {
        let role = threshold::Requester::verify_once(
            requester,
            self.mesh.clone(),
            distributors,
            round,
            counter,
            code.into(),
        );
        self.session(requester, role, |e| match e {
            Event::ThresholdVerified { result, .. } => Some(Ok(*result)),
            Event::RequestFailed { reason, .. } => Some(Err(reason.clone())),
            _ => None,
        })
    }

    /// Runs `role` as a session of `requester` until the world settles: the one answer `pick`
    /// finds among the requester's events.
    fn session<U>(
        &mut self,
        requester: PeerId,
        role: impl Role + Send + 'static,
        pick: impl Fn(&Event) -> Option<U>,
    ) -> U {
        self.log.events.clear();
        let session = self
            .world
            .open_session(requester, Box::new(role), &mut self.log);
        self.settle();
        self.world.close_session(session);
        let out = self.find(|p, e| if *p == requester { pick(e) } else { None });
        assert_eq!(out.len(), 1, "one answer: {:?}", self.log.events);
        out.into_iter().next().unwrap()
    }

    pub fn pick(&self, list: &[PeerId], which: &[usize]) -> Vec<PeerId> {
        which.iter().map(|i| list[*i]).collect()
    }
}
