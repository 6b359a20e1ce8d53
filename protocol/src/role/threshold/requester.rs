//! A requester in threshold mode: asks every distributor for its partial, checks each proof,
//! combines t valid ones into its OTP; or, to verify, gathers t partials of an OTP being presented
//! and compares.
//!
//! ```text
//! start ─► counter = now_s ‖ 32 random bits ─► Send(Partial(x)) to every distributor
//! Partial ─► index is the sender's in the mesh config? round key signed by the coordinator for
//!       this round, T/N the mesh's? ─► unmask y_j (salt key) ─► grouped by (round, commitment)
//!       ─► t valid? ─► combine ─► OTP (digits and expiry from the mesh config)
//!       ─► only then: enrolment epochs that moved are saved
//!       ─► distributors on another round are asked again for the best round
//! all answered, none has t ─► RequestFailed("quorum unavailable: …", naming each distributor)
//! verify: Send(VerifyPartial(x)) to every distributor ─► t valid ─► compare (constant time)
//!       ─► fewer: used (if any said so) · expired · quorum unavailable
//! ```

use crate::digest::Digest32;
use crate::kx::{Ephemeral, EpochKey};
use crate::mesh::MeshConfig;
use crate::otp::Otp;
use crate::role::{Action, Event, Failure, Millis, Record, Role, Tag, Tags};
use crate::role::{Answer, Rng};
use crate::round::{RoundId, Secret, ThresholdKey};
use crate::threshold::eval::{self, Partial};
use crate::threshold::password::{self, Alphabet};
use crate::threshold::{counter, voprf, Index, Params};
use crate::wire::{
    Domain, EvaluateRequest, PartialGrant, PartialRequest, Request, Response, VerifyPartialRequest,
    VerifyResult,
};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// After t partials combined, how long an OTP waits for the distributors still asked: each one that
/// answers has recorded the OTP, so a code typed at once verifies through any t of them.
pub const ISSUE_SPREAD_MS: Millis = 1_000;

/// Most distributors a requester asks at once.
pub const MAX_DISTRIBUTORS: usize = crate::threshold::MAX_SHAREHOLDERS as usize;

enum Goal {
    Issue {
        /// Per distributor: the fresh exchange, unless it salts under an enrolment.
        ephemerals: HashMap<PeerId, Ephemeral>,
        counter: u64,
    },
    /// A password: an RFC 9497 VOPRF evaluation at a 256-bit random input only this requester
    /// knows, blinded, so that no set of distributors can rebuild it.
    Password {
        alphabet: Alphabet,
        length: usize,
        /// (input, blind, blinded element), drawn at start.
        blinded: Option<Box<Blinded>>,
    },
    Verify {
        round: RoundId,
        counter: u64,
        code: String,
    },
}

/// A password request's private input and its blinding.
struct Blinded {
    input: zeroize::Zeroizing<[u8; 32]>,
    blind: voprf::Blind,
    element: voprf::BlindedElement,
}

/// What a partial claims to be of: a round and its transcript commitment, which the coordinator
/// signed together with the round key.
type Claim = (RoundId, Digest32);

/// One distributor's answer.
enum Got {
    Partial {
        round: RoundId,
        partial: Partial,
        key: Box<ThresholdKey>,
        commitment: Digest32,
        /// The enrolment epoch this answer moved to, saved only if the partial combines.
        epoch: Option<Box<EpochKey>>,
    },
    /// A password's blind evaluation (proof checked when combining).
    Evaluated {
        round: RoundId,
        partial: voprf::Partial,
        key: Box<ThresholdKey>,
        commitment: Digest32,
    },
    Verdict(VerifyResult),
    Failed(String),
}

pub struct Requester {
    me: PeerId,
    /// T/N, the coordinator, each distributor's index, digits and expiry: never a distributor's
    /// word.
    mesh: Arc<MeshConfig>,
    distributors: Vec<PeerId>,
    enrolments: HashMap<PeerId, EpochKey>,
    goal: Goal,
    in_flight: HashMap<Tag, PeerId>,
    answers: BTreeMap<PeerId, Got>,
    /// Asked again for this round after answering for another.
    realigned: bool,
    /// An OTP combined (when, and what to hand out), waiting for the distributors still asked.
    ready: Option<(Millis, Vec<Action>)>,
    done: bool,
    tags: Tags,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "threshold::Requester({}, {} asked)",
            self.me,
            self.distributors.len()
        )
    }
}

