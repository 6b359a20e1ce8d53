//! What each threshold role refuses, one refusal a test: the checks behind the claims of
//! docs/security.md §3.8 that the attack tests do not reach on their own.

#[path = "common/sim.rs"]
mod sim;

use otpmesh_protocol::mesh::MeshError;
use otpmesh_protocol::phrase::ClientId;
use otpmesh_protocol::role::Inbound;
use otpmesh_protocol::role::{self, Action, Event, InboundId, Record, Verdict};
use otpmesh_protocol::round::Transcript;
use otpmesh_protocol::threshold::{generator_dealer, Index, GENERATOR_DEALER_BASE};
use otpmesh_protocol::wire::{
    Deal, DealingRequest, Domain, Gossip, Handover, PartialRequest, Refusal, Request, Response,
};
use sim::*;

/// The refusal a role answered `request` from `peer` with.
fn refusal(
    sim: &mut Sim,
    at: libp2p_identity::PeerId,
    from: libp2p_identity::PeerId,
    request: Request,
) -> Refusal {
    let actions = sim.on(at, |role, now, rng| {
        role.request(now, Inbound::new(from, InboundId(9_999), request), rng)
    });
    actions
        .into_iter()
        .find_map(|a| match a {
            Action::Reply {
                response: Response::Refused(r),
                ..
            } => Some(r),
            _ => None,
        })
        .expect("a refusal")
}

/// Generator `j`'s share and the transcript of round 1, as it stored them.
fn stored(sim: &Sim, j: usize) -> (Transcript, otpmesh_protocol::round::Secret) {
    let g = sim.mesh.generators[j].peer_id;
    sim.world.records[&g]
        .iter()
        .find_map(|r| match r {
            Record::Round { transcript, secret } => Some((transcript.clone(), secret.clone())),
            _ => None,
        })
        .expect("the generator stored its share")
}

#[test]
fn contributor_ids_in_the_generators_range_are_refused_by_validation() {
    let sim = Sim::new(2);
    let mut mesh = (*sim.mesh).clone();
    mesh.contributors[0].client_id = ClientId(GENERATOR_DEALER_BASE + 1);
    assert_eq!(
        mesh.validate(),
        Err(MeshError::ReservedClient(ClientId(
            GENERATOR_DEALER_BASE + 1
        )))
    );
}

#[test]
fn only_generator_j_deals_under_its_dealer_id() {
    let sim = Sim::new(2);
    let deal = Deal {
        round: otpmesh_protocol::round::RoundId(1),
        client: generator_dealer(Index(2)),
        commitments: otpmesh_protocol::threshold::poly::WireCommitments(vec![]),
        shares: vec![],
        signature: None,
    };
    let gossip = Gossip::Deal(deal);
    let (g2, g3) = (
        sim.mesh.generators[1].peer_id,
        sim.mesh.generators[2].peer_id,
    );
    assert_eq!(role::check_gossip(&sim.mesh, &g2, &gossip), Verdict::Accept);
    for impostor in [g3, sim.mesh.contributors[0].peer_id, sim.distributors[1]] {
        assert!(
            matches!(
                role::check_gossip(&sim.mesh, &impostor, &gossip),
                Verdict::Reject(_)
            ),
            "{impostor} dealt as generator 2"
        );
    }
}

#[test]
fn the_coordinator_hands_dealings_to_generators_only() {
    let mut sim = Sim::new(2);
    let coordinator = sim.mesh.generators[0].peer_id;
    let ask = Request::Dealing(DealingRequest {
        round: otpmesh_protocol::round::RoundId(1),
        client: ClientId(1),
    });
    let alice = sim.requesters[0];
    assert!(matches!(
        refusal(&mut sim, coordinator, alice, ask.clone()),
        Refusal::Unauthorised(_)
    ));
    let g2 = sim.mesh.generators[1].peer_id;
    assert!(
        matches!(
            refusal(&mut sim, coordinator, g2, ask),
            Refusal::Unavailable(_)
        ),
        "a generator is told the dealing is not held (no round is open)"
    );
}

#[test]
fn a_distributor_refuses_a_handover_whose_key_the_coordinator_did_not_sign() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (mut transcript, share) = stored(&sim, 1);
    let (g2, d2) = (sim.mesh.generators[1].peer_id, sim.distributors[1]);
    let forged = |t: &Transcript| Handover {
        transcript: t.clone(),
        index: Index(2),
        share: share.clone(),
    };
    // Unsigned.
    transcript.threshold.as_mut().unwrap().seal = None;
    let why = refusal(
        &mut sim,
        d2,
        g2,
        Request::Handover(Box::new(forged(&transcript))),
    );
    assert!(why.to_string().contains("no signature"), "{why}");
    // Signed, by generator 2 itself.
    let identity = sim.identities[&g2].clone();
    let (round, commitment) = (transcript.round, transcript.commitment);
    transcript
        .threshold
        .as_mut()
        .unwrap()
        .sign(round, commitment, &identity);
    let why = refusal(
        &mut sim,
        d2,
        g2,
        Request::Handover(Box::new(forged(&transcript))),
    );
    assert!(why.to_string().contains("not the coordinator's"), "{why}");
}

