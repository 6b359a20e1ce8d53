//! Gathering a time-step code (`threshold::code`) from the distributors: the requester's own
//! (`otpmesh code`), or a user's, by a verifier checking what was typed.
//!
//! ```text
//! start ─► Send(Code{user?, step, fresh X25519 key}) to every distributor
//! Code(grant) ─► believed? (index is the sender's, key the mesh's T/N, signed by the coordinator)
//!     ─► unmask y_j ─► T valid under one round ─► Y ─► code = otp(Y, x, code_digits)
//! every answer in, no T ─► spent (a distributor had the step spent) or unavailable
//! ```

use super::requester::believe;
use crate::digest::Digest32;
use crate::kx::Ephemeral;
use crate::mesh::{MeshConfig, UserName};
use crate::role::{Action, Event, Failure, Millis, Role, Tag, Tags};
use crate::role::{Answer, Rng};
use crate::round::RoundId;
use crate::threshold::eval::{self, Partial};
use crate::threshold::{code, Index};
use crate::wire::{CodeGrant, CodeRequest, Request, Response};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

enum Got {
    Partial {
        round: RoundId,
        commitment: Digest32,
        grant: Box<CodeGrant>,
        partial: Partial,
    },
    Spent,
    /// No round old enough for this step is held there (a young mesh).
    NoRound(String),
    Failed(String),
}

/// What a gather came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gathered {
    /// The code, its round and the shareholders whose partials made it.
    Code {
        code: String,
        round: RoundId,
        from: Vec<u32>,
    },
    /// Too many distributors had the step spent for T partials to exist.
    Spent,
    /// Fewer than T partials that combine (`NoRound` when every distributor said its rounds
    /// are too young for the step; `QuorumUnavailable` otherwise); why, per distributor.
    Unavailable(Failure, String),
}

/// One step's code of `requester`, asked of every distributor.
pub struct Gather {
    asker: PeerId,
    requester: PeerId,
    user: Option<UserName>,
    pub step: u64,
    mesh: Arc<MeshConfig>,
    ephemerals: HashMap<PeerId, Ephemeral>,
    answers: BTreeMap<PeerId, Got>,
}

impl Gather {
    /// `user`: a verifier checking that user's code (the step gets spent); None: the asker's own.
    pub fn new(
        asker: PeerId,
        requester: PeerId,
        user: Option<UserName>,
        step: u64,
        mesh: Arc<MeshConfig>,
    ) -> Gather {
        Gather {
            asker,
            requester,
            user,
            step,
            mesh,
            ephemerals: HashMap::new(),
            answers: BTreeMap::new(),
        }
    }

    /// The requests, one per distributor, each with a fresh exchange key.
    pub fn requests(&mut self, rng: &mut dyn CryptoRngCore) -> Vec<(PeerId, Request)> {
        let distributors: Vec<PeerId> = self.mesh.distributors.iter().map(|m| m.peer_id).collect();
        distributors
            .into_iter()
            .map(|d| {
                let ephemeral = Ephemeral::new(rng);
                let key = ephemeral.public();
                self.ephemerals.insert(d, ephemeral);
                let request = Request::Code(CodeRequest {
                    user: self.user.clone(),
                    step: self.step,
                    key,
                });
                (d, request)
            })
            .collect()
    }

    pub fn answer(&mut self, distributor: PeerId, response: Result<Response, String>) {
        let answer = match response {
            Ok(Response::Code(grant)) if grant.step == self.step => self.open(distributor, grant),
            Ok(Response::Code(_)) => Got::Failed("answered for another step".into()),
            Ok(Response::Refused(r)) if Failure::of_refusal(&r) == Failure::NoRound => {
                Got::NoRound(r.to_string())
            }
            Ok(Response::Refused(r)) => Got::Failed(r.to_string()),
            Ok(other) => Got::Failed(format!("unexpected {} response", other.kind())),
            Err(e) => Got::Failed(e),
        };
        self.answers.insert(distributor, answer);
    }

    fn open(&self, distributor: PeerId, grant: Box<CodeGrant>) -> Got {
        let commitment = match believe(
            &self.mesh,
            &distributor,
            grant.index,
            grant.round,
            &grant.key,
        ) {
            Ok(c) => c,
            Err(reason) => return Got::Failed(reason),
        };
        let Some(masked) = &grant.partial else {
            return Got::Spent;
        };
        let Some(ephemeral) = self.ephemerals.get(&distributor) else {
            return Got::Failed("no exchange with this distributor".into());
        };
        let salt_key = match ephemeral.salt_key(&grant.distributor_key, &self.asker, &distributor) {
            Ok(k) => k,
            Err(e) => return Got::Failed(e.to_string()),
        };
        let mut y = [0u8; 32];
        y.copy_from_slice(&salt_key.mask_bytes(&grant.salt, &masked.masked_y));
        let partial = Partial {
            index: grant.index,
            y,
            proof: masked.proof.clone(),
        };
        Got::Partial {
            round: grant.round,
            commitment,
            grant,
            partial,
        }
    }