impl Requester {
    /// One OTP, from every one of `distributors` (`otpmesh request --threshold`).
    pub fn issue_once(
        me: PeerId,
        mesh: Arc<MeshConfig>,
        mut distributors: Vec<PeerId>,
    ) -> Requester {
        distributors.truncate(MAX_DISTRIBUTORS);
        Self::build(
            me,
            mesh,
            distributors,
            Goal::Issue {
                ephemerals: HashMap::new(),
                counter: 0,
            },
        )
    }

    /// One password from every one of `distributors` (`otpmesh password`): a threshold VOPRF
    /// evaluation at a blinded random input, seen by this requester only.
    pub fn password_once(
        me: PeerId,
        mesh: Arc<MeshConfig>,
        mut distributors: Vec<PeerId>,
        alphabet: Alphabet,
        length: usize,
    ) -> Requester {
        distributors.truncate(MAX_DISTRIBUTORS);
        Self::build(
            me,
            mesh,
            distributors,
            Goal::Password {
                alphabet,
                length,
                blinded: None,
            },
        )
    }

    /// Presents `code` for (round, counter) (`otpmesh verify --threshold`).
    pub fn verify_once(
        me: PeerId,
        mesh: Arc<MeshConfig>,
        mut distributors: Vec<PeerId>,
        round: RoundId,
        counter: u64,
        code: String,
    ) -> Requester {
        distributors.truncate(MAX_DISTRIBUTORS);
        Self::build(
            me,
            mesh,
            distributors,
            Goal::Verify {
                round,
                counter,
                code,
            },
        )
    }

    /// Whether it has its answer (or gave up).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Salts with these enrolment keys (by distributor) instead of fresh exchanges.
    pub fn with_enrolments(mut self, enrolments: HashMap<PeerId, EpochKey>) -> Requester {
        self.enrolments = enrolments;
        self
    }

    fn build(
        me: PeerId,
        mesh: Arc<MeshConfig>,
        distributors: Vec<PeerId>,
        goal: Goal,
    ) -> Requester {
        Requester {
            me,
            mesh,
            distributors,
            enrolments: HashMap::new(),
            goal,
            in_flight: HashMap::new(),
            answers: BTreeMap::new(),
            realigned: false,
            ready: None,
            done: false,
            tags: Tags::default(),
        }
    }

    fn ask(
        &mut self,
        distributor: PeerId,
        round: Option<RoundId>,
        rng: &mut dyn CryptoRngCore,
    ) -> Action {
        let request = match &mut self.goal {
            Goal::Password { blinded, .. } => Request::Evaluate(EvaluateRequest {
                round,
                blinded: blinded.as_ref().map_or([0; 32], |b| b.element.to_bytes()),
            }),
            Goal::Issue {
                ephemerals,
                counter,
            } => {
                let enrolled = self.enrolments.contains_key(&distributor);
                let requester_key = if enrolled {
                    [0u8; 32]
                } else {
                    let e = Ephemeral::new(rng);
                    let public = e.public();
                    ephemerals.insert(distributor, e);
                    public
                };
                Request::Partial(PartialRequest {
                    domain: Domain::Otp,
                    round,
                    counter: *counter,
                    requester_key,
                    enrolled,
                })
            }
            Goal::Verify { round, counter, .. } => Request::VerifyPartial(VerifyPartialRequest {
                round: *round,
                counter: *counter,
            }),
        };
        let tag = self.tags.next();
        self.in_flight.insert(tag, distributor);
        Action::Send {
            peer: distributor,
            tag,
            request,
        }
    }

    /// Unmasks a partial grant; and the enrolment epoch it moved to, if it did.
    fn open_grant(
        &self,
        distributor: PeerId,
        grant: &PartialGrant,
    ) -> Result<(Partial, Option<EpochKey>), String> {
        let mut moved = None;
        let salt_key = match grant.epoch {
            Some(epoch) => {
                let enrolment = self
                    .enrolments
                    .get(&distributor)
                    .ok_or("salted under an enrolment this requester does not hold")?;
                let key = enrolment
                    .at(epoch)
                    .map_err(|e| format!("salted under epoch {epoch}: {e}"))?;
                let salt_key = key.salt_key();
                if key.epoch() != enrolment.epoch() {
                    moved = Some(key);
                }
                salt_key
            }
            None => {
                let Goal::Issue { ephemerals, .. } = &self.goal else {
                    return Err("a salted partial answered a verification".into());
                };
                let ephemeral = ephemerals
                    .get(&distributor)
                    .ok_or("no exchange with this distributor")?;
                ephemeral
                    .salt_key(&grant.distributor_key, &self.me, &distributor)
                    .map_err(|e| e.to_string())?
            }
        };
        let y = salt_key.mask_bytes(&grant.salt, &grant.masked_y);
        let mut point = [0u8; 32];
        point.copy_from_slice(&y);
        let partial = Partial {
            index: grant.index,
            y: point,
            proof: grant.proof.clone(),
        };
        Ok((partial, moved))
    }

