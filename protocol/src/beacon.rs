//! The public beacon: one value per threshold round that nobody could predict or bias, checkable by
//! anyone from public data alone.
//!
//! ```text
//! x_r = ("beacon", prev = B_{r−1}, r)          (B before the first value: all zeros)
//! distributor j: y_j = k_j·H(x_r) + DLEQ proof against K_j        (k_j: its share of round r's key)
//! anyone:        Y_r = Σ λ_j y_j over T valid partials = k_r·H(x_r)
//!                B_r = H(tag ‖ r ‖ prev ‖ Y_r)
//! ```
//! A value carries the T partials that made it, so [`verify`] needs only the round's public key
//! (from its transcript): each proof is checked, Y is recombined and B recomputed. Each value binds
//! the previous one ([`verify_chain`]). Y is unique for x (a deterministic function of k), so any
//! T partials give the same B: two nodes that never talked agree.
//!
//! The chain follows the transcripts': the value before B_r is that of the round whose transcript
//! commitment is r's `prev_commitment` (all zeros when that is zero). An [`Entry`] pairs a value
//! with its round's transcript, so a run of entries ([`verify_run`]) checks with public data only:
//! each transcript's commitment, the transcripts' links, each value's proofs, the values' links.
//! Gossiping partials and keeping the chain: [`crate::role::threshold::beacon`].

use crate::digest::{self, Digest32};
use crate::round::Transcript;
use crate::threshold::eval::{Input, Partial, PublicKey};
use crate::threshold::{Index, ThresholdError};
use curve25519_dalek::ristretto::RistrettoPoint;
use serde::{Deserialize, Serialize};

/// The domain of beacon inputs.
pub const DOMAIN: &str = "beacon";

/// x_r: the previous value takes the requester's place (a beacon has no requester), the counter
/// is unused.
pub fn input(round: u64, prev: &Digest32) -> Input {
    Input {
        domain: DOMAIN.into(),
        requester: prev.0.to_vec(),
        round,
        counter: 0,
    }
}

/// B_r from the combined point.
pub fn value_of(round: u64, prev: &Digest32, y: &RistrettoPoint) -> Digest32 {
    digest::tagged(
        "otpmesh/1/beacon-value",
        &[&round.to_be_bytes(), &prev.0, &y.compress().to_bytes()],
    )
}

/// One beacon value with what proves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub round: u64,
    pub prev: Digest32,
    pub value: Digest32,
    /// T partials with their proofs, by distinct shareholders.
    pub partials: Vec<Partial>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    #[error("round {round}: {source}")]
    Combine {
        round: u64,
        #[source]
        source: ThresholdError,
    },
    #[error("round {round}: the value is not what its partials give")]
    Value { round: u64 },
    #[error("round {round}: {found} partials, the key's threshold is {needed}")]
    Partials {
        round: u64,
        found: usize,
        needed: u32,
    },
    #[error(
        "round {round} follows round {prev_round}: its previous value {found} is not {expected}"
    )]
    Broken {
        round: u64,
        prev_round: u64,
        expected: Digest32,
        found: Digest32,
    },
    #[error("round {round} follows round {prev_round}: rounds must increase")]
    Order { round: u64, prev_round: u64 },
}

/// B_r from partials: the first T valid ones (bad ones skipped and named in the error if too few).
/// Each proof is checked once, by [`PublicKey::combine`]; the partials kept are the ones it used.
pub fn combine(
    key: &PublicKey,
    round: u64,
    prev: &Digest32,
    partials: &[Partial],
) -> Result<Value, BeaconError> {
    let x = input(round, prev);
    let (y, bad) = key
        .combine(partials, &x)
        .map_err(|source| BeaconError::Combine { round, source })?;
    // The same choice combine made: in order, distinct shareholders, none with a bad proof, T.
    let mut used: Vec<Partial> = Vec::new();
    for p in partials {
        if used.len() == key.params.t as usize {
            break;
        }
        if !bad.contains(&p.index) && !used.iter().any(|u| u.index == p.index) {
            used.push(p.clone());
        }
    }
    Ok(Value {
        round,
        prev: *prev,
        value: value_of(round, prev, &y),
        partials: used,
    })
}

