//! Verification at the distributor: once only, before expiry, with lockout, across restarts and
//! across distributors. Pure state machines; time is whatever the test says.

mod common;

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::mesh::{Member, MeshConfig, Settings};
use otpmesh_protocol::otp;
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::{Action, Distributor, InboundId, Record, Role, Verdict};
use otpmesh_protocol::role::{Heard, Inbound};
use otpmesh_protocol::round::{RoundId, Secret, Transcript};
use otpmesh_protocol::wire::{
    Delivery, Gossip, OtpRequest, Refusal, Request, Response, VerifyRequest, VerifyResult,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;

const EXPIRY: u64 = 120_000;

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

struct World {
    mesh: Arc<MeshConfig>,
    generator: PeerId,
    requester: PeerId,
    distributors: Vec<PeerId>,
    transcript: Transcript,
    secret: Secret,
    rng: ChaCha20Rng,
}

impl World {
    fn new(distributors: usize) -> World {
        let (generator, requester) = (peer(), peer());
        let distributors: Vec<PeerId> = (0..distributors).map(|_| peer()).collect();
        let mesh = Arc::new(MeshConfig {
            generators: vec![Member {
                peer_id: generator,
                addrs: vec![],
                name: None,
            }],
            distributors: distributors
                .iter()
                .map(|p| Member {
                    peer_id: *p,
                    addrs: vec![],
                    name: None,
                })
                .collect(),
            requesters: vec![Member {
                peer_id: requester,
                addrs: vec![],
                name: None,
            }],
            settings: Settings {
                quorum: 1,
                otp_expiry_ms: EXPIRY,
                ..Default::default()
            },
            ..Default::default()
        });
        let secret = Secret::from_bytes([5; 32]);
        let transcript = common::round_one(generator, Default::default(), &secret);
        World {
            mesh,
            generator,
            requester,
            distributors,
            transcript,
            secret,
            rng: ChaCha20Rng::seed_from_u64(9),
        }
    }

    /// A distributor that holds round 1, restored from `records`.
    fn distributor(&mut self, i: usize, records: &[Record]) -> Distributor {
        let mut restored = Restored {
            rounds: vec![(self.transcript.clone(), self.secret.clone())],
            ..Default::default()
        };
        for r in records {
            match r {
                Record::Issued { otp, expires_at_ms } => {
                    restored.otps.push((*otp, *expires_at_ms, false));
                    restored
                        .counters
                        .push((otp.round, otp.requester, otp.counter + 1));
                }
                Record::Used { otp, expires_at_ms } => {
                    restored.otps.push((*otp, *expires_at_ms, true))
                }
                Record::Attempts {
                    requester,
                    failures,
                    locked_until,
                } => {
                    restored.attempts.retain(|(p, _, _)| p != requester);
                    restored
                        .attempts
                        .push((*requester, failures.clone(), *locked_until));
                }
                _ => {}
            }
        }
        let mut d = Distributor::new(self.distributors[i], self.mesh.clone(), restored);
        let delivery = Request::Deliver(Box::new(Delivery {
            transcript: self.transcript.clone(),
            secret: self.secret.clone(),
        }));
        let (_, r, _) = self.call(&mut d, 0, self.generator, delivery);
        assert_eq!(r, Response::Delivered(RoundId(1)));
        d
    }

    /// One request: (records persisted, the response, gossip published), checking order.
    fn call(
        &mut self,
        d: &mut Distributor,
        now: u64,
        from: PeerId,
        request: Request,
    ) -> (Vec<Record>, Response, Vec<Gossip>) {
        let (mut records, mut response, mut published) = (Vec::new(), None, Vec::new());
        for a in d.request(
            now,
            Inbound::new(from, InboundId(1), request),
            &mut self.rng,
        ) {
            match a {
                Action::Persist(r) => {
                    assert!(response.is_none(), "every commit comes before the reply");
                    records.push(r);
                }
                Action::Reply { response: r, .. } => response = Some(r),
                Action::Publish(g) => published.push(g),
                _ => {}
            }
        }
        (records, response.expect("answered"), published)
    }

    /// Issues an OTP at distributor `i`; returns its code and the records.
    fn issue(&mut self, d: &mut Distributor, i: usize, now: u64) -> (String, Vec<Record>) {
        let ask = Request::Otp(OtpRequest {
            round: None,
            requester_key: [9; 32],
            enrolled: false,
        });
        let (records, r, _) = self.call(d, now, self.requester, ask);
        let Response::Otp(grant) = r else {
            panic!("expected an OTP, got {r:?}")
        };
        let code = otp::issue(
            &self.secret,
            grant.round,
            &self.requester,
            &self.distributors[i],
            grant.counter,
            grant.digits,
        );
        (code.to_string(), records)
    }

    fn verify(
        &mut self,
        d: &mut Distributor,
        now: u64,
        code: &str,
    ) -> (VerifyResult, Vec<Record>, Vec<Gossip>) {
        let (records, r, published) = self.call(
            d,
            now,
            self.requester,
            Request::Verify(VerifyRequest { code: code.into() }),
        );
        match r {
            Response::Verified(v) => (v, records, published),
            other => panic!("expected a verdict, got {other:?}"),
        }
    }
}

fn wrong_code(right: &str) -> String {
    let n: u64 = right.parse().unwrap();
    format!("{:08}", (n + 1) % 100_000_000)
}

#[test]
fn an_otp_is_accepted_once_and_then_used_even_after_a_restart() {
    let mut w = World::new(1);
    let mut d = w.distributor(0, &[]);
    let (code, mut log) = w.issue(&mut d, 0, 1_000);
    let (first, records, published) = w.verify(&mut d, 2_000, &code);
    assert_eq!(first, VerifyResult::Accepted);
    assert!(
        records.iter().any(|r| matches!(r, Record::Used { .. })),
        "acceptance is committed"
    );
    assert!(
        matches!(published.as_slice(), [Gossip::Used(_)]),
        "and announced to the other distributors"
    );
    log.extend(records);
    assert_eq!(w.verify(&mut d, 3_000, &code).0, VerifyResult::Used);
    let mut again = w.distributor(0, &log);
    assert_eq!(
        w.verify(&mut again, 4_000, &code).0,
        VerifyResult::Used,
        "a restart does not forget a use"
    );
}

#[test]
fn an_otp_expires() {
    let mut w = World::new(1);
    let mut d = w.distributor(0, &[]);
    let (code, _) = w.issue(&mut d, 0, 1_000);
    assert_eq!(
        w.verify(&mut d, 1_000 + EXPIRY, &code).0,
        VerifyResult::Expired
    );
    let (code2, _) = w.issue(&mut d, 0, 10_000);
    assert_ne!(code, code2);
    assert_eq!(
        w.verify(&mut d, 10_000 + EXPIRY - 1, &code2).0,
        VerifyResult::Accepted
    );
}

#[test]
fn the_store_forgets_expired_otps_every_second_while_any_are_remembered() {
    use otpmesh_protocol::role::distributor::{COMPACT_EVERY_MS, EXPIRE_EVERY_MS};
    let mut w = World::new(1);
    let mut d = w.distributor(0, &[]);
    let tick = |d: &mut Distributor, now: u64| -> Vec<Record> {
        d.tick(now, &mut ChaCha20Rng::seed_from_u64(now))
            .into_iter()
            .filter_map(|a| match a {
                Action::Persist(r) => Some(r),
                _ => None,
            })
            .collect()
    };
    // The first tick compacts (nothing is held yet); the clock starts late, so that the
    // cut-offs below are not clamped at zero.
    let t0 = 10 * COMPACT_EVERY_MS;
    assert!(matches!(
        tick(&mut d, t0).as_slice(),
        [Record::Compact { .. }]
    ));
    assert_eq!(
        tick(&mut d, t0 + EXPIRE_EVERY_MS),
        vec![],
        "nothing remembered, nothing to expire"
    );
    let issued_at = t0 + EXPIRE_EVERY_MS;
    w.issue(&mut d, 0, issued_at);
    let first = issued_at + EXPIRE_EVERY_MS;
    assert_eq!(
        tick(&mut d, first),
        vec![Record::ExpireOtps {
            before_ms: first - EXPIRY
        }]
    );
    assert_eq!(
        tick(&mut d, first + EXPIRE_EVERY_MS - 1),
        vec![],
        "once a second"
    );
    assert_eq!(
        tick(&mut d, first + EXPIRE_EVERY_MS),
        vec![Record::ExpireOtps {
            before_ms: first + EXPIRE_EVERY_MS - EXPIRY
        }]
    );
    // The next compaction after the OTP expired a lifetime ago forgets it in memory too ...
    let compaction = t0 + COMPACT_EVERY_MS * (1 + (2 * EXPIRY).div_ceil(COMPACT_EVERY_MS));
    assert!(matches!(
        tick(&mut d, compaction).as_slice(),
        [Record::Compact { expired_before_ms, .. }] if *expired_before_ms == compaction - EXPIRY
    ));
    // ... and then an idle distributor commits nothing every second.
    assert_eq!(tick(&mut d, compaction + 10 * EXPIRE_EVERY_MS), vec![]);
}

#[test]
fn five_wrong_codes_lock_until_the_cooldown_and_the_lock_survives_restarts() {
    let mut w = World::new(1);
    let s = w.mesh.settings.clone();
    let mut d = w.distributor(0, &[]);
    let (code, mut log) = w.issue(&mut d, 0, 1_000);
    let wrong = wrong_code(&code);
    for i in 0..s.max_failures {
        let (v, records, _) = w.verify(&mut d, 2_000 + i as u64, &wrong);
        assert_eq!(v, VerifyResult::Wrong, "attempt {i}");
        log.extend(records);
    }
    assert_eq!(
        w.verify(&mut d, 3_000, &code).0,
        VerifyResult::Locked,
        "locked: even the right code is not checked"
    );
    let mut restarted = w.distributor(0, &log);
    assert_eq!(
        w.verify(&mut restarted, 4_000, &code).0,
        VerifyResult::Locked,
        "the lock survives a restart"
    );
    let after = 2_000 + s.max_failures as u64 + s.lockout_ms;
    // The lockout outlasts the OTP; after it, the old code has expired and a new one works.
    assert_eq!(
        w.verify(&mut restarted, after, &code).0,
        VerifyResult::Expired,
        "unlocked, and checked again"
    );
    let (fresh, _) = w.issue(&mut restarted, 0, after);
    assert_eq!(
        w.verify(&mut restarted, after + 1, &fresh).0,
        VerifyResult::Accepted,
        "unlocked after the cool-down"
    );
}

#[test]
fn failures_outside_the_window_do_not_add_up() {
    let mut w = World::new(1);
    let s = w.mesh.settings.clone();
    let mut d = w.distributor(0, &[]);
    let (code, _) = w.issue(&mut d, 0, 1_000);
    let wrong = wrong_code(&code);
    for i in 0..(s.max_failures as u64 * 3) {
        // One wrong code per window/2: never max_failures inside one window.
        let v = w
            .verify(&mut d, 2_000 + i * (s.failure_window_ms / 2), &wrong)
            .0;
        assert_eq!(v, VerifyResult::Wrong);
    }
    let (code, _) = w.issue(&mut d, 0, 20_000_000);
    assert_eq!(
        w.verify(&mut d, 20_000_001, &code).0,
        VerifyResult::Accepted
    );
}

#[test]
fn malformed_codes_and_strangers_are_refused_without_counting() {
    let mut w = World::new(1);
    let mut d = w.distributor(0, &[]);
    for bad in ["1234", "abcdefgh", "123456789", ""] {
        let (records, r, _) = w.call(
            &mut d,
            1,
            w.requester,
            Request::Verify(VerifyRequest { code: bad.into() }),
        );
        assert!(
            matches!(r, Response::Refused(Refusal::Invalid(_))),
            "{bad:?}: {r:?}"
        );
        assert!(records.is_empty());
    }
    let (_, r, _) = w.call(
        &mut d,
        1,
        peer(),
        Request::Verify(VerifyRequest {
            code: "12345678".into(),
        }),
    );
    assert!(matches!(r, Response::Refused(Refusal::Unauthorised(_))));
}

#[test]
fn a_use_at_one_distributor_is_used_at_the_others_and_only_the_issuer_accepts() {
    let mut w = World::new(3);
    let mut ds: Vec<Distributor> = (0..3).map(|i| w.distributor(i, &[])).collect();
    let (code, _) = w.issue(&mut ds[0], 0, 1_000);
    // Before the marker arrives, the others do not know this OTP: they never accept it.
    assert_eq!(w.verify(&mut ds[1], 1_500, &code).0, VerifyResult::Wrong);
    let (v, _, published) = w.verify(&mut ds[0], 2_000, &code);
    assert_eq!(v, VerifyResult::Accepted);
    let issuer = w.distributors[0];
    for (i, d) in ds.iter_mut().enumerate().skip(1) {
        let (verdict, actions) = d.gossip(2_001, Heard::new(issuer, &published[0]), &mut w.rng);
        assert_eq!(verdict, Verdict::Accept);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Persist(Record::Used { .. }))),
            "distributor {i} commits it"
        );
    }
    for (i, d) in ds.iter_mut().enumerate().skip(1) {
        let (v, _, _) = w.verify(d, 2_002, &code);
        assert_eq!(v, VerifyResult::Used, "distributor {i}");
    }
    // A marker from someone who is not a distributor is rejected.
    let (verdict, _) = ds[1].gossip(2_003, Heard::new(w.requester, &published[0]), &mut w.rng);
    assert!(matches!(verdict, Verdict::Reject(_)));
    // The same requester's OTPs from different distributors differ.
    let (a, _) = w.issue(&mut ds[1], 1, 3_000);
    let (b, _) = w.issue(&mut ds[2], 2, 3_000);
    assert_ne!(a, b);
}

