//! A distributor in threshold mode: holds its key shares (k_j, k'_j) of each round and answers with
//! partial evaluations, never with an OTP or a password (it cannot compute one).
//!
//! ```text
//! Handover(transcript, k_j ‖ k'_j) from generator j ─► G·k_j == K_j, G·k'_j == K'_j?
//!     ─► Persist(Round) ─► Delivered
//! Partial(x) from a listed requester ─► counter current, not answered before
//!     ─► Persist(Issued x) ─► y_j masked under the requester's salt key + DLEQ proof ─► Partial
//! VerifyPartial(x) from its requester ─► used? ─► Verified(used) · expired? ─► Verified(expired)
//!     ─► issued here? (else refused: a lost record fails closed)
//!     ─► Persist(Used x) ─► y_j + proof, in clear (the OTP it reveals is already spent)
//! Evaluate(B) from anyone ─► Z_j = k'_j·B + RFC 9497 proof against K'_j ─► Evaluated
//!     (password key only; nothing recorded)
//! Enrol ─► as in single mode (the enrolment key salts partials)
//! ```
//! Single use without replication: a verification needs t partials, each distributor marks x used
//! before it releases one, and with t > n/2 any two sets of t distributors share one.

mod code;

use crate::mesh::MeshConfig;
use crate::role::distributor::{Distributor, MAX_HELD_ROUNDS};
use crate::role::{refuse, Action, Event, InboundId, Millis, OtpRef, Record};
use crate::round::{RoundId, Secret, Transcript};
use crate::threshold::counter;
use crate::threshold::eval::KeyShare;
use crate::threshold::voprf;
use crate::threshold::{Index, Params};
use crate::wire::{
    Domain, EvaluateGrant, EvaluateRequest, Handover, PartialGrant, PartialRequest, Refusal,
    Request, Response, VerifyPartialGrant, VerifyPartialRequest, VerifyResult,
};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, HashMap};

/// OTP inputs remembered (answered or used, until they expire).
pub const MAX_SPENT: usize = 1 << 20;
/// Of those, per requester: one requester cannot fill the table for the others.
pub const MAX_SPENT_PER_REQUESTER: usize = 4096;

struct Held {
    transcript: Transcript,
    share: KeyShare,
}

#[derive(Clone, Copy)]
struct Spent {
    expires_at: Millis,
    used: bool,
}

/// A threshold distributor's state: its key shares, and the inputs it has answered.
pub struct Shares {
    index: Index,
    params: Params,
    /// Whose signature a round key needs.
    coordinator: PeerId,
    rounds: BTreeMap<RoundId, Held>,
    spent: HashMap<(PeerId, RoundId, u64), Spent>,
    /// Entries of `spent` per requester.
    per_requester: HashMap<PeerId, usize>,
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Shares(index {}, {} rounds, {} spent)",
            self.index.0,
            self.rounds.len(),
            self.spent.len()
        )
    }
}

impl Shares {
    /// From the store: rounds whose share does not match their public key are dropped.
    pub fn restore(
        me: PeerId,
        index: Index,
        params: Params,
        coordinator: PeerId,
        rounds: &[(Transcript, Secret)],
        otps: &[(OtpRef, Millis, bool)],
    ) -> Shares {
        let mut shares = Shares {
            index,
            params,
            coordinator,
            rounds: BTreeMap::new(),
            spent: HashMap::new(),
            per_requester: HashMap::new(),
        };
        for (transcript, secret) in rounds {
            if let Ok(held) = shares.check(transcript, secret) {
                shares.rounds.insert(transcript.round, held);
            }
        }
        shares.prune();
        for (otp, expires_at, used) in otps.iter().filter(|(o, _, _)| o.issuer == me) {
            shares.spent.insert(
                (otp.requester, otp.round, otp.counter),
                Spent {
                    expires_at: *expires_at,
                    used: *used,
                },
            );
        }
        shares.recount();
        shares
    }

    fn recount(&mut self) {
        self.per_requester.clear();
        for (requester, _, _) in self.spent.keys() {
            *self.per_requester.entry(*requester).or_default() += 1;
        }
    }

