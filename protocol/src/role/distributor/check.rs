//! Single mode: checks from verifiers, the doors of the services where codes are typed.
//!
//! ```text
//! Check(user, code) from verifier V ─► V listed, and covers user? ─► user's requester R
//!     ─► judged as R's own verification: locked? · a live OTP of R issued here? ─► Persist(Used)
//!        · used, expired ─► Verified(result)
//!     ─► no match here: a miss towards R's lockout (V cannot tell which distributor issued the
//!        code, so every distributor is asked), remembered for REFUND_WINDOW_MS
//! Used marker from the issuer, for an OTP whose value is a remembered miss ─► the miss is taken
//!     back (the code was right, only not issued here)
//! ```
//! So a right code costs R nothing anywhere, and a wrong one counts at every distributor, whichever
//! verifier is asked: the lockout bounds guesses mesh-wide. A verifier learns only verdicts.

use super::Distributor;
use crate::mesh::Denied;
use crate::role::{refuse, Action, InboundId, Millis, Record};
use crate::wire::{CheckRequest, Refusal, Request, Response, VerifyResult};
use libp2p_identity::PeerId;
use std::collections::VecDeque;

/// How long a miss may be taken back by the issuer's use marker.
pub const REFUND_WINDOW_MS: Millis = 30_000;
/// Misses remembered for taking back; older ones are forgotten first (they then simply count).
pub const MAX_REMEMBERED_MISSES: usize = 4096;

/// A code that matched nothing here, for a while.
pub(super) struct Miss {
    requester: PeerId,
    value: u64,
    at: Millis,
}

/// The misses that may still be taken back.
#[derive(Default)]
pub(super) struct Misses(VecDeque<Miss>);

impl std::fmt::Debug for Misses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Misses({} remembered)", self.0.len())
    }
}

impl Misses {
    fn push(&mut self, miss: Miss) {
        if self.0.len() >= MAX_REMEMBERED_MISSES {
            self.0.pop_front();
        }
        self.0.push_back(miss);
    }

    /// The time of `requester`'s remembered miss with `value`, forgetting it.
    fn take(&mut self, now: Millis, requester: &PeerId, value: u64) -> Option<Millis> {
        self.0.retain(|m| m.at + REFUND_WINDOW_MS > now);
        let i = self
            .0
            .iter()
            .position(|m| &m.requester == requester && m.value == value)?;
        self.0.remove(i).map(|m| m.at)
    }
}

impl Distributor {
    pub(super) fn check(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        ask: &CheckRequest,
    ) -> Vec<Action> {
        let requester = match self.mesh.may_verify(&peer, &ask.user) {
            Ok(r) => r,
            Err(denied) => {
                let refusal = match denied {
                    Denied::NotVerifier => {
                        Refusal::Unauthorised(format!("{peer} is not a listed verifier"))
                    }
                    other => Refusal::Unauthorised(other.to_string()),
                };
                return refuse(peer, id, request, refusal);
            }
        };
        let digits = self.mesh.settings.digits.get() as usize;
        let judged = self.judge_code(now, requester, &ask.code, digits, |d, c| {
            d.match_otp(now, requester, c)
        });
        match judged {
            Err(refusal) => refuse(peer, id, request, refusal),
            Ok((result, mut actions)) => {
                if result == VerifyResult::Wrong {
                    if let Ok(value) = ask.code.parse() {
                        self.misses.push(Miss {
                            requester,
                            value,
                            at: now,
                        });
                    }
                }
                actions.push(Action::Reply {
                    to: id,
                    response: Response::Verified(result),
                });
                actions
            }
        }
    }

    /// The issuer accepted `requester`'s OTP of `value`: a miss it cost here is taken back.
    pub(super) fn refund(&mut self, now: Millis, requester: PeerId, value: u64) -> Vec<Action> {
        let Some(at) = self.misses.take(now, &requester, value) else {
            return Vec::new();
        };
        let Some(attempts) = self.attempts.get_mut(&requester) else {
            return Vec::new();
        };
        let Some(i) = attempts.failures.iter().position(|t| *t == at) else {
            // Already out of the window, or cleared by a lockout it completed (which stays).
            return Vec::new();
        };
        attempts.failures.remove(i);
        vec![Action::Persist(Record::Attempts {
            requester,
            failures: attempts.failures.iter().copied().collect(),
            locked_until: attempts.locked_until,
        })]
    }
}
