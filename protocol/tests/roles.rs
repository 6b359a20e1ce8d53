//! The four roles wired together by a tiny deterministic simulator: no network, no clock, no disk.
//! Messages are delivered in order; time moves only when the test says so.

mod common;

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::mesh::{Member, MeshConfig};
use otpmesh_protocol::otp;
use otpmesh_protocol::phrase::{ClientId, UserInput};
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::{
    self, Action, Contributor, Distributor, Event, Generator, InboundId, Record, Requester, Role,
    Tag, Verdict,
};
use otpmesh_protocol::round::{self, RoundId, Secret, Transcript};
use otpmesh_protocol::seal::PrivateKey;
use otpmesh_protocol::wire::{Delivery, Gossip, Refusal, Request, Response};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048, &mut ChaCha20Rng::seed_from_u64(1)).unwrap())
}

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

enum Msg {
    Gossip {
        from: PeerId,
        message: Gossip,
    },
    Request {
        from: PeerId,
        to: PeerId,
        tag: Tag,
        request: Request,
    },
    Response {
        from: PeerId,
        to: PeerId,
        tag: Tag,
        response: Result<Response, String>,
    },
}

struct Sim {
    mesh: Arc<MeshConfig>,
    roles: HashMap<PeerId, Box<dyn Role>>,
    order: Vec<PeerId>,
    down: HashSet<PeerId>,
    now: u64,
    rng: ChaCha20Rng,
    queue: VecDeque<Msg>,
    pending: HashMap<(PeerId, u64), (PeerId, Tag)>,
    next_inbound: u64,
    records: HashMap<PeerId, Vec<Record>>,
    events: Vec<(PeerId, Event)>,
    verdicts: Vec<(PeerId, Verdict)>,
    gossip_log: Vec<Gossip>,
    asked: Vec<(PeerId, RoundId)>,
}

struct Ids {
    generator: PeerId,
    distributor: PeerId,
    requester: PeerId,
    contributors: Vec<PeerId>,
}

impl Sim {
    fn new(contributors: u32, tune: impl FnOnce(&mut MeshConfig)) -> (Sim, Ids) {
        let ids = Ids {
            generator: peer(),
            distributor: peer(),
            requester: peer(),
            contributors: (0..contributors).map(|_| peer()).collect(),
        };
        let mut mesh = MeshConfig::listing(
            &[ids.generator],
            &[ids.distributor],
            &[ids.requester],
            &ids.contributors,
        );
        mesh.settings.hash_iterations = 10;
        mesh.settings.deadline_ms = 10_000;
        mesh.settings.round_interval_ms = 1_000;
        tune(&mut mesh);
        mesh.validate().unwrap();
        let mesh = Arc::new(mesh);
        let mut sim = Sim {
            mesh: mesh.clone(),
            roles: HashMap::new(),
            order: Vec::new(),
            down: HashSet::new(),
            now: 1_000_000,
            rng: ChaCha20Rng::seed_from_u64(7),
            queue: VecDeque::new(),
            pending: HashMap::new(),
            next_inbound: 0,
            records: HashMap::new(),
            events: Vec::new(),
            verdicts: Vec::new(),
            gossip_log: Vec::new(),
            asked: Vec::new(),
        };
        sim.add(
            ids.generator,
            Box::new(Generator::new(
                ids.generator,
                mesh.clone(),
                key().public().clone(),
                None,
                None,
            )),
        );
        sim.add(
            ids.distributor,
            Box::new(Distributor::new(
                ids.distributor,
                mesh.clone(),
                Restored::default(),
            )),
        );
        sim.add(
            ids.requester,
            Box::new(Requester::follow(ids.requester, vec![ids.distributor])),
        );
        for (i, p) in ids.contributors.iter().enumerate() {
            let input = Some(UserInput(100 + i as i128));
            sim.add(
                *p,
                Box::new(Contributor::new(ClientId(i as u32 + 1), input)),
            );
        }
        (sim, ids)
    }