    /// Remembers an input answered or used, within the bounds (expired ones make room first).
    fn remember(
        &mut self,
        slot: (PeerId, RoundId, u64),
        spent: Spent,
        now: Millis,
        expiry: Millis,
    ) -> Result<(), Refusal> {
        if !self.spent.contains_key(&slot) {
            self.room_for(&slot.0, now, expiry)?;
            *self.per_requester.entry(slot.0).or_default() += 1;
        }
        self.spent.insert(slot, spent);
        Ok(())
    }

    /// Whether one more input of `requester` fits (expired ones make room first).
    fn room_for(&mut self, requester: &PeerId, now: Millis, expiry: Millis) -> Result<(), Refusal> {
        let full = |s: &Shares| {
            s.spent.len() >= MAX_SPENT
                || s.per_requester.get(requester).copied().unwrap_or(0) >= MAX_SPENT_PER_REQUESTER
        };
        if full(self) {
            self.compact(now.saturating_sub(expiry));
        }
        match full(self) {
            true => Err(Refusal::Unavailable(
                "too many live OTPs for this requester; try later".into(),
            )),
            false => Ok(()),
        }
    }

    /// This distributor's partial of a beacon input with its share of `round`, if it holds one.
    pub fn beacon_partial(
        &self,
        round: RoundId,
        x: &crate::threshold::eval::Input,
        rng: &mut dyn CryptoRngCore,
    ) -> Option<crate::threshold::eval::Partial> {
        Some(self.rounds.get(&round)?.share.evaluate(x, rng))
    }

    pub fn latest_round(&self) -> Option<RoundId> {
        self.rounds.keys().next_back().copied()
    }

    /// Whether any input is remembered (so the store holds its OTP rows).
    pub fn holds_otps(&self) -> bool {
        !self.spent.is_empty()
    }

    /// Forgets inputs that expired before `before`.
    pub fn compact(&mut self, before: Millis) {
        self.spent.retain(|_, s| s.expires_at >= before);
        self.recount();
    }

    fn prune(&mut self) {
        while self.rounds.len() > MAX_HELD_ROUNDS {
            self.rounds.pop_first();
        }
    }

    /// The share, checked against the transcript's public key at this distributor's index.
    fn check(&self, transcript: &Transcript, share: &Secret) -> Result<Held, String> {
        let Some(public) = &transcript.threshold else {
            return Err("not a threshold round".into());
        };
        transcript.check(None).map_err(|e| e.to_string())?;
        transcript
            .check_round_key(&self.coordinator, self.params)
            .map_err(|e| format!("the transcript's round key: {e}"))?;
        let key = public
            .key()
            .ok_or_else(|| "the round's public key is not valid".to_string())?;
        let share = KeyShare::from_bytes(self.index, share.as_bytes()).ok_or_else(|| {
            "the key share is not a pair of scalars (k_j ‖ k'_j, 64 bytes; a share stored before \
             password keys is not one)"
                .to_string()
        })?;
        if !key.holds(&share) {
            return Err(format!(
                "the key share does not match the round's public keys K_{0} and K'_{0}",
                self.index.0
            ));
        }
        Ok(Held {
            transcript: transcript.clone(),
            share,
        })
    }
}

impl Distributor {
    pub(crate) fn threshold_request(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: Request,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        let result = match &request {
            Request::Handover(h) => self.handover(peer, id, h),
            Request::Partial(p) => self.partial(now, peer, id, p, rng),
            Request::VerifyPartial(v) => self.verify_partial(now, peer, id, v, rng),
            Request::Evaluate(e) => self.evaluate(id, e, rng),
            Request::Code(c) => self.code(now, peer, id, c, rng),
            Request::Enrol(e) => return self.enrol(now, peer, id, &request, &e.requester_key, rng),
            other => Err(Refusal::WrongRole(format!(
                "{} (this mesh runs in threshold mode)",
                other.kind()
            ))),
        };
        result.unwrap_or_else(|refusal| refuse(peer, id, &request, refusal))
    }

    fn shares(&mut self) -> &mut Shares {
        self.shares
            .as_mut()
            .expect("threshold requests are routed here only in threshold mode")
    }