/// Checks a value against its round's public key only: exactly T distinct partials, every proof,
/// and the value they give.
pub fn verify(v: &Value, key: &PublicKey) -> Result<(), BeaconError> {
    let needed = key.params.t;
    let mut indices: Vec<Index> = v.partials.iter().map(|p| p.index).collect();
    indices.sort_unstable();
    indices.dedup();
    if v.partials.len() != needed as usize || indices.len() != v.partials.len() {
        return Err(BeaconError::Partials {
            round: v.round,
            found: indices.len(),
            needed,
        });
    }
    let x = input(v.round, &v.prev);
    let (y, bad) = key
        .combine(&v.partials, &x)
        .map_err(|source| BeaconError::Combine {
            round: v.round,
            source,
        })?;
    if !bad.is_empty() || value_of(v.round, &v.prev, &y) != v.value {
        return Err(BeaconError::Value { round: v.round });
    }
    Ok(())
}

/// A beacon value with the transcript of its round: everything needed to check it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub transcript: Transcript,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("round {round}: the transcript is for round {found}")]
    Round { round: u64, found: u64 },
    #[error("round {round}: the transcript has no threshold key (single-generator rounds have no beacon)")]
    NotThreshold { round: u64 },
    #[error("round {round}: the transcript does not match its commitment ({reason})")]
    Transcript { round: u64, reason: String },
    #[error("round {round}: the transcript's public key is not a valid key")]
    Key { round: u64 },
    #[error(transparent)]
    Value(#[from] BeaconError),
    #[error("round {round} follows round {prev_round}, but its transcript does not name that round's commitment")]
    Unlinked { round: u64, prev_round: u64 },
    #[error("round {round}: the chain's first transcript has no predecessor, so its previous value must be all zeros")]
    Genesis { round: u64 },
    #[error("{0} entries, at most {MAX_RUN}")]
    TooLong(usize),
    #[error("no entries")]
    Empty,
}

/// Longest run [`verify_run`] accepts (and a node keeps).
pub const MAX_RUN: usize = 4096;

impl Entry {
    pub fn round(&self) -> u64 {
        self.value.round
    }

    /// Checks this entry alone: the transcript is a threshold round's and matches its commitment,
    /// and the value verifies against its public key. Returns the key.
    pub fn verify(&self) -> Result<PublicKey, EntryError> {
        let round = self.value.round;
        if self.transcript.round.0 != round {
            return Err(EntryError::Round {
                round,
                found: self.transcript.round.0,
            });
        }
        let Some(key) = &self.transcript.threshold else {
            return Err(EntryError::NotThreshold { round });
        };
        self.transcript
            .check(None)
            .map_err(|e| EntryError::Transcript {
                round,
                reason: e.to_string(),
            })?;
        let key = key.key().ok_or(EntryError::Key { round })?;
        if self.transcript.prev_commitment == Digest32::ZERO && self.value.prev != Digest32::ZERO {
            return Err(EntryError::Genesis { round });
        }
        verify(&self.value, &key)?;
        Ok(key)
    }
}

/// Checks a run of entries, oldest first: every entry ([`Entry::verify`]), each transcript names
/// the one before it, and each value binds the one before it.
pub fn verify_run(entries: &[Entry]) -> Result<(), EntryError> {
    if entries.is_empty() {
        return Err(EntryError::Empty);
    }
    if entries.len() > MAX_RUN {
        return Err(EntryError::TooLong(entries.len()));
    }
    let mut chain = Vec::with_capacity(entries.len());
    for e in entries {
        chain.push((e.value.clone(), e.verify()?));
    }
    for w in entries.windows(2) {
        if w[1].transcript.prev_commitment != w[0].transcript.commitment {
            return Err(EntryError::Unlinked {
                round: w[1].round(),
                prev_round: w[0].round(),
            });
        }
    }
    verify_chain(&chain)?;
    Ok(())
}

