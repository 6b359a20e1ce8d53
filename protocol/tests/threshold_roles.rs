//! Threshold mode's roles wired together by a deterministic simulator: n generators with their own
//! RSA keys, n distributors, contributors and requesters; no network, no clock, no disk. A hook
//! lets a test tamper with what a node publishes or answers.

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::mesh::{Contributor as Listed, Member, MeshConfig, Threshold};
use otpmesh_protocol::phrase::{ClientId, UserInput};
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::{
    self, threshold, Action, Distributor, Event, InboundId, Record, Role, Tag, Verdict,
};
use otpmesh_protocol::round::{RoundId, Transcript};
use otpmesh_protocol::seal::PrivateKey;
use otpmesh_protocol::threshold::eval::{self, KeyShare};
use otpmesh_protocol::threshold::{counter, Index, Params};
use otpmesh_protocol::wire::{Gossip, Request, Response, VerifyResult};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

const N: usize = 5;
const T: u32 = 3;

fn keys() -> &'static [PrivateKey] {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..N as u64)
            .map(|i| PrivateKey::generate(2048, &mut ChaCha20Rng::seed_from_u64(100 + i)).unwrap())
            .collect()
    })
}

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

enum Msg {
    Gossip(PeerId, Gossip),
    Request(PeerId, PeerId, Tag, Request),
    Response(PeerId, PeerId, Tag, Result<Response, String>),
}

/// Sees (and may change) every message a node sends; false drops it.
type Hook = Box<dyn FnMut(&PeerId, &mut Msg) -> bool>;

struct Sim {
    mesh: Arc<MeshConfig>,
    roles: HashMap<PeerId, Box<dyn Role + Send>>,
    /// Every role runs with a beacon keeper beside it.
    beacon: bool,
    keys: HashMap<PeerId, &'static PrivateKey>,
    order: Vec<PeerId>,
    down: HashSet<PeerId>,
    now: u64,
    rng: ChaCha20Rng,
    queue: VecDeque<Msg>,
    pending: HashMap<(PeerId, u64), (PeerId, Tag)>,
    next_inbound: u64,
    records: HashMap<PeerId, Vec<Record>>,
    events: Vec<(PeerId, Event)>,
    hook: Option<Hook>,
    /// (recipient, gossip kind) pairs that are lost on the way.
    lost: HashSet<(PeerId, &'static str)>,
    distributors: Vec<PeerId>,
    requesters: Vec<PeerId>,
}

impl Sim {
    fn new(contributors: u32) -> Sim {
        Sim::build(contributors, false)
    }

