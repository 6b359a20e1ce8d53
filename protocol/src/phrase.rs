//! A contributor's secret phrase and the one rule that picks its hash algorithm.
//!
//! `phrase = H(PHRASE_DOMAIN ‖ input ‖ 32 fresh random bytes ‖ client_id)`, where the input is the
//! user's integer as 16 big-endian bytes (i128), the client id is 4 big-endian bytes, and H is chosen
//! by the client id ([`HashAlg::for_client`]):
//!
//! | client id | H |
//! |---|---|
//! | 1 | SHA-256 |
//! | 2 | SHA-512 |
//! | 3 | SHA-384 |
//! | 4 | SHA-512 |
//! | n ≥ 5 | SHA-256, SHA-384, SHA-512, BLAKE3 in turn: index (n − 5) mod 4 |
//!
//! Ids 1–4 keep the original system's choice; 0 is not a client id.

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Sha256, Sha384, Sha512};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// Domain tag hashed in front of every phrase.
pub const PHRASE_DOMAIN: &[u8] = b"otpmesh/1/phrase";
/// Fresh random bytes mixed into every phrase.
pub const PHRASE_NONCE_BYTES: usize = 32;
/// The longest phrase any algorithm yields (SHA-512).
pub const MAX_PHRASE_BYTES: usize = 64;

/// A contributor's client id (≥ 1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u32);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhraseError {
    #[error("client id 0 is not valid: client ids start at 1")]
    ZeroClientId,
    #[error("input {text:?} is not an integer (expected e.g. 42 or -7)")]
    NotAnInteger { text: String },
    #[error("input {text:?} is outside the accepted range ({min} to {max})", min = i128::MIN, max = i128::MAX)]
    OutOfRange { text: String },
}

/// The hash algorithms a phrase can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
    Blake3,
}

impl HashAlg {
    /// The algorithm for a client id: the one rule, documented at the top of this module.
    pub fn for_client(client: ClientId) -> Result<HashAlg, PhraseError> {
        const CYCLE: [HashAlg; 4] = [
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
            HashAlg::Blake3,
        ];
        Ok(match client.0 {
            0 => return Err(PhraseError::ZeroClientId),
            1 => HashAlg::Sha256,
            2 => HashAlg::Sha512,
            3 => HashAlg::Sha384,
            4 => HashAlg::Sha512,
            n => CYCLE[((n - 5) % 4) as usize],
        })
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 | HashAlg::Blake3 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    fn hash(self, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        Zeroizing::new(match self {
            HashAlg::Sha256 => run::<Sha256>(parts),
            HashAlg::Sha384 => run::<Sha384>(parts),
            HashAlg::Sha512 => run::<Sha512>(parts),
            HashAlg::Blake3 => {
                let mut h = blake3::Hasher::new();
                for p in parts {
                    h.update(p);
                }
                h.finalize().as_bytes().to_vec()
            }
        })
    }
}

/// The integer a contributor's user types in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UserInput(pub i128);

impl fmt::Debug for UserInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserInput(<redacted>)")
    }
}

impl FromStr for UserInput {
    type Err = PhraseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhraseError::NotAnInteger {
                text: trimmed.to_string(),
            });
        }
        trimmed
            .parse::<i128>()
            .map(UserInput)
            .map_err(|_| PhraseError::OutOfRange {
                text: trimmed.to_string(),
            })
    }
}

/// A secret phrase. Zeroized when dropped; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Phrase(Zeroizing<Vec<u8>>);

impl fmt::Debug for Phrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phrase(<{} secret bytes>)", self.0.len())
    }
}

