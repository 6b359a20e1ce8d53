//! The four roles wired together on the simulator's world (`otpmesh_protocol::sim::World`) with
//! no latency: what a role sends is delivered at once, in order; time moves only when the test
//! says so. No network, no clock, no disk.

mod common;

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::mesh::{Member, MeshConfig};
use otpmesh_protocol::otp;
use otpmesh_protocol::phrase::{ClientId, UserInput};
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::{
    Action, Contributor, Distributor, Event, Generator, InboundId, Record, Requester, Role,
};
use otpmesh_protocol::role::{Inbound, Input};
use otpmesh_protocol::round::{self, RoundId, Secret, Transcript};
use otpmesh_protocol::seal::PrivateKey;
use otpmesh_protocol::sim::net::Address;
use otpmesh_protocol::sim::{Observer, World};
use otpmesh_protocol::wire::{
    Delivery, Gossip, Refusal, Request, Response, GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

fn key() -> &'static Arc<PrivateKey> {
    static KEY: OnceLock<Arc<PrivateKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        Arc::new(PrivateKey::generate(2048, &mut ChaCha20Rng::seed_from_u64(1)).unwrap())
    })
}

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

/// What the test watches: every event, every input asked for, every gossip message published.
#[derive(Default)]
struct Log {
    events: Vec<(PeerId, Event)>,
    asked: Vec<(PeerId, RoundId)>,
    published: Vec<Gossip>,
}

impl Observer for Log {
    fn event(&mut self, _world: &mut World, at: Address, event: Event) {
        self.events.push((at.peer, event));
    }
    fn asked_input(&mut self, _world: &mut World, at: PeerId, round: RoundId) {
        self.asked.push((at, round));
    }
    fn outgoing(&mut self, _world: &World, _at: Address, action: &mut Action) -> bool {
        if let Action::Publish(message) = action {
            self.published.push(message.clone());
        }
        true
    }
}

struct Sim {
    world: World,
    log: Log,
    mesh: Arc<MeshConfig>,
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
        let mut world = World::instant(mesh.clone(), 7, 1_000_000);
        world.set_key(ids.generator, key().clone());
        let mut sim = Sim {
            world,
            log: Log::default(),
            mesh: mesh.clone(),
        };
        let generator = Generator::new(
            ids.generator,
            mesh.clone(),
            key().public().clone(),
            None,
            None,
        );
        sim.add(ids.generator, Box::new(generator));
        let distributor = Distributor::new(ids.distributor, mesh.clone(), Restored::default());
        sim.add(ids.distributor, Box::new(distributor));
        let requester = Requester::follow(ids.requester, vec![ids.distributor]);
        sim.add(ids.requester, Box::new(requester));
        for (i, p) in ids.contributors.iter().enumerate() {
            let input = Some(UserInput(100 + i as i128));
            sim.add(
                *p,
                Box::new(Contributor::new(ClientId(i as u32 + 1), input)),
            );
        }
        (sim, ids)
    }

    /// Starts (or restarts) `role` as node `id`, on every topic (each role ignores what is not
    /// its own).
    fn add(&mut self, id: PeerId, role: Box<dyn Role + Send>) {
        let topics = [GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC];
        self.world.add(id, role, &topics, &mut self.log);
    }

    fn down(&mut self, id: PeerId) {
        self.world.down.insert(id);
    }

    fn up(&mut self, id: PeerId) {
        self.world.down.remove(&id);
    }

    /// Moves time forward by `ms`, every tick's messages delivered before the next.
    fn advance(&mut self, ms: u64) {
        self.world.settle(&mut self.log);
        let end = self.world.now + ms;
        while self.world.next_at() <= end {
            self.world.step(&mut self.log);
        }
    }

    fn records(&self, id: &PeerId) -> &[Record] {
        &self.world.records[id]
    }

    fn find<T>(&self, pick: impl Fn(&PeerId, &Event) -> Option<T>) -> Vec<T> {
        self.log
            .events
            .iter()
            .filter_map(|(p, e)| pick(p, e))
            .collect()
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
        self.records(&generator)
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
        self.log
            .published
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
    let counters: Vec<_> = sim
        .records(&ids.distributor)
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
    let records = sim.records(&ids.generator).to_vec();
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
        sim.down(ids.contributors[2]);
        sim.down(ids.contributors[3]);
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
    sim.down(ids.distributor);
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
    sim.up(ids.distributor);
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
    sim.down(ids.distributor);
    sim.advance(3_000);
    assert_eq!(sim.sealed().len(), 1);
    let records = sim.records(&ids.generator).to_vec();
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
    sim.up(ids.distributor);
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
    let actions = d.request(5_000, Inbound::new(from, InboundId(1), request), rng);
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
        sim.log.asked,
        vec![(asker, RoundId(1))],
        "asked once, for round 1"
    );
    // The key was fetched while the user was being asked: the answer publishes at once.
    let published = sim.log.published.len();
    sim.world.input(asker, &mut sim.log, |role, now, rng| {
        role.user_input(now, Input::new(RoundId(1), UserInput(-5)), rng)
    });
    assert!(sim.log.published[published..]
        .iter()
        .any(|g| matches!(g, Gossip::Phrase(_))));
    sim.world.settle(&mut sim.log);
    assert_eq!(
        sim.sealed(),
        vec![(RoundId(1), vec![ClientId(1), ClientId(2)])]
    );
}
