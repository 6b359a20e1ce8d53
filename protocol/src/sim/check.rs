//! The invariants a simulation run must keep, checked as events arrive and at the end.

use super::Report;
use crate::digest::Digest32;
use crate::role::Verdict;
use crate::round::{self, RoundId, Secret, Transcript};
use crate::wire::VerifyResult;
use libp2p_identity::PeerId;
use std::collections::{BTreeMap, BTreeSet};

/// Violations kept (the first ones say most).
pub const MAX_VIOLATIONS: usize = 100;

/// One OTP a requester was given.
#[derive(Clone)]
pub struct Issued {
    pub requester: PeerId,
    /// Single mode: its issuer.
    pub distributor: PeerId,
    pub round: RoundId,
    /// Threshold mode: the OTP's counter.
    pub counter: u64,
    pub otp: String,
    accepted: u32,
}

#[derive(Default)]
pub struct Checker {
    pub sealed: BTreeSet<u64>,
    pub failed: BTreeSet<u64>,
    /// Rounds every generator reported delivered (or, in threshold mode, held no share of).
    pub delivered: BTreeSet<u64>,
    /// Rounds whose requests went out.
    pub requested: BTreeSet<u64>,
    issued: Vec<Issued>,
    replays_refused: u32,
    rejected: u32,
    violations: Vec<String>,
    /// Threshold mode: each round's beacon value, as the first node to hold one had it, and the
    /// nodes that hold one.
    beacon: BTreeMap<u64, (Digest32, BTreeSet<PeerId>)>,
}

impl Checker {
    pub fn violation(&mut self, what: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(what);
        }
    }

    /// Node `at` holds `value` as round `round`'s beacon value: every node must hold the same one.
    pub fn beacon(&mut self, at: PeerId, round: RoundId, value: Digest32) {
        let (first, holders) = self
            .beacon
            .entry(round.0)
            .or_insert_with(|| (value, BTreeSet::new()));
        let (first, by) = (*first, holders.first().copied());
        holders.insert(at);
        if first != value {
            let by = by.map_or("another node".to_string(), |p| p.to_string());
            self.violation(format!(
                "the nodes disagree on round {}'s beacon value: {at} holds {}, {by} holds {}",
                round.0,
                &value.to_hex()[..16],
                &first.to_hex()[..16]
            ));
        }
    }

    /// Whether each of the `nodes` long-running nodes holds every sealed round's beacon value.
    pub fn beacon_complete(&self, nodes: usize) -> bool {
        let held = |r: &u64| self.beacon.get(r).map_or(0, |(_, h)| h.len());
        self.sealed.iter().all(|r| held(r) >= nodes)
    }

    pub fn rejected(&mut self, verdict: &Verdict) {
        if matches!(verdict, Verdict::Reject(_)) {
            self.rejected += 1;
        }
    }

    /// Whether every round up to `rounds` that sealed has had its requests.
    pub fn requested_all(&self, rounds: u32) -> bool {
        self.sealed
            .iter()
            .filter(|r| **r <= u64::from(rounds))
            .all(|r| self.requested.contains(r))
    }

    /// An OTP given to `requester`; its id.
    pub fn issued(
        &mut self,
        requester: PeerId,
        distributor: PeerId,
        round: RoundId,
        counter: u64,
        otp: &str,
    ) -> u64 {
        self.issued.push(Issued {
            requester,
            distributor,
            round,
            counter,
            otp: otp.to_string(),
            accepted: 0,
        });
        self.issued.len() as u64 - 1
    }

    /// What to present for OTP `id`.
    pub fn presented(&self, id: u64) -> Issued {
        self.issued[id as usize].clone()
    }

    /// A verification's answer: the first presentation (`replay` false) or its replay.
    pub fn verified(&mut self, id: u64, result: VerifyResult, replay: bool) {
        let i = &mut self.issued[id as usize];
        if result == VerifyResult::Accepted {
            i.accepted += 1;
        }
        let (accepted, who, round) = (i.accepted, i.requester, i.round);
        if accepted > 1 {
            self.violation(format!(
                "an OTP of {who} for round {} was accepted {accepted} times",
                round.0
            ));
        }
        match (replay, result) {
            (true, VerifyResult::Used) => self.replays_refused += 1,
            // Its issuer forgot it: what it acknowledged was lost (a crash, a restore).
            (false, VerifyResult::Wrong) => self.violation(format!(
                "an OTP {who} was given for round {} was unknown to its distributor when first presented",
                round.0
            )),
            _ => {}
        }
    }

    /// End-of-run checks: the sealed transcripts check against their secrets and chain.
    /// `with_secrets`: single mode, where the generator's secret is the round's (threshold mode:
    /// a generator holds a share, and the transcript commits to the public round key).
    pub fn finish(&mut self, transcripts: &[(Transcript, Secret)], with_secrets: bool) {
        for (t, secret) in transcripts {
            if let Err(e) = t.check(with_secrets.then_some(secret)) {
                self.violation(format!(
                    "round {}'s transcript does not check: {e}",
                    t.round.0
                ));
            }
        }
        let chain: Vec<Transcript> = transcripts.iter().map(|(t, _)| t.clone()).collect();
        if let Err(e) = round::verify_chain(&chain) {
            self.violation(format!("the transcripts do not chain: {e}"));
        }
        let recorded: BTreeSet<u64> = chain.iter().map(|t| t.round.0).collect();
        if recorded != self.sealed {
            self.violation(format!(
                "the generator announced rounds {:?} sealed but recorded {:?}",
                self.sealed, recorded
            ));
        }
    }

    /// Every sealed round was delivered (by every generator, in threshold mode).
    pub fn all_delivered(&self) -> bool {
        self.sealed.is_subset(&self.delivered)
    }

    /// (node, round) beacon values held.
    pub fn beacon_held(&self) -> u32 {
        self.beacon.values().map(|(_, h)| h.len() as u32).sum()
    }

    pub fn fill(&self, report: &mut Report) {
        report.rounds_sealed = self.sealed.len() as u32;
        report.rounds_failed = self.failed.len() as u32;
        report.rounds_undelivered = self.sealed.difference(&self.delivered).count() as u32;
        report.otps_issued = self.issued.len() as u32;
        report.otps_accepted = self.issued.iter().filter(|i| i.accepted > 0).count() as u32;
        report.replays_refused = self.replays_refused;
        report.beacon_rounds = self.beacon.len() as u32;
        report.beacon_held = self.beacon_held();
        report.violations = self.violations.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nodes_holding_different_beacon_values_for_a_round_is_a_violation() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut checker = Checker::default();
        checker.sealed.insert(1);
        checker.beacon(a, RoundId(1), Digest32([1; 32]));
        checker.beacon(b, RoundId(1), Digest32([1; 32]));
        assert!(checker.violations.is_empty());
        assert!(checker.beacon_complete(2) && !checker.beacon_complete(3));
        checker.beacon(c, RoundId(1), Digest32([2; 32]));
        assert_eq!(checker.violations.len(), 1);
        let said = &checker.violations[0];
        assert!(
            said.contains("round 1") && said.contains(&c.to_string()),
            "{said}"
        );
        let other = said.contains(&a.to_string()) || said.contains(&b.to_string());
        assert!(other, "names a node it disagrees with: {said}");
    }
}
