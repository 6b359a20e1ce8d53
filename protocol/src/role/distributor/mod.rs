//! The distributor: holds delivered round secrets, issues salted OTPs, verifies them once.
//!
//! ```text
//! Deliver(transcript, secret) from a listed generator ─► check commitment ─► Persist(Round) ─► Delivered
//! Otp(requester key) from a listed requester ─► Persist(Issued) ─► OTP, salted ─► Otp(grant)
//! Verify(code) from a listed requester ─► locked? ─► match (constant time) among its OTPs
//!     ─► accepted: Persist(Used) · Publish(Used marker) ─► Verified(accepted)
//!     ─► wrong: Persist(Attempts) (lock after max_failures in the window) ─► Verified(wrong)
//! Used marker from another distributor ─► Persist(Used) (its OTP now answers `used` here too)
//! Check(user, code) from a listed verifier ─► judged as the user's own Verify (check.rs)
//! Kdc(Register | Present | Session) from a listed requester ─► crate::role::distributor::kdc decides
//!     ─► Persist(KdcUser) ─► Registered · Present (memory only) · Session: [OTP checked as Verify] ─► Grant
//! ```
//! Every answer follows the `Persist` it depends on, so the node commits before it replies. OTP values
//! are never stored: they are recomputed from the round secret, the requester, the issuer and the
//! counter.

mod check;
pub mod kdc;
mod ledger;
mod threshold;

use super::{refuse, Action, Event, InboundId, Millis, OtpRef, Record, Role, Verdict};
use crate::role::{Heard, Inbound, Rng};

use crate::kdc::message::{CentreRequest, CentreResponse};
use crate::kx::{Ephemeral, EpochKey};
use crate::mesh::{Lookup, MeshConfig};
use crate::otp::{self, SALT_BYTES};
use crate::role::distributor::kdc::Policy;
use crate::round::{RoundId, Secret, Transcript};
use crate::totp;
use crate::wire::{
    Delivery, Gossip, OtpGrant, OtpRequest, Refusal, Request, Response, UseMarker, VerifyResult,
};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Rounds a distributor keeps; older rounds' OTPs have long expired.
pub const MAX_HELD_ROUNDS: usize = 16;
/// OTP records remembered per requester (issued, used, expired but not yet compacted).
pub const MAX_OTPS_PER_REQUESTER: usize = 1024;
/// Requesters with OTP records or attempts remembered at once.
pub const MAX_TRACKED_REQUESTERS: usize = 65_536;
/// Counters tried before giving up on finding an OTP distinct from the live ones.
const MAX_COLLISION_RETRIES: u32 = 64;
/// How often expired records are compacted: in memory, and in the store with the attempt records.
pub const COMPACT_EVERY_MS: Millis = 60_000;
/// How often, between compactions, the store forgets the OTPs that expired (while this
/// distributor remembers any): a second's worth of rows per commit rather than a minute's, which
/// stalled every reply behind one long transaction.
pub const EXPIRE_EVERY_MS: Millis = 1_000;

#[derive(Debug)]
struct Held {
    transcript: Transcript,
    secret: Secret,
}

/// One OTP this distributor knows of, with its value recomputed.
#[derive(Clone)]
struct Known {
    otp: OtpRef,
    value: u64,
    expires_at: Millis,
    used: bool,
    /// Issued by this distributor (`otp.issuer` is its own id); set by [`ledger::Ledger::add`].
    /// Kept beside the value so the verification's look at every entry reads one cache line of
    /// each rather than the issuer's multihash too.
    own: bool,
}

impl std::fmt::Debug for Known {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Known({:?}, <value>, expires {}, used {})",
            self.otp, self.expires_at, self.used
        )
    }
}

#[derive(Debug, Default, Clone)]
struct Attempts {
    failures: VecDeque<Millis>,
    locked_until: Millis,
}

/// What a distributor's store gives back after a restart.
#[derive(Debug, Default)]
pub struct Restored {
    pub rounds: Vec<(Transcript, Secret)>,
    /// (otp, expires at, used)
    pub otps: Vec<(OtpRef, Millis, bool)>,
    /// (requester, failure times, locked until)
    pub attempts: Vec<(PeerId, Vec<Millis>, Millis)>,
    /// Own next counters: (round, requester, next).
    pub counters: Vec<(RoundId, PeerId, u64)>,
    /// (requester, epoch, key)
    pub enrolments: Vec<(PeerId, u64, Secret)>,
    /// (requester, token)
    pub tokens: Vec<(PeerId, totp::Token)>,
    /// Users registered with the key distribution centre.
    pub kdc_users: Vec<crate::role::distributor::kdc::User>,
}

