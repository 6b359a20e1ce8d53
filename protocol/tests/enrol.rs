//! Enrolment by X25519 exchange, and key recycling by epoch: requester and distributor state
//! machines talking directly, time set by the test.

mod common;

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::kx::{EpochKey, KxError};
use otpmesh_protocol::mesh::{Member, MeshConfig, Settings};
use otpmesh_protocol::otp::{self, Digits};
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::{Action, Distributor, Event, InboundId, Record, Requester, Role};
use otpmesh_protocol::role::{Answer, Inbound};
use otpmesh_protocol::round::Secret;
use otpmesh_protocol::wire::{OtpGrant, Request, Response};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;

const EPOCH: u64 = 3_600_000;

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

struct Pair {
    requester: PeerId,
    distributor_id: PeerId,
    distributor: Distributor,
    secret: Secret,
    rng: ChaCha20Rng,
    /// Every record either side persisted, with who persisted it.
    records: Vec<(PeerId, Record)>,
    grants: Vec<OtpGrant>,
}

impl Pair {
    fn new() -> Pair {
        let (generator, requester, distributor_id) = (peer(), peer(), peer());
        let mesh = Arc::new(MeshConfig {
            generators: vec![Member {
                peer_id: generator,
                addrs: vec![],
                name: None,
            }],
            distributors: vec![Member {
                peer_id: distributor_id,
                addrs: vec![],
                name: None,
            }],
            requesters: vec![Member {
                peer_id: requester,
                addrs: vec![],
                name: None,
            }],
            settings: Settings {
                quorum: 1,
                epoch_ms: EPOCH,
                ..Default::default()
            },
            ..Default::default()
        });
        let secret = Secret::from_bytes([7; 32]);
        let transcript = common::round_one(generator, Default::default(), &secret);
        let restored = Restored {
            rounds: vec![(transcript, secret.clone())],
            ..Default::default()
        };
        let distributor = Distributor::new(distributor_id, mesh, restored);
        let rng = ChaCha20Rng::seed_from_u64(1);
        Pair {
            requester,
            distributor_id,
            distributor,
            secret,
            rng,
            records: Vec::new(),
            grants: Vec::new(),
        }
    }

    /// Runs a requester machine against the distributor until it has nothing left to send;
    /// returns the requester's events.
    fn run(&mut self, mut r: Requester, now: u64) -> (Requester, Vec<Event>) {
        let mut events = Vec::new();
        let mut pending = r.start(now, &mut self.rng);
        while let Some(action) = pending.pop() {
            match action {
                Action::Send { tag, request, .. } => {
                    if let Request::Deliver(_) = request {
                        unreachable!()
                    }
                    let mut response = None;
                    for a in self.distributor.request(
                        now,
                        Inbound::new(self.requester, InboundId(1), request),
                        &mut self.rng,
                    ) {
                        match a {
                            Action::Reply { response: resp, .. } => response = Some(resp),
                            Action::Persist(rec) => self.records.push((self.distributor_id, rec)),
                            _ => {}
                        }
                    }
                    let response = response.expect("answered");
                    if let Response::Otp(g) = &response {
                        self.grants.push(g.clone());
                    }
                    pending.extend(r.response(
                        now,
                        Answer::new(self.distributor_id, tag, Ok(response)),
                        &mut self.rng,
                    ));
                }
                Action::Persist(rec) => self.records.push((self.requester, rec)),
                Action::Emit(e) => events.push(e),
                _ => {}
            }
        }
        (r, events)
    }

    fn enrol(&mut self, now: u64) -> EpochKey {
        let r = Requester::enrol_once(self.requester, self.distributor_id, &mut self.rng);
        let (_, events) = self.run(r, now);
        assert!(
            events.iter().any(|e| matches!(e, Event::Enrolled { .. })),
            "{events:?}"
        );
        self.key_of(self.requester)
            .expect("the requester keeps its key")
    }

    fn key_of(&self, who: PeerId) -> Option<EpochKey> {
        self.records.iter().rev().find_map(|(p, r)| match r {
            Record::Enrolment { epoch, key, .. } if *p == who => {
                Some(EpochKey::new(*epoch, *key.as_array().unwrap()))
            }
            _ => None,
        })
    }

