//! Threshold mode: partials of time-step codes (`threshold::code`).
//!
//! ```text
//! Code(step, key) from a listed requester R ─► step within the skew ─► round by the rule
//!     ─► y_j of ("code", R, round, step), masked for R ─► Code(grant)        (nothing spent)
//! Code(user, step, key) from a listed verifier covering user ─► R = user's requester
//!     ─► (R, step) spent here already? ─► Code(grant without a partial)
//!     ─► Persist(Used (R, step)) ─► y_j masked for the verifier ─► Code(grant)
//! ```

use super::{Shares, Spent};
use crate::kx::Ephemeral;
use crate::otp::SALT_BYTES;
use crate::role::distributor::Distributor;
use crate::role::{Action, InboundId, Millis, Record};
use crate::threshold::code;
use crate::wire::{CodeGrant, CodeRequest, MaskedPartial, Refusal, Response};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;

impl Shares {
    /// The round the rule picks for `step` among the rounds held here.
    fn code_round(&self, step: u64, period_s: u64) -> Option<crate::round::RoundId> {
        code::round_for(
            step,
            period_s,
            self.rounds
                .iter()
                .map(|(r, h)| (*r, h.transcript.sealed_at_ms)),
        )
    }
}

impl Distributor {
    pub(super) fn code(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        ask: &CodeRequest,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Vec<Action>, Refusal> {
        let period = self.mesh.settings.code_period_s;
        let requester = match &ask.user {
            None if self.lookup.is_requester(&peer) => peer,
            None => {
                return Err(Refusal::Unauthorised(format!(
                    "{peer} is not a listed requester"
                )))
            }
            Some(user) => self
                .mesh
                .may_verify(&peer, user)
                .map_err(|denied| Refusal::Unauthorised(denied.to_string()))?,
        };
        let checking = ask.user.is_some();
        if !code::is_current(ask.step, now, period) {
            return Err(Refusal::Invalid(format!(
                "step {} is more than {} steps from this distributor's clock (step {})",
                ask.step,
                code::MAX_STEP_SKEW,
                code::step(now, period)
            )));
        }
        let me = self.me;
        let shares = self.shares();
        let round = shares
            .code_round(ask.step, period)
            .ok_or(Refusal::NoCodeRound {
                step: ask.step,
                margin_s: code::ROUND_MARGIN_MS / 1000,
            })?;
        // The exchange first: a key it refuses must not spend the step.
        let ephemeral = Ephemeral::new(rng);
        let salt_key = ephemeral
            .salt_key(&ask.key, &peer, &me)
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        let slot = (requester, code::SPENT_ROUND, ask.step);
        let spent_before = checking && shares.spent.contains_key(&slot);
        let mut actions = Vec::new();
        if checking && !spent_before {
            // Spent, durably, before the partial leaves: whatever it reveals is used up.
            let expires_at = code::spent_until_ms(ask.step, period);
            let spent = Spent {
                expires_at,
                used: true,
            };
            shares.remember(slot, spent, now, expires_at.saturating_sub(now))?;
            actions.push(Action::Persist(Record::Used {
                otp: code::spent_ref(me, requester, ask.step),
                expires_at_ms: expires_at,
            }));
        }
        let held = &shares.rounds[&round];
        let mut salt = [0u8; SALT_BYTES];
        rng.fill_bytes(&mut salt);
        let partial = (!spent_before).then(|| {
            let p = held
                .share
                .evaluate(&code::input(&requester, round, ask.step), rng);
            let mut masked_y = [0u8; 32];
            masked_y.copy_from_slice(&salt_key.mask_bytes(&salt, &p.y));
            MaskedPartial {
                masked_y,
                proof: p.proof,
            }
        });
        let grant = CodeGrant {
            step: ask.step,
            round,
            index: held.share.index,
            key: held
                .transcript
                .threshold
                .clone()
                .expect("held rounds are threshold rounds"),
            salt,
            distributor_key: ephemeral.public(),
            partial,
        };
        actions.push(Action::Reply {
            to: id,
            response: Response::Code(Box::new(grant)),
        });
        Ok(actions)
    }
}
