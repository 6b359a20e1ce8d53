//! RSA-OAEP (SHA-256) sealing of phrases to the generator's key.
//!
//! The OAEP label binds every ciphertext to its round and client id, so a ciphertext replayed into
//! another round or claimed by another client fails to open. Opening returns [`Opaque`]: a failure
//! carries no detail, and the caller treats it exactly like any other rejected phrase.
//!
//! Two libraries, each where it is the better fit:
//! - `rsa` (RustCrypto) generates keys, encodes and decodes them (PKCS#8, SPKI) and seals: the
//!   contributors' public-key operation, which has no secret to leak.
//! - AWS-LC (`aws-lc-rs`) opens: the private-key operation, the generator's hot path. Its RSA is
//!   blinded and constant-time (constant-time modular exponentiation and OAEP decoding), and it is
//!   several times faster than `rsa`'s (`otpmesh bench rsa` measures both on the same key and
//!   ciphertexts). RUSTSEC-2023-0071 (Marvin, a timing side channel in `rsa`'s private-key
//!   operation) therefore does not describe this path: `rsa` never touches a ciphertext here.
//!   The containment stays anyway: OAEP only (no PKCS#1 v1.5), decryption off the event loop with
//!   no reply to the sender, one ciphertext per authorised client per round, no success/failure
//!   signal on the wire.

use crate::digest::{self, Digest32};
use crate::id::RoundId;
use crate::phrase::{ClientId, Phrase};
use crate::secret::SHARE_PAIR_BYTES;
use crate::threshold::Index;
use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256};
use rand_core::CryptoRngCore;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// Key sizes a generator may use.
pub const ALLOWED_KEY_BITS: [usize; 3] = [2048, 3072, 4096];
/// The default generator key size.
pub const DEFAULT_KEY_BITS: usize = 2048;
/// The largest SPKI DER accepted on the wire (RSA-4096 is 550 bytes).
pub const MAX_SPKI_BYTES: usize = 1024;
/// The largest ciphertext accepted on the wire (RSA-4096).
pub const MAX_CIPHERTEXT_BYTES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key size {0} is not allowed (use 2048, 3072 or 4096)")]
    Size(usize),
    #[error("RSA key generation failed: {0}")]
    Generate(String),
    #[error("not a valid RSA private key (PKCS#8 PEM expected): {0}")]
    Private(String),
    #[error("not a valid RSA public key (SPKI expected): {0}")]
    Public(String),
    #[error("public key is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("encryption failed: {0}")]
    Encrypt(String),
}

/// A failed open. Deliberately carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opaque;

/// The generator's private key: `rsa`'s form (for encoding; zeroized on drop) and AWS-LC's (for
/// opening; freed, and cleansed, by AWS-LC).
pub struct PrivateKey {
    inner: RsaPrivateKey,
    opening: OaepPrivateDecryptingKey,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey(<secret>, fingerprint {})",
            self.public.fingerprint
        )
    }
}

impl PrivateKey {
    pub fn generate(bits: usize, rng: &mut dyn CryptoRngCore) -> Result<PrivateKey, KeyError> {
        if !ALLOWED_KEY_BITS.contains(&bits) {
            return Err(KeyError::Size(bits));
        }
        let inner =
            RsaPrivateKey::new(&mut *rng, bits).map_err(|e| KeyError::Generate(e.to_string()))?;
        Self::from_inner(inner)
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<PrivateKey, KeyError> {
        let inner =
            RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Private(e.to_string()))?;
        Self::from_inner(inner)
    }