    /// The outcome, once it is known.
    pub fn outcome(&self) -> Option<Gathered> {
        let params = self.mesh.threshold()?;
        let mut groups: BTreeMap<(RoundId, Digest32), Vec<(&CodeGrant, &Partial)>> =
            BTreeMap::new();
        for a in self.answers.values() {
            if let Got::Partial {
                round,
                commitment,
                grant,
                partial,
            } = a
            {
                groups
                    .entry((*round, *commitment))
                    .or_default()
                    .push((grant, partial));
            }
        }
        let mut bad_proofs = Vec::new();
        for ((round, _), members) in &groups {
            let Some(public) = members[0].0.key.key() else {
                continue;
            };
            let input = code::input(&self.requester, *round, self.step);
            let partials: Vec<Partial> = members.iter().map(|m| m.1.clone()).collect();
            match public.combine(&partials, &input) {
                Ok((y, bad)) => {
                    let digits = code::digits(self.mesh.settings.code_digits);
                    let value = eval::otp(&y, &input, digits);
                    let code = crate::otp::Otp::new(value, digits).ok()?.to_string();
                    let from = partials
                        .iter()
                        .map(|p| p.index)
                        .filter(|i| !bad.contains(i))
                        .take(params.t as usize)
                        .map(|i: Index| i.0)
                        .collect();
                    return Some(Gathered::Code {
                        code,
                        round: *round,
                        from,
                    });
                }
                Err(crate::threshold::ThresholdError::Quorum { bad, .. }) => {
                    bad_proofs.extend(bad.into_iter().map(|i| i.0))
                }
                Err(_) => {}
            }
        }
        let n = self.mesh.distributors.len();
        let spent = self
            .answers
            .values()
            .filter(|a| matches!(a, Got::Spent))
            .count();
        // Spent at more than N − T: no T fresh partials can come.
        if spent > n.saturating_sub(params.t as usize) {
            return Some(Gathered::Spent);
        }
        if self.answers.len() < n {
            return None;
        }
        let reasons: Vec<String> = self
            .answers
            .iter()
            .filter_map(|(peer, a)| match a {
                Got::Failed(r) | Got::NoRound(r) => Some(format!("{peer}: {r}")),
                _ => None,
            })
            .chain((!bad_proofs.is_empty()).then(|| format!("bad proofs from {bad_proofs:?}")))
            .collect();
        let young = self.answers.values().all(|a| matches!(a, Got::NoRound(_)));
        let failure = match young {
            true => Failure::NoRound,
            false => Failure::QuorumUnavailable,
        };
        Some(match spent {
            0 => Gathered::Unavailable(
                failure,
                format!(
                    "quorum unavailable: fewer than {} distributors gave a partial that combines{}",
                    params.t,
                    match reasons.is_empty() {
                        true => String::new(),
                        false => format!(" ({})", reasons.join("; ")),
                    }
                ),
            ),
            _ => Gathered::Spent,
        })
    }
}

/// `otpmesh code`: the requester's code of the current step.
pub struct Code {
    me: PeerId,
    mesh: Arc<MeshConfig>,
    gather: Option<Gather>,
    in_flight: HashMap<Tag, PeerId>,
    tags: Tags,
}

impl Code {
    pub fn new(me: PeerId, mesh: Arc<MeshConfig>) -> Code {
        Code {
            me,
            mesh,
            gather: None,
            in_flight: HashMap::new(),
            tags: Tags::starting_at(0),
        }
    }

    fn ask(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let step = code::step(now, self.mesh.settings.code_period_s);
        let mut gather = Gather::new(self.me, self.me, None, step, self.mesh.clone());
        let actions = gather
            .requests(rng)
            .into_iter()
            .map(|(peer, request)| {
                let tag = self.tags.next();
                self.in_flight.insert(tag, peer);
                Action::Send { peer, tag, request }
            })
            .collect();
        self.gather = Some(gather);
        actions
    }
}

impl Role for Code {
    fn start(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        if self.mesh.threshold().is_none() || self.mesh.distributors.is_empty() {
            return vec![Action::Emit(Event::RequestFailed {
                peer: self.me,
                request: "code".into(),
                failure: Failure::Refused,
                reason: "codes need a threshold mesh config with its distributors (--mesh FILE)"
                    .into(),
            })];
        }
        self.ask(now, rng)
    }

    fn response(&mut self, now: Millis, answer: Answer, _rng: &mut dyn Rng) -> Vec<Action> {
        let (peer, tag, response) = (answer.peer, answer.tag, answer.response);
        let _ = peer;
        let Some(distributor) = self.in_flight.remove(&tag) else {
            return Vec::new();
        };
        let Some(gather) = self.gather.as_mut() else {
            return Vec::new();
        };
        gather.answer(distributor, response);
        let Some(outcome) = gather.outcome() else {
            return Vec::new();
        };
        let step = gather.step;
        self.gather = None;
        self.in_flight.clear();
        let period = self.mesh.settings.code_period_s;
        let event = match outcome {
            Gathered::Code { code, round, from } => Event::CodeReceived {
                step,
                code,
                round,
                seconds_left: code::seconds_left(now, period),
                from,
            },
            Gathered::Spent => Event::RequestFailed {
                peer: self.me,
                request: "code".into(),
                failure: Failure::Refused,
                reason: "this step was spent".into(),
            },
            Gathered::Unavailable(failure, reason) => Event::RequestFailed {
                peer: self.me,
                request: "code".into(),
                failure,
                reason,
            },
        };
        vec![Action::Emit(event)]
    }
}
