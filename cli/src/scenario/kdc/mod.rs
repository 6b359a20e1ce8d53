//! The key distribution centre's steps, on either kind of backend:
//!
//! - [`process`]: the real `otpmesh kdc register/receive/send` commands, with passphrase files
//!   written 0600 into the scenario's directory and the file moved over a libp2p stream;
//! - [`simulated`]: the same centre messages from the users' peers to the centre's real distributor
//!   role over the simulated net, and the exchange between the two users frame by frame in memory
//!   (`kdc::exchange::in_memory`: the simulator has no streams).
//!
//! Both derive keys from the passphrases by the real Argon2id and judge the outcome alike.

pub mod process;
pub mod simulated;

use super::layout::Planned;
use super::runner::Judged;
use super::spec::{KdcExpect, KdcOutcome};
use std::time::Duration;

/// How long one kdc command may take (Argon2id, a session, the exchange).
pub const KDC_TIMEOUT: Duration = Duration::from_secs(60);

/// A registration: `user` registers `name` at `centre` under `passphrase` (proving the name's
/// current passphrase `old_passphrase` when it is taken).
pub struct Registration<'a> {
    pub user: &'a Planned,
    pub centre: &'a Planned,
    pub name: &'a str,
    pub passphrase: &'a str,
    pub old_passphrase: Option<&'a str>,
}

/// A file sent from `from` to the user `to_name` (run as receiver by node `to`) through `centre`.
pub struct Transfer<'a> {
    pub from: &'a Planned,
    pub to: &'a Planned,
    pub centre: &'a Planned,
    pub to_name: &'a str,
    pub file: &'a [u8],
    pub passphrase: &'a str,
    pub receiver_passphrase: &'a str,
    /// An OTP from the centre, as pre-authentication.
    pub otp: Option<&'a str>,
}

/// What a file that arrived byte for byte is reported as.
fn arrived(t: &Transfer, got: &[u8]) -> Result<String, String> {
    if got != t.file {
        return Err(format!(
            "the file arrived different ({} bytes of {})",
            got.len(),
            t.file.len()
        ));
    }
    Ok(format!(
        "{} bytes from {} to {}, byte-identical (blake3 {})",
        t.file.len(),
        t.from.name,
        t.to_name,
        &blake3::hash(t.file).to_hex()[..12]
    ))
}

fn judge(expect: &KdcExpect, ok: Result<String, String>) -> Judged {
    let expected = match (&expect.outcome, &expect.reason) {
        (KdcOutcome::Ok, _) => "ok".to_string(),
        (KdcOutcome::Refused, None) => "refused".to_string(),
        (KdcOutcome::Refused, Some(r)) => format!("refused: …{r}…"),
    };
    let passed = match (&ok, expect.outcome) {
        (Ok(_), KdcOutcome::Ok) => true,
        (Err(e), KdcOutcome::Refused) => expect.reason.as_ref().is_none_or(|r| e.contains(r)),
        _ => false,
    };
    let outcome = match ok {
        Ok(s) => s,
        Err(e) => format!("refused: {e}"),
    };
    Judged {
        outcome,
        expected,
        passed,
    }
}