    fn handover(
        &mut self,
        peer: PeerId,
        id: InboundId,
        h: &Handover,
    ) -> Result<Vec<Action>, Refusal> {
        let index = self.shares().index;
        let mesh: &MeshConfig = &self.mesh;
        if mesh.generator_index(&peer) != Some(index) || h.index != index {
            return Err(Refusal::Unauthorised(format!(
                "only generator {} hands its key share to this distributor",
                index.0
            )));
        }
        let t = &h.transcript;
        if mesh.coordinator() != Some(t.generator) {
            return Err(Refusal::Invalid(
                "the transcript was not sealed by the coordinator".into(),
            ));
        }
        let held = self.shares().check(t, &h.share).map_err(Refusal::Invalid)?;
        let ack = Action::Reply {
            to: id,
            response: Response::Delivered(t.round),
        };
        let record = Action::Persist(Record::Round {
            transcript: t.clone(),
            secret: h.share.clone(),
        });
        let shares = self.shares();
        match shares.rounds.get(&t.round) {
            // Perhaps not on disk yet: write again (idempotent) before acknowledging.
            Some(old) if old.transcript.commitment == t.commitment => return Ok(vec![record, ack]),
            Some(_) => {
                return Err(Refusal::Invalid(format!(
                    "round {} is already held with another commitment",
                    t.round
                )))
            }
            None => {}
        }
        shares.rounds.insert(t.round, held);
        shares.prune();
        Ok(vec![
            record,
            ack,
            Action::Emit(Event::RoundStored {
                round: t.round,
                commitment: t.commitment,
            }),
        ])
    }