impl Restored {
    /// What a store holds after `records` were committed in order (the node's store keeps the
    /// same facts in its tables; the simulator and tests restart a distributor from this).
    pub fn replay(records: &[Record]) -> Restored {
        let mut restored = Restored::default();
        let mut attempts: HashMap<PeerId, (Vec<Millis>, Millis)> = HashMap::new();
        let mut counters: HashMap<(RoundId, PeerId), u64> = HashMap::new();
        let mut otps: HashMap<OtpRef, (Millis, bool)> = HashMap::new();
        let mut order = Vec::new();
        for r in records {
            match r {
                Record::Round { transcript, secret } => {
                    restored.rounds.retain(|(t, _)| t.round != transcript.round);
                    restored.rounds.push((transcript.clone(), secret.clone()));
                }
                Record::Issued { otp, expires_at_ms } => {
                    if !otps.contains_key(otp) {
                        order.push(*otp);
                    }
                    otps.entry(*otp).or_insert((*expires_at_ms, false));
                    let next = counters.entry((otp.round, otp.requester)).or_insert(0);
                    *next = (*next).max(otp.counter + 1);
                }
                Record::Used { otp, expires_at_ms } => {
                    if !otps.contains_key(otp) {
                        order.push(*otp);
                    }
                    otps.entry(*otp).or_insert((*expires_at_ms, true)).1 = true;
                }
                Record::Attempts {
                    requester,
                    failures,
                    locked_until,
                } => {
                    attempts.insert(*requester, (failures.clone(), *locked_until));
                }
                Record::Enrolment { peer, epoch, key } => {
                    restored.enrolments.retain(|(p, _, _)| p != peer);
                    restored.enrolments.push((*peer, *epoch, key.clone()));
                }
                Record::TotpToken { requester, token } => {
                    restored.tokens.retain(|(p, _)| p != requester);
                    restored.tokens.push((*requester, token.clone()));
                }
                _ => {}
            }
        }
        restored.otps = order
            .into_iter()
            .map(|o| (o, otps[&o].0, otps[&o].1))
            .collect();
        let mut attempts: Vec<_> = attempts.into_iter().map(|(p, (f, l))| (p, f, l)).collect();
        attempts.sort_by_key(|(p, _, _)| *p);
        restored.attempts = attempts;
        let mut counters: Vec<_> = counters.into_iter().map(|((r, p), n)| (r, p, n)).collect();
        counters.sort();
        restored.counters = counters;
        restored
    }
}

/// How an answer is salted, and what must be stored before it is sent.
pub(crate) struct Salting {
    pub(crate) key: otp::SaltKey,
    pub(crate) distributor_key: [u8; 32],
    pub(crate) epoch: Option<u64>,
    pub(crate) actions: Vec<Action>,
}

#[derive(Debug)]
pub struct Distributor {
    pub(super) me: PeerId,
    pub(super) mesh: Arc<MeshConfig>,
    /// The mesh's requesters, for the questions every request asks.
    pub(super) lookup: Lookup,
    rounds: BTreeMap<RoundId, Held>,
    counters: HashMap<(RoundId, PeerId), u64>,
    known: HashMap<PeerId, ledger::Ledger>,
    attempts: HashMap<PeerId, Attempts>,
    enrolments: HashMap<PeerId, EpochKey>,
    tokens: HashMap<PeerId, totp::Token>,
    kdc: crate::role::distributor::kdc::Centre,
    last_compact: Millis,
    /// When the store was last asked to forget expired OTPs ([`Distributor::expire`]).
    last_expire: Millis,
    /// Threshold mode: this distributor's key shares and spent OTP inputs.
    pub(super) shares: Option<threshold::Shares>,
    /// Verifiers' checks that matched nothing here, until the issuer's use marker takes them back.
    misses: check::Misses,
}

impl Distributor {
    pub fn new(me: PeerId, mesh: Arc<MeshConfig>, restored: Restored) -> Distributor {
        let mut d = Distributor {
            me,
            lookup: Lookup::of(&mesh),
            mesh,
            rounds: BTreeMap::new(),
            counters: HashMap::new(),
            known: HashMap::new(),
            attempts: HashMap::new(),
            enrolments: HashMap::new(),
            tokens: HashMap::new(),
            kdc: crate::role::distributor::kdc::Centre::new(Vec::new()),
            last_compact: 0,
            last_expire: 0,
            shares: None,
            misses: check::Misses::default(),
        };
        if let (Some(params), Some(index), Some(coordinator)) = (
            d.mesh.threshold(),
            d.mesh.distributor_index(&me),
            d.mesh.coordinator(),
        ) {
            let shares = threshold::Shares::restore(
                me,
                index,
                params,
                coordinator,
                &restored.rounds,
                &restored.otps,
            );
            d.shares = Some(shares);
        }
        d.kdc = crate::role::distributor::kdc::Centre::new(restored.kdc_users);
        for (transcript, secret) in restored.rounds {
            if transcript.threshold.is_some() {
                continue;
            }
            d.rounds
                .insert(transcript.round, Held { transcript, secret });
        }
        d.prune_rounds();
        for (otp, expires_at, used) in restored.otps {
            if otp.issuer == d.me {
                let next = d.counters.entry((otp.round, otp.requester)).or_insert(0);
                *next = (*next).max(otp.counter + 1);
            }
            d.remember(otp, expires_at, used);
        }
        for (round, requester, next) in restored.counters {
            if d.rounds.contains_key(&round) {
                let c = d.counters.entry((round, requester)).or_insert(0);
                *c = (*c).max(next);
            }
        }
        d.tokens.extend(restored.tokens);
        for (requester, epoch, key) in restored.enrolments {
            if let Some(key) = key.as_array() {
                d.enrolments.insert(requester, EpochKey::new(epoch, *key));
            }
        }
        // Locked requesters first, then the rest, up to the bound.
        let mut attempts = restored.attempts;
        attempts.sort_by_key(|(_, _, locked_until)| std::cmp::Reverse(*locked_until));
        attempts.truncate(MAX_TRACKED_REQUESTERS);
        for (requester, failures, locked_until) in attempts {
            d.attempts.insert(
                requester,
                Attempts {
                    failures: failures.into(),
                    locked_until,
                },
            );
        }
        d
    }