mod totp_tokens {
    use super::*;
    use otpmesh_protocol::kx::Ephemeral;
    use otpmesh_protocol::totp;
    use otpmesh_protocol::wire::TotpEnrolRequest;

    /// Enrols a TOTP token at distributor 0; returns the secret the requester unmasked.
    fn enrol(w: &mut World, d: &mut Distributor) -> (Vec<u8>, totp::Params, Vec<Record>) {
        let eph = Ephemeral::new(&mut w.rng);
        let (records, r, _) = w.call(
            d,
            1_000,
            w.requester,
            Request::TotpEnrol(TotpEnrolRequest {
                requester_key: eph.public(),
            }),
        );
        let Response::TotpEnrolled(grant) = r else {
            panic!("expected a token, got {r:?}")
        };
        let key = eph
            .salt_key(&grant.distributor_key, &w.requester, &w.distributors[0])
            .unwrap();
        (
            key.mask_bytes(&grant.salt, &grant.masked_secret).to_vec(),
            grant.params,
            records,
        )
    }

    fn totp_verify(w: &mut World, d: &mut Distributor, now_ms: u64, code: String) -> VerifyResult {
        totp_verify_logged(w, d, now_ms, code, &mut Vec::new())
    }

    fn totp_verify_logged(
        w: &mut World,
        d: &mut Distributor,
        now_ms: u64,
        code: String,
        log: &mut Vec<Record>,
    ) -> VerifyResult {
        let (records, r, _) = w.call(
            d,
            now_ms,
            w.requester,
            Request::TotpVerify(VerifyRequest { code }),
        );
        log.extend(records);
        match r {
            Response::Verified(v) => v,
            other => panic!("expected a verdict, got {other:?}"),
        }
    }

