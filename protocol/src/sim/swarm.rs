//! Swarm testing: many runs, each of a shape and faults drawn from its own seed, so that one
//! number replays any of them exactly (`otpmesh sim --swarm N`).
//!
//! ```text
//! seed ─► ChaCha20 ─► mode (single, or T/N of 2/3, 3/4, 3/5) · contributors · distributors
//!      ·  requesters · rounds · requests · faults (loss, dup, partition, crash, each or not)
//!      ─► Config (the run's own rng is seeded by the same seed)
//! ```

use super::net::Faults;
use super::Config;
use crate::threshold::Params;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Most contributors a swarm run has (kept small: many runs beat one big one here).
pub const MAX_CONTRIBUTORS: u32 = 10;
/// Most requesters a swarm run has.
pub const MAX_REQUESTERS: u32 = 8;
/// Most rounds a swarm run has.
pub const MAX_ROUNDS: u32 = 4;
/// The threshold shapes a run may take (T > N/2, as single use needs).
const THRESHOLDS: [(u32, u32); 3] = [(2, 3), (3, 4), (3, 5)];

/// The shape and faults of the swarm run with `seed`: the same seed, the same run.
pub fn shape(seed: u64) -> Config {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5357_4152_4d00_0000);
    let mut pick = |lo: u32, hi: u32| lo + rng.next_u32() % (hi - lo + 1);
    let threshold = match pick(0, 1) {
        0 => None,
        _ => {
            let (t, n) = THRESHOLDS[pick(0, THRESHOLDS.len() as u32 - 1) as usize];
            Some(Params::new(t, n).expect("T > N/2 in every listed shape"))
        }
    };
    // A threshold round needs two dealings at least (one would be its contributor's key).
    let contributors = pick(threshold.map_or(1, |_| 2), MAX_CONTRIBUTORS);
    let distributors = threshold.map_or_else(|| pick(1, 5), |p| p.n);
    let requesters = pick(1, MAX_REQUESTERS);
    let rounds = pick(1, MAX_ROUNDS);
    let requests = pick(1, 2 * requesters);
    let faults = Faults {
        loss: match pick(1, 100) <= 60 {
            true => [0.01, 0.05, 0.1][pick(0, 2) as usize],
            false => 0.0,
        },
        dup: match pick(1, 100) <= 40 {
            true => [0.01, 0.05][pick(0, 1) as usize],
            false => 0.0,
        },
        partition: pick(1, 100) <= 50,
        crash: pick(1, 100) <= 50,
    };
    Config {
        seed,
        contributors,
        distributors,
        requesters,
        rounds,
        requests,
        faults,
        rsa_bits: 2048,
        sabotage: false,
        threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_shape_and_the_shapes_vary() {
        let a = shape(7);
        let b = shape(7);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let shapes: Vec<Config> = (0..200).map(shape).collect();
        assert!(shapes.iter().any(|c| c.threshold.is_some()));
        assert!(shapes.iter().any(|c| c.threshold.is_none()));
        assert!(shapes.iter().any(|c| c.faults.crash && c.faults.partition));
        assert!(shapes.iter().any(|c| c.faults == Faults::default()));
        for c in &shapes {
            assert!(c.contributors > u32::from(c.threshold.is_some()));
            assert!(c.rounds >= 1 && c.rounds <= MAX_ROUNDS);
            assert!(c.requests >= 1 && c.requesters <= MAX_REQUESTERS);
        }
    }
}