    /// One enrolled request; the OTP the requester got and the one the distributor issued.
    fn request(&mut self, key: Option<EpochKey>, now: u64) -> (Result<String, String>, String) {
        let r = Requester::one_shot(self.requester, self.distributor_id).with_enrolment(key);
        let (_, events) = self.run(r, now);
        let grant = self.grants.last().expect("a grant").clone();
        let issued = otp::issue(
            &self.secret,
            grant.round,
            &self.requester,
            &self.distributor_id,
            grant.counter,
            Digits::default(),
        );
        let got = events
            .iter()
            .find_map(|e| match e {
                Event::OtpReceived { otp, .. } => Some(Ok(otp.clone())),
                Event::RequestFailed { reason, .. } => Some(Err(reason.clone())),
                _ => None,
            })
            .expect("an outcome");
        (got, issued.to_string())
    }
}

#[test]
fn an_enrolled_requester_unsalts_with_its_epoch_key() {
    let mut p = Pair::new();
    let now = 10 * EPOCH + 5;
    let key = p.enrol(now);
    assert_eq!(key.epoch(), 10);
    assert_eq!(
        p.key_of(p.distributor_id),
        Some(key.clone()),
        "both sides hold the same key"
    );
    let (got, issued) = p.request(Some(key), now + 1);
    assert_eq!(got, Ok(issued));
    assert_eq!(p.grants.last().unwrap().epoch, Some(10));
    assert_eq!(
        p.grants.last().unwrap().distributor_key,
        [0; 32],
        "no fresh exchange in enrolled mode"
    );
}

#[test]
fn keys_recycle_each_epoch_and_retired_epochs_cannot_be_unsalted() {
    let mut p = Pair::new();
    let key = p.enrol(10 * EPOCH);
    // Three epochs later both sides move on together, persisting the new key.
    let (got, issued) = p.request(Some(key.clone()), 13 * EPOCH + 7);
    assert_eq!(got, Ok(issued));
    let moved = p.key_of(p.requester).unwrap();
    assert_eq!(moved.epoch(), 13);
    assert_eq!(p.key_of(p.distributor_id).unwrap(), moved);
    assert_ne!(moved.bytes(), key.bytes());
    // A response salted under epoch 10 (captured earlier) is no longer readable with the kept key.
    assert_eq!(
        moved.at(10).unwrap_err(),
        KxError::Retired {
            epoch: 10,
            current: 13
        }
    );
    // A requester still holding epoch 10's key can follow forward (it ratchets), never back.
    let (got, issued) = p.request(Some(moved), 14 * EPOCH);
    assert_eq!(got, Ok(issued));
}

#[test]
fn a_requester_ahead_of_the_distributor_refuses_the_retired_epoch() {
    let mut p = Pair::new();
    let key = p.enrol(10 * EPOCH);
    // The requester has moved to epoch 12 on its own; the distributor answers at epoch 11.
    let ahead = key.at(12).unwrap();
    let (got, _) = p.request(Some(ahead), 11 * EPOCH);
    let err = got.unwrap_err();
    assert!(err.contains("retired"), "{err}");
}

#[test]
fn re_enrolment_replaces_the_old_key() {
    let mut p = Pair::new();
    let old = p.enrol(10 * EPOCH);
    let new = p.enrol(10 * EPOCH + 100);
    assert_ne!(old.bytes(), new.bytes());
    assert_eq!(p.key_of(p.distributor_id), Some(new.clone()));
    let (got, issued) = p.request(Some(new), 10 * EPOCH + 200);
    assert_eq!(got, Ok(issued.clone()));
    // The old key unsalts to something else: it no longer opens anything.
    let (got, issued) = p.request(Some(old), 10 * EPOCH + 300);
    assert_ne!(got, Ok(issued));
}

#[test]
fn an_unenrolled_request_in_enrolled_mode_is_refused_with_the_fix() {
    let mut p = Pair::new();
    let r = Requester::one_shot(p.requester, p.distributor_id)
        .with_enrolment(Some(EpochKey::new(1, [1; 32])));
    let (_, events) = p.run(r, 5);
    let reason = events
        .iter()
        .find_map(|e| {
            if let Event::RequestFailed { reason, .. } = e {
                Some(reason.clone())
            } else {
                None
            }
        })
        .unwrap();
    assert!(reason.contains("otpmesh enrol"), "{reason}");
}
