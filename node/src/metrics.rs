//! What a node counts, in Prometheus form: its own measures under `otpmesh_` and libp2p's
//! (`libp2p_*`: connections, identify, kad, ping, bandwidth; `gossipsub_*`: mesh and topic
//! health). Always collected (atomic counters); served only with `--metrics`
//! ([`crate::http`]).
//!
//! Every label has a bounded set of values: topics are the mesh's three, results and reasons
//! are fixed words, never free text, peer ids or anything secret.

use libp2p::metrics::Registry;
use otpmesh_protocol::role::{Event, Millis, PhraseRefusal};
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::wire::VerifyResult;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::collections::BTreeMap;

/// Why the event loop refuses an inbound request before the role sees it ([`Metrics::refused`]).
pub const REFUSALS: [&str; 4] = ["stopping", "penalised", "rate_limit", "undecodable"];

/// Rounds whose opening time is remembered for the latency histogram.
pub const MAX_TIMED_ROUNDS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Result {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Gossip {
    pub topic: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Round {
    pub event: &'static str,
}

/// The node's own measures.
#[derive(Clone)]
pub struct Metrics {
    pub peers: Gauge,
    pub gossip: Family<Gossip, Counter>,
    pub rounds: Family<Round, Counter>,
    pub round_seconds: Histogram,
    pub phrases: Family<Result, Counter>,
    pub phrases_rejected: Family<Reason, Counter>,
    pub otps_issued: Counter,
    pub verifications: Family<Result, Counter>,
    pub lockouts: Counter,
    pub requests_refused: Family<Reason, Counter>,
    pub penalties: Counter,
    pub commit_seconds: Histogram,
    /// When each round opened (ms), for `round_seconds`.
    opened: BTreeMap<RoundId, Millis>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let r = registry.sub_registry_with_prefix("otpmesh");
        let m = Metrics {
            peers: Gauge::default(),
            gossip: Family::default(),
            rounds: Family::default(),
            // 10 ms … ~80 s.
            round_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            phrases: Family::default(),
            phrases_rejected: Family::default(),
            otps_issued: Counter::default(),
            verifications: Family::default(),
            lockouts: Counter::default(),
            requests_refused: Family::default(),
            penalties: Counter::default(),
            // 50 µs … ~1.6 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            opened: BTreeMap::new(),
        };
        // Every known label set starts at zero (Prometheus practice): a dashboard reads 0, not
        // "no data", and the first increment has a rate.
        for event in ["opened", "sealed", "failed", "stored"] {
            let _ = m.rounds.get_or_create(&Round { event });
        }
        for result in ["accepted", "rejected"] {
            let _ = m.phrases.get_or_create(&Result { result });
        }
        for kind in PhraseRefusal::ALL {
            let _ = m.phrases_rejected.get_or_create(&Reason {
                reason: kind.as_str(),
            });
        }
        for result in VerifyResult::ALL {
            let _ = m.verifications.get_or_create(&Result {
                result: result.as_str(),
            });
        }
        let _ = m.verifications.get_or_create(&Result { result: "partial" });
        for reason in REFUSALS {
            let _ = m.requests_refused.get_or_create(&Reason { reason });
        }
        r.register("peers", "Peers connected", m.peers.clone());
        r.register(
            "gossip_messages",
            "Gossip messages received, by topic and validation result",
            m.gossip.clone(),
        );
        r.register(
            "rounds",
            "Rounds by event: opened, sealed, failed (generator), stored (distributor)",
            m.rounds.clone(),
        );
        r.register(
            "round_latency_seconds",
            "Time from a round's opening to its sealing (generator)",
            m.round_seconds.clone(),
        );
        r.register(
            "phrases",
            "Phrases by result: accepted or rejected (generator)",
            m.phrases.clone(),
        );
        r.register(
            "phrases_rejected",
            "Phrases rejected, by reason (generator)",
            m.phrases_rejected.clone(),
        );
        r.register(
            "otps_issued",
            "OTPs issued (threshold mode: partials issued)",
            m.otps_issued.clone(),
        );
        r.register(
            "verifications",
            "OTP and TOTP verifications by result (threshold mode: result=partial, one per verification partial released)",
            m.verifications.clone(),
        );
        r.register(
            "lockouts",
            "Requesters locked out after too many wrong codes",
            m.lockouts.clone(),
        );
        r.register(
            "requests_refused",
            "Inbound requests refused before the role saw them, by reason",
            m.requests_refused.clone(),
        );
        r.register(
            "penalties",
            "Peers penalised for crossing a limit",
            m.penalties.clone(),
        );
        r.register(
            "storage_commit_seconds",
            "Time per storage transaction (one group commit)",
            m.commit_seconds.clone(),
        );
        m
    }

    /// Counts what a role event says happened.
    pub fn role_event(&mut self, event: &Event, now: Millis) {
        let round = |event: &'static str| Round { event };
        match event {
            Event::RoundOpened { round: r, .. } => {
                self.rounds.get_or_create(&round("opened")).inc();
                if self.opened.len() >= MAX_TIMED_ROUNDS {
                    self.opened.pop_first();
                }
                self.opened.insert(*r, now);
            }
            Event::RoundSealed { round: r, .. } => {
                self.rounds.get_or_create(&round("sealed")).inc();
                if let Some(at) = self.opened.remove(r) {
                    self.round_seconds
                        .observe(now.saturating_sub(at) as f64 / 1000.0);
                }
            }
            Event::RoundFailed { round: r, .. } => {
                self.rounds.get_or_create(&round("failed")).inc();
                self.opened.remove(r);
            }
            Event::RoundStored { .. } => {
                self.rounds.get_or_create(&round("stored")).inc();
            }
            Event::PhraseAccepted { .. } => {
                self.phrases
                    .get_or_create(&Result { result: "accepted" })
                    .inc();
            }
            Event::PhraseRejected { kind, .. } => {
                self.phrases
                    .get_or_create(&Result { result: "rejected" })
                    .inc();
                self.phrases_rejected
                    .get_or_create(&Reason {
                        reason: kind.as_str(),
                    })
                    .inc();
            }
            // Threshold mode: a partial is this distributor's part of an OTP.
            Event::OtpIssued { .. }
            | Event::PartialIssued {
                verification: false,
                ..
            } => {
                self.otps_issued.inc();
            }
            Event::PartialIssued {
                verification: true, ..
            } => {
                self.verifications
                    .get_or_create(&Result { result: "partial" })
                    .inc();
            }
            Event::OtpVerified { result, .. } => {
                self.verifications
                    .get_or_create(&Result {
                        result: result.as_str(),
                    })
                    .inc();
            }
            Event::LockedOut { .. } => {
                self.lockouts.inc();
            }
            _ => {}
        }
    }

    /// Counts a refusal; `reason` is one of [`REFUSALS`].
    pub fn refused(&self, reason: &'static str) {
        debug_assert!(REFUSALS.contains(&reason), "unlisted refusal {reason}");
        self.requests_refused
            .get_or_create(&Reason { reason })
            .inc();
    }
}

/// The registry in Prometheus' text format (OpenMetrics 1.0).
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpmesh_protocol::digest::Digest32;

    #[test]
    fn events_move_the_counters_and_time_the_rounds() {
        let mut registry = Registry::default();
        let mut m = Metrics::new(&mut registry);
        let peer = libp2p::PeerId::random();
        m.role_event(
            &Event::RoundOpened {
                round: RoundId(1),
                quorum: 2,
                deadline_ms: 0,
            },
            1_000,
        );
        m.role_event(
            &Event::PhraseRejected {
                round: RoundId(1),
                client: otpmesh_protocol::phrase::ClientId(4),
                peer,
                kind: PhraseRefusal::WrongKey,
                reason: "sealed under key 1234, not this generator's".into(),
            },
            1_100,
        );
        m.role_event(
            &Event::RoundSealed {
                round: RoundId(1),
                commitment: Digest32([1; 32]),
                prev_commitment: Digest32([0; 32]),
                included: vec![],
            },
            1_250,
        );
        let text = encode(&registry);
        assert!(
            text.contains("otpmesh_rounds_total{event=\"opened\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("otpmesh_rounds_total{event=\"sealed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("otpmesh_phrases_rejected_total{reason=\"wrong_key\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("otpmesh_round_latency_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("otpmesh_round_latency_seconds_sum 0.25"),
            "{text}"
        );
        // Free text (the reason) and peer ids are never labels.
        assert!(!text.contains("1234") && !text.contains(&peer.to_string()));
        assert!(text.ends_with("# EOF\n"));
    }
}
