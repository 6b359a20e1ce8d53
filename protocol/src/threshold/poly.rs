//! Shamir sharing with Feldman commitments over Ristretto255 scalars.

use super::{framed, tags, Index, Params, ThresholdError};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// f(z) = a_0 + a_1 z + … + a_{t-1} z^{t-1}; a_0 is the secret. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Polynomial {
    coefficients: Vec<Scalar>,
}

impl Polynomial {
    /// A random polynomial of degree t − 1 with `secret` at 0.
    pub fn random(secret: Scalar, params: Params, rng: &mut dyn CryptoRngCore) -> Polynomial {
        let mut coefficients = Vec::with_capacity(params.t as usize);
        coefficients.push(secret);
        for _ in 1..params.t {
            coefficients.push(Scalar::random(rng));
        }
        Polynomial { coefficients }
    }

    pub fn evaluate(&self, at: Index) -> Scalar {
        let x = Scalar::from(u64::from(at.0));
        // Horner.
        self.coefficients
            .iter()
            .rev()
            .fold(Scalar::ZERO, |acc, a| acc * x + a)
    }

    /// Everyone's shares, index 1 ..= n.
    pub fn shares(&self, params: Params) -> Vec<Scalar> {
        params.indices().map(|i| self.evaluate(i)).collect()
    }

    pub fn commit(&self) -> Commitments {
        Commitments(self.coefficients.iter().map(|a| G * a).collect())
    }
}

/// Feldman commitments G·a_l to a polynomial's coefficients; C_0 = G·secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitments(pub Vec<RistrettoPoint>);

/// Commitments on the wire: compressed points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireCommitments(pub Vec<[u8; 32]>);

impl Commitments {
    pub fn check_degree(&self, params: Params) -> Result<(), ThresholdError> {
        match self.0.len() == params.t as usize {
            true => Ok(()),
            false => Err(ThresholdError::Degree(self.0.len(), params.t)),
        }
    }

    /// G·f(at), from the commitments alone: Σ_l C_l · at^l.
    pub fn evaluate(&self, at: Index) -> RistrettoPoint {
        let x = Scalar::from(u64::from(at.0));
        let mut power = Scalar::ONE;
        let powers: Vec<Scalar> = self
            .0
            .iter()
            .map(|_| {
                let p = power;
                power *= x;
                p
            })
            .collect();
        RistrettoPoint::vartime_multiscalar_mul(&powers, &self.0)
    }

    /// Whether `share` is f(at) for the committed f.
    pub fn verify(&self, at: Index, share: &Scalar) -> bool {
        G * share == self.evaluate(at)
    }

    /// G·secret.
    pub fn public(&self) -> RistrettoPoint {
        self.0.first().copied().unwrap_or_default()
    }

    /// The commitments of the sum of two polynomials of the same degree.
    pub fn add(&self, other: &Commitments) -> Commitments {
        Commitments(self.0.iter().zip(&other.0).map(|(a, b)| a + b).collect())
    }

    pub fn to_wire(&self) -> WireCommitments {
        WireCommitments(self.0.iter().map(|p| p.compress().to_bytes()).collect())
    }

    pub fn from_wire(wire: &WireCommitments) -> Result<Commitments, ThresholdError> {
        wire.0
            .iter()
            .map(|b| {
                CompressedRistretto(*b)
                    .decompress()
                    .ok_or(ThresholdError::Point)
            })
            .collect::<Result<_, _>>()
            .map(Commitments)
    }

    /// A hash of the commitments, for transcripts.
    pub fn digest(&self) -> [u8; 32] {
        let points: Vec<[u8; 32]> = self.0.iter().map(|p| p.compress().to_bytes()).collect();
        let parts: Vec<&[u8]> = points.iter().map(|p| p.as_slice()).collect();
        *blake3::hash(&framed(tags::COMMITMENTS, &parts)).as_bytes()
    }
}

/// What a dealer commits to: two independent polynomials, f for the round's OTP key k and g for
/// its password key k' (t points each). Two keys, so that an evaluation at a point the caller
/// chooses (a blinded password, RFC 9497) is never an evaluation under the key that makes OTPs and
/// beacon values. On the wire and in digests: f's points, then g's (2t points).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub otp: Commitments,
    pub password: Commitments,
}

impl Pair {
    pub fn check_degree(&self, params: Params) -> Result<(), ThresholdError> {
        self.otp.check_degree(params)?;
        self.password.check_degree(params)
    }

    /// Whether `share` is (f(at), g(at)) for the committed f and g.
    pub fn verify(&self, at: Index, share: &SharePair) -> bool {
        self.otp.verify(at, &share.otp) && self.password.verify(at, &share.password)
    }

    /// The commitments of the sum of two dealings of the same degree.
    pub fn add(&self, other: &Pair) -> Pair {
        Pair {
            otp: self.otp.add(&other.otp),
            password: self.password.add(&other.password),
        }
    }