    #[test]
    fn a_totp_code_is_accepted_once_per_step_within_the_window_and_survives_restarts() {
        let mut w = World::new(1);
        let mut d = w.distributor(0, &[]);
        let (secret, params, mut log) = enrol(&mut w, &mut d);
        assert_eq!(secret.len(), totp::SECRET_BYTES);
        assert!(
            log.iter().any(|r| matches!(r, Record::TotpToken { .. })),
            "the token is committed before the reply"
        );
        let t = 1_700_000_000u64;
        let code = |step_time: u64| params.code(&secret, step_time).unwrap().to_string();
        let l = &mut log;
        assert_eq!(
            totp_verify_logged(&mut w, &mut d, t * 1000, code(t), l),
            VerifyResult::Accepted
        );
        assert_eq!(
            totp_verify_logged(&mut w, &mut d, t * 1000 + 1, code(t), l),
            VerifyResult::Used,
            "once per step"
        );
        // The previous step's code is inside the window but older than the accepted step: used.
        assert_eq!(
            totp_verify_logged(&mut w, &mut d, t * 1000 + 2, code(t - 30), l),
            VerifyResult::Used
        );
        // One step ahead is inside the ±1 window; two steps ahead is not.
        assert_eq!(
            totp_verify_logged(&mut w, &mut d, t * 1000 + 3, code(t + 30), l),
            VerifyResult::Accepted
        );
        assert_eq!(
            totp_verify_logged(&mut w, &mut d, t * 1000 + 4, code(t + 120), l),
            VerifyResult::Wrong
        );
        // Restart from the records: the token and its last step survive.
        let restored_token = log.iter().rev().find_map(|r| match r {
            Record::TotpToken { token, .. } => Some(token.clone()),
            _ => None,
        });
        let mut restored = Restored {
            rounds: vec![(w.transcript.clone(), w.secret.clone())],
            ..Default::default()
        };
        restored.tokens.push((w.requester, restored_token.unwrap()));
        let mut again = Distributor::new(w.distributors[0], w.mesh.clone(), restored);
        assert_eq!(
            totp_verify(&mut w, &mut again, t * 1000 + 6, code(t + 30)),
            VerifyResult::Used
        );
        assert_eq!(
            totp_verify(&mut w, &mut again, (t + 60) * 1000, code(t + 60)),
            VerifyResult::Accepted
        );
    }

