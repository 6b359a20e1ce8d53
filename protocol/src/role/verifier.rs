//! The verifier: the door of the services where a user types a code (SSH through PAM, a VPN, a web
//! login). Its fronts (RADIUS, HTTP) hand it (user, code); it asks the mesh and answers accept or
//! reject. It holds no secret and learns only verdicts.
//!
//! ```text
//! check(ticket, user, code) ─► user named in the mesh config, and this verifier covers it?
//!     (else Decided: unknown user) ─► Send(Check{user, code}) to every distributor
//! Verified(accepted) from any ─► Decided(accepted)      (single mode: only the issuer can)
//! every answer in, or CHECK_TIMEOUT_MS ─► Decided: locked > used > expired > wrong, else
//!     unavailable when no distributor answered
//! ```
//! Distributors authorise the verifier themselves (mesh config `[[verifiers]]`), spend the code
//! durably before they answer `accepted`, and count a wrong code towards the user's lockout, so
//! neither a second verifier nor a replay gets a code in twice.

use super::{Action, Event, Millis, Role, Tag, Tags};
use crate::mesh::{MeshConfig, UserName};
use crate::wire::{CheckRequest, Request, Response, VerifyResult};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A check not decided in this long is decided on what came.
pub const CHECK_TIMEOUT_MS: Millis = 10_000;
/// Checks under way at once; more are decided `busy` at once.
pub const MAX_PENDING_CHECKS: usize = 1024;

/// What a check came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Wrong,
    Used,
    Expired,
    Locked,
    /// No requester of that name, or not one this verifier may check.
    UnknownUser,
    /// No distributor answered.
    Unavailable,
    /// Too many checks under way.
    Busy,
}

impl Outcome {
    pub fn accepted(self) -> bool {
        self == Outcome::Accepted
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Wrong => "wrong",
            Outcome::Used => "used",
            Outcome::Expired => "expired",
            Outcome::Locked => "locked",
            Outcome::UnknownUser => "unknown user",
            Outcome::Unavailable => "unavailable",
            Outcome::Busy => "busy",
        }
    }
}

struct Pending {
    user: UserName,
    started: Millis,
    asked: usize,
    results: Vec<Result<VerifyResult, String>>,
}

pub struct Verifier {
    me: PeerId,
    mesh: Arc<MeshConfig>,
    pending: BTreeMap<u64, Pending>,
    in_flight: HashMap<Tag, u64>,
    tags: Tags,
}

impl Verifier {
    pub fn new(me: PeerId, mesh: Arc<MeshConfig>) -> Verifier {
        Verifier {
            me,
            mesh,
            pending: BTreeMap::new(),
            in_flight: HashMap::new(),
            tags: Tags::starting_at(0),
        }
    }

    fn decided(ticket: u64, user: &str, outcome: Outcome, detail: String) -> Action {
        Action::Emit(Event::CheckDecided {
            ticket,
            user: user.to_string(),
            outcome,
            detail,
        })
    }

    /// Decides `ticket` if it can: at once on an acceptance, else once every answer is in (or
    /// `force`, at the timeout).
    fn settle(&mut self, ticket: u64, force: bool) -> Vec<Action> {
        let Some(p) = self.pending.get(&ticket) else {
            return Vec::new();
        };
        let has = |r: VerifyResult| p.results.iter().any(|a| a == &Ok(r));
        let all_in = p.results.len() >= p.asked;
        let outcome = if has(VerifyResult::Accepted) {
            Outcome::Accepted
        } else if !all_in && !force {
            return Vec::new();
        } else if has(VerifyResult::Locked) {
            Outcome::Locked
        } else if has(VerifyResult::Used) {
            Outcome::Used
        } else if has(VerifyResult::Expired) {
            Outcome::Expired
        } else if has(VerifyResult::Wrong) {
            Outcome::Wrong
        } else {
            Outcome::Unavailable
        };
        let failed: Vec<&String> = p.results.iter().filter_map(|r| r.as_ref().err()).collect();
        let silent = p.asked - p.results.len();
        let detail = match (failed.first(), silent) {
            (None, 0) => format!("{} of {} distributors answered", p.results.len(), p.asked),
            (first, _) => format!(
                "{} of {} distributors answered{}{}",
                p.results.len() - failed.len(),
                p.asked,
                first.map_or(String::new(), |f| format!("; one failed: {f}")),
                match silent {
                    0 => String::new(),
                    n => format!("; {n} did not answer in time"),
                }
            ),
        };
        let p = self.pending.remove(&ticket).expect("looked up above");
        self.in_flight.retain(|_, t| *t != ticket);
        vec![Verifier::decided(ticket, p.user.as_str(), outcome, detail)]
    }
}

impl Role for Verifier {
    fn check(
        &mut self,
        now: Millis,
        ticket: u64,
        user: &str,
        code: &str,
        _rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        let Ok(name) = UserName::new(user) else {
            return vec![Verifier::decided(
                ticket,
                "",
                Outcome::UnknownUser,
                "not a user name".into(),
            )];
        };
        if let Err(denied) = self.mesh.may_verify(&self.me, &name) {
            return vec![Verifier::decided(
                ticket,
                user,
                Outcome::UnknownUser,
                denied.to_string(),
            )];
        }
        if self.pending.len() >= MAX_PENDING_CHECKS || self.pending.contains_key(&ticket) {
            return vec![Verifier::decided(
                ticket,
                user,
                Outcome::Busy,
                format!("{MAX_PENDING_CHECKS} checks already under way"),
            )];
        }
        let distributors: Vec<PeerId> = self.mesh.distributors.iter().map(|m| m.peer_id).collect();
        let mut actions = Vec::new();
        for peer in &distributors {
            let tag = self.tags.next();
            self.in_flight.insert(tag, ticket);
            actions.push(Action::Send {
                peer: *peer,
                tag,
                request: Request::Check(CheckRequest {
                    user: name.clone(),
                    code: code.to_string(),
                }),
            });
        }
        self.pending.insert(
            ticket,
            Pending {
                user: name,
                started: now,
                asked: distributors.len(),
                results: Vec::new(),
            },
        );
        actions.extend(self.settle(ticket, false));
        actions
    }

    fn response(
        &mut self,
        _now: Millis,
        _peer: PeerId,
        tag: Tag,
        response: Result<Response, String>,
        _rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        let Some(ticket) = self.in_flight.remove(&tag) else {
            return Vec::new();
        };
        let result = match response {
            Ok(Response::Verified(r)) => Ok(r),
            Ok(Response::Refused(r)) => Err(r.to_string()),
            Ok(other) => Err(format!("unexpected {} response", other.kind())),
            Err(e) => Err(e),
        };
        if let Some(p) = self.pending.get_mut(&ticket) {
            p.results.push(result);
        }
        self.settle(ticket, false)
    }

    fn tick(&mut self, now: Millis, _rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.started + CHECK_TIMEOUT_MS)
            .map(|(t, _)| *t)
            .collect();
        late.into_iter()
            .flat_map(|t| self.settle(t, true))
            .collect()
    }
}