    fn build(contributors: u32, beacon: bool) -> Sim {
        let generators: Vec<PeerId> = (0..N).map(|_| peer()).collect();
        let distributors: Vec<PeerId> = (0..N).map(|_| peer()).collect();
        let requesters: Vec<PeerId> = (0..2).map(|_| peer()).collect();
        let contributor_ids: Vec<PeerId> = (0..contributors).map(|_| peer()).collect();
        let member = |p: &PeerId| Member {
            peer_id: *p,
            addrs: vec![],
        };
        let mut mesh = MeshConfig {
            generators: generators.iter().map(member).collect(),
            distributors: distributors.iter().map(member).collect(),
            requesters: requesters.iter().map(member).collect(),
            contributors: contributor_ids
                .iter()
                .enumerate()
                .map(|(i, p)| Listed {
                    client_id: ClientId(i as u32 + 1),
                    peer_id: *p,
                    addrs: vec![],
                })
                .collect(),
            ..Default::default()
        };
        mesh.settings.deadline_ms = 10_000;
        mesh.settings.complaint_ms = 2_000;
        mesh.settings.round_interval_ms = 60_000;
        mesh.settings.threshold = Some(Threshold(Params::new(T, N as u32).unwrap()));
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
        };
        for (i, g) in generators.iter().enumerate() {
            sim.keys.insert(*g, &keys()[i]);
            let role =
                threshold::Generator::new(*g, mesh.clone(), keys()[i].public().clone(), None, None)
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

    fn add(&mut self, id: PeerId, mut role: Box<dyn Role + Send>) {
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

    fn push(&mut self, at: PeerId, mut msg: Msg) {
        if let Some(hook) = &mut self.hook {
            if !hook(&at, &mut msg) {
                return;
            }
        }
        self.queue.push_back(msg);
    }

    fn run(&mut self, at: PeerId, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Publish(m) => self.push(at, Msg::Gossip(at, m)),
                Action::Send { peer, tag, request } => {
                    self.push(at, Msg::Request(at, peer, tag, request))
                }
                Action::Reply { to, response } => {
                    let (peer, tag) = self.pending.remove(&(at, to.0)).expect("pending request");
                    self.push(at, Msg::Response(at, peer, tag, Ok(response)));
                }
                Action::Persist(r) => self.records.entry(at).or_default().push(r),
                Action::Decrypt(job) => {
                    let index = job.share.expect("threshold generators open shares only");
                    let share = self.keys[&at]
                        .open_share(job.round, job.client, index, &job.ciphertext, &mut self.rng)
                        .ok();
                    let role = self.roles.get_mut(&at).unwrap();
                    let actions = role.share_decrypted(self.now, job, share);
                    self.run(at, actions);
                }
                Action::Emit(e) => self.events.push((at, e)),
                Action::AskInput { .. } => panic!("inputs are fixed"),
            }
        }
    }

