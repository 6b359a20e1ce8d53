//! Per-party token buckets: each RADIUS client and each HTTP relying party may ask `rate_per_s`
//! checks a second, in bursts of up to two seconds' worth. Parties are listed in a bounded file
//! ([`super::MAX_PARTIES`]), so the map is bounded too.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// One bucket per party key.
#[derive(Debug)]
pub struct Buckets<K> {
    /// (tokens, last refill).
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            buckets: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Buckets<K> {
    /// Takes one token from `key`'s bucket (full at first), refilled at `rate_per_s`; false when
    /// it is empty.
    pub fn take(&mut self, key: K, rate_per_s: u32, now: Instant) -> bool {
        let rate = f64::from(rate_per_s);
        let (tokens, last) = self.buckets.entry(key).or_insert((2.0 * rate, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(2.0 * rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_two_seconds_then_the_rate() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        let taken = (0..100).filter(|_| b.take("a", 10, t0)).count();
        assert_eq!(taken, 20, "a full bucket holds two seconds' worth");
        assert!(b.take("b", 10, t0), "each party has its own bucket");
        let later = t0 + Duration::from_millis(500);
        let refilled = (0..100).filter(|_| b.take("a", 10, later)).count();
        assert_eq!(refilled, 5, "half a second refills five");
    }
}
