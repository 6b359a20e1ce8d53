//! Attacks on threshold mode's promise — fewer than T shareholders learn nothing about an OTP, a
//! password or a round key, whatever any number of contributors do — each performed on the sans-IO
//! roles with real curve arithmetic and real RSA (issue 20, findings 1–9). Each test failed on
//! commit 62d0565.

#[path = "common/sim.rs"]
mod sim;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::scalar::Scalar;
use libp2p_identity::PeerId;
use otpmesh_protocol::kx::Ephemeral;
use otpmesh_protocol::otp::{Digits, Otp};
use otpmesh_protocol::phrase::ClientId;
use otpmesh_protocol::role::{threshold, Action, Event, InboundId, Millis, Role, Verdict};
use otpmesh_protocol::role::{Heard, Inbound, Rng};
use otpmesh_protocol::round::{RoundId, ThresholdKey};
use otpmesh_protocol::threshold::dkg::{self, Dealing, Received};
use otpmesh_protocol::threshold::eval::{self, Input, KeyShare};
use otpmesh_protocol::threshold::poly::{Pair, Polynomial, SharePair};
use otpmesh_protocol::threshold::{Index, Params};
use otpmesh_protocol::wire::{Deal, Gossip, PartialGrant, Request, Response};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::CryptoRngCore;
use sim::*;

/// A distributor that answers every partial request under a key it dealt itself.
struct Colluder {
    me: PeerId,
    share: KeyShare,
    key: ThresholdKey,
    round: RoundId,
    digits: Digits,
}

impl Role for Colluder {
    fn request(&mut self, now: Millis, asked: Inbound, rng: &mut dyn Rng) -> Vec<Action> {
        let Inbound { peer, id, request } = asked;
        let Request::Partial(ask) = request else {
            return Vec::new();
        };
        let input = threshold::otp_input(&peer, self.round, ask.counter);
        let partial = self.share.evaluate(&input, rng);
        let mine = Ephemeral::new(rng);
        let salt_key = mine.salt_key(&ask.requester_key, &peer, &self.me).unwrap();
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let masked = salt_key.mask_bytes(&salt, &partial.y);
        let grant = PartialGrant {
            round: self.round,
            counter: ask.counter,
            digits: self.digits,
            index: self.share.index,
            masked_y: masked.as_slice().try_into().unwrap(),
            proof: partial.proof,
            salt,
            distributor_key: mine.public(),
            epoch: None,
            expires_at_ms: now + 60_000,
            key: self.key.clone(),
        };
        vec![Action::Reply {
            to: id,
            response: Response::Partial(Box::new(grant)),
        }]
    }
}

/// Finding 1: two distributors of a 3/5 mesh deal themselves a 2-of-3 key and answer under it with
/// valid proofs. Whichever distributors the requester names, it must not end up with an OTP the
/// two can compute.
#[test]
fn two_colluding_distributors_offering_their_own_key_are_not_believed() {
    let mut sim = Sim::new(3);
    let t = sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    let params = Params::new(2, 3).unwrap();
    let secret = Scalar::from(777u64);
    let polynomial = Polynomial::random(secret, params, &mut sim.world.rng);
    let password_polynomial = Polynomial::random(Scalar::from(778u64), params, &mut sim.world.rng);
    // Signed, even, by one of them: not by the coordinator.
    let mut key = ThresholdKey {
        params,
        public: Pair {
            otp: polynomial.commit(),
            password: password_polynomial.commit(),
        }
        .to_wire(),
        seal: None,
    };
    let colluder_identity = libp2p_identity::Keypair::generate_ed25519();
    key.sign(t.round, t.commitment, &colluder_identity);
    for (j, peer) in d.iter().take(2).enumerate() {
        let index = Index(j as u32 + 1);
        let colluder = Colluder {
            me: *peer,
            share: KeyShare::new(
                index,
                SharePair {
                    otp: polynomial.evaluate(index),
                    password: password_polynomial.evaluate(index),
                },
            ),
            key: key.clone(),
            round: t.round,
            digits: sim.mesh.settings.digits,
        };
        sim.add(*peer, Box::new(colluder));
    }
    let digits = sim.mesh.settings.digits;
    let known_to_colluders = |round: RoundId, counter: u64| {
        let input = threshold::otp_input(&alice, round, counter);
        let y = input.point() * secret;
        Otp::new(eval::otp(&y, &input, digits), digits)
            .unwrap()
            .to_string()
    };
    for named in [vec![d[0], d[1], d[2]], d.clone()] {
        match sim.issue(alice, named.clone()) {
            Ok((round, counter, otp, _)) => assert_ne!(
                otp,
                known_to_colluders(round, counter),
                "asking {} distributors, the requester took the colluders' key",
                named.len()
            ),
            Err(reason) => assert!(reason.starts_with("quorum unavailable"), "{reason}"),
        }
    }
}