    pub fn latest_round(&self) -> Option<RoundId> {
        match &self.shares {
            Some(shares) => shares.latest_round(),
            None => self.rounds.keys().next_back().copied(),
        }
    }

    fn prune_rounds(&mut self) {
        while self.rounds.len() > MAX_HELD_ROUNDS {
            if let Some((old, _)) = self.rounds.pop_first() {
                self.counters.retain(|(r, _), _| *r != old);
            }
        }
    }

    /// Adds an OTP record, recomputing its value; false if its round is not held.
    fn remember(&mut self, otp: OtpRef, expires_at: Millis, used: bool) -> bool {
        let Some(held) = self.rounds.get(&otp.round) else {
            return false;
        };
        let value = otp::issue(
            &held.secret,
            otp.round,
            &otp.requester,
            &otp.issuer,
            otp.counter,
            self.mesh.settings.digits,
        )
        .value();
        let ledger = self.known.entry(otp.requester).or_default();
        if let Some(k) = ledger.find_mut(&otp) {
            k.used |= used;
            return true;
        }
        self.add_known(otp, value, expires_at, used)
    }

    /// Adds an OTP not held yet (with its value already worked out).
    fn add_known(&mut self, otp: OtpRef, value: u64, expires_at: Millis, used: bool) -> bool {
        let known = Known {
            otp,
            value,
            expires_at,
            used,
            own: false,
        };
        self.known
            .entry(otp.requester)
            .or_default()
            .add(known, MAX_OTPS_PER_REQUESTER, self.me)
    }

    fn has_room_for(&mut self, requester: &PeerId, now: Millis) -> bool {
        if self.known.contains_key(requester) || self.known.len() < MAX_TRACKED_REQUESTERS {
            return true;
        }
        self.compact_memory(now);
        self.known.len() < MAX_TRACKED_REQUESTERS
    }

    /// Between compactions: asks the store to forget the OTPs that expired more than one lifetime
    /// ago, once per [`EXPIRE_EVERY_MS`], while this distributor remembers any OTP (an idle one
    /// stops after its next compaction).
    fn expire(&mut self, now: Millis) -> Vec<Action> {
        let holds_otps =
            !self.known.is_empty() || self.shares.as_ref().is_some_and(|s| s.holds_otps());
        if now < self.last_expire + EXPIRE_EVERY_MS || !holds_otps {
            return Vec::new();
        }
        self.last_expire = now;
        vec![Action::Persist(Record::ExpireOtps {
            before_ms: now.saturating_sub(self.mesh.settings.otp_expiry_ms),
        })]
    }

    /// Forgets records that expired more than one OTP lifetime ago.
    fn compact_memory(&mut self, now: Millis) -> Millis {
        let before = now.saturating_sub(self.mesh.settings.otp_expiry_ms);
        for ledger in self.known.values_mut() {
            ledger.forget_before(before);
        }
        self.known.retain(|_, l| !l.is_empty());
        let window = self.mesh.settings.failure_window_ms;
        for a in self.attempts.values_mut() {
            a.failures.retain(|t| t + window > now);
        }
        self.attempts
            .retain(|_, a| !a.failures.is_empty() || a.locked_until > now);
        before
    }