    fn settle(&mut self) {
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

    fn advance(&mut self, ms: u64) {
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

    fn find<U>(&self, pick: impl Fn(&PeerId, &Event) -> Option<U>) -> Vec<U> {
        self.events.iter().filter_map(|(p, e)| pick(p, e)).collect()
    }

    /// Runs until the first round is sealed and stored by every live distributor.
    fn seal_first_round(&mut self) -> Transcript {
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
            .expect("a distributor stored the round")
    }

    /// `requester` asks `distributors` for one OTP: (round, counter, otp, bad) or the failure.
    fn issue(
        &mut self,
        requester: PeerId,
        distributors: Vec<PeerId>,
    ) -> Result<(RoundId, u64, String, Vec<PeerId>), String> {
        self.events.clear();
        let role = threshold::Requester::issue_once(requester, distributors);
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

    fn verify(
        &mut self,
        requester: PeerId,
        distributors: Vec<PeerId>,
        round: RoundId,
        counter: u64,
        code: &str,
    ) -> Result<VerifyResult, String> {
        self.events.clear();
        let role =
            threshold::Requester::verify_once(requester, distributors, round, counter, code.into());
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

    fn pick(&self, list: &[PeerId], which: &[usize]) -> Vec<PeerId> {
        which.iter().map(|i| list[*i]).collect()
    }
}

#[test]
fn a_round_seals_and_an_otp_issued_by_one_quorum_verifies_once_through_another() {
    let mut sim = Sim::new(4);
    let t = sim.seal_first_round();
    let key = t.threshold.as_ref().expect("a threshold transcript");
    assert_eq!(key.params, Params::new(T, N as u32).unwrap());
    assert_eq!(t.clients(), (1..=4).map(ClientId).collect::<Vec<_>>());
    let held = sim.find(|_, e| matches!(e, Event::ShareHeld { .. }).then_some(()));
    assert_eq!(held.len(), N, "every generator holds a share");

    let alice = sim.requesters[0];
    let everyone = sim.distributors.clone();
    let (round, counter, otp, bad) = sim.issue(alice, everyone.clone()).unwrap();
    assert_eq!((round, bad.len()), (t.round, 0));
    assert_eq!(otp.len(), 8);

    // The same x combined by two disjoint-but-for-one quorums: the verification partials of
    // {1,2,3} and {3,4,5} give one OTP (and the OTP the requester got).
    let (d, quorum_a, quorum_b) = (&sim.distributors.clone(), [0, 1, 2], [2, 3, 4]);
    for i in [3, 4] {
        sim.down.insert(d[i]);
    }
    let first = sim.verify(alice, sim.pick(d, &quorum_a), round, counter, &otp);
    assert_eq!(first, Ok(VerifyResult::Accepted));
    sim.down.clear();
    for i in [0, 1] {
        sim.down.insert(d[i]);
    }
    let again = sim.verify(alice, sim.pick(d, &quorum_b), round, counter, &otp);
    assert_eq!(
        again,
        Ok(VerifyResult::Used),
        "a different quorum sees it used"
    );
    sim.down.clear();
    let everyone_again = sim.verify(alice, everyone, round, counter, &otp);
    assert_eq!(everyone_again, Ok(VerifyResult::Used));
    let _ = quorum_b;
}

#[test]
fn two_distributors_down_still_issue_and_a_third_leaves_the_quorum_unavailable() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    sim.down.insert(d[1]);
    sim.down.insert(d[3]);
    let (round, counter, otp, _) = sim.issue(alice, d.clone()).expect("3 of 5 suffice");
    let wrong = if otp.starts_with('0') { "1" } else { "0" }.repeat(otp.len());
    assert_eq!(
        sim.verify(alice, d.clone(), round, counter, &wrong),
        Ok(VerifyResult::Wrong),
        "a wrong code is wrong"
    );
    assert_eq!(
        sim.verify(alice, d.clone(), round, counter, &otp),
        Ok(VerifyResult::Used),
        "and a wrong guess spends the OTP: one attempt per OTP"
    );
    sim.down.insert(d[4]);
    let failed = sim.issue(alice, d).unwrap_err();
    assert!(failed.starts_with("quorum unavailable"), "{failed}");
    assert!(failed.contains("2 of 5"), "{failed}");
}

#[test]
fn a_tampered_partial_is_skipped_and_its_distributor_named() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    let liar = d[2];
    sim.hook = Some(Box::new(move |at, msg| {
        if let Msg::Response(_, _, _, Ok(Response::Partial(g))) = msg {
            if *at == liar {
                g.masked_y[0] ^= 1;
            }
        }
        true
    }));
    // Only the liar and two honest ones: the honest two are too few.
    let (a, b) = (d[0], d[1]);
    let failed = sim.issue(alice, vec![a, liar, b]).unwrap_err();
    assert!(failed.starts_with("quorum unavailable"), "{failed}");
    let (round, counter, otp, bad) = sim.issue(alice, d.clone()).unwrap();
    assert_eq!(bad, vec![liar], "the liar is named");
    sim.hook = None;
    assert_eq!(
        sim.verify(alice, d, round, counter, &otp),
        Ok(VerifyResult::Accepted),
        "the OTP combined without the liar is the true one"
    );
}

/// Replaces client 2's share for generator 2 with a share of another polynomial; with `silent`,
/// client 2 never answers the complaint.
fn corrupt_share_for_generator_2(sim: &mut Sim, silent: bool) {
    let generator_2_key = keys()[1].public().clone();
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    sim.hook = Some(Box::new(move |_, msg| {
        if let Msg::Gossip(_, Gossip::Deal(deal)) = msg {
            if deal.client == ClientId(2) {
                let bogus = curve25519_dalek::scalar::Scalar::from(12345u64).to_bytes();
                let sealed = generator_2_key
                    .seal_share(deal.round, deal.client, Index(2), &bogus, &mut rng)
                    .unwrap();
                deal.shares[1] = serde_bytes::ByteBuf::from(sealed);
            }
        }
        !(silent && matches!(msg, Msg::Gossip(_, Gossip::Justification(_))))
    }));
}

#[test]
fn an_inconsistent_share_is_complained_of_and_an_unanswered_dealing_left_out() {
    let mut sim = Sim::new(4);
    corrupt_share_for_generator_2(&mut sim, true);
    let t = sim.seal_first_round();
    let complaints = sim.find(|_, e| match e {
        Event::Complained { index, against, .. } => Some((*index, against.clone())),
        _ => None,
    });
    assert_eq!(
        complaints,
        vec![(2, vec![ClientId(2)])],
        "generator 2 names client 2"
    );
    let excluded = sim.find(|_, e| match e {
        Event::DealingExcluded { client, .. } => Some(*client),
        _ => None,
    });
    assert_eq!(excluded, vec![ClientId(2)]);
    assert_eq!(t.clients(), vec![ClientId(1), ClientId(3), ClientId(4)]);
    let held = sim.find(|_, e| matches!(e, Event::ShareHeld { .. }).then_some(()));
    assert_eq!(
        held.len(),
        N,
        "generator 2 takes part without the bad dealing"
    );
    let alice = sim.requesters[0];
    let d = sim.distributors.clone();
    let (round, counter, otp, bad) = sim.issue(alice, d.clone()).unwrap();
    assert!(bad.is_empty());
    assert_eq!(
        sim.verify(alice, d, round, counter, &otp),
        Ok(VerifyResult::Accepted)
    );
}

#[test]
fn an_answered_complaint_keeps_the_dealing() {
    let mut sim = Sim::new(4);
    corrupt_share_for_generator_2(&mut sim, false);
    let t = sim.seal_first_round();
    let answered = sim.find(|_, e| match e {
        Event::ComplaintAnswered { client, index, .. } => Some((*client, *index)),
        _ => None,
    });
    assert_eq!(answered, vec![(ClientId(2), 2)]);
    assert_eq!(
        t.clients().len(),
        4,
        "the published share resolved the complaint"
    );
    let held = sim.find(|_, e| matches!(e, Event::ShareHeld { .. }).then_some(()));
    assert_eq!(held.len(), N);
}

#[test]
fn one_distributors_whole_state_cannot_compute_an_otp() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    let (round, counter, otp, _) = sim.issue(alice, d.clone()).unwrap();
    // Everything distributor 1 stored, and everything it could learn from its records.
    let records = sim.records[&d[0]].clone();
    let (transcript, share) = records
        .iter()
        .find_map(|r| match r {
            Record::Round { transcript, secret } => Some((transcript.clone(), secret.clone())),
            _ => None,
        })
        .unwrap();
    let dump = format!("{records:?}");
    assert!(!dump.contains(&otp), "no record holds the OTP");
    let share = KeyShare::from_bytes(Index(1), *share.as_bytes()).unwrap();
    let public = transcript.threshold.as_ref().unwrap().key().unwrap();
    let input = threshold::otp_input(&alice, round, counter);
    let digits = sim.mesh.settings.digits;
    // Its own partial, as if it were the key, and Lagrange-weighted as if it were a quorum alone.
    let mine = share.evaluate(&input, &mut sim.rng);
    let y = curve25519_dalek::ristretto::CompressedRistretto(mine.y)
        .decompress()
        .unwrap();
    let lambda = otpmesh_protocol::threshold::poly::lagrange_at_zero(&[Index(1)], Index(1));
    for guess in [y, y * lambda] {
        let value = eval::otp(&guess, &input, digits);
        let guessed = otpmesh_protocol::otp::Otp::new(value, digits).unwrap();
        assert_ne!(guessed.to_string(), otp);
    }
    // It cannot even convince a requester alone: one partial is not a quorum.
    assert!(public.combine(&[mine], &input).is_err());
}

#[test]
fn a_counter_is_answered_once_and_must_be_current() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors[0]);
    let fresh = counter::fresh(sim.now, &mut sim.rng);
    let ask = |c| {
        Request::Partial(otpmesh_protocol::wire::PartialRequest {
            domain: Default::default(),
            round: None,
            counter: c,
            requester_key: [9; 32],
            enrolled: false,
        })
    };
    let stale = counter::fresh(sim.now - 10 * 60_000, &mut sim.rng);
    let mut answers = Vec::new();
    for c in [fresh, fresh, stale] {
        let actions = sim.roles.get_mut(&d).unwrap().request(
            sim.now,
            alice,
            InboundId(1_000 + answers.len() as u64),
            ask(c),
            &mut sim.rng,
        );
        answers.push(actions.into_iter().find_map(|a| match a {
            Action::Reply { response, .. } => Some(response),
            _ => None,
        }));
    }
    assert!(matches!(answers[0], Some(Response::Partial(_))));
    assert!(
        matches!(&answers[1], Some(Response::Refused(r)) if r.to_string().contains("already answered")),
        "{:?}",
        answers[1]
    );
    assert!(
        matches!(&answers[2], Some(Response::Refused(_))),
        "a stale counter is refused"
    );
}

