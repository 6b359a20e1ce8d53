//! Round setup: a Joint-Feldman DKG fed by the contributors.
//!
//! Each contributor deals two Shamir sharings with Feldman commitments, of its scalar s_i (the
//! OTP key) and of a fresh s'_i (the password key); generator j checks what it received
//! ([`complaints`]: one weighted batch check, per-dealing checks only to name cheaters), the
//! generators agree on the qualified set Q (every dealing no generator complained about), and
//! then j holds k_j = Σ_{i∈Q} f_i(j) and k'_j = Σ_{i∈Q} g_i(j) ([`key_share`]) while everyone can
//! compute K, K' and every K_j, K'_j from the commitments alone ([`public_key`]).

use super::eval::{KeyShare, PublicKey};
use super::poly::{Pair, Polynomial, SharePair};
use super::{framed, tags, Index, Params, ThresholdError};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use rand_core::CryptoRngCore;
use sha2::Sha512;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// s_i, derived from the contributor's phrase (which carries 32 fresh random bytes, so G·s_i,
/// which is public, cannot be searched for a low-entropy input), bound to the round and client.
pub fn contribution_scalar(phrase: &[u8], round: u64, client: u32) -> Scalar {
    Scalar::hash_from_bytes::<Sha512>(&framed(
        tags::CONTRIBUTION_SCALAR,
        &[phrase, &round.to_be_bytes(), &client.to_be_bytes()],
    ))
}

/// A contributor's dealing: public commitments, and the share pair for each generator 1 ..= n.
/// Two independent sharings: f of s_i (the OTP key) and g of a fresh random s'_i (the password
/// key), so k' = Σ s'_i is as unknown as k and unrelated to it.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Dealing {
    #[zeroize(skip)]
    pub commitments: Pair,
    shares: Vec<SharePair>,
}

impl Dealing {
    pub fn new(secret: Scalar, params: Params, rng: &mut dyn CryptoRngCore) -> Dealing {
        let otp = Polynomial::random(secret, params, rng);
        let password = Polynomial::random(Scalar::random(rng), params, rng);
        Dealing {
            commitments: Pair {
                otp: otp.commit(),
                password: password.commit(),
            },
            shares: params
                .indices()
                .map(|j| SharePair {
                    otp: otp.evaluate(j),
                    password: password.evaluate(j),
                })
                .collect(),
        }
    }

    /// (f_i(j), g_i(j)), for generator j only.
    pub fn share(&self, j: Index) -> Option<&SharePair> {
        self.shares.get((j.0 as usize).checked_sub(1)?)
    }

    /// What generator `j` receives of this dealing from contributor `client`, handed over in one
    /// process (tests, benches; on the network the share travels sealed to j's key).
    pub fn received_by(&self, client: u32, j: Index) -> Option<Received> {
        Some(Received {
            client,
            commitments: self.commitments.clone(),
            share: self.share(j)?.clone(),
        })
    }
}

/// What generator j received from one contributor.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Received {
    #[zeroize(skip)]
    pub client: u32,
    #[zeroize(skip)]
    pub commitments: Pair,
    pub share: SharePair,
}

/// The contributors whose share pair to generator `j` does not match their commitments (or whose
/// commitments have the wrong degree). All shares of both sharings are checked at once with fresh
/// random weights ρ, G·Σ ρ s = Σ ρ C(j) (one multiscalar multiplication; a plain sum would pass
/// two dealers whose errors cancel, +δ and −δ); only if that fails is each checked, to name the
/// cheaters. A cheating set passes the batch with probability 1/ℓ (ℓ ≈ 2^252).
pub fn complaints(
    j: Index,
    params: Params,
    received: &[Received],
    rng: &mut dyn CryptoRngCore,
) -> Vec<u32> {
    let (mut well_formed, mut bad): (Vec<&Received>, Vec<u32>) = (Vec::new(), Vec::new());
    for r in received {
        match r.commitments.check_degree(params) {
            Ok(()) => well_formed.push(r),
            Err(_) => bad.push(r.client),
        }
    }
    let x = Scalar::from(u64::from(j.0));
    let mut weighted_share = Zeroizing::new(Scalar::ZERO);
    let (mut scalars, mut points) = (Vec::new(), Vec::new());
    for r in &well_formed {
        for (share, commitments) in [
            (&r.share.otp, &r.commitments.otp),
            (&r.share.password, &r.commitments.password),
        ] {
            let rho = Scalar::random(rng);
            *weighted_share += rho * share;
            // ρ · C(j) = Σ_l (ρ j^l) · C_l
            let mut power = rho;
            for c in &commitments.0 {
                scalars.push(power);
                points.push(*c);
                power *= x;
            }
        }
    }
    let expected = RistrettoPoint::vartime_multiscalar_mul(&scalars, &points);
    if G * *weighted_share != expected {
        bad.extend(
            well_formed
                .iter()
                .filter(|r| !r.commitments.verify(j, &r.share))
                .map(|r| r.client),
        );
    }
    bad.sort_unstable();
    bad
}

/// (k_j, k'_j) = Σ (f_i(j), g_i(j)) over the qualified contributors.
pub fn key_share(j: Index, received: &[Received], qualified: &[u32]) -> KeyShare {
    let mut k = SharePair::zero();
    for r in received.iter().filter(|r| qualified.contains(&r.client)) {
        k.add(&r.share);
    }
    KeyShare::new(j, k)
}

/// The round's public keys from the qualified dealings' commitments: K = Σ C_i0, K_j = Σ C_i(j),
/// and the same for the password key.
pub fn public_key(params: Params, qualified: &[&Pair]) -> Result<PublicKey, ThresholdError> {
    let mut sum: Option<Pair> = None;
    for c in qualified {
        c.check_degree(params)?;
        sum = Some(match sum {
            None => (*c).clone(),
            Some(s) => s.add(c),
        });
    }
    let commitments = sum.ok_or(ThresholdError::Quorum {
        valid: 0,
        needed: 1,
        bad: Vec::new(),
    })?;
    Ok(PublicKey::new(params, commitments))
}