/// Checks a chain, oldest first, each value against its round's key: every value verifies and
/// binds the one before it.
pub fn verify_chain(chain: &[(Value, PublicKey)]) -> Result<(), BeaconError> {
    for (v, key) in chain {
        verify(v, key)?;
    }
    for w in chain.windows(2) {
        let (prev, next) = (&w[0].0, &w[1].0);
        if next.round <= prev.round {
            return Err(BeaconError::Order {
                round: next.round,
                prev_round: prev.round,
            });
        }
        if next.prev != prev.value {
            return Err(BeaconError::Broken {
                round: next.round,
                prev_round: prev.round,
                expected: prev.value,
                found: next.prev,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threshold::dkg::{self, Dealing};
    use crate::threshold::eval::KeyShare;
    use crate::threshold::poly::Pair;
    use crate::threshold::Params;
    use rand::SeedableRng;

    /// A round key of `params` dealt by three contributors: public key and every share.
    fn round_key(params: Params, seed: u64) -> (PublicKey, Vec<KeyShare>) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let dealings: Vec<Dealing> = (1..=3)
            .map(|c| {
                Dealing::new(
                    dkg::contribution_scalar(b"beacon", seed, c),
                    params,
                    &mut rng,
                )
            })
            .collect();
        let qualified = [1, 2, 3];
        let shares = params
            .indices()
            .map(|j| {
                let received: Vec<_> = dealings
                    .iter()
                    .enumerate()
                    .map(|(i, d)| d.received_by(i as u32 + 1, j).unwrap())
                    .collect();
                dkg::key_share(j, &received, &qualified)
            })
            .collect();
        let commitments: Vec<&Pair> = dealings.iter().map(|d| &d.commitments).collect();
        (dkg::public_key(params, &commitments).unwrap(), shares)
    }

    fn partials(shares: &[KeyShare], which: &[usize], round: u64, prev: &Digest32) -> Vec<Partial> {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(round);
        which
            .iter()
            .map(|i| shares[*i].evaluate(&input(round, prev), &mut rng))
            .collect()
    }

    #[test]
    fn any_quorum_gives_the_same_value_and_it_verifies_from_public_data() {
        let params = Params::new(3, 5).unwrap();
        let (key, shares) = round_key(params, 1);
        let prev = Digest32::ZERO;
        let a = combine(&key, 1, &prev, &partials(&shares, &[0, 1, 2], 1, &prev)).unwrap();
        let b = combine(&key, 1, &prev, &partials(&shares, &[4, 2, 3], 1, &prev)).unwrap();
        assert_eq!(a.value, b.value, "two nodes with different partials agree");
        verify(&a, &key).unwrap();
        verify(&b, &key).unwrap();
        let two = partials(&shares, &[0, 1], 1, &prev);
        assert!(matches!(
            combine(&key, 1, &prev, &two),
            Err(BeaconError::Combine { .. })
        ));
    }

    #[test]
    fn a_tampered_value_or_partial_fails() {
        let params = Params::new(2, 3).unwrap();
        let (key, shares) = round_key(params, 2);
        let prev = Digest32([7; 32]);
        let good = combine(&key, 4, &prev, &partials(&shares, &[0, 2], 4, &prev)).unwrap();
        let mut value = good.clone();
        value.value.0[0] ^= 1;
        assert_eq!(verify(&value, &key), Err(BeaconError::Value { round: 4 }));
        let mut partial = good.clone();
        partial.partials[1].y[0] ^= 1;
        assert!(verify(&partial, &key).is_err());
        let mut short = good.clone();
        short.partials.pop();
        assert!(matches!(
            verify(&short, &key),
            Err(BeaconError::Partials { .. })
        ));
        let mut twice = good.clone();
        twice.partials[1] = twice.partials[0].clone();
        assert!(matches!(
            verify(&twice, &key),
            Err(BeaconError::Partials { .. })
        ));
        let mut moved = good;
        moved.round = 5;
        assert!(
            verify(&moved, &key).is_err(),
            "a value is bound to its round"
        );
    }

    #[test]
    fn the_chain_binds_each_value_to_the_one_before() {
        let params = Params::new(2, 3).unwrap();
        let mut chain = Vec::new();
        let mut prev = Digest32::ZERO;
        for round in 1..=4u64 {
            let (key, shares) = round_key(params, 10 + round);
            let v = combine(
                &key,
                round,
                &prev,
                &partials(&shares, &[1, 2], round, &prev),
            )
            .unwrap();
            prev = v.value;
            chain.push((v, key));
        }
        verify_chain(&chain).unwrap();
        let mut broken = chain.clone();
        broken.remove(1);
        assert!(matches!(
            verify_chain(&broken),
            Err(BeaconError::Broken { round: 3, .. })
        ));
        let mut swapped = chain;
        swapped.swap(1, 2);
        assert!(verify_chain(&swapped).is_err());
    }
}