#[test]
fn a_distributor_refuses_a_password_at_an_input_it_can_see() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d1) = (sim.requesters[0], sim.distributors[0]);
    let ask = Request::Partial(PartialRequest {
        domain: Domain::Password,
        round: None,
        counter: otpmesh_protocol::threshold::counter::fresh(sim.world.now, &mut sim.world.rng),
        requester_key: [9; 32],
        enrolled: false,
    });
    let why = refusal(&mut sim, d1, alice, ask);
    assert!(why.to_string().contains("blinded"), "{why}");
}

#[test]
fn a_partial_answered_under_another_distributors_index_is_refused_and_named() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (alice, d) = (sim.requesters[0], sim.distributors.clone());
    // Distributors 1 and 2 answer as each other (their proofs then fail too, but the index map
    // refuses them first).
    let (d1, d2) = (d[0], d[1]);
    sim.log.hook = Some(Box::new(move |at, msg| {
        if let Msg::Response(_, _, _, Ok(Response::Partial(g))) = msg {
            if *at == d1 {
                g.index = Index(2);
            } else if *at == d2 {
                g.index = Index(1);
            }
        }
        true
    }));
    let failed = sim.issue(alice, vec![d[0], d[1], d[2]]).unwrap_err();
    assert!(failed.starts_with("quorum unavailable"), "{failed}");
    assert!(failed.contains("the mesh config lists it as"), "{failed}");
    let (_, _, _, bad) = sim.issue(alice, d.clone()).expect("3, 4 and 5 suffice");
    assert!(
        bad.is_empty(),
        "refused answers are not counted as bad proofs"
    );
    let mut got = sim.find(|_, e| match e {
        Event::ThresholdOtpReceived { from, .. } => Some(from.clone()),
        _ => None,
    });
    got.iter_mut().for_each(|from| from.sort());
    assert_eq!(got, vec![vec![3, 4, 5]], "combined without the two refused");
}

#[test]
fn generators_take_no_share_of_a_transcript_signed_by_anyone_but_the_coordinator() {
    let mut sim = Sim::new(3);
    let coordinator = sim.mesh.generators[0].peer_id;
    let impostor = libp2p_identity::Keypair::generate_ed25519();
    sim.log.hook = Some(Box::new(move |at, msg| {
        if let Msg::Gossip(_, Gossip::Sealed(t)) = msg {
            if *at == coordinator {
                let (round, commitment) = (t.round, t.commitment);
                t.threshold
                    .as_mut()
                    .unwrap()
                    .sign(round, commitment, &impostor);
            }
        }
        true
    }));
    sim.advance(20_000);
    let held: Vec<_> = sim.find(|p, e| match e {
        Event::ShareHeld { .. } if *p != coordinator => Some(*p),
        _ => None,
    });
    assert!(held.is_empty(), "{held:?}");
    let refused = sim.find(|_, e| match e {
        Event::ShareUnavailable { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        refused.iter().any(|r| r.contains("not the coordinator's")),
        "{refused:?}"
    );
}

/// A handover whose share is one scalar (k_j alone, as before rounds had a password key), or whose
/// password half is not generator 2's, is refused and says which.
#[test]
fn a_distributor_refuses_a_share_without_its_password_half_or_with_a_wrong_one() {
    let mut sim = Sim::new(3);
    sim.seal_first_round();
    let (transcript, share) = stored(&sim, 1);
    let (g2, d2) = (sim.mesh.generators[1].peer_id, sim.distributors[1]);
    let handover = |share: otpmesh_protocol::round::Secret| {
        Request::Handover(Box::new(Handover {
            transcript: transcript.clone(),
            index: Index(2),
            share,
        }))
    };
    let otp_half: [u8; 32] = share.as_bytes()[..32].try_into().unwrap();
    let why = refusal(
        &mut sim,
        d2,
        g2,
        handover(otpmesh_protocol::round::Secret::from_bytes(otp_half)),
    );
    assert!(why.to_string().contains("pair of scalars"), "{why}");
    let mut wrong = [0u8; 64];
    wrong[..32].copy_from_slice(&otp_half);
    wrong[32] = 1; // k'_j = 1: a scalar, but not the one behind K'_2
    let why = refusal(
        &mut sim,
        d2,
        g2,
        handover(otpmesh_protocol::round::Secret::from_share_pair(&wrong)),
    );
    assert!(why.to_string().contains("K'_2"), "{why}");
}