    fn deliver(
        &mut self,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        delivery: &Delivery,
    ) -> Vec<Action> {
        let t = &delivery.transcript;
        if !self.mesh.is_generator(&peer) {
            return refuse(
                peer,
                id,
                request,
                Refusal::Unauthorised(format!("{peer} is not a listed generator")),
            );
        }
        if t.generator != peer {
            return refuse(
                peer,
                id,
                request,
                Refusal::Invalid("transcript names another generator".into()),
            );
        }
        if let Err(e) = t.check(Some(&delivery.secret)) {
            return refuse(peer, id, request, Refusal::Invalid(e.to_string()));
        }
        let ack = Action::Reply {
            to: id,
            response: Response::Delivered(t.round),
        };
        match self.rounds.get(&t.round) {
            Some(held) if held.transcript.commitment == t.commitment => {
                // Held in memory, but perhaps not on disk (a commit can fail after the round was
                // taken in): write it again before acknowledging. Idempotent.
                let record = Record::Round {
                    transcript: t.clone(),
                    secret: delivery.secret.clone(),
                };
                return vec![Action::Persist(record), ack];
            }
            Some(_) => {
                let refusal = Refusal::Invalid(format!(
                    "round {} is already held with another commitment",
                    t.round
                ));
                return refuse(peer, id, request, refusal);
            }
            None => {}
        }
        if self
            .rounds
            .keys()
            .next()
            .is_some_and(|oldest| *oldest > t.round)
            && self.rounds.len() >= MAX_HELD_ROUNDS
        {
            // Older than everything kept: acknowledge (nothing to serve from it) without storing.
            return vec![ack];
        }
        let mut actions = Vec::new();
        if let Some((_, prev)) = self.rounds.range(..t.round).next_back() {
            if prev.transcript.commitment != t.prev_commitment {
                actions.push(Action::Emit(Event::ChainGap {
                    round: t.round,
                    expected_prev: prev.transcript.commitment,
                    found_prev: t.prev_commitment,
                }));
            }
        }
        self.rounds.insert(
            t.round,
            Held {
                transcript: t.clone(),
                secret: delivery.secret.clone(),
            },
        );
        self.prune_rounds();
        actions.push(Action::Persist(Record::Round {
            transcript: t.clone(),
            secret: delivery.secret.clone(),
        }));
        actions.push(ack);
        actions.push(Action::Emit(Event::RoundStored {
            round: t.round,
            commitment: t.commitment,
        }));
        actions
    }

    fn issue(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        ask: &OtpRequest,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        let round = match ask.round {
            Some(r) if self.rounds.contains_key(&r) => r,
            Some(r) => return refuse(peer, id, request, Refusal::UnknownRound(r)),
            None => match self.latest_round() {
                Some(r) => r,
                None => return refuse(peer, id, request, Refusal::NoRound),
            },
        };
        if !self.has_room_for(&peer, now) {
            let refusal =
                Refusal::Unavailable("too many requesters with live OTPs; try later".into());
            return refuse(peer, id, request, refusal);
        }
        let salting = self.salting(now, peer, ask.enrolled, &ask.requester_key, rng);
        let Salting {
            key: salt_key,
            distributor_key,
            epoch,
            mut actions,
        } = match salting {
            Ok(s) => s,
            Err(refusal) => return refuse(peer, id, request, refusal),
        };
        let digits = self.mesh.settings.digits;
        let secret = &self.rounds[&round].secret;
        // A value held for this requester (live, used or not yet compacted) is not issued again.
        let known = self.known.get(&peer);
        let live = |value: u64| known.is_some_and(|l| l.holds(value));
        let counter = self.counters.entry((round, peer)).or_insert(0);
        let mut tries = 0;
        let (value, used) = loop {
            let used = *counter;
            *counter += 1;
            let otp = otp::issue(secret, round, &peer, &self.me, used, digits);
            tries += 1;
            if !live(otp.value()) || tries >= MAX_COLLISION_RETRIES {
                break (otp, used);
            }
        };
        let expires_at_ms = now + self.mesh.settings.otp_expiry_ms;
        let otp_ref = OtpRef {
            issuer: self.me,
            requester: peer,
            round,
            counter: used,
        };
        // A fresh counter: no entry holds it yet.
        self.add_known(otp_ref, value.value(), expires_at_ms, false);
        let mut salt = [0u8; SALT_BYTES];
        rng.fill_bytes(&mut salt);
        let grant = OtpGrant {
            round,
            counter: used,
            digits,
            salted: salt_key.salt(value, &salt),
            salt,
            distributor_key,
            expires_at_ms,
            epoch,
        };
        // The event before the reply (both after the commit): whoever holds the OTP can count
        // on the node having counted it.
        actions.extend([
            Action::Persist(Record::Issued {
                otp: otp_ref,
                expires_at_ms,
            }),
            Action::Emit(Event::OtpIssued {
                round,
                requester: peer,
                counter: used,
                expires_at_ms,
            }),
            Action::Reply {
                to: id,
                response: Response::Otp(grant),
            },
        ]);
        actions
    }