/// A contributor whose secret the attacker chose: it deals `secret` as soon as a round opens.
struct Puppet {
    client: ClientId,
    secret: Scalar,
    params: Params,
}

impl Role for Puppet {
    fn gossip(&mut self, _now: Millis, heard: Heard, rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        let Heard { message, .. } = heard;
        let Gossip::Open(open) = message else {
            return (Verdict::Accept, Vec::new());
        };
        let deal = sealed_deal(open.round, self.client, self.secret, self.params, rng);
        (Verdict::Accept, vec![Action::Publish(Gossip::Deal(deal))])
    }
}

/// A dealing of `secret` by `client`, each share sealed to its generator's RSA key, as an honest
/// contributor would gossip it.
fn sealed_deal(
    round: RoundId,
    client: ClientId,
    secret: Scalar,
    params: Params,
    rng: &mut dyn CryptoRngCore,
) -> Deal {
    let dealing = Dealing::new(secret, params, rng);
    let shares = params
        .indices()
        .map(|j| {
            let share = dealing.share(j).unwrap().to_bytes();
            let sealed = keys()[j.0 as usize - 1]
                .public()
                .seal_share(round, client, j, &share, rng)
                .unwrap();
            serde_bytes::ByteBuf::from(sealed)
        })
        .collect();
    Deal {
        round,
        client,
        commitments: dealing.commitments.to_wire(),
        shares,
        signature: None,
    }
}

/// Finding 2: the attacker holds `quorum` listed client ids and delays the honest contributors'
/// gossip; the round must still not be keyed by secrets the attacker knows.
#[test]
fn quorum_colluding_contributors_cannot_compute_the_round_key() {
    let mut sim = Sim::with(4, false, |mesh| {
        mesh.settings.quorum = 2;
        mesh.settings.minimum = 2;
    });
    let params = sim.mesh.threshold().unwrap();
    let secrets = [Scalar::from(11u64), Scalar::from(22u64)];
    for (i, secret) in secrets.iter().enumerate() {
        let peer = sim.mesh.contributors[i].peer_id;
        let client = ClientId(i as u32 + 1);
        let puppet = Puppet {
            client,
            secret: *secret,
            params,
        };
        sim.add(peer, Box::new(puppet));
    }
    let honest: Vec<PeerId> = sim.mesh.contributors[2..]
        .iter()
        .map(|c| c.peer_id)
        .collect();
    sim.log.hook = Some(Box::new(move |at, msg| {
        !(honest.contains(at) && matches!(msg, Msg::Gossip(_, Gossip::Deal(_))))
    }));
    let t = sim.seal_first_round();
    let key = t.threshold.as_ref().unwrap().key().unwrap().key();
    let known: Scalar = secrets.iter().sum();
    assert_ne!(
        key,
        G * known,
        "the round key is the sum of the attacker's own secrets"
    );
}

/// Finding 3: an attacker on the path withholds every honest dealing from T generators. A share
/// is never published in clear for a dealing that was merely missed.
#[test]
fn withheld_dealings_never_lead_to_a_share_in_clear() {
    let mut sim = Sim::new(4);
    for j in 1..=T as usize {
        let g = sim.mesh.generators[j].peer_id;
        sim.log.lost.insert((g, "deal"));
    }
    sim.seal_first_round();
    let answers = sim
        .log
        .published
        .iter()
        .filter(|(_, _, kind)| *kind == "justification")
        .count();
    assert_eq!(answers, 0, "shares were published for withheld dealings");
    let held = sim.find(|_, e| matches!(e, Event::ShareHeld { .. }).then_some(()));
    assert_eq!(held.len(), N, "the generators fetched what they missed");
}

