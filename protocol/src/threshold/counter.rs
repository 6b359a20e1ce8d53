//! OTP counters in threshold mode, allocated by the requester without coordination.
//!
//! counter = issue time in seconds (high 32 bits) ‖ 32 random bits. Any distributor reads the issue
//! time, and so the expiry, from the counter alone, whether or not it answered the issuing request
//! (a verification quorum may differ from the issuing one). Two requests of one requester share a
//! counter only if they fall in the same second and draw the same 32 bits (2^-32 per pair), and a
//! distributor refuses a counter it has already answered or marked used, so a repeat is never served
//! twice by one distributor.

use rand_core::CryptoRngCore;

/// How far a counter's issue time may be from the distributor's clock.
pub const MAX_SKEW_MS: u64 = 60_000;

/// A fresh counter for an OTP requested at `now_ms`.
pub fn fresh(now_ms: u64, rng: &mut dyn CryptoRngCore) -> u64 {
    ((now_ms / 1000) << 32) | u64::from(rng.next_u32())
}

/// When the OTP with this counter was requested (to the second).
pub fn issued_at_ms(counter: u64) -> u64 {
    (counter >> 32) * 1000
}

/// Whether `counter` was made within [`MAX_SKEW_MS`] of `now_ms`.
pub fn is_current(counter: u64, now_ms: u64) -> bool {
    issued_at_ms(counter).abs_diff(now_ms) <= MAX_SKEW_MS + 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_counter_carries_its_issue_second() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let now = 1_700_000_123_456;
        let c = fresh(now, &mut rng);
        assert_eq!(issued_at_ms(c), 1_700_000_123_000);
        assert!(is_current(c, now + MAX_SKEW_MS));
        assert!(!is_current(c, now + MAX_SKEW_MS + 2_000));
        assert!(!is_current(c, now - MAX_SKEW_MS - 2_000));
        assert_ne!(fresh(now, &mut rng), c);
    }
}