    /// The key an answer to `peer` is salted under: its enrolment's current epoch key (moving the
    /// epoch on durably first), or a fresh exchange with `requester_key`.
    pub(crate) fn salting(
        &mut self,
        now: Millis,
        peer: PeerId,
        enrolled: bool,
        requester_key: &[u8; 32],
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Salting, Refusal> {
        let mut actions = Vec::new();
        if !enrolled {
            let ephemeral = Ephemeral::new(rng);
            let key = ephemeral
                .salt_key(requester_key, &peer, &self.me)
                .map_err(|e| Refusal::Invalid(e.to_string()))?;
            return Ok(Salting {
                key,
                distributor_key: ephemeral.public(),
                epoch: None,
                actions,
            });
        }
        let Some(enrolment) = self.enrolments.get(&peer) else {
            return Err(Refusal::Invalid(
                "not enrolled with this distributor: run otpmesh enrol".into(),
            ));
        };
        let epoch = (now / self.mesh.settings.epoch_ms).max(enrolment.epoch());
        let key = enrolment
            .at(epoch)
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        if key.epoch() != enrolment.epoch() {
            // Move on and forget the older epoch's key, durably, before anything is salted with it.
            let record = Record::Enrolment {
                peer,
                epoch,
                key: Secret::from_bytes(*key.bytes()),
            };
            actions.push(Action::Persist(record));
            self.enrolments.insert(peer, key.clone());
        }
        Ok(Salting {
            key: key.salt_key(),
            distributor_key: [0u8; 32],
            epoch: Some(epoch),
            actions,
        })
    }

    pub(super) fn enrol(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        requester_key: &[u8; 32],
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        if !self.enrolments.contains_key(&peer) && self.enrolments.len() >= MAX_TRACKED_REQUESTERS {
            return refuse(
                peer,
                id,
                request,
                Refusal::Unavailable("too many enrolments".into()),
            );
        }
        let epoch_ms = self.mesh.settings.epoch_ms;
        let epoch = now / epoch_ms;
        let ephemeral = Ephemeral::new(rng);
        let key = match ephemeral.enrol(requester_key, &peer, &self.me, epoch) {
            Ok(k) => k,
            Err(e) => return refuse(peer, id, request, Refusal::Invalid(e.to_string())),
        };
        // Re-enrolment replaces the old key.
        self.enrolments.insert(peer, key.clone());
        let grant = crate::wire::EnrolGrant {
            distributor_key: ephemeral.public(),
            epoch,
            epoch_ms,
        };
        vec![
            Action::Persist(Record::Enrolment {
                peer,
                epoch,
                key: Secret::from_bytes(*key.bytes()),
            }),
            Action::Reply {
                to: id,
                response: Response::Enrolled(grant),
            },
            Action::Emit(Event::Enrolled { peer, epoch }),
        ]
    }

    fn totp_enrol(
        &mut self,
        _now: Millis,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        requester_key: &[u8; 32],
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        let Some(round) = self.latest_round() else {
            return refuse(peer, id, request, Refusal::NoRound);
        };
        if !self.tokens.contains_key(&peer) && self.tokens.len() >= MAX_TRACKED_REQUESTERS {
            return refuse(
                peer,
                id,
                request,
                Refusal::Unavailable("too many TOTP tokens".into()),
            );
        }
        let ephemeral = Ephemeral::new(rng);
        let salt_key = match ephemeral.salt_key(requester_key, &peer, &self.me) {
            Ok(k) => k,
            Err(e) => return refuse(peer, id, request, Refusal::Invalid(e.to_string())),
        };
        // A fresh token secret, derived from the round secret (domain-separated, per requester, with
        // fresh randomness so that enrolling again gives a new token).
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let mut info = b"otpmesh/1/totp-secret".to_vec();
        for part in [
            peer.to_bytes(),
            self.me.to_bytes(),
            round.0.to_be_bytes().to_vec(),
            nonce.to_vec(),
        ] {
            info.extend_from_slice(&part);
        }
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; totp::SECRET_BYTES]);
        hkdf::Hkdf::<sha2::Sha256>::new(None, self.rounds[&round].secret.as_bytes())
            .expand(&info, &mut bytes)
            .expect("20 bytes is a valid HKDF length");
        let token = totp::Token {
            secret: totp::Secret(bytes),
            params: totp::Params::default(),
            last_step: None,
            drift: 0,
        };
        let mut salt = [0u8; SALT_BYTES];
        rng.fill_bytes(&mut salt);
        let grant = crate::wire::TotpGrant {
            params: token.params,
            round,
            masked_secret: salt_key.mask_bytes(&salt, &token.secret.0).to_vec(),
            salt,
            distributor_key: ephemeral.public(),
        };
        self.tokens.insert(peer, token.clone());
        vec![
            Action::Persist(Record::TotpToken {
                requester: peer,
                token,
            }),
            Action::Reply {
                to: id,
                response: Response::TotpEnrolled(grant),
            },
            Action::Emit(Event::TotpIssued {
                requester: peer,
                round,
            }),
        ]
    }

    /// The shape OTP and TOTP verification share: check the code's form, answer `locked` without
    /// looking, let `matcher` judge the code (None: no match), count a miss towards the lockout,
    /// clear the failures on an acceptance, and answer.
    #[allow(clippy::too_many_arguments)]
    fn verify_code(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        code: &str,
        digits: usize,
        matcher: impl FnOnce(&mut Self, u64) -> Option<(VerifyResult, Vec<Action>)>,
    ) -> Vec<Action> {
        match self.judge_code(now, peer, code, digits, matcher) {
            Err(refusal) => refuse(peer, id, request, refusal),
            Ok((result, mut actions)) => {
                actions.push(Action::Reply {
                    to: id,
                    response: Response::Verified(result),
                });
                actions
            }
        }
    }

    /// Judges a code: its records to commit (an acceptance, a failure towards the lockout) and
    /// the event, without the reply.
    fn judge_code(
        &mut self,
        now: Millis,
        peer: PeerId,
        code: &str,
        digits: usize,
        matcher: impl FnOnce(&mut Self, u64) -> Option<(VerifyResult, Vec<Action>)>,
    ) -> Result<(VerifyResult, Vec<Action>), Refusal> {
        if code.len() != digits || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refusal::Invalid(format!("a code here is {digits} digits")));
        }
        let code: u64 = code.parse().expect("checked: only digits");
        let s = self.mesh.settings.clone();
        let attempts = self.attempts.get(&peer).cloned().unwrap_or_default();
        let (result, mut actions) = if attempts.locked_until > now {
            (VerifyResult::Locked, Vec::new())
        } else {
            match matcher(self, code) {
                Some((VerifyResult::Accepted, mut actions)) => {
                    if !attempts.failures.is_empty() {
                        self.attempts.remove(&peer);
                        let cleared = Record::Attempts {
                            requester: peer,
                            failures: vec![],
                            locked_until: 0,
                        };
                        // With the other commits, before anything leaves (publish, reply).
                        let at = actions
                            .iter()
                            .position(|a| !matches!(a, Action::Persist(_)))
                            .unwrap_or(actions.len());
                        actions.insert(at, Action::Persist(cleared));
                    }
                    (VerifyResult::Accepted, actions)
                }
                Some(other) => other,
                None => self.verify_miss(
                    now,
                    peer,
                    attempts,
                    s.max_failures,
                    s.failure_window_ms,
                    s.lockout_ms,
                ),
            }
        };
        actions.push(Action::Emit(Event::OtpVerified {
            requester: peer,
            result,
        }));
        Ok((result, actions))
    }

    fn totp_verify(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        code: &str,
    ) -> Vec<Action> {
        let Some(token) = self.tokens.get(&peer).cloned() else {
            let refusal = Refusal::Invalid("no TOTP token here: run otpmesh totp enrol".into());
            return refuse(peer, id, request, refusal);
        };
        let digits = token.params.digits.get() as usize;
        let window = self.mesh.settings.totp_window;
        self.verify_code(now, peer, id, request, code, digits, |d, code| {
            let (step, used) = token.check(code, now / 1000, window)?;
            if used {
                return Some((VerifyResult::Used, Vec::new()));
            }
            let expected = token.params.step(now / 1000).unwrap_or(step) as i64;
            let updated = totp::Token {
                last_step: Some(step),
                drift: step as i64 - expected,
                ..token
            };
            d.tokens.insert(peer, updated.clone());
            Some((
                VerifyResult::Accepted,
                vec![Action::Persist(Record::TotpToken {
                    requester: peer,
                    token: updated,
                })],
            ))
        })
    }

    fn verify(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        code: &str,
    ) -> Vec<Action> {
        let digits = self.mesh.settings.digits.get() as usize;
        self.verify_code(now, peer, id, request, code, digits, |d, code| {
            d.match_otp(now, peer, code)
        })
    }

    /// Finds `code` among the requester's OTPs and judges it.
    fn match_otp(
        &mut self,
        now: Millis,
        peer: PeerId,
        code: u64,
    ) -> Option<(VerifyResult, Vec<Action>)> {
        let d = self;
        {
            // Look at every record, whatever matches, so timing says nothing about which did. Two
            // records can share a value: prefer one this distributor can still accept, then a used
            // one, then an expired one (rank 3, 2, 1).
            let empty = ledger::Ledger::default();
            let list = d.known.get(&peer).unwrap_or(&empty);
            let mut found = subtle::Choice::from(0);
            let (mut index, mut best) = (0u64, 0u8);
            for (i, k) in list.iter().enumerate() {
                let rank = match (k.used, now >= k.expires_at, k.own) {
                    (false, false, true) => 3u8,
                    (true, _, _) => 2,
                    _ => 1,
                };
                let better = k.value.ct_eq(&code) & subtle::Choice::from((rank > best) as u8);
                index.conditional_assign(&(i as u64), better);
                best.conditional_assign(&rank, better);
                found |= better;
            }
            bool::from(found).then(|| d.verify_match(now, peer, index as usize))
        }
    }

    /// The key distribution centre's requests.
    fn kdc(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: &Request,
        ask: &CentreRequest,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        let s = &self.mesh.settings;
        let policy = Policy {
            ticket_lifetime_ms: s.kdc_ticket_lifetime_ms,
            max_skew_ms: s.kdc_max_skew_ms,
            require_otp: s.kdc_require_otp,
        };
        let reply = |response| Action::Reply {
            to: id,
            response: Response::Kdc(response),
        };
        match ask {
            CentreRequest::Register(r) => match self.kdc.register(now, &self.me, peer, r) {
                Err(refusal) => refuse(peer, id, request, refusal),
                Ok((user, replaced)) => vec![
                    Action::Persist(Record::KdcUser(user)),
                    reply(CentreResponse::Registered {
                        name: r.name.clone(),
                        replaced,
                    }),
                    Action::Emit(Event::KdcRegistered {
                        name: r.name.to_string(),
                        peer,
                        replaced,
                    }),
                ],
            },
            CentreRequest::Present(p) => match self.kdc.present(now, &self.me, peer, p, &policy) {
                Err(refusal) => refuse(peer, id, request, refusal),
                Ok(()) => vec![reply(CentreResponse::Present {
                    name: p.name.clone(),
                })],
            },
            CentreRequest::Session(ask) => {
                let approved = match self.kdc.check_session(now, &self.me, peer, ask, &policy) {
                    Ok(a) => a,
                    Err(refusal) => return refuse(peer, id, request, refusal),
                };
                let mut actions = Vec::new();
                if let Some(code) = &ask.otp {
                    let digits = self.mesh.settings.digits.get() as usize;
                    let judged =
                        self.judge_code(now, peer, code, digits, |d, c| d.match_otp(now, peer, c));
                    let (result, judged) = match judged {
                        Ok(j) => j,
                        Err(refusal) => return refuse(peer, id, request, refusal),
                    };
                    actions = judged;
                    if result != VerifyResult::Accepted {
                        let refusal = Refusal::Unauthorised(format!(
                            "the OTP given for pre-authentication is {}",
                            result.as_str()
                        ));
                        actions.extend(refuse(peer, id, request, refusal));
                        return actions;
                    }
                }
                let expires_at_ms = now + policy.ticket_lifetime_ms;
                let grant = self.kdc.grant(now, &self.me, approved, &policy, rng);
                actions.push(reply(CentreResponse::Session(grant)));
                actions.push(Action::Emit(Event::KdcSessionIssued {
                    client: ask.client.to_string(),
                    server: ask.server.to_string(),
                    expires_at_ms,
                }));
                actions
            }
        }
    }

    fn verify_match(
        &mut self,
        now: Millis,
        peer: PeerId,
        index: usize,
    ) -> (VerifyResult, Vec<Action>) {
        let Some(k) = self.known.get_mut(&peer).and_then(|l| l.get_mut(index)) else {
            return (VerifyResult::Wrong, Vec::new());
        };
        if k.used {
            return (VerifyResult::Used, Vec::new());
        }
        if now >= k.expires_at {
            return (VerifyResult::Expired, Vec::new());
        }
        if k.otp.issuer != self.me {
            // Only markers of used OTPs are kept for other issuers; nothing to accept here.
            return (VerifyResult::Used, Vec::new());
        }
        k.used = true;
        let (otp, expires_at_ms) = (k.otp, k.expires_at);
        let marker = UseMarker {
            requester: peer,
            round: otp.round,
            counter: otp.counter,
            expires_at_ms,
        };
        let actions = vec![
            Action::Persist(Record::Used { otp, expires_at_ms }),
            Action::Publish(Gossip::Used(marker)),
        ];
        (VerifyResult::Accepted, actions)
    }

    fn verify_miss(
        &mut self,
        now: Millis,
        peer: PeerId,
        mut attempts: Attempts,
        max_failures: u32,
        window: Millis,
        lockout: Millis,
    ) -> (VerifyResult, Vec<Action>) {
        attempts.failures.retain(|t| t + window > now);
        attempts.failures.push_back(now);
        let mut events = Vec::new();
        if attempts.failures.len() >= max_failures as usize {
            attempts.locked_until = now + lockout;
            attempts.failures.clear();
            events.push(Action::Emit(Event::LockedOut {
                requester: peer,
                until_ms: attempts.locked_until,
            }));
        }
        let record = Record::Attempts {
            requester: peer,
            failures: attempts.failures.iter().copied().collect(),
            locked_until: attempts.locked_until,
        };
        if self.attempts.contains_key(&peer) || self.attempts.len() < MAX_TRACKED_REQUESTERS {
            self.attempts.insert(peer, attempts);
            let mut actions = vec![Action::Persist(record)];
            actions.extend(events);
            return (VerifyResult::Wrong, actions);
        }
        (VerifyResult::Wrong, events)
    }

    fn on_marker(
        &mut self,
        now: Millis,
        source: PeerId,
        marker: &UseMarker,
    ) -> (Verdict, Vec<Action>) {
        if !self.mesh.is_distributor(&source) {
            return (
                Verdict::Reject(format!(
                    "use marker from {source}, which is not a listed distributor"
                )),
                Vec::new(),
            );
        }
        if source == self.me {
            return (Verdict::Accept, Vec::new());
        }
        if !self.lookup.is_requester(&marker.requester) {
            return (
                Verdict::Reject(format!(
                    "use marker for {}, which is not a listed requester",
                    marker.requester
                )),
                Vec::new(),
            );
        }
        // A marker cannot outlive the OTP it marks (a minute of clock skew allowed).
        if marker.expires_at_ms > now.saturating_add(self.mesh.settings.otp_expiry_ms + 60_000) {
            return (
                // Ignored, not penalised: a distributor whose clock runs ahead is not hostile.
                Verdict::Ignore("use marker expires later than any OTP can".into()),
                Vec::new(),
            );
        }
        let otp = OtpRef {
            issuer: source,
            requester: marker.requester,
            round: marker.round,
            counter: marker.counter,
        };
        if !self.known.contains_key(&marker.requester) && self.known.len() >= MAX_TRACKED_REQUESTERS
        {
            return (
                Verdict::Ignore("too many requesters tracked".into()),
                Vec::new(),
            );
        }
        if !self.remember(otp, marker.expires_at_ms, true) {
            return (
                Verdict::Ignore(format!(
                    "use marker for round {}, which is not held here",
                    marker.round
                )),
                Vec::new(),
            );
        }
        let event = Event::UseReplicated {
            issuer: source,
            requester: marker.requester,
            round: marker.round,
            counter: marker.counter,
        };
        let mut actions = vec![Action::Persist(Record::Used {
            otp,
            expires_at_ms: marker.expires_at_ms,
        })];
        let value = self.known[&marker.requester]
            .iter()
            .find(|k| k.otp == otp)
            .map(|k| k.value);
        if let Some(value) = value {
            actions.extend(self.refund(now, marker.requester, value));
        }
        actions.push(Action::Emit(event));
        (Verdict::Accept, actions)
    }
}