    fn add(&mut self, id: PeerId, mut role: Box<dyn Role>) {
        let actions = role.start(self.now, &mut self.rng);
        if !self.order.contains(&id) {
            self.order.push(id);
        }
        self.roles.insert(id, role);
        self.run(id, actions);
    }

    fn run(&mut self, at: PeerId, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Publish(message) => {
                    self.gossip_log.push(message.clone());
                    self.queue.push_back(Msg::Gossip { from: at, message });
                }
                Action::Send { peer, tag, request } => self.queue.push_back(Msg::Request {
                    from: at,
                    to: peer,
                    tag,
                    request,
                }),
                Action::Reply { to, response } => {
                    let (peer, tag) = self
                        .pending
                        .remove(&(at, to.0))
                        .expect("reply to a pending request");
                    self.queue.push_back(Msg::Response {
                        from: at,
                        to: peer,
                        tag,
                        response: Ok(response),
                    });
                }
                Action::Persist(r) => self.records.entry(at).or_default().push(r),
                Action::Decrypt(job) => {
                    let opened = job.open(key(), &mut self.rng);
                    let actions = self
                        .roles
                        .get_mut(&at)
                        .unwrap()
                        .decrypted(self.now, job, opened);
                    self.run(at, actions);
                }
                Action::Emit(e) => self.events.push((at, e)),
                Action::AskInput { round } => self.asked.push((at, round)),
            }
        }
    }

    /// Delivers queued messages until none is left.
    fn settle(&mut self) {
        while let Some(msg) = self.queue.pop_front() {
            match msg {
                Msg::Gossip { from, message } => {
                    for id in self.order.clone() {
                        if id == from || self.down.contains(&id) || self.down.contains(&from) {
                            continue;
                        }
                        let verdict = match role::check_gossip(&self.mesh, &from, &message) {
                            Verdict::Accept => {
                                let role = self.roles.get_mut(&id).unwrap();
                                let (verdict, actions) =
                                    role.gossip(self.now, from, &message, &mut self.rng);
                                self.run(id, actions);
                                verdict
                            }
                            other => other,
                        };
                        self.verdicts.push((id, verdict));
                    }
                }
                Msg::Request {
                    from,
                    to,
                    tag,
                    request,
                } => {
                    if self.down.contains(&to) || !self.roles.contains_key(&to) {
                        self.queue.push_back(Msg::Response {
                            from: to,
                            to: from,
                            tag,
                            response: Err("unreachable".into()),
                        });
                        continue;
                    }
                    self.next_inbound += 1;
                    self.pending.insert((to, self.next_inbound), (from, tag));
                    let id = InboundId(self.next_inbound);
                    let actions = self.roles.get_mut(&to).unwrap().request(
                        self.now,
                        from,
                        id,
                        request,
                        &mut self.rng,
                    );
                    self.run(to, actions);
                }
                Msg::Response {
                    from,
                    to,
                    tag,
                    response,
                } => {
                    if self.down.contains(&to) {
                        continue;
                    }
                    let actions = self.roles.get_mut(&to).unwrap().response(
                        self.now,
                        from,
                        tag,
                        response,
                        &mut self.rng,
                    );
                    self.run(to, actions);
                }
            }
        }
    }

    /// Moves time forward in 100 ms ticks, settling after each.
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

    fn find<T>(&self, pick: impl Fn(&PeerId, &Event) -> Option<T>) -> Vec<T> {
        self.events.iter().filter_map(|(p, e)| pick(p, e)).collect()
    }

    fn sealed(&self) -> Vec<(RoundId, Vec<ClientId>)> {
        self.find(|_, e| match e {
            Event::RoundSealed {
                round, included, ..
            } => Some((*round, included.clone())),
            _ => None,
        })
    }

    fn secret_of(&self, generator: PeerId, round: RoundId) -> Secret {
        self.records[&generator]
            .iter()
            .find_map(|r| match r {
                Record::Round { transcript, secret } if transcript.round == round => {
                    Some(secret.clone())
                }
                _ => None,
            })
            .expect("sealed round recorded")
    }

    fn transcripts(&self) -> Vec<Transcript> {
        self.gossip_log
            .iter()
            .filter_map(|g| match g {
                Gossip::Sealed(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_round_seals_at_quorum_and_the_requester_unsalts_the_issued_otp() {
    let (mut sim, ids) = Sim::new(4, |_| {});
    sim.advance(500);
    assert_eq!(
        sim.sealed(),
        vec![(RoundId(1), (1..=4).map(ClientId).collect())]
    );
    let included = sim.find(|_, e| match e {
        Event::TranscriptChecked { included, .. } => Some(*included),
        _ => None,
    });
    assert_eq!(
        included,
        vec![true; 4],
        "every contributor finds its phrase in the transcript"
    );
    assert_eq!(
        sim.find(|_, e| matches!(e, Event::RoundDeliveredAll { .. }).then_some(()))
            .len(),
        1
    );

    let otps = sim.find(|p, e| match e {
        Event::OtpReceived { otp, round, .. } if *p == ids.requester => Some((otp.clone(), *round)),
        _ => None,
    });
    assert_eq!(otps.len(), 1);
    let secret = sim.secret_of(ids.generator, RoundId(1));
    let expected = otp::issue(
        &secret,
        RoundId(1),
        &ids.requester,
        &ids.distributor,
        0,
        sim.mesh.settings.digits,
    );
    assert_eq!(
        otps[0],
        (expected.to_string(), RoundId(1)),
        "the requester sees exactly the issued OTP"
    );
    // The distributor committed the counter before replying.
    let counters: Vec<_> = sim.records[&ids.distributor]
        .iter()
        .filter(|r| matches!(r, Record::Issued { otp, .. } if otp.counter == 0))
        .collect();
    assert_eq!(counters.len(), 1);
}

#[test]
fn rounds_chain_and_survive_a_generator_restart() {
    let (mut sim, ids) = Sim::new(3, |_| {});
    sim.advance(3_000);
    assert!(
        sim.sealed().len() >= 2,
        "two rounds in 3 s with a 1 s interval"
    );
    // Restart the generator from what it persisted.
    let records = sim.records[&ids.generator].clone();
    let last_opened = records
        .iter()
        .filter_map(|r| {
            if let Record::Opened(r) = r {
                Some(*r)
            } else {
                None
            }
        })
        .max();
    let last_sealed = records.iter().rev().find_map(|r| match r {
        Record::Round { transcript, secret } => Some((transcript.clone(), secret.clone())),
        _ => None,
    });
    let before = sim.sealed().len();
    let generator = Generator::new(
        ids.generator,
        sim.mesh.clone(),
        key().public().clone(),
        last_opened,
        last_sealed,
    );
    sim.add(ids.generator, Box::new(generator));
    sim.advance(3_000);
    let sealed = sim.sealed();
    assert!(sealed.len() > before, "rounds continue after the restart");
    let ids_seen: Vec<u64> = sim.transcripts().iter().map(|t| t.round.0).collect();
    let unique: HashSet<_> = ids_seen.iter().collect();
    assert_eq!(
        unique.len(),
        ids_seen.len(),
        "no round id is reused: {ids_seen:?}"
    );
    round::verify_chain(&sim.transcripts()).expect("transcripts across the restart form one chain");
}

#[test]
fn the_deadline_seals_with_the_minimum_or_fails_with_a_reason() {
    for (minimum, expect_seal) in [(2, true), (3, false)] {
        let (mut sim, ids) = Sim::new(4, |m| m.settings.minimum = minimum);
        sim.down.insert(ids.contributors[2]);
        sim.down.insert(ids.contributors[3]);
        sim.advance(9_000);
        assert!(sim.sealed().is_empty(), "nothing seals before the deadline");
        sim.advance(1_500);
        let failed = sim.find(|_, e| match e {
            Event::RoundFailed {
                round: RoundId(1),
                reason,
            } => Some(reason.clone()),
            _ => None,
        });
        if expect_seal {
            assert_eq!(
                sim.sealed(),
                vec![(RoundId(1), vec![ClientId(1), ClientId(2)])]
            );
        } else {
            assert!(sim.sealed().is_empty());
            assert_eq!(
                failed,
                vec!["deadline passed with 2 of the minimum 3 phrases".to_string()]
            );
        }
    }
}

#[test]
fn delivery_is_retried_until_the_distributor_is_back() {
    let (mut sim, ids) = Sim::new(2, |m| m.settings.round_interval_ms = 60_000);
    sim.down.insert(ids.distributor);
    sim.advance(3_000);
    assert_eq!(sim.sealed().len(), 1);
    let failures = sim.find(|_, e| {
        matches!(e, Event::RequestFailed { request, .. } if request == "deliver").then_some(())
    });
    assert!(
        failures.len() >= 2,
        "delivery was retried ({} failures)",
        failures.len()
    );
    assert!(sim
        .find(|_, e| matches!(e, Event::RoundDeliveredAll { .. }).then_some(()))
        .is_empty());
    sim.down.remove(&ids.distributor);
    sim.advance(1_500);
    assert_eq!(
        sim.find(|_, e| matches!(e, Event::RoundDeliveredAll { .. }).then_some(()))
            .len(),
        1
    );
}

#[test]
fn a_restarted_generator_delivers_the_round_a_distributor_missed() {
    let (mut sim, ids) = Sim::new(2, |m| m.settings.round_interval_ms = 60_000);
    sim.down.insert(ids.distributor);
    sim.advance(3_000);
    assert_eq!(sim.sealed().len(), 1);
    let records = sim.records[&ids.generator].clone();
    let last_sealed = records.iter().rev().find_map(|r| match r {
        Record::Round { transcript, secret } => Some((transcript.clone(), secret.clone())),
        _ => None,
    });
    // The generator restarts from its store while the distributor is still away, then it is back.
    let generator = Generator::new(
        ids.generator,
        sim.mesh.clone(),
        key().public().clone(),
        Some(RoundId(1)),
        last_sealed,
    );
    sim.add(ids.generator, Box::new(generator));
    sim.advance(500);
    sim.down.remove(&ids.distributor);
    sim.advance(3_000);
    let delivered = sim.find(|peer, e| {
        matches!(e, Event::RoundStored { round: RoundId(1), .. } if *peer == ids.distributor)
            .then_some(())
    });
    assert_eq!(delivered.len(), 1, "round 1 reached the distributor");
}

/// What a store would give back from these records, with `rounds` held.
fn restore(records: &[Record], rounds: Vec<(Transcript, Secret)>) -> Restored {
    Restored {
        rounds,
        ..Restored::replay(records)
    }
}

fn run_request(
    d: &mut Distributor,
    from: PeerId,
    request: Request,
    rng: &mut ChaCha20Rng,
) -> (Vec<Record>, Response) {
    let actions = d.request(5_000, from, InboundId(1), request, rng);
    let mut records = Vec::new();
    let mut response = None;
    for a in actions {
        match a {
            Action::Persist(r) => {
                assert!(response.is_none(), "persist must come before the reply");
                records.push(r);
            }
            Action::Reply { response: r, .. } => response = Some(r),
            _ => {}
        }
    }
    (records, response.expect("every request is answered"))
}

#[test]
fn the_distributor_checks_deliveries_and_never_repeats_an_otp_across_restarts() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (generator, requester, me) = (peer(), peer(), peer());
    let mesh = Arc::new(MeshConfig {
        generators: vec![Member {
            peer_id: generator,
            addrs: vec![],
            name: None,
        }],
        requesters: vec![Member {
            peer_id: requester,
            addrs: vec![],
            name: None,
        }],
        settings: otpmesh_protocol::mesh::Settings {
            quorum: 1,
            ..Default::default()
        },
        ..Default::default()
    });
    let secret = Secret::from_bytes([5; 32]);
    let transcript = common::round_one(generator, key().public().fingerprint(), &secret);
    let deliver = |t: &Transcript, s: &Secret| {
        Request::Deliver(Box::new(Delivery {
            transcript: t.clone(),
            secret: s.clone(),
        }))
    };
    let mut d = Distributor::new(me, mesh.clone(), Restored::default());

    let ask = || {
        Request::Otp(otpmesh_protocol::wire::OtpRequest {
            round: None,
            requester_key: [9; 32],
            enrolled: false,
        })
    };
    let (_, r) = run_request(&mut d, requester, ask(), &mut rng);
    assert_eq!(r, Response::Refused(Refusal::NoRound));

    let (_, r) = run_request(&mut d, peer(), deliver(&transcript, &secret), &mut rng);
    assert!(
        matches!(r, Response::Refused(Refusal::Unauthorised(_))),
        "{r:?}"
    );
    let (_, r) = run_request(
        &mut d,
        generator,
        deliver(&transcript, &Secret::from_bytes([6; 32])),
        &mut rng,
    );
    assert!(
        matches!(r, Response::Refused(Refusal::Invalid(ref why)) if why.contains("commitment")),
        "{r:?}"
    );
    let (records, r) = run_request(&mut d, generator, deliver(&transcript, &secret), &mut rng);
    assert_eq!((r, records.len()), (Response::Delivered(RoundId(1)), 1));
    let (records, r) = run_request(&mut d, generator, deliver(&transcript, &secret), &mut rng);
    assert_eq!(
        (r, records.len()),
        (Response::Delivered(RoundId(1)), 1),
        "a repeat delivery is written again (idempotent) before its acknowledgement"
    );

    // A requester key that is a low-order point is refused.
    let low = Request::Otp(otpmesh_protocol::wire::OtpRequest {
        round: None,
        requester_key: [0; 32],
        enrolled: false,
    });
    assert!(matches!(
        run_request(&mut d, requester, low, &mut rng).1,
        Response::Refused(Refusal::Invalid(_))
    ));
    let (_, r) = run_request(&mut d, peer(), ask(), &mut rng);
    assert!(
        matches!(r, Response::Refused(Refusal::Unauthorised(ref why)) if why.contains("not a listed requester"))
    );

    let mut counters = Vec::new();
    let mut grants = Vec::new();
    for _ in 0..3 {
        let (records, r) = run_request(&mut d, requester, ask(), &mut rng);
        counters.extend(records);
        grants.push(r);
    }
    // Restart from the records: the next counter continues.
    let mut d = Distributor::new(
        me,
        mesh,
        restore(&counters, vec![(transcript.clone(), secret.clone())]),
    );
    let (_, r) = run_request(&mut d, requester, ask(), &mut rng);
    grants.push(r);
    let used: Vec<u64> = grants
        .iter()
        .map(|g| match g {
            Response::Otp(grant) => grant.counter,
            other => panic!("expected an OTP, got {other:?}"),
        })
        .collect();
    assert_eq!(used, vec![0, 1, 2, 3]);
    let salts: HashSet<_> = grants
        .iter()
        .map(|g| {
            if let Response::Otp(g) = g {
                g.salt
            } else {
                unreachable!()
            }
        })
        .collect();
    assert_eq!(salts.len(), 4, "every response has a fresh salt");
}

#[test]
fn a_contributor_without_input_asks_its_user_each_round() {
    let (mut sim, ids) = Sim::new(2, |m| m.settings.quorum = 2);
    let asker = ids.contributors[0];
    sim.add(asker, Box::new(Contributor::new(ClientId(1), None)));
    sim.advance(300);
    assert!(sim.sealed().is_empty(), "client 1 has not answered yet");
    assert_eq!(
        sim.asked,
        vec![(asker, RoundId(1))],
        "asked once, for round 1"
    );
    // The key was fetched while the user was being asked: the answer publishes at once.
    let actions = sim.roles.get_mut(&asker).unwrap().user_input(
        sim.now,
        RoundId(1),
        UserInput(-5),
        &mut ChaCha20Rng::seed_from_u64(2),
    );
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Publish(Gossip::Phrase(_)))));
    sim.run(asker, actions);
    sim.settle();
    assert_eq!(
        sim.sealed(),
        vec![(RoundId(1), vec![ClientId(1), ClientId(2)])]
    );
}