#[test]
fn a_generator_that_missed_the_announcement_takes_part_with_early_dealings() {
    let mut sim = Sim::new(4);
    let late = sim.mesh.generators[3].peer_id;
    sim.lost.insert((late, "open"));
    sim.seal_first_round();
    let complained = sim.find(|_, e| matches!(e, Event::Complained { .. }).then_some(()));
    assert!(
        complained.is_empty(),
        "the early dealings were kept and opened"
    );
    let held = sim.find(|p, e| matches!(e, Event::ShareHeld { .. }).then_some(*p));
    assert!(held.contains(&late) && held.len() == N);
}

#[test]
fn a_generator_that_missed_the_dealings_gets_its_shares_from_the_answers() {
    let mut sim = Sim::new(4);
    let late = sim.mesh.generators[3].peer_id;
    sim.lost.insert((late, "open"));
    sim.lost.insert((late, "deal"));
    let t = sim.seal_first_round();
    let complaints = sim.find(|_, e| match e {
        Event::Complained { index, against, .. } => Some((*index, against.len())),
        _ => None,
    });
    assert_eq!(
        complaints,
        vec![(4, 4)],
        "generator 4 complains of every dealing it missed"
    );
    assert_eq!(t.clients().len(), 4, "every complaint was answered");
    let held = sim.find(|p, e| matches!(e, Event::ShareHeld { .. }).then_some(*p));
    assert!(held.contains(&late) && held.len() == N);
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    sim.down.extend([d[0], d[1]]);
    let (round, counter, otp, _) = sim.issue(alice, d.clone()).unwrap();
    assert_eq!(
        sim.verify(alice, d, round, counter, &otp),
        Ok(VerifyResult::Accepted),
        "distributor 4's share is part of the quorum {{3, 4, 5}}"
    );
}