impl Distributor {
    /// Threshold mode: this distributor's partial of the beacon input `x` with its key share of
    /// `round`, if it holds one.
    pub fn beacon_partial(
        &self,
        round: RoundId,
        x: &crate::threshold::eval::Input,
        rng: &mut dyn CryptoRngCore,
    ) -> Option<crate::threshold::eval::Partial> {
        self.shares.as_ref()?.beacon_partial(round, x, rng)
    }
}

impl Role for Distributor {
    fn tick(&mut self, now: Millis, _rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        if now < self.last_compact + COMPACT_EVERY_MS {
            return self.expire(now);
        }
        self.last_compact = now;
        self.last_expire = now;
        let before = self.compact_memory(now);
        if let Some(shares) = &mut self.shares {
            shares.compact(before);
        }
        let failures_before_ms = now.saturating_sub(self.mesh.settings.failure_window_ms);
        vec![Action::Persist(Record::Compact {
            expired_before_ms: before,
            failures_before_ms,
            now_ms: now,
        })]
    }

    fn gossip(&mut self, now: Millis, heard: Heard, _rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        let Heard { source, message } = heard;
        match message {
            Gossip::Used(marker) => self.on_marker(now, source, marker),
            _ => (Verdict::Accept, Vec::new()),
        }
    }

