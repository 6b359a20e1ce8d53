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
//!
//! threshold mode (codes are time steps, threshold::code):
//! check ─► gather the user's code of this step s (each distributor spends (user, s) first)
//!     ─► equal to the typed one (constant time)? ─► Decided(accepted)
//!     ─► else gather s − 1 and s + 1 (a clock off by one period) ─► equal? accepted : wrong
//!     (used when step s was spent before; unavailable when fewer than T answer)
//! ```
//! In threshold mode the verdict is the verifier's alone: no partial reaches the requester.
//! Distributors authorise the verifier themselves (mesh config `[[verifiers]]`), spend the code
//! durably before they answer `accepted`, and (single mode) count a wrong code towards the user's
//! lockout, or (threshold mode) spend every step looked at, so neither a second verifier nor a
//! replay gets a code in twice, and guesses are bounded per user mesh-wide.

use super::threshold::code::{Gather, Gathered};
use super::{Action, Event, Millis, Role, Tag, Tags};
use crate::mesh::{MeshConfig, UserName};
use crate::role::{Answer, Rng, Typed};
use crate::threshold::code;
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
    /// Threshold mode: fewer than T distributors gave a partial that combines.
    QuorumUnavailable,
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
            Outcome::QuorumUnavailable => "quorum unavailable",
            Outcome::Busy => "busy",
        }
    }

    /// Every outcome, for reading one back from its text.
    pub const ALL: [Outcome; 9] = [
        Outcome::Accepted,
        Outcome::Wrong,
        Outcome::Used,
        Outcome::Expired,
        Outcome::Locked,
        Outcome::UnknownUser,
        Outcome::Unavailable,
        Outcome::QuorumUnavailable,
        Outcome::Busy,
    ];

    /// The outcome whose [`Outcome::as_str`] is `text` (as a RADIUS Reply-Message or the HTTP
    /// front's `detail.message` carry it).
    pub fn from_text(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

struct Pending {
    user: UserName,
    started: Millis,
    kind: Kind,
}

enum Kind {
    /// Single mode: every distributor's verdict.
    Single {
        asked: usize,
        results: Vec<Result<VerifyResult, String>>,
    },
    /// Threshold mode: the typed code, and the steps being gathered (first the current one,
    /// then its neighbours).
    Codes {
        typed: zeroize::Zeroizing<String>,
        requester: PeerId,
        gathers: Vec<Gather>,
        /// The outcome for the current step, once known.
        current: Option<Gathered>,
    },
}

pub struct Verifier {
    me: PeerId,
    mesh: Arc<MeshConfig>,
    pending: BTreeMap<u64, Pending>,
    /// Tag → (ticket, distributor, step).
    in_flight: HashMap<Tag, (u64, PeerId, u64)>,
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

    /// Threshold mode: gathers the user's code of the current step (spending it).
    fn check_code(
        &mut self,
        now: Millis,
        ticket: u64,
        user: UserName,
        code: &str,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        let Ok(requester) = self.mesh.may_verify(&self.me, &user) else {
            return Vec::new();
        };
        let digits = self.mesh.settings.code_digits as usize;
        if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            // Not a code of this mesh at all: nothing to look at, nothing spent.
            return vec![Verifier::decided(
                ticket,
                user.as_str(),
                Outcome::Wrong,
                format!("a code here is {digits} digits"),
            )];
        }
        let step = code::step(now, self.mesh.settings.code_period_s);
        let mut gather = Gather::new(
            self.me,
            requester,
            Some(user.clone()),
            step,
            self.mesh.clone(),
        );
        let mut actions = Vec::new();
        for (peer, request) in gather.requests(rng) {
            let tag = self.tags.next();
            self.in_flight.insert(tag, (ticket, peer, step));
            actions.push(Action::Send { peer, tag, request });
        }
        self.pending.insert(
            ticket,
            Pending {
                user,
                started: now,
                kind: Kind::Codes {
                    typed: zeroize::Zeroizing::new(code.to_string()),
                    requester,
                    gathers: vec![gather],
                    current: None,
                },
            },
        );
        actions
    }

    /// Decides `ticket` if it can: at once on an acceptance, else once every answer is in (or
    /// `force`, at the timeout).
    fn settle(
        &mut self,
        now: Millis,
        ticket: u64,
        force: bool,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        let Some(p) = self.pending.get_mut(&ticket) else {
            return Vec::new();
        };
        let decided = match &mut p.kind {
            Kind::Single { asked, results } => single_outcome(*asked, results, force),
            Kind::Codes {
                typed,
                requester,
                gathers,
                current,
            } => {
                let typed_now = typed.clone();
                match codes_outcome(typed_now.as_str(), gathers, current, force) {
                    Step::Decided(o, d) => Some((o, d)),
                    Step::Wait => None,
                    Step::Neighbours(step) => {
                        // The neighbours get a deadline of their own.
                        p.started = now;
                        let requester = *requester;
                        let user = p.user.clone();
                        let mut actions = Vec::new();
                        for s in [step.wrapping_sub(1), step + 1] {
                            let mut g = Gather::new(
                                self.me,
                                requester,
                                Some(user.clone()),
                                s,
                                self.mesh.clone(),
                            );
                            for (peer, request) in g.requests(rng) {
                                let tag = self.tags.next();
                                self.in_flight.insert(tag, (ticket, peer, s));
                                actions.push(Action::Send { peer, tag, request });
                            }
                            if let Some(Pending {
                                kind: Kind::Codes { gathers, .. },
                                ..
                            }) = self.pending.get_mut(&ticket)
                            {
                                gathers.push(g);
                            }
                        }
                        return actions;
                    }
                }
            }
        };
        let Some((outcome, detail)) = decided else {
            return Vec::new();
        };
        let p = self.pending.remove(&ticket).expect("looked up above");
        self.in_flight.retain(|_, (t, _, _)| *t != ticket);
        vec![Verifier::decided(ticket, p.user.as_str(), outcome, detail)]
    }
}