#[test]
fn a_lying_distributor_cannot_offer_a_key_of_its_own() {
    use curve25519_dalek::scalar::Scalar;
    use otpmesh_protocol::round::ThresholdKey;
    use otpmesh_protocol::threshold::poly::Commitments;
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    let (round, counter, _, _) = sim.issue(alice, d.clone()).unwrap();
    // The liar's own "round key" k', announced as a 1-of-1 key with a valid proof under it.
    let fake = KeyShare::new(Index(1), Scalar::from(4242u64));
    let input = threshold::otp_input(&alice, round, counter);
    let fake_partial = fake.evaluate(&input, &mut sim.rng);
    let fake_key = ThresholdKey {
        params: Params::new(1, 1).unwrap(),
        public: Commitments(vec![fake.public()]).to_wire(),
    };
    let digits = sim.mesh.settings.digits;
    let known = eval::otp(&fake_partial.point().unwrap(), &input, digits);
    let known = otpmesh_protocol::otp::Otp::new(known, digits)
        .unwrap()
        .to_string();
    let liar = d[0];
    sim.hook = Some(Box::new(move |at, msg| {
        if let Msg::Response(_, _, _, Ok(Response::VerifyPartial(g))) = msg {
            if *at == liar {
                g.partial = fake_partial.clone();
                g.key = fake_key.clone();
            }
        }
        true
    }));
    assert_eq!(
        sim.verify(alice, d, round, counter, &known),
        Ok(VerifyResult::Wrong),
        "the liar's code is not accepted: its key is a minority's"
    );
}