    fn request(&mut self, now: Millis, asked: Inbound, rng: &mut dyn Rng) -> Vec<Action> {
        let Inbound { peer, id, request } = asked;
        let from_requester = matches!(
            request,
            Request::Otp(_)
                | Request::Partial(_)
                | Request::VerifyPartial(_)
                | Request::Evaluate(_)
                | Request::Verify(_)
                | Request::Enrol(_)
                | Request::TotpEnrol(_)
                | Request::TotpVerify(_)
                | Request::Kdc(_)
        );
        if from_requester && !self.lookup.is_requester(&peer) {
            return refuse(
                peer,
                id,
                &request,
                Refusal::Unauthorised(format!("{peer} is not a listed requester")),
            );
        }
        if self.shares.is_some() {
            return self.threshold_request(now, peer, id, request, rng);
        }
        match &request {
            Request::Deliver(d) => self.deliver(peer, id, &request, d),
            Request::Otp(ask) => self.issue(now, peer, id, &request, ask, rng),
            Request::Verify(v) => self.verify(now, peer, id, &request, &v.code),
            Request::Enrol(e) => self.enrol(now, peer, id, &request, &e.requester_key, rng),
            Request::TotpEnrol(e) => {
                self.totp_enrol(now, peer, id, &request, &e.requester_key, rng)
            }
            Request::TotpVerify(v) => self.totp_verify(now, peer, id, &request, &v.code),
            Request::Kdc(k) => self.kdc(now, peer, id, &request, k, rng),
            Request::Check(c) => self.check(now, peer, id, &request, c),
            Request::Beacon(_) => refuse(
                peer,
                id,
                &request,
                Refusal::NeedsThreshold(request.kind().into()),
            ),
            Request::Handover(_)
            | Request::Partial(_)
            | Request::VerifyPartial(_)
            | Request::Evaluate(_)
            | Request::Code(_) => refuse(
                peer,
                id,
                &request,
                Refusal::NeedsThreshold(request.kind().into()),
            ),
            Request::PublicKey | Request::Dealing(_) => refuse(
                peer,
                id,
                &request,
                Refusal::WrongRole(request.kind().into()),
            ),
        }
    }
}
