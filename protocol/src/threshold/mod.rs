//! # Threshold mode: no single node can learn an OTP
//!
//! The round key k exists only as shares: generator j holds k_j, hands it to distributor j, and
//! any t of the n distributors together evaluate k·H(x) for a requester's input x without anyone
//! reconstructing k. Group: Ristretto255; every hash domain-separated ([`tags`]).
//!
//! ```text
//!  contributor i: s_i = H_s(phrase ‖ round ‖ client)              (the phrase keeps 32 random bytes)
//!                 f_i(z) = s_i + a_1 z + … + a_{t-1} z^{t-1}         poly::Polynomial
//!                 C_i = (G·s_i, G·a_1, …)  public                    poly::Commitments (Feldman)
//!                 share f_i(j) RSA-OAEP-sealed to generator j, all in one gossiped message
//!  generator j:   checks G·Σ_i f_i(j) == Σ_i C_i(j) (one check; per-share only to name a cheater)
//!                 k_j = Σ_{i ∈ Q} f_i(j)   K = Σ C_i0   K_j = Σ_{i ∈ Q} C_i(j)     dkg
//!                 k_j ──► distributor j only
//!  requester:     x = (domain, requester, round, counter);  asks ≥ t distributors
//!  distributor j: y_j = k_j·H(x) + DLEQ proof that log_G K_j = log_H(x) y_j          eval, dleq
//!  requester:     checks proofs, skips bad/duplicate partials (naming them),
//!                 Y = Σ λ_j y_j over t valid ones (Lagrange at 0) = k·H(x)
//!                 otp = RFC 4226 truncation of HMAC-SHA256(key = H(Y ‖ x), x)         eval::otp
//! ```
//!
//! Joint-Feldman lets the last contributor bias the *distribution* of K (Gennaro et al.); it does
//! not let anyone learn k: k = Σ s_i over the qualified set, and one honest contributor's s_i,
//! uniform and never revealed (only G·s_i is), keeps k uniform and unknown to every coalition
//! holding fewer than t shares. OTPs depend on k·H(x), unpredictable without k, so a bias of K's
//! distribution does not make an OTP predictable (docs/design.md, threshold section).

pub mod code;
pub mod counter;
pub mod dkg;
pub mod dleq;
pub mod eval;
pub mod password;
pub mod poly;
pub mod voprf;

use serde::{Deserialize, Serialize};

/// Most shareholders (generators, distributors) a threshold mesh has.
pub const MAX_SHAREHOLDERS: u32 = 256;

/// Hash domains: no two uses of a hash share one.
pub mod tags {
    pub const CONTRIBUTION_SCALAR: &[u8] = b"otpmesh/1 threshold contribution scalar";
    pub const HASH_TO_GROUP: &[u8] = b"otpmesh/1 threshold hash to group";
    pub const DLEQ_CHALLENGE: &[u8] = b"otpmesh/1 threshold dleq challenge";
    pub const DLEQ_NONCE: &[u8] = b"otpmesh/1 threshold dleq nonce";
    pub const OTP_KEY: &[u8] = b"otpmesh/1 threshold otp key";
    pub const COMMITMENTS: &[u8] = b"otpmesh/1 threshold commitments";
    pub const PASSWORD: &[u8] = b"otpmesh/1 threshold password seed";
    pub const PASSWORD_STREAM: &[u8] = b"otpmesh/1 threshold password stream";
}

/// Generator j deals into every round as dealer `GENERATOR_DEALER_BASE + j` (contributors' client
/// ids stay below it), so a round key always holds dealings of at least t generators.
pub const GENERATOR_DEALER_BASE: u32 = 0xFFFF_0000;

/// The dealer id generator `j` deals under.
pub fn generator_dealer(j: Index) -> crate::phrase::ClientId {
    crate::phrase::ClientId(GENERATOR_DEALER_BASE + j.0)
}

/// The generator whose dealer id `client` is, if it is one.
pub fn dealing_generator(client: crate::phrase::ClientId) -> Option<Index> {
    client
        .0
        .checked_sub(GENERATOR_DEALER_BASE)
        .filter(|j| (1..=MAX_SHAREHOLDERS).contains(j))
        .map(Index)
}

/// A shareholder's index: 1 ..= n (0 is where the secret sits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Index(pub u32);

/// t of n.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub t: u32,
    pub n: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("threshold {t}/{n}: need 1 ≤ t ≤ n ≤ {MAX_SHAREHOLDERS}")]
    Params { t: u32, n: u32 },
    #[error("index {0} is not a shareholder (1 ..= n)")]
    Index(u32),
    #[error("{0} commitments; the threshold needs {1}")]
    Degree(usize, u32),
    #[error("{0} commitments: a dealing commits to two polynomials of t points each")]
    Halves(usize),
    #[error("not a point of the group")]
    Point,
    #[error("quorum unavailable: {valid} valid partial(s), {needed} needed{}", culprits(.bad))]
    Quorum {
        valid: usize,
        needed: u32,
        /// Shareholders whose partial failed its proof.
        bad: Vec<Index>,
    },
}

fn culprits(bad: &[Index]) -> String {
    if bad.is_empty() {
        return String::new();
    }
    let list: Vec<String> = bad.iter().map(|i| i.0.to_string()).collect();
    format!("; bad proofs from {}", list.join(", "))
}

impl Params {
    pub fn new(t: u32, n: u32) -> Result<Params, ThresholdError> {
        if t == 0 || t > n || n > MAX_SHAREHOLDERS {
            return Err(ThresholdError::Params { t, n });
        }
        Ok(Params { t, n })
    }

    /// With t > n/2, any two quorums share a shareholder: single use needs no replication.
    pub fn quorums_intersect(self) -> bool {
        2 * self.t > self.n
    }

    pub fn indices(self) -> impl Iterator<Item = Index> {
        (1..=self.n).map(Index)
    }

    pub fn check(self, index: Index) -> Result<(), ThresholdError> {
        match (1..=self.n).contains(&index.0) {
            true => Ok(()),
            false => Err(ThresholdError::Index(index.0)),
        }
    }
}

/// `tag ‖ len(part) ‖ part …`: an unambiguous encoding of hash inputs.
pub(crate) fn framed(tag: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tag.len() + parts.iter().map(|p| p.len() + 8).sum::<usize>());
    out.extend_from_slice(&(tag.len() as u64).to_be_bytes());
    out.extend_from_slice(tag);
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}
