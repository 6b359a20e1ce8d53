//! A key distribution centre, Kerberos-style, with a distributor as the centre: registered users,
//! session keys between two of them, and an encrypted file exchange between those two.
//!
//! ```text
//!  alice (A)                         centre (a distributor)                           bob (B)
//!  K_A = Argon2id(passphrase, salt(centre, "alice"))                  K_B likewise   │
//!  ├─ Register{alice, K_A[, proof under the old key]} ─►│ users[alice] = (PeerId_A, K_A, t)
//!  │                                                    │◄─ Register{bob, K_B} ─────────────┤
//!  │                                                    │◄─ Present{bob, addrs} ────────────┤ `kdc receive`
//!  ├─ Session{alice, bob, nonce, preauth = Seal(K_A, now)[, otp]} ─►│
//!  │◄─ Grant{ for A:   Seal(K_A, {Ks, bob, PeerId_B, addrs, nonce, issued, expires}),
//!  │          ticket:  Seal(K_B, {Ks, alice, PeerId_A, issued, expires}) } ─┤
//!  ├───────────────── stream /otpmesh/kdc/1 (Noise: both PeerIds authenticated) ────────────►│
//!  │  Hello{ticket, authenticator = Seal(Ks, {alice, ctime, nonce', file length})}          │ open ticket (K_B),
//!  │◄─────────────────────────────────────────────── Welcome(Seal(Ks, {ctime, nonce'})) ────┤ check peer, lifetime,
//!  │  Chunk{i, last, ChaCha20-Poly1305(K_f, nonce = i ‖ last, bytes)} …                     │ skew, replay cache
//!  │◄────────────────────────────────────── Received(Seal(K_f, {length, BLAKE3(file)})) ────┤ then rename into place
//! ```
//!
//! - The long-term key is Argon2id ([`ARGON2_M_KIB`] KiB, [`ARGON2_T`] passes, [`ARGON2_P`] lanes,
//!   RFC 9106's second recommended setting) of the passphrase, salted with a hash of the centre's
//!   PeerId and the name: the same passphrase gives unrelated keys for other names or centres, and
//!   a precomputed table fits one (centre, name) only. The passphrase never leaves the user's
//!   machine; the key goes to the centre once, inside the Noise channel, and is stored there sealed.
//! - Every sealed box is XChaCha20-Poly1305 (random 24-byte nonce) under a subkey per purpose
//!   (HKDF-SHA256), with the context it belongs to (centre, names, nonce) as associated data, so a box
//!   cannot be moved to another place or purpose.
//! - A's identity is its PeerId (the Noise handshake proves it) *and* its key: the centre answers
//!   a session request only from the PeerId the name is registered to, with a pre-authentication
//!   sealed under the name's key (Kerberos' encrypted timestamp), and B accepts a ticket only over a
//!   connection from the PeerId the ticket names.

pub mod client;
pub mod context;
pub mod exchange;
pub mod message;
mod seal;

pub use seal::{Key, Purpose, Sealed};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest user name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Shortest and longest passphrase, in bytes.
pub const MIN_PASSPHRASE_BYTES: usize = 8;
pub const MAX_PASSPHRASE_BYTES: usize = 1024;
/// Argon2id memory cost in KiB (64 MiB).
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const ARGON2_T: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 4;
/// Default clock skew allowed between the parties (Kerberos' default).
pub const DEFAULT_MAX_SKEW_MS: u64 = 5 * 60_000;
/// Default ticket lifetime.
pub const DEFAULT_TICKET_LIFETIME_MS: u64 = 8 * 3_600_000;
/// Longest ticket lifetime a centre may be configured with.
pub const MAX_TICKET_LIFETIME_MS: u64 = 24 * 3_600_000;

/// A registered user's name: 1 to [`MAX_NAME_BYTES`] bytes of lowercase letters, digits, `.`, `_`
/// and `-`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn new(name: &str) -> Result<Name, KdcError> {
        let bad = |why: &str| Err(KdcError::BadName(format!("{name:?}: {why}")));
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return bad(&format!("a name is 1 to {MAX_NAME_BYTES} bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return bad("use lowercase letters, digits, '.', '_' and '-'");
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return bad("start with a letter or a digit");
        }
        Ok(Name(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let s = String::deserialize(d)?;
        Name::new(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Name {
    type Err = KdcError;
    fn from_str(s: &str) -> Result<Name, KdcError> {
        Name::new(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdcError {
    #[error("bad user name {0}")]
    BadName(String),
    #[error(
        "the passphrase is {0} bytes; it must be {MIN_PASSPHRASE_BYTES} to {MAX_PASSPHRASE_BYTES}"
    )]
    PassphraseLength(usize),
    #[error("the centre's answer does not open under {0}'s key: wrong passphrase, or the answer was tampered with")]
    GrantUnreadable(Name),
    #[error("the centre's answer is for another request (nonce or peer name differs): {0}")]
    GrantMismatch(String),
    #[error("the centre's ticket expired at {0} ms")]
    GrantExpired(u64),
}
