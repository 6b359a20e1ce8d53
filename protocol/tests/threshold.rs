//! Threshold mode's cryptography, end to end in one process: contributors deal, generators check
//! and hold key shares, distributors evaluate with proofs, a requester combines.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::scalar::Scalar;
use otpmesh_protocol::otp::Digits;
use otpmesh_protocol::threshold::dkg::{self, Dealing, Received};
use otpmesh_protocol::threshold::eval::{otp, Input, KeyShare, Partial, PublicKey};
use otpmesh_protocol::threshold::poly::Pair;
use otpmesh_protocol::threshold::{dleq, Index, Params, ThresholdError};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A round set up by `contributors` honest dealers: (the key k itself, for checking only; the
/// public key; every generator's share).
fn round(
    params: Params,
    contributors: u32,
    rng: &mut ChaCha20Rng,
) -> (Scalar, PublicKey, Vec<KeyShare>) {
    let scalars: Vec<Scalar> = (1..=contributors)
        .map(|c| dkg::contribution_scalar(format!("phrase {c}").as_bytes(), 7, c))
        .collect();
    let dealings: Vec<Dealing> = scalars
        .iter()
        .map(|s| Dealing::new(*s, params, rng))
        .collect();
    let qualified: Vec<u32> = (1..=contributors).collect();
    let shares = params
        .indices()
        .map(|j| {
            let received = received_by(j, &dealings);
            assert!(dkg::complaints(j, params, &received, &mut rand_core::OsRng).is_empty());
            dkg::key_share(j, &received, &qualified)
        })
        .collect();
    let commitments: Vec<&Pair> = dealings.iter().map(|d| &d.commitments).collect();
    let public = dkg::public_key(params, &commitments).unwrap();
    (scalars.iter().sum(), public, shares)
}

fn received_by(j: Index, dealings: &[Dealing]) -> Vec<Received> {
    dealings
        .iter()
        .enumerate()
        .map(|(i, d)| d.received_by(i as u32 + 1, j).unwrap())
        .collect()
}

fn input(counter: u64) -> Input {
    Input {
        domain: "otp".into(),
        requester: b"12D3KooWrequester".to_vec(),
        round: 7,
        counter,
    }
}

fn partials(shares: &[KeyShare], who: &[u32], x: &Input, rng: &mut ChaCha20Rng) -> Vec<Partial> {
    who.iter()
        .map(|j| shares[*j as usize - 1].evaluate(x, rng))
        .collect()
}

/// Every subset of `n` indices of size `k`.
fn subsets(n: u32, k: usize) -> Vec<Vec<u32>> {
    (0u32..1 << n)
        .filter(|m| m.count_ones() as usize == k)
        .map(|m| (1..=n).filter(|i| m & (1 << (i - 1)) != 0).collect())
        .collect()
}

#[test]
fn any_t_of_n_give_the_same_otp_and_t_minus_1_do_not() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let params = Params::new(3, 5).unwrap();
    let (k, public, shares) = round(params, 6, &mut rng);
    // The shares are shares of k, and the public keys match them.
    assert_eq!(public.key(), G * k);
    for s in &shares {
        assert_eq!(
            public.share_key(s.index),
            G * Scalar::from_canonical_bytes(s.to_bytes()[..32].try_into().unwrap()).unwrap()
        );
    }
    let x = input(1);
    let digits = Digits::new(8).unwrap();
    let expected = otp(&(x.point() * k), &x, digits);
    for who in subsets(5, 3) {
        let (y, bad) = public
            .combine(&partials(&shares, &who, &x, &mut rng), &x)
            .unwrap();
        assert!(bad.is_empty());
        assert_eq!(otp(&y, &x, digits), expected, "{who:?}");
    }
    for who in subsets(5, 2) {
        match public.combine(&partials(&shares, &who, &x, &mut rng), &x) {
            Err(ThresholdError::Quorum {
                valid: 2,
                needed: 3,
                ..
            }) => {}
            other => panic!("{who:?}: {other:?}"),
        }
    }
    // Another counter, another OTP.
    let other = input(2);
    let (y, _) = public
        .combine(&partials(&shares, &[1, 2, 3], &other, &mut rng), &other)
        .unwrap();
    assert_ne!(otp(&y, &other, digits), expected);
}

#[test]
fn a_tampered_partial_is_named_and_skipped() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let params = Params::new(3, 5).unwrap();
    let (k, public, shares) = round(params, 3, &mut rng);
    let x = input(9);
    let mut ps = partials(&shares, &[1, 2, 3, 4, 5], &x, &mut rng);
    // Distributor 2 answers with its share applied to another input; distributor 3's proof is
    // altered; distributor 1 answers twice.
    ps[1] = shares[1].evaluate(&input(10), &mut rng);
    ps[2].proof.s[0] ^= 1;
    ps.insert(1, ps[0].clone());
    let (y, bad) = public.combine(&ps, &x).unwrap();
    assert_eq!(bad, vec![Index(2), Index(3)]);
    assert_eq!(y, x.point() * k);
    // With only the three that include the bad ones: quorum unavailable, culprits named.
    let err = public.combine(&ps[..4], &x).unwrap_err();
    assert_eq!(
        err,
        ThresholdError::Quorum {
            valid: 1,
            needed: 3,
            bad: vec![Index(2), Index(3)]
        }
    );
    assert!(err.to_string().contains("bad proofs from 2, 3"), "{err}");
    // A partial claiming to be from a shareholder that does not exist.
    let mut stranger = ps[0].clone();
    stranger.index = Index(6);
    assert!(public.check(&stranger, &x).is_none());
}

