//! The simulated network: messages in flight in virtual time, and the faults that befall them.
//!
//! ```text
//! send(from, to, message) ─► lost? (loss) ─► arrives at now + latency (uniform LATENCY_MS)
//!                         └► duplicated? (dup) ─► a second copy, at its own latency
//! next() ─► the earliest arrival (ties: the order sent), so a seed fixes every interleaving
//! ```

use crate::role::{Millis, Tag};
use crate::wire::{Gossip, Request, Response};
use libp2p_identity::PeerId;
use rand_core::RngCore;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

/// One-way latency, uniform in this range (ms).
pub const LATENCY_MS: (Millis, Millis) = (1, 40);
/// Messages in flight at once; a send past it is lost (and counted).
pub const MAX_IN_FLIGHT: usize = 4_000_000;

/// Where a message goes: a node, or one of its one-shot clients (a requester's command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub peer: PeerId,
    /// 0: the node itself; n > 0: its n-th client session.
    pub session: u64,
}

#[derive(Clone, Debug)]
pub enum Message {
    /// One copy for every subscriber (a transcript of 10,000 phrases is not cloned 20,000 times).
    Gossip(std::sync::Arc<Gossip>),
    /// Bytes published as they are (fault injection): each recipient decodes them.
    Raw(std::sync::Arc<Vec<u8>>),
    Request {
        tag: Tag,
        request: Request,
    },
    Response {
        tag: Tag,
        response: Result<Response, String>,
    },
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Gossip(g) => g.kind(),
            Message::Raw(_) => "raw",
            Message::Request { request, .. } => request.kind(),
            Message::Response { .. } => "response",
        }
    }
}

/// A delivery: when, from whom, to whom, what.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: Millis,
    pub from: Address,
    pub to: Address,
    pub message: Message,
}

/// The faults a run draws from its seed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message arrives twice.
    pub dup: f64,
    /// Distributors crash and restart from what they stored.
    pub crash: bool,
    /// A distributor is cut off from everyone for a while, then healed.
    pub partition: bool,
}

/// A fault spec that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("--faults {spec:?}: {reason} (e.g. loss=0.05,dup=0.01,partition,crash)")]
pub struct FaultsError {
    spec: String,
    reason: String,
}

impl std::str::FromStr for Faults {
    type Err = FaultsError;

    fn from_str(spec: &str) -> Result<Faults, FaultsError> {
        let bad = |reason: String| FaultsError {
            spec: spec.to_string(),
            reason,
        };
        let mut faults = Faults::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (part, None),
            };
            let probability = |v: Option<&str>| -> Result<f64, FaultsError> {
                let v = v.ok_or_else(|| bad(format!("{name} needs a probability: {name}=0.05")))?;
                match v.parse::<f64>() {
                    Ok(p) if (0.0..=0.5).contains(&p) => Ok(p),
                    _ => Err(bad(format!(
                        "{name}={v} is not a probability from 0 to 0.5"
                    ))),
                }
            };
            match name {
                "loss" => faults.loss = probability(value)?,
                "dup" => faults.dup = probability(value)?,
                "crash" if value.is_none() => faults.crash = true,
                "partition" if value.is_none() => faults.partition = true,
                "crash" | "partition" => return Err(bad(format!("{name} takes no value"))),
                other => return Err(bad(format!("unknown fault {other:?}"))),
            }
        }
        Ok(faults)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.loss > 0.0 {
            parts.push(format!("loss={}", self.loss));
        }
        if self.dup > 0.0 {
            parts.push(format!("dup={}", self.dup));
        }
        if self.partition {
            parts.push("partition".into());
        }
        if self.crash {
            parts.push("crash".into());
        }
        write!(f, "{}", parts.join(","))
    }
}

/// Messages in flight, earliest first.
#[derive(Default)]
pub struct Net {
    faults: Faults,
    /// One-way latency: uniform in this range (ms).
    latency: (Millis, Millis),
    queue: BinaryHeap<Reverse<(Millis, u64)>>,
    flying: HashMap<u64, Arrival>,
    next: u64,
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
}

/// A uniform draw in [0, 1).
pub fn unit(rng: &mut dyn RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

impl Net {
    pub fn new(faults: Faults) -> Net {
        Net::with_latency(faults, LATENCY_MS)
    }

    /// A net whose one-way latency is uniform in `latency` (ms): (0, 0) delivers at once, in the
    /// order sent.
    pub fn with_latency(faults: Faults, latency: (Millis, Millis)) -> Net {
        Net {
            faults,
            latency,
            ..Default::default()
        }
    }

    /// Sends `message` at `now`: lost, duplicated or delayed as the faults and the rng say.
    pub fn send(
        &mut self,
        now: Millis,
        from: Address,
        to: Address,
        message: Message,
        rng: &mut dyn RngCore,
    ) {
        self.sent += 1;
        if unit(rng) < self.faults.loss {
            self.lost += 1;
            return;
        }
        let sent = Arrival {
            at: now,
            from,
            to,
            message,
        };
        if unit(rng) < self.faults.dup {
            self.duplicated += 1;
            self.push(sent.clone(), rng);
        }
        self.push(sent, rng);
    }

    /// Puts `arrival` (sent at `arrival.at`) in flight, to arrive after the latency.
    fn push(&mut self, mut arrival: Arrival, rng: &mut dyn RngCore) {
        if self.flying.len() >= MAX_IN_FLIGHT {
            self.lost += 1;
            return;
        }
        let (low, high) = self.latency;
        arrival.at += low + rng.next_u64() % (high - low + 1);
        let seq = self.next;
        self.next += 1;
        self.queue.push(Reverse((arrival.at, seq)));
        self.flying.insert(seq, arrival);
    }

    /// When the next message arrives.
    pub fn next_at(&self) -> Option<Millis> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// The next message, if it arrives by `until`.
    pub fn pop(&mut self, until: Millis) -> Option<Arrival> {
        match self.queue.peek() {
            Some(Reverse((at, _))) if *at <= until => {
                let Reverse((_, seq)) = self.queue.pop().expect("peeked");
                self.flying.remove(&seq)
            }
            _ => None,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.flying.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_and_print_back() {
        let f: Faults = "loss=0.05,dup=0.01,partition,crash".parse().unwrap();
        assert_eq!(
            f,
            Faults {
                loss: 0.05,
                dup: 0.01,
                crash: true,
                partition: true
            }
        );
        assert_eq!(f.to_string().parse::<Faults>().unwrap(), f);
        assert_eq!("".parse::<Faults>().unwrap(), Faults::default());
        for bad in ["loss", "loss=2", "dup=x", "crash=1", "flood"] {
            let e = bad.parse::<Faults>().unwrap_err().to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{e}");
        }
    }
}
