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

pub use crate::id::{NameError, UserName, MAX_USER_NAME_BYTES};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

/// Most users one verifier entry may name.
pub const MAX_VERIFIER_USERS: usize = 4096;

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