#[test]
fn an_inconsistent_share_is_found_and_its_dealer_excluded() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let params = Params::new(3, 5).unwrap();
    let scalars: Vec<Scalar> = (1..=4)
        .map(|c| dkg::contribution_scalar(b"p", 1, c))
        .collect();
    let dealings: Vec<Dealing> = scalars
        .iter()
        .map(|s| Dealing::new(*s, params, &mut rng))
        .collect();
    let mut complaints = Vec::new();
    let mut received: Vec<Vec<Received>> = Vec::new();
    for j in params.indices() {
        let mut r = received_by(j, &dealings);
        // Contributor 3 cheats generator 2.
        if j == Index(2) {
            r[2].share.otp += Scalar::ONE;
        }
        complaints.push(dkg::complaints(j, params, &r, &mut rand_core::OsRng));
        received.push(r);
    }
    assert_eq!(complaints[1], vec![3]);
    assert!(complaints
        .iter()
        .enumerate()
        .all(|(j, c)| j == 1 || c.is_empty()));
    // Everyone drops contributor 3: the shares still make one key.
    let qualified = vec![1, 2, 4];
    let shares: Vec<KeyShare> = params
        .indices()
        .map(|j| dkg::key_share(j, &received[j.0 as usize - 1], &qualified))
        .collect();
    let commitments: Vec<&Pair> = [0, 1, 3]
        .iter()
        .map(|i| &dealings[*i].commitments)
        .collect();
    let public = dkg::public_key(params, &commitments).unwrap();
    let k = scalars[0] + scalars[1] + scalars[3];
    assert_eq!(public.key(), G * k);
    let x = input(1);
    let (y, bad) = public
        .combine(&partials(&shares, &[2, 4, 5], &x, &mut rng), &x)
        .unwrap();
    assert!(bad.is_empty());
    assert_eq!(y, x.point() * k);
    // Commitments of the wrong degree are a complaint too.
    let short = Dealing::new(scalars[0], Params::new(2, 5).unwrap(), &mut rng);
    let r = vec![Received {
        client: 9,
        commitments: short.commitments.clone(),
        share: short.share(Index(1)).unwrap().clone(),
    }];
    assert_eq!(
        dkg::complaints(Index(1), params, &r, &mut rand_core::OsRng),
        vec![9]
    );
}

#[test]
fn one_share_alone_computes_nothing() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let params = Params::new(3, 5).unwrap();
    let (k, public, shares) = round(params, 2, &mut rng);
    let x = input(3);
    let y = x.point() * k;
    // A distributor's own share, evaluated or scaled by any of its Lagrange coefficients, is not
    // Y: it would need two more shares.
    let own = shares[0].evaluate(&x, &mut rng);
    let own_y = curve25519_dalek::ristretto::CompressedRistretto(own.y)
        .decompress()
        .unwrap();
    assert_ne!(own_y, y);
    for others in [[2, 3], [4, 5], [2, 5]] {
        let indices = [Index(1), Index(others[0]), Index(others[1])];
        let lambda = otpmesh_protocol::threshold::poly::lagrange_at_zero(&indices, Index(1));
        assert_ne!(own_y * lambda, y);
    }
    assert!(public.combine(&[own], &x).is_err());
}

#[test]
fn proofs_bind_their_points_and_context() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let k = Scalar::random(&mut rng);
    let h = input(1).point();
    let proof = dleq::prove(&k, &h, b"ctx", &mut rng);
    assert!(dleq::verify(&proof, &(G * k), &h, &(h * k), b"ctx"));
    assert!(!dleq::verify(&proof, &(G * k), &h, &(h * k), b"other"));
    let other = Scalar::random(&mut rng);
    assert!(!dleq::verify(&proof, &(G * other), &h, &(h * k), b"ctx"));
    assert!(!dleq::verify(&proof, &(G * k), &h, &(h * other), b"ctx"));
    let mut bad = proof.clone();
    bad.c = [0xff; 32]; // not a canonical scalar
    assert!(!dleq::verify(&bad, &(G * k), &h, &(h * k), b"ctx"));
}

#[test]
fn params_are_checked() {
    assert!(Params::new(0, 3).is_err());
    assert!(Params::new(4, 3).is_err());
    assert!(Params::new(3, 257).is_err());
    assert!(Params::new(3, 5).unwrap().quorums_intersect());
    assert!(!Params::new(2, 5).unwrap().quorums_intersect());
}