#[test]
fn passwords_are_the_requesters_own() {
    use otpmesh_protocol::threshold::password::Alphabet;
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let d = sim.distributors.clone();
    let password = |sim: &mut Sim, who: PeerId, alphabet: Alphabet, length: usize| {
        sim.events.clear();
        let role = threshold::Requester::password_once(who, d.clone(), alphabet, length);
        sim.add(who, Box::new(role));
        sim.settle();
        let got = sim.find(|p, e| match e {
            Event::PasswordReceived { password, bits, .. } if *p == who => {
                Some((password.clone(), *bits))
            }
            _ => None,
        });
        assert_eq!(got.len(), 1, "{:?}", sim.events);
        got.into_iter().next().unwrap()
    };
    let (alice, bob) = (sim.requesters[0], sim.requesters[1]);
    let (a1, bits) = password(&mut sim, alice, Alphabet::default(), 20);
    let (a2, _) = password(&mut sim, alice, Alphabet::default(), 20);
    let (b1, _) = password(&mut sim, bob, Alphabet::default(), 20);
    assert_eq!(a1.chars().count(), 20);
    assert_eq!(
        bits,
        (20.0 * (Alphabet::default().len() as f64).log2()) as u32
    );
    assert!(
        a1 != a2 && a1 != b1 && a2 != b1,
        "fresh counters, other requesters: unrelated"
    );
    let (hex, _) = password(
        &mut sim,
        alice,
        Alphabet::chars("0123456789abcdef").unwrap(),
        64,
    );
    assert!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{hex}"
    );
    // Nothing of a password is recorded by any distributor.
    let recorded = d
        .iter()
        .flat_map(|x| sim.records.get(x).into_iter().flatten())
        .filter(|r| matches!(r, Record::Issued { .. } | Record::Used { .. }))
        .count();
    assert_eq!(recorded, 0);
}

/// Beacon values a node holds: (round, value, prev).
fn chain(sim: &Sim, who: &PeerId) -> Vec<(u64, [u8; 32], [u8; 32])> {
    let keeper = sim.roles[who].beacon().expect("a beacon keeper");
    keeper
        .entries()
        .map(|e| (e.value.round, e.value.value.0, e.value.prev.0))
        .collect()
}

/// Advances until `done` holds, at most `max_ms`.
fn run_until(sim: &mut Sim, max_ms: u64, done: impl Fn(&Sim) -> bool) {
    let mut waited = 0;
    while !done(sim) {
        assert!(
            waited < max_ms,
            "not done within {max_ms} ms: {:?}",
            sim.events.len()
        );
        sim.advance(100);
        waited += 100;
    }
}

fn sealed_rounds(sim: &Sim) -> Vec<RoundId> {
    sim.find(|_, e| match e {
        Event::RoundSealed { round, .. } => Some(*round),
        _ => None,
    })
}

/// A beaconed mesh with a requester node watching: (sim, that node).
fn beacon_sim() -> (Sim, PeerId) {
    let mut sim = Sim::build(3, true);
    let observer = sim.requesters[0];
    let role = threshold::Follower::new(observer, sim.mesh.clone());
    sim.add(observer, Box::new(role));
    (sim, observer)
}

