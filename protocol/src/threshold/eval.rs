//! Issuance in threshold mode: partial evaluations with proofs, their combination, the OTP.

use super::poly::{lagrange_at_zero, Pair, SharePair, SHARE_PAIR_BYTES};
use super::{dleq, framed, tags, voprf, Index, Params, ThresholdError};
use crate::otp::{reduce, Digits};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use std::sync::OnceLock;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The domain of OTP inputs x = (domain, requester, round, counter).
pub const OTP_DOMAIN: &str = "otp";

/// What an OTP is evaluated at: x = (domain, requester, round, counter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub domain: String,
    pub requester: Vec<u8>,
    pub round: u64,
    pub counter: u64,
}

impl Input {
    pub fn bytes(&self) -> Vec<u8> {
        framed(
            b"",
            &[
                self.domain.as_bytes(),
                &self.requester,
                &self.round.to_be_bytes(),
                &self.counter.to_be_bytes(),
            ],
        )
    }

    /// H(x), in the group.
    pub fn point(&self) -> RistrettoPoint {
        RistrettoPoint::hash_from_bytes::<Sha512>(&framed(tags::HASH_TO_GROUP, &[&self.bytes()]))
    }
}

/// Shareholder `index`'s shares of a round's two keys: k_j (OTPs, beacon) and k'_j (passwords,
/// evaluated blinded only). Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyShare {
    #[zeroize(skip)]
    pub index: Index,
    pub(crate) k: SharePair,
}

impl KeyShare {
    pub fn new(index: Index, k: SharePair) -> KeyShare {
        KeyShare { index, k }
    }

    /// K_j = G·k_j.
    pub fn public(&self) -> RistrettoPoint {
        RISTRETTO_BASEPOINT_POINT * self.k.otp
    }

    /// K'_j = G·k'_j.
    pub fn password_public(&self) -> RistrettoPoint {
        RISTRETTO_BASEPOINT_POINT * self.k.password
    }

    /// k_j ‖ k'_j.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SHARE_PAIR_BYTES]> {
        self.k.to_bytes()
    }

    pub fn from_bytes(index: Index, bytes: &[u8]) -> Option<KeyShare> {
        let bytes: &[u8; SHARE_PAIR_BYTES] = bytes.try_into().ok()?;
        SharePair::from_bytes(bytes).map(|k| KeyShare { index, k })
    }

    /// A blinded password element's partial, Z_j = k'_j·B with its RFC 9497 proof against K'_j
    /// (never under k_j: the caller chooses B).
    pub fn evaluate_blinded(
        &self,
        blinded: &voprf::BlindedElement,
        rng: &mut dyn CryptoRngCore,
    ) -> Option<voprf::Partial> {
        let k = voprf::SecretKey::from_scalar(self.k.password).ok()?;
        Some(voprf::partial_evaluate(self.index, &k, blinded, rng))
    }

    /// y_j = k_j·H(x), with a proof that it used the k_j behind K_j = G·k_j.
    pub fn evaluate(&self, input: &Input, rng: &mut dyn CryptoRngCore) -> Partial {
        let h = input.point();
        let y = h * self.k.otp;
        let proof = dleq::prove(&self.k.otp, &h, &input.bytes(), rng);
        Partial {
            index: self.index,
            y: y.compress().to_bytes(),
            proof,
        }
    }
}

/// One shareholder's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub index: Index,
    pub y: [u8; 32],
    pub proof: dleq::Proof,
}

impl Partial {
    /// y_j as a point (None if the bytes are not one).
    pub fn point(&self) -> Option<RistrettoPoint> {
        CompressedRistretto(self.y).decompress()
    }
}

/// The round keys' public side: K = G·k, K' = G·k' and every K_j, K'_j, from the aggregated
/// commitments. Each K_j is a polynomial evaluation on the curve, worked out the first time it is
/// asked for and kept: a checker of T partials of the OTP key pays for T of the 2N.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub params: Params,
    pub commitments: Pair,
    share_keys: Vec<OnceLock<RistrettoPoint>>,
    password_share_keys: Vec<OnceLock<RistrettoPoint>>,
}

