//! Domain-separated SHA-256 and the 32-byte digests it yields (commitments, fingerprints,
//! ciphertext hashes).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// A 32-byte digest, shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Digest32(#[serde(with = "serde_bytes")] pub [u8; 32]);

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
    fn hex_round_trip() {
        let d = tagged("t", &[b"x"]);
        assert_eq!(Digest32::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest32::from_hex("zz"), None);
    }
}