/// Finding 4: two dealers whose shares to one generator are off by +δ and −δ.
#[test]
fn opposite_errors_in_two_dealings_are_caught_and_both_dealers_named() {
    let params = Params::new(3, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let j = Index(2);
    let delta = Scalar::from(5u64);
    let mut received: Vec<Received> = (1..=3u32)
        .map(|client| {
            let dealing = Dealing::new(Scalar::from(u64::from(client)), params, &mut rng);
            dealing.received_by(client, j).unwrap()
        })
        .collect();
    received[0].share.otp += delta;
    received[1].share.otp -= delta;
    let named = dkg::complaints(j, params, &received, &mut rng);
    assert_eq!(named, vec![1, 2], "both cheaters are named");
    // The same in the password key's sharing, checked in the same batch.
    received[0].share.otp -= delta;
    received[1].share.otp += delta;
    assert!(dkg::complaints(j, params, &received, &mut rng).is_empty());
    received[1].share.password += delta;
    received[2].share.password -= delta;
    let named = dkg::complaints(j, params, &received, &mut rng);
    assert_eq!(
        named,
        vec![2, 3],
        "both cheaters are named, password sharing"
    );
}

/// Finding 5: two proofs made from one rng state (a replayed `--seed`) must not share a nonce,
/// or k_j = (s1 − s2) / (c2 − c1).
#[test]
fn two_proofs_under_one_rng_state_do_not_reveal_the_key_share() {
    let k = Scalar::from(987_654_321u64);
    let share = KeyShare::new(
        Index(1),
        SharePair {
            otp: k,
            password: Scalar::from(5u64),
        },
    );
    let input = |counter| Input {
        domain: "otp".into(),
        requester: vec![1, 2, 3],
        round: 1,
        counter,
    };
    let a = share.evaluate(&input(1), &mut ChaCha20Rng::seed_from_u64(5));
    let b = share.evaluate(&input(2), &mut ChaCha20Rng::seed_from_u64(5));
    let scalar = |bytes: [u8; 32]| Scalar::from_canonical_bytes(bytes).unwrap();
    let (c1, s1) = (scalar(a.proof.c), scalar(a.proof.s));
    let (c2, s2) = (scalar(b.proof.c), scalar(b.proof.s));
    let extracted = (s1 - s2) * (c2 - c1).invert();
    assert_ne!(extracted, k, "the key share fell out of two proofs");
}

/// Finding 6: the coordinator hears no other generator say it is ready; it must not seal.
#[test]
fn the_coordinator_does_not_seal_without_readiness_from_t_generators() {
    let mut sim = Sim::new(3);
    let coordinator = sim.mesh.generators[0].peer_id;
    sim.log.lost.insert((coordinator, "complaints"));
    sim.advance(20_000);
    let sealed = sim.find(|_, e| matches!(e, Event::RoundSealed { .. }).then_some(()));
    assert!(
        sealed.is_empty(),
        "sealed with the coordinator's own readiness only"
    );
}

/// Finding 7: every distributor answers with 4 digits; the OTP still has the mesh's digits.
#[test]
fn digits_are_the_meshs_not_a_distributors() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    sim.log.hook = Some(Box::new(|_, msg| {
        if let Msg::Response(_, _, _, Ok(Response::Partial(g))) = msg {
            g.digits = Digits::new(6).unwrap();
        }
        true
    }));
    let (_, _, otp, _) = sim.issue(alice, d).unwrap();
    assert_eq!(otp.len(), usize::from(sim.mesh.settings.digits.get()));
}

/// The χ² statistic of the leading digit of `count` codes of `digits` digits, 9 degrees of
/// freedom.
fn leading_digit_chi_square(digits: u8, count: usize, code: impl Fn(u64) -> u64) -> f64 {
    let mut seen = [0usize; 10];
    let modulus = 10u64.pow(u32::from(digits) - 1);
    for i in 0..count as u64 {
        seen[(code(i) / modulus) as usize] += 1;
    }
    let expected = count as f64 / 10.0;
    seen.iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum()
}

/// Finding 8: every digit count is uniform, also 9 and 10 (p = 0.001 critical value 27.88).
#[test]
fn codes_of_every_digit_count_are_uniform() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let y = G * Scalar::random(&mut rng);
    for digits in 6..=10u8 {
        let d = Digits::new(digits).unwrap();
        let chi = leading_digit_chi_square(digits, 20_000, |i| {
            let input = Input {
                domain: "otp".into(),
                requester: vec![9],
                round: 1,
                counter: i,
            };
            eval::otp(&y, &input, d)
        });
        assert!(chi < 27.88, "{digits} digits: χ² = {chi:.1}");
    }
}

