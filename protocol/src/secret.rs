//! The round secret: the one value single mode keeps secret, and threshold mode's share pair. A
//! leaf beside [`crate::digest`]: it imports nothing of the crate above them.

use crate::digest::{self, Digest32};
use crate::id::RoundId;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// Bytes of a threshold key share pair k_j ‖ k'_j (two Ristretto scalars).
pub const SHARE_PAIR_BYTES: usize = 64;

/// A round secret (32 bytes), or in threshold mode a shareholder's key share pair k_j ‖ k'_j
/// ([`SHARE_PAIR_BYTES`]). Zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

/// The lengths a [`Secret`] may have.
pub const SECRET_LENGTHS: [usize; 2] = [32, SHARE_PAIR_BYTES];

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn from_bytes(bytes: [u8; 32]) -> Secret {
        let bytes = Zeroizing::new(bytes);
        Secret(Zeroizing::new(bytes.to_vec()))
    }

    /// A threshold key share pair.
    pub fn from_share_pair(bytes: &[u8; SHARE_PAIR_BYTES]) -> Secret {
        Secret(Zeroizing::new(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The 32 bytes of a round secret or key (None for a key share pair).
    pub fn as_array(&self) -> Option<&[u8; 32]> {
        self.0.as_slice().try_into().ok()
    }

    /// The public commitment to this secret for `round`.
    pub fn commitment(&self, round: RoundId) -> Digest32 {
        digest::tagged(
            "otpmesh/1/commitment",
            &[&round.0.to_be_bytes(), self.0.as_ref()],
        )
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(self.0.as_ref()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec());
        match SECRET_LENGTHS.contains(&bytes.len()) {
            true => Ok(Secret(bytes)),
            false => Err(serde::de::Error::invalid_length(
                bytes.len(),
                &"32 bytes (a round secret) or 64 (a key share pair)",
            )),
        }
    }
}