    /// Whether `distributor` may answer as `index` with `key` for `round`: its index in the mesh
    /// config, the mesh's T/N, and a round key the coordinator signed for that round. Gives the
    /// transcript commitment the key was signed with.
    fn believe(
        &self,
        distributor: &PeerId,
        index: Index,
        round: RoundId,
        key: &ThresholdKey,
    ) -> Result<Digest32, String> {
        believe(&self.mesh, distributor, index, round, key)
    }

    fn params(&self) -> Option<Params> {
        self.mesh.threshold()
    }

    /// Tries to finish: t valid partials under one round and key, or every distributor answered.
    fn settle(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        if self.done {
            return Vec::new();
        }
        if self.ready.is_some() {
            return self.release(now);
        }
        let (requester, counter) = match &self.goal {
            Goal::Issue { counter, .. } => (self.me, *counter),
            Goal::Verify { counter, .. } => (self.me, *counter),
            Goal::Password { .. } => return self.settle_password(rng),
        };
        let Some(params) = self.params() else {
            self.done = true;
            return vec![Action::Emit(self.give_up())];
        };
        let (digits, expiry) = (self.mesh.settings.digits, self.mesh.settings.otp_expiry_ms);
        // Group the partials by what they claim: round and transcript commitment (each key was
        // checked as the coordinator's when its answer came).
        let mut groups: BTreeMap<Claim, Vec<(PeerId, &Got)>> = BTreeMap::new();
        for (peer, a) in &self.answers {
            if let Got::Partial {
                round, commitment, ..
            } = a
            {
                groups
                    .entry((*round, *commitment))
                    .or_default()
                    .push((*peer, a));
            }
        }
        let mut best: Option<(RoundId, usize)> = None;
        for ((round, _), members) in &groups {
            let Some(Got::Partial { key, .. }) = members.first().map(|m| m.1) else {
                continue;
            };
            if members.len() < params.t as usize {
                continue;
            }
            let Some(public) = key.key() else { continue };
            let input = self.domain().input(&requester, *round, counter);
            let partials: Vec<Partial> = members
                .iter()
                .filter_map(|(_, a)| match a {
                    Got::Partial { partial, .. } => Some(partial.clone()),
                    _ => None,
                })
                .collect();
            if best.is_none_or(|(_, n)| n < partials.len()) {
                best = Some((*round, partials.len()));
            }
            // Every partial in hand is checked, so a bad one is named even when enough good
            // ones came without it.
            let (valid, bad_partials): (Vec<Partial>, Vec<Partial>) = partials
                .into_iter()
                .partition(|p| public.check(p, &input).is_some());
            let bad_indices: Vec<Index> = bad_partials.iter().map(|p| p.index).collect();
            let Ok((y, _)) = public.combine(&valid, &input) else {
                continue;
            };
            let bad = named(members, &bad_indices);
            let partials = valid;
            let value = eval::otp(&y, &input, digits);
            let Ok(otp) = Otp::new(value, digits) else {
                continue;
            };
            let expires = counter::issued_at_ms(counter).saturating_add(expiry);
            // Enrolment epochs move only with a partial that combined.
            let mut actions: Vec<Action> = members
                .iter()
                .filter_map(|(peer, a)| match a {
                    Got::Partial {
                        partial,
                        epoch: Some(key),
                        ..
                    } if !bad_indices.contains(&partial.index) => {
                        Some(Action::Persist(Record::Enrolment {
                            peer: *peer,
                            epoch: key.epoch(),
                            key: Secret::from_bytes(*key.bytes()),
                        }))
                    }
                    _ => None,
                })
                .collect();
            let from: Vec<u32> = partials
                .iter()
                .map(|p| p.index.0)
                .filter(|i| !bad_indices.contains(&Index(*i)))
                .take(public.params.t as usize)
                .collect();
            let event = match &self.goal {
                // Passwords settle in settle_password, never here.
                Goal::Password { .. } => self.give_up(),
                Goal::Issue { .. } => Event::ThresholdOtpReceived {
                    round: *round,
                    counter,
                    otp: otp.to_string(),
                    expires_at_ms: expires,
                    from,
                    bad,
                },
                Goal::Verify { code, .. } => {
                    let presented = code.trim().as_bytes();
                    let same: bool = otp.to_string().as_bytes().ct_eq(presented).into();
                    Event::ThresholdVerified {
                        round: *round,
                        counter,
                        result: if same {
                            VerifyResult::Accepted
                        } else {
                            VerifyResult::Wrong
                        },
                        bad,
                    }
                }
            };
            actions.push(Action::Emit(event));
            self.ready = Some((now, actions));
            return self.release(now);
        }
        // Not enough yet. Distributors that answered for another round are asked for the best one.
        let mut actions = Vec::new();
        if let (Some((best_round, _)), Goal::Issue { .. }, false) =
            (best, &self.goal, self.realigned)
        {
            let others: Vec<PeerId> = self
                .answers
                .iter()
                .filter(|(_, a)| matches!(a, Got::Partial { round, .. } if *round != best_round))
                .map(|(p, _)| *p)
                .collect();
            if !others.is_empty() && self.in_flight.is_empty() {
                self.realigned = true;
                for peer in others {
                    self.answers.remove(&peer);
                    actions.push(self.ask(peer, Some(best_round), rng));
                }
                return actions;
            }
        }
        if !self.in_flight.is_empty() {
            return actions;
        }
        self.done = true;
        vec![Action::Emit(self.give_up())]
    }

