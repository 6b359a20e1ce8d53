//! Rounds: their ids, the round secret, its commitment, and the transcript chain.
//!
//! ```text
//! secret_0   = H("otpmesh/1/round-secret", round, prev_commitment, (client_id, phrase)… in client-id order)
//! secret_i+1 = H("otpmesh/1/round-iterate", secret_i)          for i < iterations
//! commitment = H("otpmesh/1/commitment", round, secret)
//! ```
//! H is [`digest::tagged`] (SHA-256 over length-prefixed parts). Each sealed round's transcript names
//! the previous sealed round's commitment, so the transcripts form a chain anyone can check with
//! [`verify_chain`], and each contributor can find `(client_id, hash(ciphertext))` in it.

use crate::digest::{self, Digest32};
use crate::phrase::{ClientId, Phrase};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Most phrases a round may include (bounds the transcript on the wire).
pub const MAX_ROUND_CONTRIBUTORS: usize = 16_384;
/// Most hash iterations a mesh may configure.
pub const MAX_HASH_ITERATIONS: u32 = 1_000_000;

pub use crate::id::RoundId;
pub use crate::secret::{Secret, SECRET_LENGTHS};

/// Combines a round's phrases into its secret by iterated hashing.
pub fn derive_secret(
    round: RoundId,
    prev_commitment: &Digest32,
    phrases: &BTreeMap<ClientId, Phrase>,
    iterations: u32,
) -> Secret {
    let round_bytes = round.0.to_be_bytes();
    let client_bytes: Vec<[u8; 4]> = phrases.keys().map(|c| c.0.to_be_bytes()).collect();
    let mut parts: Vec<&[u8]> = vec![&round_bytes, &prev_commitment.0];
    for (bytes, phrase) in client_bytes.iter().zip(phrases.values()) {
        parts.push(bytes);
        parts.push(phrase.as_bytes());
    }
    let mut state = Zeroizing::new(digest::tagged("otpmesh/1/round-secret", &parts).0);
    for _ in 0..iterations {
        *state = digest::tagged("otpmesh/1/round-iterate", &[state.as_ref()]).0;
    }
    Secret::from_bytes(*state)
}

/// Hash of a phrase ciphertext, as a transcript lists it.
pub fn ciphertext_hash(ciphertext: &[u8]) -> Digest32 {
    digest::tagged("otpmesh/1/ciphertext", &[ciphertext])
}

/// One phrase a sealed round included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inclusion {
    pub client: ClientId,
    pub ciphertext_hash: Digest32,
}

/// The public record of a sealed round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    pub round: RoundId,
    pub generator: PeerId,
    pub key_fingerprint: Digest32,
    /// In client-id order, one entry per client.
    pub included: Vec<Inclusion>,
    pub prev_commitment: Digest32,
    pub commitment: Digest32,
    pub sealed_at_ms: u64,
    /// Threshold mode: the round key's public side. Then each inclusion's `ciphertext_hash` is the
    /// digest of that contributor's commitments, and `commitment` is [`ThresholdKey::commitment`]:
    /// no node holds a round secret to commit to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdKey>,
}

/// A threshold round key's public record: what lets anyone check a distributor's partial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdKey {
    pub params: crate::threshold::Params,
    /// Σ of the qualified dealings' Feldman commitments ([`crate::threshold::poly::Pair`]: T points
    /// for the OTP key, then T for the password key): K = G·k and K' = G·k' are the first of each
    /// half, and K_j, K'_j follow for every distributor j.
    pub public: crate::threshold::poly::WireCommitments,
    /// The coordinator's signature over (round, transcript commitment, this key): a requester
    /// believes a round key only with it, checked against the coordinator's PeerId in the mesh
    /// config (its Ed25519 public key is in the PeerId). Not part of the commitment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<KeySeal>,
}

/// Longest signature a [`KeySeal`] may carry (Ed25519: 64 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 128;

/// The coordinator's signature of a threshold round key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySeal {
    pub round: RoundId,
    pub commitment: Digest32,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why a round key is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the round key carries no signature of the coordinator")]
    Unsigned,
    #[error("the coordinator's PeerId {0} does not carry an Ed25519 public key")]
    NoPublicKey(PeerId),
    #[error("the round key's signature is not the coordinator's ({0})")]
    BadSignature(PeerId),
    #[error("the round key is signed for round {signed}, not round {claimed}")]
    OtherRound { signed: RoundId, claimed: RoundId },
    #[error("the round key is signed for another transcript commitment")]
    OtherCommitment,
    #[error("the round key is {t}/{n}; this mesh is {mesh_t}/{mesh_n}", t = .got.t, n = .got.n, mesh_t = .mesh.t, mesh_n = .mesh.n)]
    OtherParams {
        got: crate::threshold::Params,
        mesh: crate::threshold::Params,
    },
    #[error("the round key holds {have} generator dealing(s); it needs at least {need}")]
    FewGenerators { have: usize, need: u32 },
}