    fn partial(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        ask: &PartialRequest,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<Action>, Refusal> {
        let expiry = self.mesh.settings.otp_expiry_ms;
        let digits = self.mesh.settings.digits;
        let shares = self.shares();
        let round = match ask.round {
            Some(r) if shares.rounds.contains_key(&r) => r,
            Some(r) => return Err(Refusal::UnknownRound(r)),
            None => shares.latest_round().ok_or(Refusal::NoRound)?,
        };
        if !counter::is_current(ask.counter, now) {
            return Err(Refusal::Invalid(format!(
                "the counter's time is more than {} s from this distributor's clock",
                counter::MAX_SKEW_MS / 1000
            )));
        }
        let expires_at_ms = check_counter(ask.counter, now, expiry)?;
        let slot = (peer, round, ask.counter);
        if ask.domain == Domain::Password {
            return Err(Refusal::Invalid(
                "passwords are evaluated blinded (an evaluate request), never at an input the \
                 distributor sees"
                    .into(),
            ));
        }
        if shares.spent.contains_key(&slot) {
            return Err(Refusal::Invalid(
                "this counter was already answered for this requester and round; take a fresh one"
                    .into(),
            ));
        }
        // Before salting, which may move an enrolment on (durably).
        shares.room_for(&peer, now, expiry)?;
        let salting = self.salting(now, peer, ask.enrolled, &ask.requester_key, rng)?;
        let me = self.me;
        let shares = self.shares();
        let held = &shares.rounds[&round];
        let input = ask.domain.input(&peer, round, ask.counter);
        let partial = held.share.evaluate(&input, rng);
        let mut salt = [0u8; crate::otp::SALT_BYTES];
        rng.fill_bytes(&mut salt);
        let masked = salting.key.mask_bytes(&salt, &partial.y);
        let mut masked_y = [0u8; 32];
        masked_y.copy_from_slice(&masked);
        let grant = PartialGrant {
            round,
            counter: ask.counter,
            digits,
            index: partial.index,
            masked_y,
            proof: partial.proof,
            salt,
            distributor_key: salting.distributor_key,
            epoch: salting.epoch,
            expires_at_ms,
            key: held
                .transcript
                .threshold
                .clone()
                .expect("held rounds are threshold rounds"),
        };
        let mut actions = salting.actions;
        let reply = Action::Reply {
            to: id,
            response: Response::Partial(Box::new(grant)),
        };
        let spent = Spent {
            expires_at: expires_at_ms,
            used: false,
        };
        shares.remember(slot, spent, now, expiry)?;
        actions.extend([
            Action::Persist(Record::Issued {
                otp: OtpRef {
                    issuer: me,
                    requester: peer,
                    round,
                    counter: ask.counter,
                },
                expires_at_ms,
            }),
            Action::Emit(Event::PartialIssued {
                round,
                requester: peer,
                counter: ask.counter,
                verification: false,
            }),
            reply,
        ]);
        Ok(actions)
    }

    /// A password's blinded element: k'_j·B with its RFC 9497 proof against K'_j. Under the
    /// password key only, which makes nothing else: an evaluation at a point the caller chooses
    /// under k would hand out k·P for any P (another requester's OTP input, a beacon input).
    /// Nothing is recorded: B is uniformly random and the password is the requester's alone.
    fn evaluate(
        &mut self,
        id: InboundId,
        ask: &EvaluateRequest,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<Action>, Refusal> {
        let blinded = voprf::BlindedElement::from_bytes(&ask.blinded)
            .map_err(|e| Refusal::Invalid(format!("blinded element: {e}")))?;
        let shares = self.shares();
        let round = match ask.round {
            Some(r) if shares.rounds.contains_key(&r) => r,
            Some(r) => return Err(Refusal::UnknownRound(r)),
            None => shares.latest_round().ok_or(Refusal::NoRound)?,
        };
        let held = &shares.rounds[&round];
        let (Some(partial), Some(key)) = (
            held.share.evaluate_blinded(&blinded, rng),
            held.transcript.threshold.clone(),
        ) else {
            return Err(Refusal::Unavailable(
                "this round's password key share is zero".into(),
            ));
        };
        let grant = EvaluateGrant {
            round,
            partial,
            key,
        };
        Ok(vec![Action::Reply {
            to: id,
            response: Response::Evaluated(Box::new(grant)),
        }])
    }

    fn verify_partial(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        ask: &VerifyPartialRequest,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<Action>, Refusal> {
        let expiry = self.mesh.settings.otp_expiry_ms;
        let digits = self.mesh.settings.digits;
        let me = self.me;
        let shares = self.shares();
        if !shares.rounds.contains_key(&ask.round) {
            return Err(Refusal::UnknownRound(ask.round));
        }
        let slot = (peer, ask.round, ask.counter);
        let verdict = |result| {
            Ok(vec![Action::Reply {
                to: id,
                response: Response::Verified(result),
            }])
        };
        if shares.spent.get(&slot).is_some_and(|s| s.used) {
            return verdict(VerifyResult::Used);
        }
        let expires_at_ms = match check_counter(ask.counter, now, expiry) {
            Ok(at) => at,
            Err(_) if counter::issued_at_ms(ask.counter) < now => {
                return verdict(VerifyResult::Expired)
            }
            Err(refusal) => return Err(refusal),
        };
        // Only an OTP this distributor issued: a record that is gone (deleted from the store, a
        // data dir restored from before the issue) fails closed instead of counting as fresh.
        if !shares.spent.contains_key(&slot) {
            return Err(Refusal::Invalid(
                "this distributor holds no record of issuing that OTP; verify through the \
                 distributors that issued it"
                    .into(),
            ));
        }
        // Marked used, durably, before the partial leaves: whatever it reveals is spent.
        let spent = Spent {
            expires_at: expires_at_ms,
            used: true,
        };
        shares.remember(slot, spent, now, expiry)?;
        let held = &shares.rounds[&ask.round];
        let input = crate::wire::otp_input(&peer, ask.round, ask.counter);
        let grant = VerifyPartialGrant {
            partial: held.share.evaluate(&input, rng),
            digits,
            key: held
                .transcript
                .threshold
                .clone()
                .expect("held rounds are threshold rounds"),
        };
        Ok(vec![
            Action::Persist(Record::Used {
                otp: OtpRef {
                    issuer: me,
                    requester: peer,
                    round: ask.round,
                    counter: ask.counter,
                },
                expires_at_ms,
            }),
            Action::Emit(Event::PartialIssued {
                round: ask.round,
                requester: peer,
                counter: ask.counter,
                verification: true,
            }),
            Action::Reply {
                to: id,
                response: Response::VerifyPartial(Box::new(grant)),
            },
        ])
    }
}

/// The expiry of the OTP with `counter`, if the counter is current and the OTP live.
fn check_counter(c: u64, now: Millis, expiry: Millis) -> Result<Millis, Refusal> {
    let expires_at = counter::issued_at_ms(c).saturating_add(expiry);
    if expires_at <= now {
        return Err(Refusal::Invalid(
            "the OTP with this counter has expired".into(),
        ));
    }
    if !counter::is_current(c, now) && counter::issued_at_ms(c) > now {
        return Err(Refusal::Invalid(format!(
            "the counter's time is more than {} s ahead of this distributor's clock",
            counter::MAX_SKEW_MS / 1000
        )));
    }
    Ok(expires_at)
}
