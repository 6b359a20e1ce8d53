//! RFC 9497 VOPRF, ristretto255-SHA512: the Appendix A.1.2 test vectors, then the threshold
//! client (Shamir-shared skSm) against the same outputs, then the hedged proof nonces.
//!
//! Vectors: RFC 9497 Appendix A.1.2, as published in github.com/cfrg/draft-irtf-cfrg-voprf
//! (draft-irtf-cfrg-voprf.md and poc/vectors/allVectors.json) and in github.com/facebook/voprf
//! (src/tests/cfrg_vectors.rs); the three agree digit for digit. expand_message_xmd vectors:
//! RFC 9380 Appendix K.3 (github.com/cfrg/draft-irtf-cfrg-hash-to-curve,
//! poc/vectors/expand_message_xmd_SHA512_38.json).

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use otpmesh_protocol::threshold::poly::Polynomial;
use otpmesh_protocol::threshold::voprf::{
    self, Blind, BlindedElement, EvaluatedElement, Partial, Proof, PublicKey, SecretKey, VoprfError,
};
use otpmesh_protocol::threshold::{Index, Params, ThresholdError};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const SEED: &str = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3";
const KEY_INFO: &str = "74657374206b6579";
const SK_SM: &str = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909";
const PK_SM: &str = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e";

struct Vector {
    input: &'static str,
    blind: &'static str,
    blinded_element: &'static str,
    evaluation_element: &'static str,
    proof: &'static str,
    proof_random_scalar: &'static str,
    output: &'static str,
}

/// A.1.2.1 and A.1.2.2 (batch size 1).
const VECTORS: [Vector; 2] = [
    Vector {
        input: "00",
        blind: "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706",
        blinded_element: "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
        evaluation_element: "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
        proof: "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd06\
                6d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
        proof_random_scalar: "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        output: "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d\
                 a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c",
    },
    Vector {
        input: "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        blind: "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706",
        blinded_element: "cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c",
        evaluation_element: "60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468",
        proof: "401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a\
                67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
        proof_random_scalar: "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        output: "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60\
                 356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6",
    },
];

/// A.1.2.3 (batch size 2): the two blinded and evaluated elements, the nonce, the proof.
const BATCH_BLINDED: [&str; 2] = [
    "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
    "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654",
];
const BATCH_EVALUATED: [&str; 2] = [
    "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
    "cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a",
];
const BATCH_PROOF_RANDOM_SCALAR: &str =
    "419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c";
const BATCH_PROOF: &str = "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a\
                           5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn scalar(s: &str) -> Scalar {
    let bytes: [u8; 32] = h(s).try_into().unwrap();
    Scalar::from_canonical_bytes(bytes).unwrap()
}

fn key() -> (SecretKey, PublicKey) {
    (
        SecretKey::from_bytes(&h(SK_SM)).unwrap(),
        PublicKey::from_bytes(&h(PK_SM)).unwrap(),
    )
}

/// The blind and blinded element of a vector.
fn client(v: &Vector) -> (Vec<u8>, Blind, BlindedElement) {
    let input = h(v.input);
    let (blind, blinded) =
        voprf::blind_with(&input, Blind::from_bytes(&h(v.blind)).unwrap()).unwrap();
    (input, blind, blinded)
}

/// k from two proofs that shared a nonce: s_i = r − c_i·k, so k = (s₁ − s₂)/(c₂ − c₁).
fn extract(p1: &Proof, p2: &Proof) -> Scalar {
    (p1.s - p2.s) * (p2.c - p1.c).invert()
}