    fn from_inner(inner: RsaPrivateKey) -> Result<PrivateKey, KeyError> {
        let bits = inner.size() * 8;
        if !ALLOWED_KEY_BITS.contains(&bits) {
            return Err(KeyError::Size(bits));
        }
        let public = PublicKey::from_inner(inner.to_public_key())?;
        let der = inner
            .to_pkcs8_der()
            .map_err(|e| KeyError::Private(e.to_string()))?;
        let opening = PrivateDecryptingKey::from_pkcs8(der.as_bytes())
            .map_err(|e| KeyError::Private(format!("AWS-LC: {e}")))
            .and_then(|k| {
                OaepPrivateDecryptingKey::new(k)
                    .map_err(|_| KeyError::Private("AWS-LC: not an OAEP key".into()))
            })?;
        Ok(PrivateKey {
            inner,
            opening,
            public,
        })
    }

    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        self.inner
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Private(e.to_string()))
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Opens a phrase sealed for `round` and `client`. Blinded and constant-time (AWS-LC); any
    /// failure is [`Opaque`].
    pub fn open(
        &self,
        round: RoundId,
        client: ClientId,
        ciphertext: &[u8],
    ) -> Result<Phrase, Opaque> {
        let plain = self.decrypt(&phrase_label(round, client), ciphertext)?;
        Phrase::from_decrypted(plain, client).ok_or(Opaque)
    }

    /// Opens a threshold key share pair dealt by `client` for shareholder `index` in `round`
    /// ([`SHARE_PAIR_BYTES`]).
    /// Blinded and constant-time (AWS-LC); any failure is [`Opaque`].
    pub fn open_share(
        &self,
        round: RoundId,
        client: ClientId,
        index: Index,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<[u8; SHARE_PAIR_BYTES]>, Opaque> {
        let plain = self.decrypt(&share_label(round, client, index), ciphertext)?;
        let bytes: [u8; SHARE_PAIR_BYTES] = plain.as_slice().try_into().map_err(|_| Opaque)?;
        Ok(Zeroizing::new(bytes))
    }

    /// RSA-OAEP-SHA256 decryption of `ciphertext` under `label`: the plaintext, or [`Opaque`].
    pub fn decrypt(&self, label: &str, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, Opaque> {
        if ciphertext.len() != self.inner.size() {
            return Err(Opaque);
        }
        let mut out = Zeroizing::new(vec![0u8; self.opening.min_output_size()]);
        let len = self
            .opening
            .decrypt(
                &OAEP_SHA256_MGF1SHA256,
                ciphertext,
                &mut out,
                Some(label.as_bytes()),
            )
            .map_err(|_| Opaque)?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

/// A generator's public key with its SPKI encoding and fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: RsaPublicKey,
    spki: Vec<u8>,
    fingerprint: Digest32,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} bits, {})", self.bits(), self.fingerprint)
    }
}

impl PublicKey {
    fn from_inner(inner: RsaPublicKey) -> Result<PublicKey, KeyError> {
        let spki = inner
            .to_public_key_der()
            .map_err(|e| KeyError::Public(e.to_string()))?
            .into_vec();
        let fingerprint = fingerprint_of(&spki);
        Ok(PublicKey {
            inner,
            spki,
            fingerprint,
        })
    }

    /// Parses SPKI DER as received on the wire.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        if der.len() > MAX_SPKI_BYTES {
            return Err(KeyError::TooLarge {
                len: der.len(),
                max: MAX_SPKI_BYTES,
            });
        }
        let inner =
            RsaPublicKey::from_public_key_der(der).map_err(|e| KeyError::Public(e.to_string()))?;
        if !ALLOWED_KEY_BITS.contains(&(inner.size() * 8)) {
            return Err(KeyError::Size(inner.size() * 8));
        }
        Self::from_inner(inner)
    }

    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let inner =
            RsaPublicKey::from_public_key_pem(pem).map_err(|e| KeyError::Public(e.to_string()))?;
        Self::from_inner(inner)
    }

    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.inner
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Public(e.to_string()))
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    pub fn fingerprint(&self) -> Digest32 {
        self.fingerprint
    }

    pub fn bits(&self) -> usize {
        self.inner.size() * 8
    }

    /// The exact length every ciphertext under this key has.
    pub fn ciphertext_len(&self) -> usize {
        self.inner.size()
    }

    /// Seals `phrase` for `round` and `client` (RSA-OAEP-SHA256 with a binding label).
    pub fn seal(
        &self,
        round: RoundId,
        client: ClientId,
        phrase: &Phrase,
        mut rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<u8>, KeyError> {
        self.inner
            .encrypt(
                &mut rng,
                oaep(&phrase_label(round, client)),
                phrase.as_bytes(),
            )
            .map_err(|e| KeyError::Encrypt(e.to_string()))
    }
}

