//! Domain-separated SHA-256 and the 32-byte digests it yields (commitments, fingerprints,
//! ciphertext hashes).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// A 32-byte digest, shown as lowercase hex (a hex string in JSON and TOML, 32 bytes in CBOR).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest32(pub [u8; 32]);

impl Serialize for Digest32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            serde_bytes::Bytes::new(&self.0).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Digest32::from_hex(&text)
                .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
        } else {
            let bytes: serde_bytes::ByteArray<32> = Deserialize::deserialize(d)?;
            Ok(Digest32(bytes.into_array()))
        }
    }
}

impl Digest32 {
    pub const ZERO: Digest32 = Digest32([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Digest32(out))
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({})", &self.to_hex()[..16])
    }
}

/// SHA-256 over a domain tag and length-prefixed parts, so that no two different
/// (tag, parts) sequences can hash the same input bytes.
pub fn tagged(tag: &str, parts: &[&[u8]]) -> Digest32 {
    let mut hasher = Sha256::new();
    absorb(&mut hasher, tag.as_bytes());
    for part in parts {
        absorb(&mut hasher, part);
    }
    Digest32(hasher.finalize().into())
}

fn absorb(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_separates_boundaries() {
        assert_ne!(tagged("t", &[b"ab", b"c"]), tagged("t", &[b"a", b"bc"]));
        assert_ne!(tagged("t1", &[b"x"]), tagged("t2", &[b"x"]));
    }

    #[test]
    fn serde_is_hex_for_people_and_bytes_on_the_wire() {
        let d = tagged("t", &[b"x"]);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        assert_eq!(
            serde_json::from_str::<Digest32>(&format!("\"{d}\"")).unwrap(),
            d
        );
        let mut cbor = Vec::new();
        ciborium::into_writer(&d, &mut cbor).unwrap();
        assert_eq!(cbor.len(), 34);
        assert_eq!(
            ciborium::from_reader::<Digest32, _>(cbor.as_slice()).unwrap(),
            d
        );
    }

    #[test]
    fn hex_round_trip() {
        let d = tagged("t", &[b"x"]);
        assert_eq!(Digest32::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest32::from_hex("zz"), None);
    }
}