#[test]
fn expand_message_xmd_matches_rfc_9380() {
    let dst = b"QUUX-V01-CS02-with-expander-SHA512-256";
    assert_eq!(
        hex::encode(voprf::expand_message_xmd(b"", dst, 0x20).unwrap()),
        "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"
    );
    assert_eq!(
        hex::encode(voprf::expand_message_xmd(b"abc", dst, 0x80).unwrap()),
        "7f1dddd13c08b543f2e2037b14cefb255b44c83cc397c1786d975653e36a6b11\
         bdd7732d8b38adb4a0edc26a0cef4bb45217135456e58fbca1703cd6032cb134\
         7ee720b87972d63fbf232587043ed2901bce7f22610c0419751c065922b48843\
         1851041310ad659e4b23520e1772ab29dcdeb2002222a363f0c2b1c972b3efe1"
    );
    assert_eq!(
        voprf::expand_message_xmd(b"", dst, 255 * 64 + 1),
        Err(VoprfError::ExpandLength(255 * 64 + 1))
    );
}

#[test]
fn derive_key_pair_gives_the_vector_key() {
    let seed: [u8; 32] = h(SEED).try_into().unwrap();
    let (sk, pk) = voprf::derive_key_pair(&seed, &h(KEY_INFO)).unwrap();
    assert_eq!(hex::encode(&sk.to_bytes()[..]), SK_SM);
    assert_eq!(hex::encode(pk.to_bytes()), PK_SM);
    assert_eq!(sk.public(), pk);
}

#[test]
fn single_server_vectors() {
    let (sk, pk) = key();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for v in &VECTORS {
        let (input, blind, blinded) = client(v);
        assert_eq!(hex::encode(blinded.to_bytes()), v.blinded_element);

        let evaluated = voprf::blind_evaluate(&sk, &blinded);
        assert_eq!(hex::encode(evaluated.to_bytes()), v.evaluation_element);

        let r = scalar(v.proof_random_scalar);
        let proof = voprf::prove_with(&sk, &pk, &[blinded], &[evaluated], &r).unwrap();
        assert_eq!(hex::encode(proof.to_bytes()), v.proof);
        assert_eq!(Proof::from_bytes(&h(v.proof)).unwrap(), proof);
        voprf::verify_proof(&pk, &[blinded], &[evaluated], &proof).unwrap();

        // As a client sees it: everything from the wire.
        let wire_blinded = BlindedElement::from_bytes(&h(v.blinded_element)).unwrap();
        let wire_evaluated = EvaluatedElement::from_bytes(&h(v.evaluation_element)).unwrap();
        let wire_proof = Proof::from_bytes(&h(v.proof)).unwrap();
        let out = voprf::finalize(
            &input,
            &blind,
            &wire_evaluated,
            &wire_blinded,
            &pk,
            &wire_proof,
        )
        .unwrap();
        assert_eq!(hex::encode(out), v.output);

        // The hedged server: the same element, another proof, the same output.
        let (hedged_evaluated, hedged_proof) = voprf::evaluate(&sk, &blinded, &mut rng);
        assert_eq!(hedged_evaluated, evaluated);
        assert_ne!(hedged_proof, proof);
        let out = voprf::finalize(
            &input,
            &blind,
            &hedged_evaluated,
            &blinded,
            &pk,
            &hedged_proof,
        )
        .unwrap();
        assert_eq!(hex::encode(out), v.output);

        // Another server's key, or a bent proof, is refused.
        let other = SecretKey::random(&mut rng).public();
        assert_eq!(
            voprf::finalize(&input, &blind, &evaluated, &blinded, &other, &proof),
            Err(VoprfError::Verify)
        );
        let mut bent = proof;
        bent.s += Scalar::ONE;
        assert_eq!(
            voprf::finalize(&input, &blind, &evaluated, &blinded, &pk, &bent),
            Err(VoprfError::Verify)
        );
    }
}