/// Finding 9: complaints go out at one fixed offset after the proposal, whether a generator's
/// shares opened or not.
#[test]
fn complaints_are_published_at_a_fixed_offset_from_the_proposal() {
    let mut sim = Sim::new(3);
    // Generator 2's share of client 2 does not open.
    sim.log.hook = Some(Box::new(|_, msg| {
        if let Msg::Gossip(_, Gossip::Deal(deal)) = msg {
            if deal.client == ClientId(2) {
                let last = deal.shares[1].len() - 1;
                deal.shares[1][last] ^= 1;
            }
        }
        true
    }));
    sim.seal_first_round();
    let at = |kind| {
        sim.log
            .published
            .iter()
            .filter(|(_, _, k)| *k == kind)
            .map(|(t, p, _)| (*t, *p))
            .collect::<Vec<_>>()
    };
    let proposed = at("proposal")[0].0;
    let complaints = at("complaints");
    assert_eq!(complaints.len(), N, "{complaints:?}");
    let offsets: Vec<u64> = complaints.iter().map(|(t, _)| t - proposed).collect();
    assert!(
        offsets.iter().all(|o| *o == offsets[0]) && offsets[0] > 0,
        "complaints at {offsets:?} ms after the proposal"
    );
}

/// A corrupt coordinator seals (and signs) a round keyed by its own dealing and the contributors'
/// only, leaving the other generators' dealings out. The honest shareholders must not take part:
/// no honest generator holds a share of it, no distributor stores it, no OTP comes of it.
#[test]
fn a_coordinator_sealing_without_t_generator_dealings_is_refused_by_everyone_else() {
    use otpmesh_protocol::digest::Digest32;
    use otpmesh_protocol::threshold::dealing_generator;
    use otpmesh_protocol::threshold::poly::Commitments;
    let mut sim = Sim::new(3);
    let coordinator = sim.mesh.generators[0].peer_id;
    let identity = sim.identities[&coordinator].clone();
    let params = sim.mesh.threshold().unwrap();
    let mut deals: Vec<Deal> = Vec::new();
    sim.log.hook = Some(Box::new(move |at, msg| {
        match msg {
            Msg::Gossip(_, Gossip::Deal(d)) => deals.push(d.clone()),
            Msg::Gossip(_, Gossip::Sealed(t)) if *at == coordinator => {
                // Q: the contributors and generator 1 alone.
                t.included
                    .retain(|i| dealing_generator(i.client).is_none_or(|j| j.0 == 1));
                let sum = t
                    .included
                    .iter()
                    .map(|i| {
                        let d = deals.iter().find(|d| d.client == i.client).unwrap();
                        Commitments::from_wire(&d.commitments).unwrap()
                    })
                    .reduce(|a, b| a.add(&b))
                    .unwrap();
                let mut key = ThresholdKey {
                    params,
                    public: sum.to_wire(),
                    seal: None,
                };
                t.commitment = key.commitment(t.round, &t.prev_commitment, &t.included);
                key.sign(t.round, t.commitment, &identity);
                t.threshold = Some(key);
                let _: Digest32 = t.commitment;
            }
            _ => {}
        }
        true
    }));
    sim.advance(20_000);
    let held: Vec<PeerId> = sim.find(|p, e| matches!(e, Event::ShareHeld { .. }).then_some(*p));
    assert!(
        held.iter().all(|p| *p == coordinator),
        "honest generators took shares of a round without t generator dealings: {held:?}"
    );
    let stored = sim.find(|p, e| matches!(e, Event::RoundStored { .. }).then_some(*p));
    assert!(stored.len() < T as usize, "{stored:?}");
}

/// The right key, the right partials, signed by someone other than the coordinator: not
/// believed. (Every distributor's answer is re-signed on the wire.)
#[test]
fn a_round_key_signed_by_anyone_but_the_coordinator_is_not_believed() {
    let mut sim = Sim::new(3);
    let t = sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    let impostor = libp2p_identity::Keypair::generate_ed25519();
    let (round, commitment) = (t.round, t.commitment);
    sim.log.hook = Some(Box::new(move |_, msg| {
        if let Msg::Response(_, _, _, Ok(Response::Partial(g))) = msg {
            g.key.sign(round, commitment, &impostor);
        }
        true
    }));
    let failed = sim.issue(alice, d.clone()).unwrap_err();
    assert!(failed.starts_with("quorum unavailable"), "{failed}");
    assert!(failed.contains("not the coordinator's"), "{failed}");
    sim.log.hook = None;
    assert!(
        sim.issue(alice, d).is_ok(),
        "the coordinator's own signature is believed"
    );
}