/// The public key a PeerId carries (Ed25519 PeerIds are an identity multihash of the protobuf
/// encoded key: code 0x00, length, key).
pub fn peer_public_key(peer: &PeerId) -> Option<libp2p_identity::PublicKey> {
    let bytes = peer.to_bytes();
    match bytes.as_slice() {
        [0x00, len, key @ ..] if usize::from(*len) == key.len() => {
            libp2p_identity::PublicKey::try_decode_protobuf(key).ok()
        }
        _ => None,
    }
}

impl ThresholdKey {
    /// What the coordinator signs: the round, its transcript commitment, T/N and the points.
    fn signed_message(&self, round: RoundId, commitment: &Digest32) -> Vec<u8> {
        let (round_bytes, t, n) = (
            round.0.to_be_bytes(),
            self.params.t.to_be_bytes(),
            self.params.n.to_be_bytes(),
        );
        let mut parts: Vec<&[u8]> = vec![&round_bytes, &commitment.0, &t, &n];
        parts.extend(self.public.0.iter().map(|p| p.as_slice()));
        digest::tagged("otpmesh/1/threshold-round-key", &parts)
            .0
            .to_vec()
    }

    /// Signs this key for `round` and its transcript `commitment` with the coordinator's identity.
    pub fn sign(
        &mut self,
        round: RoundId,
        commitment: Digest32,
        identity: &libp2p_identity::Keypair,
    ) {
        let message = self.signed_message(round, &commitment);
        // Ed25519 signing cannot fail; another key type that did would leave the key unsigned,
        // and so unbelieved.
        self.seal = identity.sign(&message).ok().map(|signature| KeySeal {
            round,
            commitment,
            signature,
        });
    }

    /// The round and transcript commitment `coordinator` signed this key for.
    pub fn sealed_by(&self, coordinator: &PeerId) -> Result<&KeySeal, SealError> {
        let seal = self.seal.as_ref().ok_or(SealError::Unsigned)?;
        let public = peer_public_key(coordinator).ok_or(SealError::NoPublicKey(*coordinator))?;
        let message = self.signed_message(seal.round, &seal.commitment);
        match seal.signature.len() <= MAX_SIGNATURE_BYTES
            && public.verify(&message, &seal.signature)
        {
            true => Ok(seal),
            false => Err(SealError::BadSignature(*coordinator)),
        }
    }
    /// The transcript commitment of a threshold round: the round, its predecessor, the qualified
    /// dealings (client and commitments digest) and the public key.
    pub fn commitment(&self, round: RoundId, prev: &Digest32, included: &[Inclusion]) -> Digest32 {
        let (round_bytes, t, n) = (
            round.0.to_be_bytes(),
            self.params.t.to_be_bytes(),
            self.params.n.to_be_bytes(),
        );
        let clients: Vec<[u8; 4]> = included.iter().map(|i| i.client.0.to_be_bytes()).collect();
        let mut parts: Vec<&[u8]> = vec![&round_bytes, &prev.0, &t, &n];
        for (client, inclusion) in clients.iter().zip(included) {
            parts.push(client);
            parts.push(&inclusion.ciphertext_hash.0);
        }
        parts.extend(self.public.0.iter().map(|p| p.as_slice()));
        digest::tagged("otpmesh/1/threshold-commitment", &parts)
    }

    /// The public key, decoded.
    pub fn key(&self) -> Option<crate::threshold::eval::PublicKey> {
        // Bounds first: N sizes the K_j computed below.
        crate::threshold::Params::new(self.params.t, self.params.n).ok()?;
        let commitments = crate::threshold::poly::Pair::from_wire(&self.public).ok()?;
        commitments.check_degree(self.params).ok()?;
        Some(crate::threshold::eval::PublicKey::new(
            self.params,
            commitments,
        ))
    }
}