    #[test]
    fn drift_is_remembered_and_recentres_the_window() {
        let mut w = World::new(1);
        let mut d = w.distributor(0, &[]);
        let (secret, params, _) = enrol(&mut w, &mut d);
        let t = 1_700_000_010u64;
        // The authenticator runs one step fast.
        let fast = |now: u64| params.code(&secret, now + 30).unwrap().to_string();
        assert_eq!(
            totp_verify(&mut w, &mut d, t * 1000, fast(t)),
            VerifyResult::Accepted
        );
        // Now it runs two steps fast: outside ±1 of the clock, inside ±1 of the remembered drift.
        let faster = params.code(&secret, t + 300 + 60).unwrap().to_string();
        assert_eq!(
            totp_verify(&mut w, &mut d, (t + 300) * 1000, faster),
            VerifyResult::Accepted
        );
    }

    #[test]
    fn wrong_totp_codes_lock_like_otps() {
        let mut w = World::new(1);
        let mut d = w.distributor(0, &[]);
        let (secret, params, _) = enrol(&mut w, &mut d);
        let t = 1_700_000_000u64;
        let right = params.code(&secret, t).unwrap();
        let wrong = format!("{:06}", (right.value() + 1) % 1_000_000);
        for _ in 0..w.mesh.settings.max_failures {
            assert_eq!(
                totp_verify(&mut w, &mut d, t * 1000, wrong.clone()),
                VerifyResult::Wrong
            );
        }
        assert_eq!(
            totp_verify(&mut w, &mut d, t * 1000, right.to_string()),
            VerifyResult::Locked
        );
    }
}