#[test]
fn batch_of_two_vector() {
    let (sk, pk) = key();
    let blinded: Vec<BlindedElement> = BATCH_BLINDED
        .iter()
        .map(|b| BlindedElement::from_bytes(&h(b)).unwrap())
        .collect();
    let evaluated: Vec<EvaluatedElement> = BATCH_EVALUATED
        .iter()
        .map(|e| EvaluatedElement::from_bytes(&h(e)).unwrap())
        .collect();
    for (b, e) in blinded.iter().zip(&evaluated) {
        assert_eq!(voprf::blind_evaluate(&sk, b), *e);
    }
    let r = scalar(BATCH_PROOF_RANDOM_SCALAR);
    let proof = voprf::prove_with(&sk, &pk, &blinded, &evaluated, &r).unwrap();
    assert_eq!(hex::encode(proof.to_bytes()), BATCH_PROOF);
    voprf::verify_proof(&pk, &blinded, &evaluated, &proof).unwrap();
    // Swapped evaluations do not verify; mismatched lengths are an error, not a panic.
    let swapped = [evaluated[1], evaluated[0]];
    assert_eq!(
        voprf::verify_proof(&pk, &blinded, &swapped, &proof),
        Err(VoprfError::Verify)
    );
    assert_eq!(
        voprf::verify_proof(&pk, &blinded, &evaluated[..1], &proof),
        Err(VoprfError::Batch {
            blinded: 2,
            evaluated: 1
        })
    );
}

/// skSm split 3 of 5; (the secret, the shares, their public keys K_j).
fn shared_key(rng: &mut ChaCha20Rng) -> (Scalar, Vec<SecretKey>, Vec<PublicKey>) {
    let secret = scalar(SK_SM);
    let params = Params::new(3, 5).unwrap();
    let poly = Polynomial::random(secret, params, rng);
    let shares: Vec<SecretKey> = params
        .indices()
        .map(|j| SecretKey::from_scalar(poly.evaluate(j)).unwrap())
        .collect();
    let share_keys = shares.iter().map(SecretKey::public).collect();
    (secret, shares, share_keys)
}

fn partials(shares: &[SecretKey], blinded: &BlindedElement, rng: &mut ChaCha20Rng) -> Vec<Partial> {
    shares
        .iter()
        .enumerate()
        .map(|(i, k)| voprf::partial_evaluate(Index(i as u32 + 1), k, blinded, &mut *rng))
        .collect()
}

fn points(partials: &[Partial]) -> Vec<(Index, RistrettoPoint)> {
    partials
        .iter()
        .map(|p| (p.index, p.evaluated.point()))
        .collect()
}

#[test]
fn threshold_client_gives_the_vector_outputs() {
    let params = Params::new(3, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9497);
    let (secret, shares, share_keys) = shared_key(&mut rng);
    for v in &VECTORS {
        let (input, blind, blinded) = client(v);
        let all = partials(&shares, &blinded, &mut rng);
        for (p, key) in all.iter().zip(&share_keys) {
            assert_eq!(
                voprf::verify_partial(p, key, &blinded).unwrap(),
                p.evaluated.point()
            );
        }

        let mut triples = 0;
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let subset = [all[a], all[b], all[c]];
                    let (out, bad) = voprf::finalize_combined(
                        &input,
                        &blind,
                        &blinded,
                        params,
                        &share_keys,
                        &subset,
                    )
                    .unwrap();
                    assert_eq!(hex::encode(out), v.output, "partials {a} {b} {c}");
                    assert!(bad.is_empty());
                    assert_eq!(voprf::combine(&points(&subset)), blinded.point() * secret);
                    triples += 1;
                }
            }
        }
        assert_eq!(triples, 10);

        for a in 0..5 {
            for b in a + 1..5 {
                let pair = [all[a], all[b]];
                assert_eq!(
                    voprf::finalize_combined(&input, &blind, &blinded, params, &share_keys, &pair),
                    Err(VoprfError::Threshold(ThresholdError::Quorum {
                        valid: 2,
                        needed: 3,
                        bad: vec![]
                    }))
                );
                // Combined anyway (Lagrange over two), the output is not the OPRF's.
                let out = voprf::finalize_element(&input, &blind, &voprf::combine(&points(&pair)))
                    .unwrap();
                assert_ne!(hex::encode(out), v.output, "partials {a} {b}");
            }
        }
    }
}