impl Transcript {
    /// Threshold mode: whether `coordinator` signed this transcript's round key, for this round
    /// and commitment.
    pub fn check_seal(&self, coordinator: &PeerId) -> Result<(), SealError> {
        let key = self.threshold.as_ref().ok_or(SealError::Unsigned)?;
        let seal = key.sealed_by(coordinator)?;
        if seal.round != self.round {
            return Err(SealError::OtherRound {
                signed: seal.round,
                claimed: self.round,
            });
        }
        if seal.commitment != self.commitment {
            return Err(SealError::OtherCommitment);
        }
        Ok(())
    }

    /// Whether `client`'s phrase with ciphertext hash `hash` went into this round.
    pub fn includes(&self, client: ClientId, hash: &Digest32) -> bool {
        self.included
            .iter()
            .any(|i| i.client == client && &i.ciphertext_hash == hash)
    }

    /// The contributors whose phrase or dealing went in (in threshold mode, not the generators'
    /// own dealings: see [`Transcript::generator_dealers`]).
    pub fn clients(&self) -> Vec<ClientId> {
        self.included
            .iter()
            .map(|i| i.client)
            .filter(|c| crate::threshold::dealing_generator(*c).is_none())
            .collect()
    }

    /// Threshold mode: what every shareholder checks before it takes part in a sealed round: the
    /// coordinator signed its key for this round and transcript, the key is of the mesh's T/N, and
    /// at least t generators' own dealings went into it.
    pub fn check_round_key(
        &self,
        coordinator: &PeerId,
        params: crate::threshold::Params,
    ) -> Result<(), SealError> {
        self.check_seal(coordinator)?;
        let got = self.threshold.as_ref().ok_or(SealError::Unsigned)?.params;
        if got != params {
            return Err(SealError::OtherParams { got, mesh: params });
        }
        if !self.has_generator_quorum() {
            return Err(SealError::FewGenerators {
                have: self.generator_dealers().len(),
                need: params.t,
            });
        }
        Ok(())
    }

    /// Threshold mode: whether at least t generators' own dealings went into the round key (t of
    /// the transcript's key: check it is the mesh's). Every shareholder checks it, not only the
    /// coordinator: with at most t − 1 corrupt generators one honest dealing is then in k.
    pub fn has_generator_quorum(&self) -> bool {
        self.threshold.as_ref().is_some_and(|k| {
            // Distinct (the list is in strictly increasing id order) and real shareholders only.
            let real = self
                .generator_dealers()
                .iter()
                .filter(|j| (1..=k.params.n).contains(&j.0))
                .count();
            real >= k.params.t as usize
        })
    }

    /// Threshold mode: the generators whose own dealing went into the round key.
    pub fn generator_dealers(&self) -> Vec<crate::threshold::Index> {
        self.included
            .iter()
            .filter_map(|i| crate::threshold::dealing_generator(i.client))
            .collect()
    }

