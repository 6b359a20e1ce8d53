//! Relying parties in the mesh config: user names for requesters, and the verifiers that may
//! check their codes.
//!
//! ```toml
//! [[requesters]]
//! peer_id = "12D3KooW…"
//! name = "alice"                     # what a service (SSH, VPN, a web login) calls this user
//! [[verifiers]]
//! peer_id = "12D3KooW…"
//! users = ["alice"]                  # or ["*"]: every named requester
//! ```

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest user name.
pub const MAX_USER_NAME_BYTES: usize = 64;
/// Most users one verifier entry may name.
pub const MAX_VERIFIER_USERS: usize = 4096;

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

/// A verifier: the door of a service where codes are typed. It may check (and so spend) the codes
/// of the users it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verifier {
    pub peer_id: PeerId,
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Names of listed requesters, or `"*"` for all of them.
    #[serde(default)]
    pub users: Vec<String>,
}

impl Verifier {
    /// Whether this verifier may check `user`'s codes.
    pub fn covers(&self, user: &UserName) -> bool {
        self.users.iter().any(|u| u == "*" || u == user.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_plain() {
        assert!(UserName::new("alice").is_ok());
        assert!(UserName::new("requester-1").is_ok());
        assert!(UserName::new("a.b+c@example.org").is_ok());
        assert_eq!(UserName::new(""), Err(NameError::Length(0)));
        assert_eq!(UserName::new(&"x".repeat(65)), Err(NameError::Length(65)));
        assert_eq!(UserName::new("al ice"), Err(NameError::Char(' ')));
        assert_eq!(UserName::new("bob\n"), Err(NameError::Char('\n')));
        assert_eq!(UserName::new("ünï"), Err(NameError::Char('ü')));
    }
}