    pub fn to_wire(&self) -> WireCommitments {
        let mut wire = self.otp.to_wire();
        wire.0.extend(self.password.to_wire().0);
        wire
    }

    /// The first half is f's, the second g's; an odd count is refused.
    pub fn from_wire(wire: &WireCommitments) -> Result<Pair, ThresholdError> {
        if !wire.0.len().is_multiple_of(2) {
            return Err(ThresholdError::Halves(wire.0.len()));
        }
        let (otp, password) = wire.0.split_at(wire.0.len() / 2);
        Ok(Pair {
            otp: Commitments::from_wire(&WireCommitments(otp.to_vec()))?,
            password: Commitments::from_wire(&WireCommitments(password.to_vec()))?,
        })
    }

    /// A hash of both commitments, for transcripts.
    pub fn digest(&self) -> [u8; 32] {
        let wire = self.to_wire();
        let parts: Vec<&[u8]> = wire.0.iter().map(|p| p.as_slice()).collect();
        *blake3::hash(&framed(tags::COMMITMENTS, &parts)).as_bytes()
    }
}

/// Bytes of a [`SharePair`]: f(j) then g(j), 32 bytes each (what a dealer seals to generator j).
pub use crate::secret::SHARE_PAIR_BYTES;

/// One shareholder's share of a dealing: (f(j), g(j)). Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SharePair {
    pub otp: Scalar,
    pub password: Scalar,
}

impl SharePair {
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; SHARE_PAIR_BYTES]> {
        let mut out = zeroize::Zeroizing::new([0u8; SHARE_PAIR_BYTES]);
        out[..32].copy_from_slice(self.otp.as_bytes());
        out[32..].copy_from_slice(self.password.as_bytes());
        out
    }

    /// None unless both halves are canonical scalars.
    pub fn from_bytes(bytes: &[u8; SHARE_PAIR_BYTES]) -> Option<SharePair> {
        let half = |b: &[u8]| -> Option<Scalar> {
            let mut a = zeroize::Zeroizing::new([0u8; 32]);
            a.copy_from_slice(b);
            Scalar::from_canonical_bytes(*a).into()
        };
        Some(SharePair {
            otp: half(&bytes[..32])?,
            password: half(&bytes[32..])?,
        })
    }

    pub fn add(&mut self, other: &SharePair) {
        self.otp += other.otp;
        self.password += other.password;
    }

    pub fn zero() -> SharePair {
        SharePair {
            otp: Scalar::ZERO,
            password: Scalar::ZERO,
        }
    }
}

/// λ_i: the Lagrange coefficient at 0 of shareholder `i` among `indices` (distinct, i among them).
/// The small indices are multiplied as integers first, then one inversion.
pub fn lagrange_at_zero(indices: &[Index], i: Index) -> Scalar {
    let mut numerator = Scalar::ONE;
    let mut denominator = Scalar::ONE;
    for j in indices.iter().filter(|j| **j != i) {
        numerator *= Scalar::from(u64::from(j.0));
        let diff = i64::from(j.0) - i64::from(i.0);
        let d = Scalar::from(diff.unsigned_abs());
        denominator *= if diff < 0 { -d } else { d };
    }
    numerator * denominator.invert()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_pair_round_trips_and_odd_or_bad_wire_is_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let params = Params::new(3, 5).unwrap();
        let f = Polynomial::random(Scalar::from(1u64), params, &mut rng);
        let g = Polynomial::random(Scalar::from(2u64), params, &mut rng);
        let pair = Pair {
            otp: f.commit(),
            password: g.commit(),
        };
        let wire = pair.to_wire();
        assert_eq!(wire.0.len(), 6);
        assert_eq!(Pair::from_wire(&wire).unwrap(), pair);
        let mut odd = wire.clone();
        odd.0.pop();
        assert_eq!(Pair::from_wire(&odd), Err(ThresholdError::Halves(5)));
        // The halves are not interchangeable: swapped, the digest and the check differ.
        let swapped = Pair {
            otp: pair.password.clone(),
            password: pair.otp.clone(),
        };
        assert_ne!(swapped.digest(), pair.digest());
        let share = SharePair {
            otp: f.evaluate(Index(2)),
            password: g.evaluate(Index(2)),
        };
        assert!(pair.verify(Index(2), &share));
        assert!(!swapped.verify(Index(2), &share));
        assert!(!pair.verify(Index(3), &share));
    }

    #[test]
    fn a_share_pair_needs_two_canonical_scalars() {
        let share = SharePair {
            otp: Scalar::from(5u64),
            password: Scalar::from(6u64),
        };
        let bytes = share.to_bytes();
        let back = SharePair::from_bytes(&bytes).unwrap();
        assert_eq!((back.otp, back.password), (share.otp, share.password));
        for half in [0, 32] {
            let mut bad = *bytes;
            bad[half..half + 32].copy_from_slice(&[0xff; 32]);
            assert!(SharePair::from_bytes(&bad).is_none(), "half at {half}");
        }
    }
}
