//! Per-peer bounds on inbound requests, and the penalty for a peer that ignores them.
//!
//! ```text
//! request ─► bucket has a token? ── yes ─► role
//!                  │ no
//!                  ▼
//!            refused "rate limit" (no role work, no storage)  ─► strike
//! undecodable request ─────────────────────────────────────────► strike
//! MAX_STRIKES strikes within STRIKE_WINDOW_MS ─► penalised: disconnected, refused for PENALTY_MS,
//!                                                  gossip score set to PENALTY_SCORE (graylisted)
//! ```
//!
//! Each peer has a token bucket of `rate` tokens a second holding at most `2 × rate`: an honest
//! requester asks for one OTP at a time and never comes near it. A refused request is cheap, so a
//! peer is only penalised once it keeps sending after many refusals. The table is bounded: full
//! buckets are forgotten first.

use libp2p::PeerId;
use std::collections::HashMap;

pub type Millis = u64;

/// Refusals or undecodable requests within [`STRIKE_WINDOW_MS`] that get a peer penalised.
pub const MAX_STRIKES: u32 = 256;
pub const STRIKE_WINDOW_MS: Millis = 10_000;
/// How long a penalised peer is refused.
pub const PENALTY_MS: Millis = 60_000;
/// The gossipsub application score of a penalised peer: below the graylist threshold, so its
/// gossip is ignored too.
pub const PENALTY_SCORE: f64 = -1_000.0;
/// Peers tracked at once.
pub const MAX_TRACKED_PEERS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Hand the request to the role.
    Yes,
    /// Refuse it: over the rate.
    Refuse,
    /// Refuse it, and penalise the peer: it kept on.
    Penalise,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Millis,
    strikes: u32,
    window_start: Millis,
}

#[derive(Debug)]
pub struct Limiter {
    rate_per_s: f64,
    burst: f64,
    peers: HashMap<PeerId, Bucket>,
    penalised: HashMap<PeerId, Millis>,
}

impl Limiter {
    /// `rate_per_s` requests a second per peer, bursts of twice that.
    pub fn new(rate_per_s: u32) -> Limiter {
        let rate = f64::from(rate_per_s.max(1));
        Limiter {
            rate_per_s: rate,
            burst: 2.0 * rate,
            peers: HashMap::new(),
            penalised: HashMap::new(),
        }
    }

    pub fn rate_per_s(&self) -> f64 {
        self.rate_per_s
    }

    fn bucket(&mut self, peer: PeerId, now: Millis) -> &mut Bucket {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_TRACKED_PEERS {
            self.forget_idle(now);
        }
        let burst = self.burst;
        let bucket = self.peers.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
            strikes: 0,
            window_start: now,
        });
        let elapsed = now.saturating_sub(bucket.at) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * self.rate_per_s).min(burst);
        bucket.at = now;
        bucket
    }

    /// Drops the buckets that are full with no recent strike (they hold nothing a fresh bucket
    /// would not); if every peer is busy, the oldest.
    fn forget_idle(&mut self, now: Millis) {
        let (rate, burst) = (self.rate_per_s, self.burst);
        self.peers.retain(|_, b| {
            let tokens = b.tokens + now.saturating_sub(b.at) as f64 / 1000.0 * rate;
            tokens < burst || now.saturating_sub(b.window_start) < STRIKE_WINDOW_MS
        });
        if self.peers.len() >= MAX_TRACKED_PEERS {
            if let Some(oldest) = self.peers.iter().min_by_key(|(_, b)| b.at).map(|(p, _)| *p) {
                self.peers.remove(&oldest);
            }
        }
    }

    /// Whether `peer` may make one more request now.
    pub fn admit(&mut self, peer: PeerId, now: Millis) -> Admit {
        let bucket = self.bucket(peer, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Admit::Yes;
        }
        if self.strike(peer, now) {
            Admit::Penalise
        } else {
            Admit::Refuse
        }
    }

    /// Counts one strike against `peer` (a refusal, an undecodable request); true when this one
    /// crosses [`MAX_STRIKES`] within the window and the peer is now penalised.
    pub fn strike(&mut self, peer: PeerId, now: Millis) -> bool {
        let bucket = self.bucket(peer, now);
        if now.saturating_sub(bucket.window_start) >= STRIKE_WINDOW_MS {
            bucket.window_start = now;
            bucket.strikes = 0;
        }
        bucket.strikes += 1;
        if bucket.strikes < MAX_STRIKES {
            return false;
        }
        bucket.strikes = 0;
        self.penalise(peer, now);
        true
    }

    fn penalise(&mut self, peer: PeerId, now: Millis) {
        if self.penalised.len() >= MAX_TRACKED_PEERS {
            self.penalised.retain(|_, until| *until > now);
        }
        if self.penalised.len() < MAX_TRACKED_PEERS {
            self.penalised.insert(peer, now + PENALTY_MS);
        }
    }

    /// Whether `peer` is serving a penalty at `now`.
    pub fn is_penalised(&self, peer: &PeerId, now: Millis) -> bool {
        self.penalised.get(peer).is_some_and(|until| *until > now)
    }

    /// Peers whose penalty ended by `now` (they are forgiven and forgotten).
    pub fn expire(&mut self, now: Millis) -> Vec<PeerId> {
        let over: Vec<PeerId> = self
            .penalised
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &over {
            self.penalised.remove(p);
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_peer_is_served_and_a_flood_is_refused_then_penalised() {
        let mut limiter = Limiter::new(10);
        let (honest, flood) = (PeerId::random(), PeerId::random());
        // One request every 100 ms, for a minute: always served.
        for i in 0..600 {
            assert_eq!(limiter.admit(honest, i * 100), Admit::Yes);
        }
        // A burst of twice the rate is served, the rest refused, and the flood penalised.
        let admitted = (0..20)
            .filter(|_| limiter.admit(flood, 0) == Admit::Yes)
            .count();
        assert_eq!(admitted, 20);
        let mut outcomes = Vec::new();
        for _ in 0..MAX_STRIKES {
            outcomes.push(limiter.admit(flood, 0));
        }
        assert!(outcomes[..outcomes.len() - 1]
            .iter()
            .all(|o| *o == Admit::Refuse));
        assert_eq!(outcomes.last(), Some(&Admit::Penalise));
        assert!(limiter.is_penalised(&flood, 1));
        assert!(!limiter.is_penalised(&honest, 1));
        // Tokens come back with time.
        assert_eq!(limiter.admit(flood, 1_000), Admit::Yes);
        // The penalty ends.
        assert!(limiter.expire(PENALTY_MS - 1).is_empty());
        assert_eq!(limiter.expire(PENALTY_MS), vec![flood]);
        assert!(!limiter.is_penalised(&flood, PENALTY_MS));
    }

    #[test]
    fn strikes_spread_over_windows_do_not_add_up() {
        let mut limiter = Limiter::new(10);
        let peer = PeerId::random();
        for window in 0..5 {
            for _ in 0..MAX_STRIKES - 1 {
                assert!(!limiter.strike(peer, window * STRIKE_WINDOW_MS));
            }
        }
        assert!(limiter.strike(peer, 4 * STRIKE_WINDOW_MS));
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut limiter = Limiter::new(1);
        for i in 0..(MAX_TRACKED_PEERS as u64 * 2) {
            let peer = PeerId::random();
            limiter.admit(peer, i);
            limiter.admit(peer, i);
            limiter.admit(peer, i);
            assert!(limiter.peers.len() <= MAX_TRACKED_PEERS);
        }
    }
}