    /// A password: t blind evaluations under one signed round key, each proof checked against
    /// its K_j, combined, unblinded and finalized (RFC 9497), then mapped to the alphabet.
    fn settle_password(&mut self, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let (
            Some(params),
            Goal::Password {
                alphabet,
                length,
                blinded: Some(blinded),
            },
        ) = (self.params(), &self.goal)
        else {
            self.done = true;
            return vec![Action::Emit(self.give_up())];
        };
        let mut groups: BTreeMap<Claim, Vec<(PeerId, &voprf::Partial, &ThresholdKey)>> =
            BTreeMap::new();
        for (peer, a) in &self.answers {
            if let Got::Evaluated {
                round,
                partial,
                key,
                commitment,
            } = a
            {
                groups
                    .entry((*round, *commitment))
                    .or_default()
                    .push((*peer, partial, key));
            }
        }
        let mut best: Option<(RoundId, usize)> = None;
        for ((round, _), members) in &groups {
            if best.is_none_or(|(_, n)| n < members.len()) {
                best = Some((*round, members.len()));
            }
            let Some(public) = members.first().and_then(|m| m.2.key()) else {
                continue;
            };
            let share_keys: Vec<voprf::PublicKey> = params
                .indices()
                .map(|j| voprf::PublicKey::from_point(public.password_share_key(j)))
                .collect();
            let partials: Vec<voprf::Partial> = members.iter().map(|m| *m.1).collect();
            let combined = voprf::finalize_combined(
                blinded.input.as_slice(),
                &blinded.blind,
                &blinded.element,
                params,
                &share_keys,
                &partials,
            );
            let Ok((output, bad_indices)) = combined else {
                continue;
            };
            let output = zeroize::Zeroizing::new(output);
            let bad: Vec<PeerId> = members
                .iter()
                .filter(|m| bad_indices.contains(&m.1.index))
                .map(|m| m.0)
                .collect();
            let from: Vec<u32> = partials
                .iter()
                .map(|p| p.index.0)
                .filter(|i| !bad_indices.contains(&Index(*i)))
                .take(params.t as usize)
                .collect();
            let event = match password::from_output(&output, alphabet, *length) {
                Ok(text) => Event::PasswordReceived {
                    round: *round,
                    password: text.to_string(),
                    length: *length,
                    alphabet: alphabet.len(),
                    bits: alphabet.bits(*length) as u32,
                    from,
                    bad,
                },
                Err(e) => Event::RequestFailed {
                    peer: self.me,
                    request: "password".into(),
                    failure: Failure::Refused,
                    reason: e.to_string(),
                },
            };
            self.done = true;
            return vec![Action::Emit(event)];
        }
        // Distributors that answered for another round are asked once for the best one.
        if let (Some((best_round, _)), false) = (best, self.realigned) {
            let others: Vec<PeerId> = self
                .answers
                .iter()
                .filter(|(_, a)| matches!(a, Got::Evaluated { round, .. } if *round != best_round))
                .map(|(p, _)| *p)
                .collect();
            if !others.is_empty() && self.in_flight.is_empty() {
                self.realigned = true;
                let mut actions = Vec::new();
                for peer in others {
                    self.answers.remove(&peer);
                    actions.push(self.ask(peer, Some(best_round), rng));
                }
                return actions;
            }
        }
        if !self.in_flight.is_empty() {
            return Vec::new();
        }
        self.done = true;
        vec![Action::Emit(self.give_up())]
    }

