//! Keys and sealed boxes: XChaCha20-Poly1305 under a subkey per [`Purpose`].

use super::{KdcError, Name, ARGON2_M_KIB, ARGON2_P, ARGON2_T};
use super::{MAX_PASSPHRASE_BYTES, MIN_PASSPHRASE_BYTES};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

/// Largest sealed box (plaintext + tag) this module opens.
pub const MAX_SEALED_BYTES: usize = 2048;
const NONCE_BYTES: usize = 24;

/// What a key seals; each gets its own subkey, so a box made for one purpose never opens as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A's pre-authentication to the centre (under K_A).
    Preauth,
    /// The centre's answer to A (under K_A).
    ForClient,
    /// The ticket for B (under K_B).
    Ticket,
    /// A's authenticator to B (under the session key).
    Authenticator,
    /// B's proof that it opened the ticket (under the session key).
    ApReply,
    /// B's receipt for the whole file (under the file key).
    Receipt,
    /// The file key of one exchange (a key, not a box).
    File,
    /// The proof of the old key when a name is registered again (an HMAC key, not a box).
    Reregister,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Preauth => b"otpmesh/1/kdc/preauth",
            Purpose::ForClient => b"otpmesh/1/kdc/for-client",
            Purpose::Ticket => b"otpmesh/1/kdc/ticket",
            Purpose::Authenticator => b"otpmesh/1/kdc/authenticator",
            Purpose::ApReply => b"otpmesh/1/kdc/ap-reply",
            Purpose::Receipt => b"otpmesh/1/kdc/receipt",
            Purpose::File => b"otpmesh/1/kdc/file",
            Purpose::Reregister => b"otpmesh/1/kdc/reregister",
        }
    }
}

/// A 32-byte symmetric key (long-term, session or file key). Zeroized on drop, never printed,
/// compared in constant time.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(other.0.as_ref()).into()
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(Zeroizing::new(bytes))
    }

    pub fn random(rng: &mut dyn CryptoRngCore) -> Key {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(k.as_mut());
        Key(k)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A user's long-term key: Argon2id of the passphrase, salted with the centre and the name.
    pub fn derive(passphrase: &[u8], name: &Name, centre: &PeerId) -> Result<Key, KdcError> {
        if !(MIN_PASSPHRASE_BYTES..=MAX_PASSPHRASE_BYTES).contains(&passphrase.len()) {
            return Err(KdcError::PassphraseLength(passphrase.len()));
        }
        let params = argon2::Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(32))
            .expect("the constant Argon2 parameters are valid");
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, &salt(name, centre), out.as_mut())
            .expect("a 32-byte salt and output fit Argon2's bounds");
        Ok(Key(out))
    }

    /// The subkey for `purpose`, further bound to `context` (HKDF-SHA256).
    pub fn subkey(&self, purpose: Purpose, context: &[u8]) -> Key {
        let hk = Hkdf::<Sha256>::new(None, self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand_multi_info(&[purpose.label(), b"/", context], out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Key(out)
    }

    /// Seals `plain` for `purpose`, bound to `aad`.
    pub fn seal(
        &self,
        purpose: Purpose,
        aad: &[u8],
        plain: &[u8],
        rng: &mut dyn CryptoRngCore,
    ) -> Sealed {
        let sub = self.subkey(purpose, b"");
        let cipher = XChaCha20Poly1305::new(sub.as_bytes().into());
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 encryption of a bounded message cannot fail");
        Sealed { nonce, ciphertext }
    }

    /// Opens a box sealed for `purpose` and `aad`; `None` if the key, purpose, context or bytes differ.
    pub fn open(
        &self,
        purpose: Purpose,
        aad: &[u8],
        sealed: &Sealed,
    ) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.ciphertext.len() > MAX_SEALED_BYTES {
            return None;
        }
        let sub = self.subkey(purpose, b"");
        let cipher = XChaCha20Poly1305::new(sub.as_bytes().into());
        cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }

    /// HMAC-SHA256 under the subkey for `purpose`.
    pub fn mac(&self, purpose: Purpose, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::Mac;
        let sub = self.subkey(purpose, b"");
        let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(sub.as_bytes())
            .expect("HMAC takes a key of any length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(self.0.as_ref()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let bytes = Zeroizing::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec());
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"a 32-byte key"))?;
        Ok(Key::from_bytes(array))
    }
}

/// The Argon2 salt: SHA-256 of a label, the centre's PeerId and the name (each length-prefixed).
fn salt(name: &Name, centre: &PeerId) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        b"otpmesh/1/kdc/salt".as_slice(),
        &centre.to_bytes(),
        name.as_str().as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// A sealed box: nonce and ciphertext (with its tag).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; NONCE_BYTES],
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

/// Concatenates length-prefixed parts into associated data.
pub(crate) fn context(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn boxes_open_only_with_their_key_purpose_and_context() {
        let k = Key::random(&mut OsRng);
        let s = k.seal(Purpose::Ticket, b"ctx", b"hello", &mut OsRng);
        assert_eq!(
            k.open(Purpose::Ticket, b"ctx", &s).unwrap().as_slice(),
            b"hello"
        );
        assert!(k.open(Purpose::ForClient, b"ctx", &s).is_none());
        assert!(k.open(Purpose::Ticket, b"other", &s).is_none());
        assert!(Key::random(&mut OsRng)
            .open(Purpose::Ticket, b"ctx", &s)
            .is_none());
        let mut t = s.clone();
        t.ciphertext[0] ^= 1;
        assert!(k.open(Purpose::Ticket, b"ctx", &t).is_none());
    }

    #[test]
    fn derived_keys_depend_on_passphrase_name_and_centre() {
        let centre = PeerId::random();
        let alice = Name::new("alice").unwrap();
        let a1 = Key::derive(b"correct horse", &alice, &centre).unwrap();
        let a2 = Key::derive(b"correct horse", &alice, &centre).unwrap();
        assert_eq!(a1, a2);
        assert_ne!(
            a1,
            Key::derive(b"correct horse", &Name::new("bob").unwrap(), &centre).unwrap()
        );
        assert_ne!(
            a1,
            Key::derive(b"correct horse", &alice, &PeerId::random()).unwrap()
        );
        assert_ne!(a1, Key::derive(b"correct horsf", &alice, &centre).unwrap());
        assert_eq!(
            Key::derive(b"short", &alice, &centre),
            Err(KdcError::PassphraseLength(5))
        );
        assert_eq!(format!("{a1:?}"), "Key(<redacted>)");
    }
}