#[test]
fn bad_partials_are_rejected_and_named() {
    let params = Params::new(3, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (_, shares, share_keys) = shared_key(&mut rng);
    let v = &VECTORS[0];
    let (input, blind, blinded) = client(v);
    let all = partials(&shares, &blinded, &mut rng);

    let mut bent_point = all[1];
    bent_point.evaluated = EvaluatedElement::from_point(bent_point.evaluated.point() + G);
    let mut bent_proof = all[3];
    bent_proof.proof.s += Scalar::ONE;
    let mut misfiled = all[4];
    misfiled.index = Index(2); // holder 5's answer claimed as holder 2's
    let mut outsider = all[0];
    outsider.index = Index(9);

    let err = voprf::verify_partial(&bent_point, &share_keys[1], &blinded).unwrap_err();
    assert!(matches!(
        err,
        VoprfError::Partial {
            index: Index(2),
            ..
        }
    ));
    assert!(err.to_string().contains("shareholder 2"), "{err}");
    let err = voprf::verify_partial(&bent_proof, &share_keys[3], &blinded).unwrap_err();
    assert!(matches!(
        err,
        VoprfError::Partial {
            index: Index(4),
            ..
        }
    ));
    let err = voprf::verify_partial(&misfiled, &share_keys[1], &blinded).unwrap_err();
    assert!(matches!(
        err,
        VoprfError::Partial {
            index: Index(2),
            ..
        }
    ));

    // Too few good ones: a quorum error naming the bad.
    assert_eq!(
        voprf::finalize_combined(
            &input,
            &blind,
            &blinded,
            params,
            &share_keys,
            &[all[0], bent_point, all[2]]
        ),
        Err(VoprfError::Threshold(ThresholdError::Quorum {
            valid: 2,
            needed: 3,
            bad: vec![Index(2)]
        }))
    );

    // Enough good ones among bad: the output, and the bad named.
    let mixed = [misfiled, all[0], bent_proof, outsider, all[2], all[4]];
    let (out, bad) =
        voprf::finalize_combined(&input, &blind, &blinded, params, &share_keys, &mixed).unwrap();
    assert_eq!(hex::encode(out), v.output);
    assert_eq!(bad, vec![Index(2), Index(4), Index(9)]);
}

#[test]
fn hedged_nonces_never_repeat_across_statements() {
    let (sk, pk) = key();
    let secret = scalar(SK_SM);
    let b: Vec<BlindedElement> = VECTORS
        .iter()
        .map(|v| BlindedElement::from_bytes(&h(v.blinded_element)).unwrap())
        .collect();
    let e: Vec<EvaluatedElement> = VECTORS
        .iter()
        .map(|v| EvaluatedElement::from_bytes(&h(v.evaluation_element)).unwrap())
        .collect();

    // The danger is real: one nonce for two statements gives the key away.
    let r = scalar(VECTORS[0].proof_random_scalar);
    let q1 = voprf::prove_with(&sk, &pk, &[b[0]], &[e[0]], &r).unwrap();
    let q2 = voprf::prove_with(&sk, &pk, &[b[1]], &[e[1]], &r).unwrap();
    assert_eq!(extract(&q1, &q2), secret);

    // Identically seeded RNGs, two statements: different nonces, nothing to extract.
    let p1 = voprf::prove(
        &sk,
        &pk,
        &[b[0]],
        &[e[0]],
        &mut ChaCha20Rng::seed_from_u64(5),
    )
    .unwrap();
    let p2 = voprf::prove(
        &sk,
        &pk,
        &[b[1]],
        &[e[1]],
        &mut ChaCha20Rng::seed_from_u64(5),
    )
    .unwrap();
    voprf::verify_proof(&pk, &[b[0]], &[e[0]], &p1).unwrap();
    voprf::verify_proof(&pk, &[b[1]], &[e[1]], &p2).unwrap();
    assert_ne!(p1.c, p2.c);
    assert_ne!(extract(&p1, &p2), secret);

    // The same for a key share answering two clients.
    let params = Params::new(3, 5).unwrap();
    let poly = Polynomial::random(secret, params, &mut ChaCha20Rng::seed_from_u64(6));
    let k1 = poly.evaluate(Index(1));
    let share = SecretKey::from_scalar(k1).unwrap();
    let y1 = voprf::partial_evaluate(Index(1), &share, &b[0], &mut ChaCha20Rng::seed_from_u64(5));
    let y2 = voprf::partial_evaluate(Index(1), &share, &b[1], &mut ChaCha20Rng::seed_from_u64(5));
    voprf::verify_partial(&y1, &share.public(), &b[0]).unwrap();
    voprf::verify_partial(&y2, &share.public(), &b[1]).unwrap();
    assert_ne!(extract(&y1.proof, &y2.proof), k1);
}

#[test]
fn bad_bytes_are_errors_naming_the_field() {
    assert_eq!(
        EvaluatedElement::from_bytes(&[0u8; 32]),
        Err(VoprfError::Identity("evaluatedElement"))
    );
    assert_eq!(
        BlindedElement::from_bytes(&[0xff; 32]),
        Err(VoprfError::Element("blindedElement"))
    );
    assert_eq!(
        PublicKey::from_bytes(&[1u8; 31]),
        Err(VoprfError::Length {
            field: "pkS",
            expected: 32,
            got: 31
        })
    );

    let mut proof = h(VECTORS[0].proof);
    proof[63] = 0xff;
    assert_eq!(
        Proof::from_bytes(&proof),
        Err(VoprfError::Scalar("proof.s"))
    );
    proof[31] = 0xff;
    assert_eq!(
        Proof::from_bytes(&proof),
        Err(VoprfError::Scalar("proof.c"))
    );
    assert_eq!(
        Proof::from_bytes(&[0u8; 63]),
        Err(VoprfError::Length {
            field: "proof",
            expected: 64,
            got: 63
        })
    );

    assert_eq!(
        Blind::from_bytes(&[0u8; 32]).err(),
        Some(VoprfError::ZeroScalar("blind"))
    );
    assert_eq!(
        Blind::from_bytes(&[0xff; 32]).err(),
        Some(VoprfError::Scalar("blind"))
    );
    assert_eq!(
        SecretKey::from_bytes(&[0u8; 32]).err(),
        Some(VoprfError::ZeroScalar("skS"))
    );

    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let long = vec![0u8; 65536];
    assert_eq!(
        voprf::blind(&long, &mut rng).err(),
        Some(VoprfError::TooLong {
            field: "input",
            len: 65536,
            max: 65535
        })
    );
    let seed: [u8; 32] = h(SEED).try_into().unwrap();
    assert_eq!(
        voprf::derive_key_pair(&seed, &long).err(),
        Some(VoprfError::TooLong {
            field: "keyInfo",
            len: 65536,
            max: 65535
        })
    );
}

#[test]
fn partials_round_trip_through_serde() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (_, shares, share_keys) = shared_key(&mut rng);
    let (_, _, blinded) = client(&VECTORS[1]);
    let partial = voprf::partial_evaluate(Index(2), &shares[1], &blinded, &mut rng);
    let json = serde_json::to_string(&partial).unwrap();
    let back: Partial = serde_json::from_str(&json).unwrap();
    assert_eq!(back, partial);
    voprf::verify_partial(&back, &share_keys[1], &blinded).unwrap();

    let json = serde_json::to_string(&blinded).unwrap();
    assert_eq!(
        serde_json::from_str::<BlindedElement>(&json).unwrap(),
        blinded
    );
    // The identity does not deserialise.
    assert!(
        serde_json::from_str::<BlindedElement>(&serde_json::to_string(&[0u8; 32]).unwrap())
            .is_err()
    );
}
