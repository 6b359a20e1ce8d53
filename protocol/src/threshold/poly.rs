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