/// One key is another when their commitments are (what is worked out of them is not compared).
impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.params == other.params && self.commitments == other.commitments
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    pub fn new(params: Params, commitments: Pair) -> PublicKey {
        let cells = || params.indices().map(|_| OnceLock::new()).collect();
        PublicKey {
            params,
            commitments,
            share_keys: cells(),
            password_share_keys: cells(),
        }
    }

    pub fn key(&self) -> RistrettoPoint {
        self.commitments.otp.public()
    }

    /// K_j (the identity for an index that is not a shareholder's).
    pub fn share_key(&self, index: Index) -> RistrettoPoint {
        let i = (index.0 as usize).wrapping_sub(1);
        self.share_keys
            .get(i)
            .map_or_else(RistrettoPoint::default, |k| {
                *k.get_or_init(|| self.commitments.otp.evaluate(index))
            })
    }

    /// K'_j, the password key's (the identity for an index that is not a shareholder's).
    pub fn password_share_key(&self, index: Index) -> RistrettoPoint {
        let i = (index.0 as usize).wrapping_sub(1);
        self.password_share_keys
            .get(i)
            .map_or_else(RistrettoPoint::default, |k| {
                *k.get_or_init(|| self.commitments.password.evaluate(index))
            })
    }

    /// Whether `share` is shareholder `share.index`'s of both keys.
    pub fn holds(&self, share: &KeyShare) -> bool {
        share.public() == self.share_key(share.index)
            && share.password_public() == self.password_share_key(share.index)
    }

    /// Whether `partial` is shareholder `partial.index`'s true evaluation at `input`.
    pub fn check(&self, partial: &Partial, input: &Input) -> Option<RistrettoPoint> {
        self.params.check(partial.index).ok()?;
        let y = CompressedRistretto(partial.y).decompress()?;
        let ok = dleq::verify(
            &partial.proof,
            &self.share_key(partial.index),
            &input.point(),
            &y,
            &input.bytes(),
        );
        ok.then_some(y)
    }

    /// Y = k·H(x) from the first t valid partials (Lagrange at 0). Bad proofs are skipped and
    /// named; a second partial from one shareholder is ignored.
    pub fn combine(
        &self,
        partials: &[Partial],
        input: &Input,
    ) -> Result<(RistrettoPoint, Vec<Index>), ThresholdError> {
        let mut valid: Vec<(Index, RistrettoPoint)> = Vec::new();
        let mut bad = Vec::new();
        for p in partials {
            if valid.len() == self.params.t as usize {
                break;
            }
            if valid.iter().any(|(i, _)| *i == p.index) || bad.contains(&p.index) {
                continue;
            }
            match self.check(p, input) {
                Some(y) => valid.push((p.index, y)),
                None => bad.push(p.index),
            }
        }
        if valid.len() < self.params.t as usize {
            return Err(ThresholdError::Quorum {
                valid: valid.len(),
                needed: self.params.t,
                bad,
            });
        }
        let indices: Vec<Index> = valid.iter().map(|(i, _)| *i).collect();
        let y = valid
            .iter()
            .map(|(i, y)| y * lagrange_at_zero(&indices, *i))
            .sum();
        Ok((y, bad))
    }
}

/// The OTP: HMAC-SHA256(key = SHA-256(tag ‖ Y ‖ x), x), 64 bits reduced to `digits`
/// ([`reduce`]: uniform for every digit count).
pub fn otp(y: &RistrettoPoint, input: &Input, digits: Digits) -> u64 {
    let x = input.bytes();
    let key: Zeroizing<[u8; 32]> = Zeroizing::new(
        Sha256::digest(framed(tags::OTP_KEY, &[&y.compress().to_bytes(), &x])).into(),
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_slice()).expect("HMAC accepts any key length");
    mac.update(&x);
    reduce(&mac.finalize().into_bytes(), digits)
}