#[test]
fn markers_for_strangers_or_from_the_far_future_are_rejected() {
    use otpmesh_protocol::wire::UseMarker;
    let mut w = World::new(2);
    let mut d = w.distributor(1, &[]);
    let issuer = w.distributors[0];
    let stranger = UseMarker {
        requester: peer(),
        round: RoundId(1),
        counter: 0,
        expires_at_ms: 2_000,
    };
    assert!(matches!(
        d.gossip(
            1_000,
            Heard::new(issuer, &Gossip::Used(stranger)),
            &mut w.rng
        )
        .0,
        Verdict::Reject(_)
    ));
    let far = UseMarker {
        requester: w.requester,
        round: RoundId(1),
        counter: 0,
        expires_at_ms: u64::MAX,
    };
    // Refused, but not penalised: a distributor whose clock runs ahead is not hostile.
    assert!(matches!(
        d.gossip(1_000, Heard::new(issuer, &Gossip::Used(far)), &mut w.rng)
            .0,
        Verdict::Ignore(_)
    ));
    let fine = UseMarker {
        requester: w.requester,
        round: RoundId(1),
        counter: 0,
        expires_at_ms: 1_000 + EXPIRY,
    };
    assert_eq!(
        d.gossip(1_000, Heard::new(issuer, &Gossip::Used(fine)), &mut w.rng)
            .0,
        Verdict::Accept
    );
}
