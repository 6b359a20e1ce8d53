//! Time-step codes a person can type: a threshold TOTP.
//!
//! ```text
//! step s = ⌊unix time / period⌋                    (mesh settings: code_period_s, code_digits)
//! round(s) = the newest round held whose transcript was sealed at least ROUND_MARGIN_MS before
//!            s began (both sides apply the rule; a distributor names the round it chose; the
//!            margin lets a handover reach every distributor first)
//! x = ("code", requester, round(s), s);  Y = k·H(x) from T partials;  code = otp(Y, x, digits)
//! ```
//! The requester gathers its own code (nothing spent: it is its owner's). A verifier gathers the
//! code of a user it checks; every distributor marks (requester, s) spent, durably, before it
//! releases that partial, so a step is looked at once, whoever asks: a code is accepted at most
//! once, and a guess costs the guesser the steps it looked at.

use super::eval::Input;
use crate::id::{OtpRef, RoundId};
use crate::otp::Digits;
use crate::time::Millis;
use libp2p_identity::PeerId;

/// The input domain of codes.
pub const DOMAIN: &str = "code";
/// Spent steps are kept with the OTP records under this round number, which no round has.
pub const SPENT_ROUND: RoundId = RoundId(u64::MAX);
/// How long before a step begins its round must have been sealed.
pub const ROUND_MARGIN_MS: Millis = 10_000;
/// A distributor answers for steps this far from its own clock's, no further.
pub const MAX_STEP_SKEW: u64 = 2;

/// The step at `now_ms`.
pub fn step(now_ms: Millis, period_s: u64) -> u64 {
    now_ms / 1000 / period_s.max(1)
}

/// Seconds left in the step at `now_ms`.
pub fn seconds_left(now_ms: Millis, period_s: u64) -> u64 {
    let period = period_s.max(1);
    period - (now_ms / 1000) % period
}

/// Milliseconds from `now_ms` until the next step begins.
pub fn ms_to_next_step(now_ms: Millis, period_s: u64) -> Millis {
    let period_ms = period_s.max(1) * 1000;
    period_ms - now_ms % period_ms
}

/// Whether `step` is near enough the one at `now_ms` to be answered.
pub fn is_current(step: u64, now_ms: Millis, period_s: u64) -> bool {
    self::step(now_ms, period_s).abs_diff(step) <= MAX_STEP_SKEW
}

/// The round whose key makes the code of `step`: the newest of `sealed` (round, sealed at) sealed
/// at least [`ROUND_MARGIN_MS`] before the step began.
pub fn round_for(
    step: u64,
    period_s: u64,
    sealed: impl IntoIterator<Item = (RoundId, Millis)>,
) -> Option<RoundId> {
    let begins = step.saturating_mul(period_s).saturating_mul(1000);
    let cutoff = begins.saturating_sub(ROUND_MARGIN_MS);
    sealed
        .into_iter()
        .filter(|(_, at)| *at <= cutoff)
        .map(|(r, _)| r)
        .max()
}

pub fn input(requester: &PeerId, round: RoundId, step: u64) -> Input {
    Input {
        domain: DOMAIN.into(),
        requester: requester.to_bytes(),
        round: round.0,
        counter: step,
    }
}

/// When a spent step can be forgotten: once no clock within the skew can ask for it.
pub fn spent_until_ms(step: u64, period_s: u64) -> Millis {
    (step + MAX_STEP_SKEW + 1)
        .saturating_mul(period_s)
        .saturating_mul(1000)
}

/// The record of `requester`'s spent `step` at distributor `me`.
pub fn spent_ref(me: PeerId, requester: PeerId, step: u64) -> OtpRef {
    OtpRef {
        issuer: me,
        requester,
        round: SPENT_ROUND,
        counter: step,
    }
}

/// The digits of a code.
pub fn digits(code_digits: u32) -> Digits {
    Digits::new(code_digits as u8).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_rounds_follow_the_published_rule() {
        assert_eq!(step(90_999, 30), 3);
        assert_eq!(seconds_left(90_999, 30), 30);
        assert_eq!(seconds_left(119_000, 30), 1);
        assert!(is_current(3, 90_000, 30) && is_current(5, 90_000, 30));
        assert!(!is_current(6, 90_000, 30) && !is_current(0, 90_000, 30));
        // Step 10 begins at 300 s; a round counts if sealed by 290 s.
        let sealed = [
            (RoundId(1), 100_000),
            (RoundId(2), 290_000),
            (RoundId(3), 290_001),
        ];
        assert_eq!(round_for(10, 30, sealed), Some(RoundId(2)));
        assert_eq!(round_for(3, 30, sealed), None);
        assert_eq!(round_for(11, 30, sealed), Some(RoundId(3)));
    }
}