impl Phrase {
    /// Builds a fresh phrase for `client` from the user's input and `rng`.
    pub fn build(
        input: UserInput,
        client: ClientId,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Phrase, PhraseError> {
        let mut nonce = Zeroizing::new([0u8; PHRASE_NONCE_BYTES]);
        rng.fill_bytes(nonce.as_mut());
        Self::from_parts(input, &nonce, client)
    }

    /// The deterministic core of [`Phrase::build`], given the random bytes.
    pub fn from_parts(
        input: UserInput,
        nonce: &[u8; PHRASE_NONCE_BYTES],
        client: ClientId,
    ) -> Result<Phrase, PhraseError> {
        let alg = HashAlg::for_client(client)?;
        let input_bytes = input.0.to_be_bytes();
        let client_bytes = client.0.to_be_bytes();
        Ok(Phrase(alg.hash(&[
            PHRASE_DOMAIN,
            &input_bytes,
            nonce,
            &client_bytes,
        ])))
    }

    /// Wraps decrypted bytes, checking they have the length `client`'s algorithm yields.
    pub fn from_decrypted(bytes: Zeroizing<Vec<u8>>, client: ClientId) -> Option<Phrase> {
        let alg = HashAlg::for_client(client).ok()?;
        (bytes.len() == alg.output_len()).then_some(Phrase(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use sha2::Digest as _;

    #[test]
    fn algorithm_table_matches_the_original_system() {
        let expect = [
            (1, HashAlg::Sha256),
            (2, HashAlg::Sha512),
            (3, HashAlg::Sha384),
            (4, HashAlg::Sha512),
            (5, HashAlg::Sha256),
            (6, HashAlg::Sha384),
            (7, HashAlg::Sha512),
            (8, HashAlg::Blake3),
            (9, HashAlg::Sha256),
        ];
        for (id, alg) in expect {
            assert_eq!(HashAlg::for_client(ClientId(id)), Ok(alg), "client {id}");
        }
        assert_eq!(
            HashAlg::for_client(ClientId(0)),
            Err(PhraseError::ZeroClientId)
        );
    }

    #[test]
    fn phrase_uses_the_client_algorithm() {
        let nonce = [7u8; 32];
        let p = Phrase::from_parts(UserInput(42), &nonce, ClientId(1)).unwrap();
        let mut h = Sha256::new();
        h.update(PHRASE_DOMAIN);
        h.update(42i128.to_be_bytes());
        h.update(nonce);
        h.update(1u32.to_be_bytes());
        assert_eq!(p.as_bytes(), h.finalize().as_slice());
        let b = Phrase::from_parts(UserInput(42), &nonce, ClientId(8)).unwrap();
        let mut h = blake3::Hasher::new();
        h.update(PHRASE_DOMAIN);
        h.update(&42i128.to_be_bytes());
        h.update(&nonce);
        h.update(&8u32.to_be_bytes());
        assert_eq!(b.as_bytes(), h.finalize().as_bytes());
    }

    #[test]
    fn fresh_randomness_makes_equal_inputs_differ() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let a = Phrase::build(UserInput(5), ClientId(3), &mut rng).unwrap();
        let b = Phrase::build(UserInput(5), ClientId(3), &mut rng).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 48);
    }

    #[test]
    fn input_parsing_names_the_problem() {
        assert_eq!("  -17 ".parse::<UserInput>(), Ok(UserInput(-17)));
        assert_eq!(
            i128::MAX.to_string().parse::<UserInput>(),
            Ok(UserInput(i128::MAX))
        );
        assert!(matches!(
            "4.5".parse::<UserInput>(),
            Err(PhraseError::NotAnInteger { .. })
        ));
        assert!(matches!(
            "".parse::<UserInput>(),
            Err(PhraseError::NotAnInteger { .. })
        ));
        assert!(matches!(
            "0x10".parse::<UserInput>(),
            Err(PhraseError::NotAnInteger { .. })
        ));
        let huge = "9".repeat(60);
        assert!(matches!(
            huge.parse::<UserInput>(),
            Err(PhraseError::OutOfRange { .. })
        ));
        let msg = "abc".parse::<UserInput>().unwrap_err().to_string();
        assert!(
            msg.contains("\"abc\"") && msg.contains("not an integer"),
            "{msg}"
        );
    }

    proptest! {
        #[test]
        fn every_client_id_yields_its_algorithm_length(id in 1u32.., input in any::<i128>(), nonce in any::<[u8; 32]>()) {
            let alg = HashAlg::for_client(ClientId(id)).unwrap();
            let p = Phrase::from_parts(UserInput(input), &nonce, ClientId(id)).unwrap();
            prop_assert_eq!(p.as_bytes().len(), alg.output_len());
            prop_assert!(Phrase::from_decrypted(Zeroizing::new(p.as_bytes().to_vec()), ClientId(id)).is_some());
        }

        #[test]
        fn any_integer_text_parses(n in any::<i128>()) {
            prop_assert_eq!(n.to_string().parse::<UserInput>(), Ok(UserInput(n)));
        }
    }
}
