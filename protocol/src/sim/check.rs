//! The invariants a simulation run must keep, checked as events arrive and at the end.

use super::Report;
use crate::role::Verdict;
use crate::round::{self, RoundId, Secret, Transcript};
use crate::wire::VerifyResult;
use libp2p_identity::PeerId;
use std::collections::BTreeSet;

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
}

impl Checker {
    pub fn violation(&mut self, what: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(what);
        }
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

    pub fn fill(&self, report: &mut Report) {
        report.rounds_sealed = self.sealed.len() as u32;
        report.rounds_failed = self.failed.len() as u32;
        report.rounds_undelivered = self.sealed.difference(&self.delivered).count() as u32;
        report.otps_issued = self.issued.len() as u32;
        report.otps_accepted = self.issued.iter().filter(|i| i.accepted > 0).count() as u32;
        report.replays_refused = self.replays_refused;
        report.violations = self.violations.clone();
    }
}