/// A corrupt coordinator proposes dealings of its own making under every dealer id, the honest
/// generators' included, serves them when they are fetched, and seals (and signs) a key it knows,
/// even where its own code would have failed the round. No t honest generators may take part.
#[test]
fn a_coordinator_cannot_substitute_dealings_of_its_own_making() {
    use otpmesh_protocol::digest::Digest32;
    use otpmesh_protocol::round::Inclusion;
    use otpmesh_protocol::threshold::poly::Commitments;
    use std::collections::HashMap;
    let mut sim = Sim::new(3);
    let coordinator = sim.mesh.generators[0].peer_id;
    let identity = sim.identities[&coordinator].clone();
    let params = sim.mesh.threshold().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(66);
    // Forged dealings, by client id (the coordinator knows their secrets).
    let mut forged: HashMap<ClientId, (Scalar, Deal)> = HashMap::new();
    let forge = move |round: RoundId, client: ClientId, rng: &mut ChaCha20Rng| {
        let secret = Scalar::random(rng);
        (secret, sealed_deal(round, client, secret, params, rng))
    };
    let mut asked: HashMap<(PeerId, u64), ClientId> = HashMap::new();
    let mut proposed: Vec<ClientId> = Vec::new();
    let mut sealed_forged = false;
    sim.log.hook = Some(Box::new(move |at, msg| {
        match msg {
            Msg::Gossip(_, Gossip::Proposal(p)) if *at == coordinator => {
                for inclusion in &mut p.dealings {
                    let (_, deal) = forged
                        .entry(inclusion.client)
                        .or_insert_with(|| forge(p.round, inclusion.client, &mut rng));
                    let c = Commitments::from_wire(&deal.commitments).unwrap();
                    inclusion.ciphertext_hash = Digest32(c.digest());
                }
                proposed = p.dealings.iter().map(|i| i.client).collect();
            }
            Msg::Request(from, to, tag, Request::Dealing(ask)) if *to == coordinator => {
                asked.insert((*from, tag.0), ask.client);
            }
            Msg::Response(from, to, tag, response) if *from == coordinator => {
                if let Some(client) = asked.remove(&(*to, tag.0)) {
                    if let Some((_, deal)) = forged.get(&client) {
                        *response = Ok(Response::Dealing(Box::new(deal.clone())));
                    }
                }
            }
            Msg::Gossip(source, m @ (Gossip::Sealed(_) | Gossip::Failed(_)))
                if *at == coordinator && !sealed_forged && !proposed.is_empty() =>
            {
                sealed_forged = true;
                let round = match m {
                    Gossip::Sealed(t) => t.round,
                    Gossip::Failed(f) => f.round,
                    _ => unreachable!(),
                };
                let included: Vec<Inclusion> = proposed
                    .iter()
                    .map(|client| {
                        let c = Commitments::from_wire(&forged[client].1.commitments).unwrap();
                        Inclusion {
                            client: *client,
                            ciphertext_hash: Digest32(c.digest()),
                        }
                    })
                    .collect();
                let sum = proposed
                    .iter()
                    .map(|client| Commitments::from_wire(&forged[client].1.commitments).unwrap())
                    .reduce(|a, b| a.add(&b))
                    .unwrap();
                let mut key = ThresholdKey {
                    params,
                    public: sum.to_wire(),
                    seal: None,
                };
                let prev = Digest32::ZERO;
                let commitment = key.commitment(round, &prev, &included);
                key.sign(round, commitment, &identity);
                *m = Gossip::Sealed(otpmesh_protocol::round::Transcript {
                    round,
                    generator: *source,
                    key_fingerprint: Digest32::ZERO,
                    included,
                    prev_commitment: prev,
                    commitment,
                    sealed_at_ms: 0,
                    threshold: Some(key),
                });
            }
            _ => {}
        }
        true
    }));
    sim.advance(20_000);
    let honest_held: Vec<PeerId> = sim.find(|p, e| match e {
        Event::ShareHeld { .. } if *p != coordinator => Some(*p),
        _ => None,
    });
    assert!(
        honest_held.len() < T as usize,
        "{} honest generators took shares of the coordinator's own key",
        honest_held.len()
    );
}

