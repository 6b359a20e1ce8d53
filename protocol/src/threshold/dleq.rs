//! Chaum–Pedersen proof that two points share a discrete log: log_G(K) = log_H(Y), without
//! revealing it. Fiat–Shamir with SHA-512 over a domain tag, both bases, both points, both
//! commitments and the caller's context.

use super::{framed, tags};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha512;

/// (challenge, response).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub c: [u8; 32],
    pub s: [u8; 32],
}

fn challenge(
    h: &RistrettoPoint,
    k: &RistrettoPoint,
    y: &RistrettoPoint,
    a: &RistrettoPoint,
    b: &RistrettoPoint,
    context: &[u8],
) -> Scalar {
    let points = [G, *h, *k, *y, *a, *b].map(|p| p.compress().to_bytes());
    let mut parts: Vec<&[u8]> = points.iter().map(|p| p.as_slice()).collect();
    parts.push(context);
    Scalar::hash_from_bytes::<Sha512>(&framed(tags::DLEQ_CHALLENGE, &parts))
}

/// The nonce, hedged: a hash of the secret, the statement and 32 fresh random bytes. A repeated
/// rng state (a replayed `--seed`, a cloned VM) then never gives one nonce to two statements,
/// which would reveal k; a broken rng alone leaves it a deterministic nonce (RFC 6979's idea).
fn nonce(k: &Scalar, h: &RistrettoPoint, context: &[u8], rng: &mut dyn CryptoRngCore) -> Scalar {
    let mut fresh = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill_bytes(fresh.as_mut());
    let secret = zeroize::Zeroizing::new(k.to_bytes());
    let h = h.compress().to_bytes();
    let mut input = zeroize::Zeroizing::new(framed(
        tags::DLEQ_NONCE,
        &[secret.as_slice(), &h, context, fresh.as_slice()],
    ));
    let r = Scalar::hash_from_bytes::<Sha512>(&input);
    zeroize::Zeroize::zeroize(&mut *input);
    r
}

/// Proves that K = G·k and Y = H·k for the same k.
pub fn prove(k: &Scalar, h: &RistrettoPoint, context: &[u8], rng: &mut dyn CryptoRngCore) -> Proof {
    let (key, y) = (G * k, h * k);
    let mut r = nonce(k, h, context, rng);
    let (a, b) = (G * r, h * r);
    let c = challenge(h, &key, &y, &a, &b, context);
    let s = r - c * k;
    zeroize::Zeroize::zeroize(&mut r);
    Proof {
        c: c.to_bytes(),
        s: s.to_bytes(),
    }
}

/// Whether `proof` shows log_G(K) = log_H(Y) under `context`.
pub fn verify(
    proof: &Proof,
    key: &RistrettoPoint,
    h: &RistrettoPoint,
    y: &RistrettoPoint,
    context: &[u8],
) -> bool {
    let (Some(c), Some(s)) = (
        Option::<Scalar>::from(Scalar::from_canonical_bytes(proof.c)),
        Option::<Scalar>::from(Scalar::from_canonical_bytes(proof.s)),
    ) else {
        return false;
    };
    // A = G·s + K·c, B = H·s + Y·c, as the prover's were.
    let a = G * s + key * c;
    let b = h * s + y * c;
    challenge(h, key, y, &a, &b, context) == c
}