    /// Checks what a transcript can say about itself: bounds, order, and that `secret` (when known)
    /// matches the commitment.
    pub fn check(&self, secret: Option<&Secret>) -> Result<(), ChainError> {
        if self.included.is_empty() || self.included.len() > MAX_ROUND_CONTRIBUTORS {
            return Err(ChainError::Size {
                round: self.round,
                len: self.included.len(),
            });
        }
        if !self.included.windows(2).all(|w| w[0].client < w[1].client) {
            return Err(ChainError::Order { round: self.round });
        }
        if let Some(key) = &self.threshold {
            // The secret, if any, is a key share: the distributor checks it against K_j.
            let well_formed = key.public.0.len() == 2 * key.params.t as usize
                && crate::threshold::Params::new(key.params.t, key.params.n).is_ok();
            if !well_formed
                || key.commitment(self.round, &self.prev_commitment, &self.included)
                    != self.commitment
            {
                return Err(ChainError::Commitment { round: self.round });
            }
            return Ok(());
        }
        if let Some(secret) = secret {
            if secret.commitment(self.round) != self.commitment {
                return Err(ChainError::Commitment { round: self.round });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("round {round}: includes {len} phrases (must be 1 to {max})", max = MAX_ROUND_CONTRIBUTORS)]
    Size { round: RoundId, len: usize },
    #[error("round {round}: included clients are not in strictly increasing client-id order")]
    Order { round: RoundId },
    #[error("round {round}: the secret does not match the commitment")]
    Commitment { round: RoundId },
    #[error("round {round} follows round {prev}: round ids must increase")]
    NotIncreasing { round: RoundId, prev: RoundId },
    #[error("round {round}: previous commitment {found} does not match round {prev}'s commitment {expected}")]
    Broken {
        round: RoundId,
        prev: RoundId,
        expected: Digest32,
        found: Digest32,
    },
}

/// Checks a sequence of transcripts (oldest first) links into a chain.
pub fn verify_chain(transcripts: &[Transcript]) -> Result<(), ChainError> {
    for t in transcripts {
        t.check(None)?;
    }
    for w in transcripts.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        if next.round <= prev.round {
            return Err(ChainError::NotIncreasing {
                round: next.round,
                prev: prev.round,
            });
        }
        if next.prev_commitment != prev.commitment {
            return Err(ChainError::Broken {
                round: next.round,
                prev: prev.round,
                expected: prev.commitment,
                found: next.prev_commitment,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phrase::UserInput;
    use proptest::prelude::*;

    fn phrases(ids: &[u32]) -> BTreeMap<ClientId, Phrase> {
        ids.iter()
            .map(|&i| {
                (
                    ClientId(i),
                    Phrase::from_parts(UserInput(i as i128), &[i as u8; 32], ClientId(i)).unwrap(),
                )
            })
            .collect()
    }

    fn transcript(round: u64, prev: Digest32, secret: &Secret) -> Transcript {
        Transcript {
            round: RoundId(round),
            generator: PeerId::random(),
            key_fingerprint: Digest32::ZERO,
            included: vec![Inclusion {
                client: ClientId(1),
                ciphertext_hash: ciphertext_hash(b"c"),
            }],
            prev_commitment: prev,
            commitment: secret.commitment(RoundId(round)),
            sealed_at_ms: 0,
            threshold: None,
        }
    }

    #[test]
    fn secret_depends_on_every_input() {
        let base = derive_secret(RoundId(1), &Digest32::ZERO, &phrases(&[1, 2, 3]), 10);
        assert_ne!(
            base,
            derive_secret(RoundId(2), &Digest32::ZERO, &phrases(&[1, 2, 3]), 10)
        );
        assert_ne!(
            base,
            derive_secret(RoundId(1), &Digest32([1; 32]), &phrases(&[1, 2, 3]), 10)
        );
        assert_ne!(
            base,
            derive_secret(RoundId(1), &Digest32::ZERO, &phrases(&[1, 2]), 10)
        );
        assert_ne!(
            base,
            derive_secret(RoundId(1), &Digest32::ZERO, &phrases(&[1, 2, 3]), 11)
        );
        assert_eq!(
            base,
            derive_secret(RoundId(1), &Digest32::ZERO, &phrases(&[1, 2, 3]), 10)
        );
    }

    #[test]
    fn chain_verification_catches_breaks_and_reorders() {
        let s1 = Secret::from_bytes([1; 32]);
        let s2 = Secret::from_bytes([2; 32]);
        let t1 = transcript(1, Digest32::ZERO, &s1);
        let t2 = transcript(3, t1.commitment, &s2);
        assert_eq!(verify_chain(&[t1.clone(), t2.clone()]), Ok(()));
        assert!(matches!(
            verify_chain(&[t2.clone(), t1.clone()]),
            Err(ChainError::NotIncreasing { .. })
        ));
        let mut forged = t2.clone();
        forged.prev_commitment = Digest32([9; 32]);
        assert!(matches!(
            verify_chain(&[t1.clone(), forged]),
            Err(ChainError::Broken { .. })
        ));
        assert_eq!(t1.check(Some(&s1)), Ok(()));
        assert!(matches!(
            t1.check(Some(&s2)),
            Err(ChainError::Commitment { .. })
        ));
        let mut unordered = t1.clone();
        unordered.included.push(Inclusion {
            client: ClientId(1),
            ciphertext_hash: Digest32::ZERO,
        });
        assert!(matches!(
            unordered.check(None),
            Err(ChainError::Order { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_honest_chain_verifies_and_any_tampered_link_fails(
            secrets in proptest::collection::vec(any::<[u8; 32]>(), 2..8),
            victim in any::<proptest::sample::Index>(),
        ) {
            let mut chain = Vec::new();
            let mut prev = Digest32::ZERO;
            for (i, s) in secrets.iter().enumerate() {
                let t = transcript(i as u64 + 1, prev, &Secret::from_bytes(*s));
                prev = t.commitment;
                chain.push(t);
            }
            prop_assert!(verify_chain(&chain).is_ok());
            let i = 1 + victim.index(chain.len() - 1);
            chain[i].prev_commitment.0[0] ^= 0x80;
            prop_assert!(verify_chain(&chain).is_err());
        }
    }
}