#[test]
fn beacon_every_node_agrees_a_distributor_that_was_down_catches_up_and_the_chain_verifies() {
    use otpmesh_protocol::threshold::beacon;
    let (mut sim, observer) = beacon_sim();
    let d = sim.distributors.clone();
    let everyone: Vec<PeerId> = sim.order.clone();
    let has = |sim: &Sim, who: &PeerId, rounds: usize| chain(sim, who).len() >= rounds;

    run_until(&mut sim, 30_000, |s| everyone.iter().all(|p| has(s, p, 1)));
    // Distributor 5 misses round 2 whole: its seal, its handover, its beacon partials.
    sim.down.insert(d[4]);
    run_until(&mut sim, 90_000, |s| {
        everyone
            .iter()
            .filter(|p| **p != d[4])
            .all(|p| has(s, p, 2))
    });
    assert_eq!(chain(&sim, &d[4]).len(), 1, "it was down for round 2");
    sim.down.remove(&d[4]);
    run_until(&mut sim, 90_000, |s| everyone.iter().all(|p| has(s, p, 3)));
    let caught = sim.find(|p, e| match e {
        Event::BeaconValue {
            round,
            caught_up: true,
            ..
        } if *p == d[4] => Some(*round),
        _ => None,
    });
    assert!(!caught.is_empty(), "distributor 5 fetched what it missed");

    let reference = chain(&sim, &observer);
    assert_eq!(reference.len(), 3);
    assert_eq!(reference[0].2, [0; 32], "the first value follows zeros");
    for w in reference.windows(2) {
        assert_eq!(w[1].2, w[0].1, "each value binds the one before");
    }
    for p in &everyone {
        assert_eq!(chain(&sim, p)[..3], reference[..], "node {p} agrees");
    }
    assert_eq!(sealed_rounds(&sim).len(), 3);

    // The exported run verifies from public data; any change to it does not.
    let run = sim.roles[&observer].beacon().unwrap().newest_run();
    assert_eq!(run.len(), 3);
    beacon::verify_run(&run).unwrap();
    let mut value = run.clone();
    value[1].value.value.0[0] ^= 1;
    assert!(beacon::verify_run(&value).is_err());
    let mut prev = run.clone();
    prev[2].value.prev.0[0] ^= 1;
    assert!(beacon::verify_run(&prev).is_err());
    let mut key = run.clone();
    key[0].transcript.threshold.as_mut().unwrap().public.0[1][0] ^= 1;
    assert!(
        beacon::verify_run(&key).is_err(),
        "the key is bound by the commitment"
    );
    let mut gap = run;
    gap.remove(1);
    assert!(beacon::verify_run(&gap).is_err());
}

#[test]
fn beacon_a_node_that_joins_late_fetches_the_whole_chain_and_agrees() {
    let mut sim = Sim::build(3, true);
    let (early, late) = (sim.requesters[0], sim.requesters[1]);
    sim.add(
        early,
        Box::new(threshold::Follower::new(early, sim.mesh.clone())),
    );
    run_until(&mut sim, 150_000, |s| chain(s, &early).len() >= 2);
    // The late node never met the early one: it comes after, and asks distributors.
    sim.add(
        late,
        Box::new(threshold::Follower::new(late, sim.mesh.clone())),
    );
    assert!(chain(&sim, &late).is_empty());
    run_until(&mut sim, 90_000, |s| chain(s, &late).len() >= 3);
    run_until(&mut sim, 10_000, |s| chain(s, &early).len() >= 3);
    assert_eq!(chain(&sim, &late)[..3], chain(&sim, &early)[..3]);
}

#[test]
fn a_forged_beacon_partial_is_rejected_and_does_not_change_the_value() {
    use otpmesh_protocol::wire::BeaconPartial;
    let (mut sim, observer) = beacon_sim();
    let d = sim.distributors.clone();
    // Distributor 1's partials are bent on the way: a point that is not k_1·H(x).
    let liar = d[0];
    sim.hook = Some(Box::new(move |at, msg| {
        if let Msg::Gossip(_, Gossip::Beacon(BeaconPartial { partial, .. })) = msg {
            if *at == liar {
                partial.y[3] ^= 0x40;
            }
        }
        true
    }));
    run_until(&mut sim, 30_000, |s| !chain(s, &observer).is_empty());
    let (round, value, _) = chain(&sim, &observer)[0];
    let from = sim.find(|p, e| match e {
        Event::BeaconValue { from, .. } if *p == observer => Some(from.clone()),
        _ => None,
    });
    assert!(
        !from[0].contains(&1),
        "the bent partial is not among {:?}",
        from[0]
    );
    // Every node agrees on it, the liar too (its own partial is good: any T give one value).
    for p in &d {
        assert_eq!(chain(&sim, p)[0], (round, value, [0; 32]));
    }
}