    /// Hands out what combined: a verdict at once; an OTP once no distributor is still asked, or
    /// [`ISSUE_SPREAD_MS`] after it combined.
    fn release(&mut self, now: Millis) -> Vec<Action> {
        let Some((at, _)) = &self.ready else {
            return Vec::new();
        };
        let waiting = matches!(self.goal, Goal::Issue { .. })
            && !self.in_flight.is_empty()
            && now < at.saturating_add(ISSUE_SPREAD_MS);
        if waiting {
            return Vec::new();
        }
        self.done = true;
        self.ready
            .take()
            .map(|(_, actions)| actions)
            .unwrap_or_default()
    }

    /// Every distributor answered and no t partials agree.
    fn give_up(&self) -> Event {
        if self.params().is_none() {
            return Event::RequestFailed {
                peer: self.me,
                request: self.kind().into(),
                failure: Failure::Refused,
                reason:
                    "the mesh config is not a threshold mesh: threshold requests need the mesh's \
                         mesh.toml (--mesh FILE)"
                        .into(),
            };
        }
        let verdicts: Vec<VerifyResult> = self
            .answers
            .values()
            .filter_map(|a| match a {
                Got::Verdict(v) => Some(*v),
                _ => None,
            })
            .collect();
        if let Goal::Verify { round, counter, .. } = &self.goal {
            for result in [VerifyResult::Used, VerifyResult::Expired] {
                if verdicts.contains(&result) {
                    return Event::ThresholdVerified {
                        round: *round,
                        counter: *counter,
                        result,
                        bad: Vec::new(),
                    };
                }
            }
        }
        let partials = self
            .answers
            .values()
            .filter(|a| matches!(a, Got::Partial { .. } | Got::Evaluated { .. }))
            .count();
        let mut reasons: Vec<String> = self
            .answers
            .iter()
            .filter_map(|(peer, a)| match a {
                Got::Failed(reason) => Some(format!("{peer}: {reason}")),
                _ => None,
            })
            .collect();
        reasons.truncate(8);
        let detail = if reasons.is_empty() {
            String::new()
        } else {
            format!("; {}", reasons.join("; "))
        };
        Event::RequestFailed {
            peer: self.me,
            request: self.kind().into(),
            failure: Failure::QuorumUnavailable,
            reason: crate::wire::bounded_reason(format!(
                "quorum unavailable: {partials} of {} distributors gave a partial that combines, too few for the threshold{detail}",
                self.distributors.len()
            )),
        }
    }

    fn domain(&self) -> Domain {
        Domain::Otp
    }

    fn kind(&self) -> &'static str {
        match self.goal {
            Goal::Password { .. } => "password",
            Goal::Issue { .. } => "partial",
            Goal::Verify { .. } => "verify-partial",
        }
    }
}

/// The distributors among `members` whose partial failed its proof.
fn named(members: &[(PeerId, &Got)], bad: &[Index]) -> Vec<PeerId> {
    members
        .iter()
        .filter(|(_, a)| matches!(a, Got::Partial { partial, .. } if bad.contains(&partial.index)))
        .map(|(p, _)| *p)
        .collect()
}

impl Role for Requester {
    fn start(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        match &mut self.goal {
            Goal::Issue { counter, .. } => *counter = counter::fresh(now, rng),
            Goal::Password { blinded, .. } => {
                let mut input = zeroize::Zeroizing::new([0u8; 32]);
                rng.fill_bytes(input.as_mut());
                match voprf::blind(input.as_slice(), rng) {
                    Ok((blind, element)) => {
                        *blinded = Some(Box::new(Blinded {
                            input,
                            blind,
                            element,
                        }))
                    }
                    Err(e) => {
                        self.done = true;
                        return vec![Action::Emit(Event::RequestFailed {
                            peer: self.me,
                            request: "password".into(),
                            failure: Failure::Refused,
                            reason: format!("blinding the input: {e}"),
                        })];
                    }
                }
            }
            Goal::Verify { .. } => {}
        }
        if self.distributors.is_empty() || self.params().is_none() {
            self.done = true;
            return vec![Action::Emit(self.give_up())];
        }
        let distributors = self.distributors.clone();
        distributors
            .into_iter()
            .map(|d| self.ask(d, None, rng))
            .collect()
    }

