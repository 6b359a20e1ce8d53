//! Identifiers every layer names: rounds, OTPs, users. A leaf: it imports nothing of the crate.

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A round's number. Round ids increase by one each time a generator opens a round.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct RoundId(pub u64);

impl fmt::Display for RoundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for RoundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "round {}", self.0)
    }
}

/// Which OTP: who issued it to whom, for which round, with which counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OtpRef {
    pub issuer: PeerId,
    pub requester: PeerId,
    pub round: RoundId,
    pub counter: u64,
}

/// Longest user name.
pub const MAX_USER_NAME_BYTES: usize = 64;
/// A user name: 1 to 64 of `A–Z a–z 0–9 . _ @ + -` (what RADIUS User-Name and web logins carry,
/// nothing a log line or a file name could misread).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a user name is 1 to {MAX_USER_NAME_BYTES} bytes, not {0}")]
    Length(usize),
    #[error("a user name is letters, digits and . _ @ + - only (found {0:?})")]
    Char(char),
}

impl UserName {
    pub fn new(name: &str) -> Result<UserName, NameError> {
        if name.is_empty() || name.len() > MAX_USER_NAME_BYTES {
            return Err(NameError::Length(name.len()));
        }
        match name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._@+-".contains(*c)))
        {
            Some(c) => Err(NameError::Char(c)),
            None => Ok(UserName(name.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UserName {
    type Error = NameError;
    fn try_from(s: String) -> Result<UserName, NameError> {
        UserName::new(&s)
    }
}

impl From<UserName> for String {
    fn from(n: UserName) -> String {
        n.0
    }
}