impl PublicKey {
    /// Seals a key share pair ([`SHARE_PAIR_BYTES`]) for shareholder `index` (RSA-OAEP-SHA256, labelled with round,
    /// dealer and shareholder, so a share cannot be replayed into another slot).
    pub fn seal_share(
        &self,
        round: RoundId,
        client: ClientId,
        index: Index,
        share: &[u8; SHARE_PAIR_BYTES],
        mut rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<u8>, KeyError> {
        self.inner
            .encrypt(&mut rng, oaep(&share_label(round, client, index)), share)
            .map_err(|e| KeyError::Encrypt(e.to_string()))
    }
}

/// The OAEP label of a threshold key share: round, dealer and shareholder.
pub fn share_label(round: RoundId, client: ClientId, index: Index) -> String {
    format!(
        "otpmesh/1/threshold-share round={} client={} shareholder={}",
        round.0, client.0, index.0
    )
}

/// The OAEP label of a phrase: round and client.
pub fn phrase_label(round: RoundId, client: ClientId) -> String {
    format!("otpmesh/1/phrase round={} client={}", round.0, client.0)
}

/// The fingerprint of a key: a tagged hash of its SPKI DER.
pub fn fingerprint_of(spki: &[u8]) -> Digest32 {
    digest::tagged("otpmesh/1/key-fingerprint", &[spki])
}

fn oaep(label: &str) -> Oaep {
    Oaep::new_with_label::<Sha256, _>(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phrase::UserInput;
    use rand::SeedableRng;
    use std::sync::OnceLock;

    pub(crate) fn test_key() -> &'static PrivateKey {
        static KEY: OnceLock<PrivateKey> = OnceLock::new();
        KEY.get_or_init(|| {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
            PrivateKey::generate(2048, &mut rng).unwrap()
        })
    }

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(5)
    }

    #[test]
    fn seal_then_open_round_trips_and_binds_round_and_client() {
        let key = test_key();
        let mut rng = rng();
        let phrase = Phrase::build(UserInput(1), ClientId(2), &mut rng).unwrap();
        let ct = key
            .public()
            .seal(RoundId(3), ClientId(2), &phrase, &mut rng)
            .unwrap();
        assert_eq!(ct.len(), 256);
        assert_eq!(key.open(RoundId(3), ClientId(2), &ct).unwrap(), phrase);
        assert_eq!(key.open(RoundId(4), ClientId(2), &ct), Err(Opaque));
        assert_eq!(key.open(RoundId(3), ClientId(6), &ct), Err(Opaque));
        assert_eq!(key.open(RoundId(3), ClientId(2), &ct[1..]), Err(Opaque));
        let mut flipped = ct.clone();
        flipped[100] ^= 1;
        assert_eq!(key.open(RoundId(3), ClientId(2), &flipped), Err(Opaque));
    }

    #[test]
    fn ciphertext_under_another_key_is_opaque() {
        let mut rng = rng();
        let other = PrivateKey::generate(2048, &mut rng).unwrap();
        let phrase = Phrase::build(UserInput(1), ClientId(1), &mut rng).unwrap();
        let ct = other
            .public()
            .seal(RoundId(1), ClientId(1), &phrase, &mut rng)
            .unwrap();
        assert_eq!(test_key().open(RoundId(1), ClientId(1), &ct), Err(Opaque));
    }

    #[test]
    fn a_pkcs1_v15_ciphertext_of_a_valid_phrase_does_not_open() {
        let mut rng = rng();
        let key = test_key();
        let phrase = Phrase::build(UserInput(1), ClientId(1), &mut rng).unwrap();
        let v15 = key
            .public()
            .inner
            .encrypt(&mut rng, rsa::Pkcs1v15Encrypt, phrase.as_bytes())
            .unwrap();
        assert_eq!(key.open(RoundId(1), ClientId(1), &v15), Err(Opaque));
        let oaep = key
            .public()
            .seal(RoundId(1), ClientId(1), &phrase, &mut rng)
            .unwrap();
        assert!(key.open(RoundId(1), ClientId(1), &oaep).is_ok());
    }

    #[test]
    fn keys_round_trip_through_pem_and_spki() {
        let key = test_key();
        let pem = key.to_pkcs8_pem().unwrap();
        let again = PrivateKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.public().fingerprint(), key.public().fingerprint());
        // The key read back opens (AWS-LC's form is built from the same PKCS#8).
        let mut r = rng();
        let phrase = Phrase::build(UserInput(7), ClientId(3), &mut r).unwrap();
        let ct = key
            .public()
            .seal(RoundId(9), ClientId(3), &phrase, &mut r)
            .unwrap();
        assert_eq!(again.open(RoundId(9), ClientId(3), &ct).unwrap(), phrase);
        let pub_again = PublicKey::from_spki_der(key.public().spki_der()).unwrap();
        assert_eq!(&pub_again, key.public());
        assert_eq!(
            PublicKey::from_pem(&key.public().to_pem().unwrap()).unwrap(),
            pub_again
        );
        assert!(matches!(
            PublicKey::from_spki_der(b"junk"),
            Err(KeyError::Public(_))
        ));
        assert!(matches!(
            PublicKey::from_spki_der(&[0u8; 2000]),
            Err(KeyError::TooLarge { .. })
        ));
        assert!(matches!(
            PrivateKey::generate(1024, &mut rng()),
            Err(KeyError::Size(1024))
        ));
    }
}