    fn response(&mut self, now: Millis, answer: Answer, rng: &mut dyn Rng) -> Vec<Action> {
        let (peer, tag, response) = (answer.peer, answer.tag, answer.response);
        let Some(distributor) = self.in_flight.remove(&tag) else {
            return Vec::new();
        };
        let answer = match response {
            Ok(Response::Partial(grant))
                if grant.expires_at_ms
                    > now.saturating_add(super::super::requester::MAX_OTP_LIFETIME_MS) =>
            {
                Got::Failed("claims an expiry more than a day away".into())
            }
            Ok(Response::Partial(grant)) if matches!(self.goal, Goal::Issue { counter, .. } if counter == grant.counter) => {
                match self.believe(&distributor, grant.index, grant.round, &grant.key) {
                    Err(reason) => Got::Failed(reason),
                    Ok(commitment) => match self.open_grant(distributor, &grant) {
                        Ok((partial, epoch)) => Got::Partial {
                            round: grant.round,
                            partial,
                            key: Box::new(grant.key.clone()),
                            commitment,
                            epoch: epoch.map(Box::new),
                        },
                        Err(reason) => Got::Failed(format!("could not remove the salt: {reason}")),
                    },
                }
            }
            Ok(Response::Evaluated(grant)) if matches!(self.goal, Goal::Password { .. }) => {
                match self.believe(&distributor, grant.partial.index, grant.round, &grant.key) {
                    Ok(commitment) => Got::Evaluated {
                        round: grant.round,
                        partial: grant.partial,
                        key: Box::new(grant.key.clone()),
                        commitment,
                    },
                    Err(reason) => Got::Failed(reason),
                }
            }
            Ok(Response::VerifyPartial(grant)) => match &self.goal {
                Goal::Verify { round, .. } => {
                    match self.believe(&distributor, grant.partial.index, *round, &grant.key) {
                        Ok(commitment) => Got::Partial {
                            round: *round,
                            partial: grant.partial.clone(),
                            key: Box::new(grant.key.clone()),
                            commitment,
                            epoch: None,
                        },
                        Err(reason) => Got::Failed(reason),
                    }
                }
                _ => Got::Failed("answered with a verification partial".into()),
            },
            Ok(Response::Verified(result)) => Got::Verdict(result),
            Ok(Response::Refused(r)) => Got::Failed(r.to_string()),
            Ok(other) => Got::Failed(format!("unexpected {} response", other.kind())),
            Err(e) => Got::Failed(e),
        };
        let _ = peer; // the request went to `distributor`; the swarm answers for it
        self.answers.insert(distributor, answer);
        self.settle(now, rng)
    }

    /// An OTP that combined goes out once its wait is over (nothing waits once done).
    fn tick(&mut self, now: Millis, _rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        self.release(now)
    }
}

/// Whether an answer from `distributor` as shareholder `index`, under `key` for `round`, is
/// believed: its index is its place in the mesh config, the key is the mesh's T/N and signed by
/// the coordinator for that round. The signed transcript commitment, if so.
pub(crate) fn believe(
    mesh: &MeshConfig,
    distributor: &PeerId,
    index: Index,
    round: RoundId,
    key: &ThresholdKey,
) -> Result<Digest32, String> {
    let listed = mesh
        .distributor_index(distributor)
        .ok_or("not a distributor of this mesh")?;
    if listed != index {
        return Err(format!(
            "answered as shareholder {}, but the mesh config lists it as {}",
            index.0, listed.0
        ));
    }
    if Some(key.params) != mesh.threshold() {
        return Err(format!(
            "answered under a {}/{} key; the mesh is {}",
            key.params.t,
            key.params.n,
            mesh.threshold()
                .map_or("not a threshold mesh".into(), |p| format!(
                    "{}/{}",
                    p.t, p.n
                ))
        ));
    }
    let coordinator = mesh.coordinator().ok_or("the mesh lists no generator")?;
    let seal = key
        .sealed_by(&coordinator)
        .map_err(|e| format!("round key not believed: {e}"))?;
    if seal.round != round {
        return Err(format!(
            "round key not believed: signed for round {}, offered for round {round}",
            seal.round
        ));
    }
    Ok(seal.commitment)
}