/// One generator reports every dealing missing: it leaves itself out, not the dealings.
#[test]
fn one_generator_reporting_every_dealing_missing_does_not_stall_the_round() {
    let mut sim = Sim::new(3);
    let liar = sim.mesh.generators[1].peer_id;
    let mut proposed: Vec<ClientId> = Vec::new();
    sim.log.hook = Some(Box::new(move |at, msg| {
        match msg {
            Msg::Gossip(_, Gossip::Proposal(p)) => {
                proposed = p.dealings.iter().map(|i| i.client).collect();
            }
            Msg::Gossip(_, Gossip::Complaints(c)) if *at == liar => {
                c.missing = proposed.clone();
            }
            _ => {}
        }
        true
    }));
    sim.advance(15_000);
    let failed = sim.find(|_, e| match e {
        Event::RoundFailed { reason, .. } => Some(reason.clone()),
        Event::DealingExcluded { reason, .. } => Some(reason.clone()),
        Event::ShareUnavailable { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(failed.is_empty(), "{failed:?}");
    let t = sim.seal_first_round();
    assert_eq!(t.clients().len(), 3, "every contributor's dealing went in");
    assert_eq!(t.generator_dealers().len(), N, "and every generator's");
}

/// Finding 10: a password must stay the requester's even against every distributor's store and
/// everything they were sent. The coalition here is all N (more than T): it rebuilds both round
/// keys, k and k', from the stored key shares and tries each request it saw under each. (Failed on
/// 62d0565, where a password was the evaluation at ("password", requester, round, counter).)
#[test]
fn all_distributors_together_cannot_rebuild_a_password() {
    use otpmesh_protocol::role::Record;
    use otpmesh_protocol::threshold::password::{self, Alphabet};
    use otpmesh_protocol::threshold::poly::lagrange_at_zero;
    use std::sync::{Arc, Mutex};
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let log = seen.clone();
    sim.log.hook = Some(Box::new(move |_, msg| {
        if let Msg::Request(_, _, _, request) = msg {
            log.lock().unwrap().push(request.clone());
        }
        true
    }));
    sim.log.events.clear();
    let role = threshold::Requester::password_once(
        alice,
        sim.mesh.clone(),
        d.clone(),
        Alphabet::default(),
        20,
    );
    sim.add(alice, Box::new(role));
    sim.settle();
    let got = sim.find(|p, e| match e {
        Event::PasswordReceived { password, .. } if *p == alice => Some(password.clone()),
        _ => None,
    });
    assert_eq!(got.len(), 1, "{:?}", sim.log.events);
    // k and k' from every distributor's stored share pair of round 1.
    let half = |secret: &[u8], at: usize| {
        Scalar::from_canonical_bytes(secret[at..at + 32].try_into().unwrap()).unwrap()
    };
    let shares: Vec<(Index, Scalar, Scalar)> = d
        .iter()
        .enumerate()
        .filter_map(|(j, peer)| {
            sim.world.records[peer].iter().find_map(|r| match r {
                Record::Round { secret, .. } => Some((
                    Index(j as u32 + 1),
                    half(secret.as_bytes(), 0),
                    half(secret.as_bytes(), 32),
                )),
                _ => None,
            })
        })
        .collect();
    assert_eq!(shares.len(), N, "every distributor's share pair");
    let indices: Vec<Index> = shares.iter().map(|(i, _, _)| *i).collect();
    let otp_key: Scalar = shares
        .iter()
        .map(|(i, s, _)| s * lagrange_at_zero(&indices, *i))
        .sum();
    let password_key: Scalar = shares
        .iter()
        .map(|(i, _, s)| s * lagrange_at_zero(&indices, *i))
        .sum();
    let mut rebuilt = Vec::new();
    for (request, k) in seen
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| [(r, otp_key), (r, password_key)])
    {
        match request {
            Request::Partial(ask) => {
                let input = ask.domain.input(&alice, RoundId(1), ask.counter);
                let y = input.point() * k;
                if let Ok(p) = password::derive(&y, &input, &Alphabet::default(), 20) {
                    rebuilt.push(p.to_string());
                }
            }
            Request::Evaluate(ask) => {
                // k·B is all a coalition can make of a blinded element: the input and the blind
                // never left the requester. Try B itself as the input and k·B as the element.
                let b =
                    otpmesh_protocol::threshold::voprf::decode_element("b", &ask.blinded).unwrap();
                let guess =
                    otpmesh_protocol::threshold::voprf::Blind::from_scalar(Scalar::ONE).unwrap();
                if let Ok(out) = otpmesh_protocol::threshold::voprf::finalize_element(
                    &ask.blinded,
                    &guess,
                    &(b * k),
                ) {
                    rebuilt.push(
                        password::from_output(&out, &Alphabet::default(), 20)
                            .unwrap()
                            .to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    assert!(
        !rebuilt.is_empty(),
        "the coalition saw the password requests"
    );
    assert!(
        !rebuilt.contains(&got[0]),
        "the distributors rebuilt the requester's password"
    );
}

/// Review of the first fix: a blind evaluation under the OTP key is an oracle for k·P at any P.
/// Bob asks every distributor to "evaluate" Alice's OTP input H(x) and combines the answers: he
/// gets k'·H(x) under the password key, which says nothing of Alice's OTP k·H(x). (Failed on
/// 2827814, where Evaluate used k: Bob computed Alice's OTP.)
#[test]
fn a_requester_cannot_have_the_round_key_evaluated_at_another_requesters_otp_input() {
    use otpmesh_protocol::threshold::voprf;
    use otpmesh_protocol::wire::EvaluateRequest;
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, bob, d) = (
        sim.requesters[0],
        sim.requesters[1],
        sim.distributors.clone(),
    );
    let (round, counter, otp, _) = sim.issue(alice, d.clone()).unwrap();
    let input = threshold::otp_input(&alice, round, counter);
    let x = input.point();
    let ask = Request::Evaluate(EvaluateRequest {
        round: Some(round),
        blinded: x.compress().to_bytes(),
    });
    let mut evaluations = Vec::new();
    for distributor in d {
        let actions = sim.on(distributor, |role, now, rng| {
            role.request(now, Inbound::new(bob, InboundId(77), ask.clone()), rng)
        });
        for action in actions {
            if let Action::Reply {
                response: Response::Evaluated(grant),
                ..
            } = action
            {
                evaluations.push((grant.partial.index, grant.partial.evaluated.point()));
            }
        }
    }
    assert_eq!(
        evaluations.len(),
        5,
        "every distributor answers a blind evaluation"
    );
    let digits = sim.mesh.settings.digits;
    for subset in [&evaluations[..3], &evaluations[1..4], &evaluations[2..]] {
        let bobs = voprf::combine(subset);
        let guess = Otp::new(eval::otp(&bobs, &input, digits), digits).unwrap();
        assert_ne!(
            guess.to_string(),
            otp,
            "Bob computed Alice's OTP from blind evaluations"
        );
    }
}

/// Review of the first fix: whoever can write one distributor's store deletes its record of a
/// spent OTP (no MAC can show a row that is gone). In a 3/5 mesh that distributor and the two that
/// were not in the first quorum must not accept the OTP again.
#[test]
fn a_distributor_whose_use_record_was_deleted_does_not_release_the_otp_again() {
    use otpmesh_protocol::role::distributor::Restored;
    use otpmesh_protocol::role::{pick, Record};
    use otpmesh_protocol::wire::VerifyResult;
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    let (round, counter, otp, _) = sim.issue(alice, d.clone()).unwrap();
    sim.world.down.extend([d[3], d[4]]);
    let first = sim.verify(alice, vec![d[0], d[1], d[2]], round, counter, &otp);
    assert_eq!(first, Ok(VerifyResult::Accepted));
    // d3 restarts from a store whose OTP rows were deleted.
    let rounds = sim.world.records[&d[2]]
        .iter()
        .filter_map(|r| match r {
            Record::Round { transcript, secret } => Some((transcript.clone(), secret.clone())),
            _ => None,
        })
        .collect();
    let restored = Restored {
        rounds,
        ..Default::default()
    };
    let mesh = sim.mesh.clone();
    sim.add_inner(d[2], pick::distributor(d[2], mesh, restored));
    sim.world.down.clear();
    sim.world.down.extend([d[0], d[1]]);
    let again = sim.verify(alice, vec![d[2], d[3], d[4]], round, counter, &otp);
    assert_ne!(again, Ok(VerifyResult::Accepted), "accepted twice");
}