/// Single mode: accepted at once on an acceptance; else, once all are in (or forced), the
/// strongest refusal.
fn single_outcome(
    asked: usize,
    results: &[Result<VerifyResult, String>],
    force: bool,
) -> Option<(Outcome, String)> {
    let has = |r: VerifyResult| results.iter().any(|a| a == &Ok(r));
    let all_in = results.len() >= asked;
    let outcome = if has(VerifyResult::Accepted) {
        Outcome::Accepted
    } else if !all_in && !force {
        return None;
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
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let silent = asked - results.len();
    let detail = format!(
        "{} of {} distributors answered{}{}",
        results.len() - failed.len(),
        asked,
        failed
            .first()
            .map_or(String::new(), |f| format!("; one failed: {f}")),
        match silent {
            0 => String::new(),
            n => format!("; {n} did not answer in time"),
        }
    );
    Some((outcome, detail))
}

enum Step {
    Wait,
    /// The current step's code is not the typed one: ask its neighbours.
    Neighbours(u64),
    Decided(Outcome, String),
}

fn equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Threshold mode: where a check of gathered codes stands.
fn codes_outcome(
    typed: &str,
    gathers: &[Gather],
    current: &mut Option<Gathered>,
    force: bool,
) -> Step {
    let outcomes: Vec<Option<Gathered>> = gathers.iter().map(Gather::outcome).collect();
    for (g, o) in gathers.iter().zip(&outcomes) {
        if let Some(Gathered::Code { code, round, .. }) = o {
            if equal(code, typed) {
                return Step::Decided(
                    Outcome::Accepted,
                    format!("the code of step {} (round {round})", g.step),
                );
            }
        }
    }
    if current.is_none() {
        match &outcomes[0] {
            Some(o) => *current = Some(o.clone()),
            None if force => {}
            None => return Step::Wait,
        }
        if gathers.len() == 1 {
            if let Some(Gathered::Code { .. }) = current {
                return Step::Neighbours(gathers[0].step);
            }
        }
    }
    if outcomes.iter().any(Option::is_none) && !force {
        return Step::Wait;
    }
    match current {
        Some(Gathered::Spent) => {
            Step::Decided(Outcome::Used, "this step's code was already checked".into())
        }
        Some(Gathered::Unavailable(_, why)) => {
            Step::Decided(Outcome::QuorumUnavailable, why.clone())
        }
        None => Step::Decided(
            Outcome::QuorumUnavailable,
            "quorum unavailable: no answer in time".into(),
        ),
        Some(Gathered::Code { .. }) => Step::Decided(
            Outcome::Wrong,
            "not the code of this step or its neighbours (now spent)".into(),
        ),
    }
}

impl Role for Verifier {
    fn check(&mut self, now: Millis, typed: Typed, _rng: &mut dyn Rng) -> Vec<Action> {
        let Typed { ticket, user, code } = typed;
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
        if self.mesh.threshold().is_some() {
            return self.check_code(now, ticket, name, code, _rng);
        }
        let digits = self.mesh.settings.digits.get() as usize;
        if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            // Not an OTP of this mesh: no distributor need look (nor count it).
            return vec![Verifier::decided(
                ticket,
                user,
                Outcome::Wrong,
                format!("a code here is {digits} digits"),
            )];
        }
        let distributors: Vec<PeerId> = self.mesh.distributors.iter().map(|m| m.peer_id).collect();
        let mut actions = Vec::new();
        for peer in &distributors {
            let tag = self.tags.next();
            self.in_flight.insert(tag, (ticket, *peer, 0));
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
                kind: Kind::Single {
                    asked: distributors.len(),
                    results: Vec::new(),
                },
            },
        );
        actions.extend(self.settle(now, ticket, false, _rng));
        actions
    }

    fn response(&mut self, now: Millis, answer: Answer, rng: &mut dyn Rng) -> Vec<Action> {
        let Answer { tag, response, .. } = answer;
        let Some((ticket, distributor, step)) = self.in_flight.remove(&tag) else {
            return Vec::new();
        };
        match self.pending.get_mut(&ticket).map(|p| &mut p.kind) {
            Some(Kind::Single { results, .. }) => results.push(match response {
                Ok(Response::Verified(r)) => Ok(r),
                Ok(Response::Refused(r)) => Err(r.to_string()),
                Ok(other) => Err(format!("unexpected {} response", other.kind())),
                Err(e) => Err(e),
            }),
            Some(Kind::Codes { gathers, .. }) => {
                if let Some(g) = gathers.iter_mut().find(|g| g.step == step) {
                    g.answer(distributor, response);
                }
            }
            None => return Vec::new(),
        }
        self.settle(now, ticket, false, rng)
    }

    fn tick(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.started + CHECK_TIMEOUT_MS)
            .map(|(t, _)| *t)
            .collect();
        late.into_iter()
            .flat_map(|t| self.settle(now, t, true, rng))
            .collect()
    }
}
