//! The requester: asks a distributor for an OTP with a fresh X25519 key, and removes the salt.
//!
//! Two modes share the machine: `one_shot` asks once at start (the `otpmesh request` command), and
//! `follow` asks after every sealed round it sees (a requester node in a mesh), retrying while the
//! distributor has not received the round yet.

use super::{failure_of, Action, Event, Failure, Millis, Record, Role, Tag, Tags, Verdict};
use crate::kx::{Ephemeral, EpochKey};
use crate::role::{Answer, Heard, Rng};
use crate::round::RoundId;
use crate::wire::{
    EnrolRequest, Gossip, OtpRequest, Refusal, Request, Response, TotpEnrolRequest, VerifyRequest,
};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeSet, HashMap};

/// Wait before asking again for a round the distributor does not hold yet.
pub const RETRY_MS: Millis = 300;
/// Attempts per round before giving up.
pub const MAX_ATTEMPTS: u32 = 40;
/// The longest an OTP can live (the mesh config's limit), plus a minute of clock skew.
pub const MAX_OTP_LIFETIME_MS: Millis = 86_400_000 + 60_000;
/// Outstanding requests at once.
pub const MAX_IN_FLIGHT: usize = 64;

struct Asking {
    /// `None` when the request uses the enrolment key.
    ephemeral: Option<Ephemeral>,
    distributor: PeerId,
    round: Option<RoundId>,
    attempt: u32,
}

pub struct Requester {
    me: PeerId,
    distributors: Vec<PeerId>,
    next_distributor: usize,
    one_shot: bool,
    in_flight: HashMap<Tag, Asking>,
    retries: Vec<(Millis, Option<RoundId>, u32)>,
    seen: BTreeSet<RoundId>,
    tags: Tags,
    /// `verify_once`: the code to present, and the tag of the request once sent.
    verify: Option<(String, Option<Tag>)>,
    /// The enrolment key shared with the distributor (one-shot requests use it when present).
    enrolment: Option<EpochKey>,
    /// `enrol_once`: the exchange in flight.
    enrolling: Option<(Option<Tag>, Ephemeral)>,
    /// `totp_enrol_once`: the exchange in flight.
    totp_enrolling: Option<(Option<Tag>, Ephemeral)>,
    /// `verify_once` presents a TOTP code rather than an OTP.
    verify_totp: bool,
}

impl std::fmt::Debug for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Requester({}, {} in flight)",
            self.me,
            self.in_flight.len()
        )
    }
}

impl Requester {
    /// Asks `distributor` once, for its newest round.
    pub fn one_shot(me: PeerId, distributor: PeerId) -> Requester {
        Self::build(me, vec![distributor], true)
    }

    /// Presents `code` to `distributor` once (the `otpmesh verify` command).
    pub fn verify_once(me: PeerId, distributor: PeerId, code: String) -> Requester {
        let mut r = Self::build(me, vec![distributor], true);
        r.verify = Some((code, None));
        r
    }

    /// Enrols with `distributor` once (the `otpmesh enrol` command).
    pub fn enrol_once(me: PeerId, distributor: PeerId, rng: &mut dyn CryptoRngCore) -> Requester {
        let mut r = Self::build(me, vec![distributor], true);
        r.enrolling = Some((None, Ephemeral::new(rng)));
        r
    }

    /// Asks `distributor` once for a TOTP token (the `otpmesh totp enrol` command).
    pub fn totp_enrol_once(
        me: PeerId,
        distributor: PeerId,
        rng: &mut dyn CryptoRngCore,
    ) -> Requester {
        let mut r = Self::build(me, vec![distributor], true);
        r.totp_enrolling = Some((None, Ephemeral::new(rng)));
        r
    }

    /// Presents a TOTP `code` to `distributor` once (the `otpmesh totp verify` command).
    pub fn totp_verify_once(me: PeerId, distributor: PeerId, code: String) -> Requester {
        let mut r = Self::verify_once(me, distributor, code);
        r.verify_totp = true;
        r
    }

    /// Salts OTP responses with this enrolment key instead of a fresh exchange.
    pub fn with_enrolment(mut self, key: Option<EpochKey>) -> Requester {
        self.enrolment = key;
        self
    }

    /// Asks one of `distributors` (in turn) after every sealed round.
    pub fn follow(me: PeerId, distributors: Vec<PeerId>) -> Requester {
        Self::build(me, distributors, false)
    }

    fn build(me: PeerId, distributors: Vec<PeerId>, one_shot: bool) -> Requester {
        Requester {
            me,
            distributors,
            next_distributor: 0,
            one_shot,
            in_flight: HashMap::new(),
            retries: Vec::new(),
            seen: BTreeSet::new(),
            tags: Tags::default(),
            verify: None,
            enrolment: None,
            enrolling: None,
            totp_enrolling: None,
            verify_totp: false,
        }
    }

    fn ask(
        &mut self,
        round: Option<RoundId>,
        attempt: u32,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        if self.distributors.is_empty() || self.in_flight.len() >= MAX_IN_FLIGHT {
            return Vec::new();
        }
        let distributor = self.distributors[self.next_distributor % self.distributors.len()];
        self.next_distributor += 1;
        let (ephemeral, request) = if self.enrolment.is_some() {
            (
                None,
                Request::Otp(OtpRequest {
                    round,
                    requester_key: [0; 32],
                    enrolled: true,
                }),
            )
        } else {
            let ephemeral = Ephemeral::new(rng);
            let public = ephemeral.public();
            (
                Some(ephemeral),
                Request::Otp(OtpRequest {
                    round,
                    requester_key: public,
                    enrolled: false,
                }),
            )
        };
        let tag = self.tags.next();
        self.in_flight.insert(
            tag,
            Asking {
                ephemeral,
                distributor,
                round,
                attempt,
            },
        );
        vec![Action::Send {
            peer: distributor,
            tag,
            request,
        }]
    }
}

impl Role for Requester {
    fn start(&mut self, _now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        // A one-shot enrolment or verification: one request to the first distributor.
        let (sent, request) = if let Some((sent, ephemeral)) = &mut self.enrolling {
            let requester_key = ephemeral.public();
            (sent, Request::Enrol(EnrolRequest { requester_key }))
        } else if let Some((sent, ephemeral)) = &mut self.totp_enrolling {
            let requester_key = ephemeral.public();
            (sent, Request::TotpEnrol(TotpEnrolRequest { requester_key }))
        } else if let Some((code, sent)) = &mut self.verify {
            let ask = VerifyRequest { code: code.clone() };
            match self.verify_totp {
                true => (sent, Request::TotpVerify(ask)),
                false => (sent, Request::Verify(ask)),
            }
        } else {
            return match self.one_shot {
                true => self.ask(None, 1, rng),
                false => Vec::new(),
            };
        };
        let tag = self.tags.next();
        *sent = Some(tag);
        vec![Action::Send {
            peer: self.distributors[0],
            tag,
            request,
        }]
    }

    fn tick(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let (due, later): (Vec<_>, Vec<_>) =
            self.retries.drain(..).partition(|(at, _, _)| *at <= now);
        self.retries = later;
        due.into_iter()
            .flat_map(|(_, round, attempt)| self.ask(round, attempt, rng))
            .collect()
    }

    fn gossip(&mut self, _now: Millis, heard: Heard, rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        let Heard { message, .. } = heard;
        match message {
            Gossip::Sealed(t) if !self.one_shot && self.seen.insert(t.round) => {
                while self.seen.len() > 64 {
                    self.seen.pop_first();
                }
                (Verdict::Accept, self.ask(Some(t.round), 1, rng))
            }
            _ => (Verdict::Accept, Vec::new()),
        }
    }

    fn response(&mut self, now: Millis, answer: Answer, _rng: &mut dyn Rng) -> Vec<Action> {
        let tag = answer.tag;
        if matches!(&self.totp_enrolling, Some((Some(t), _)) if *t == tag) {
            return match self.totp_enrolling.take() {
                Some((_, ephemeral)) => self.totp_enrolled(ephemeral, answer),
                None => Vec::new(),
            };
        }
        if matches!(&self.enrolling, Some((Some(t), _)) if *t == tag) {
            return match self.enrolling.take() {
                Some((_, ephemeral)) => self.enrolled(ephemeral, answer),
                None => Vec::new(),
            };
        }
        let (peer, response) = (answer.peer, answer.response);
        if matches!(&self.verify, Some((_, Some(t))) if *t == tag) {
            return match response {
                Ok(Response::Verified(result)) => vec![Action::Emit(Event::VerifyAnswered {
                    distributor: peer,
                    result,
                })],
                other => failed(peer, "verify", other),
            };
        }
        match self.in_flight.remove(&tag) {
            Some(asking) => self.otp_answered(now, peer, asking, response),
            None => Vec::new(),
        }
    }
}

/// The request failed: the failure its answer (or its absence) stands for.
fn failed(peer: PeerId, request: &str, response: Result<Response, String>) -> Vec<Action> {
    let (failure, reason) = failure_of(response);
    refused(peer, request, failure, reason)
}

fn refused(peer: PeerId, request: &str, failure: Failure, reason: String) -> Vec<Action> {
    vec![Action::Emit(Event::RequestFailed {
        peer,
        request: request.into(),
        failure,
        reason,
    })]
}

impl Requester {
    fn totp_enrolled(&mut self, ephemeral: Ephemeral, answer: Answer) -> Vec<Action> {
        let peer = answer.peer;
        let grant = match answer.response {
            Ok(Response::TotpEnrolled(grant)) => grant,
            other => return failed(peer, "totp-enrol", other),
        };
        match ephemeral.salt_key(&grant.distributor_key, &self.me, &peer) {
            Ok(key) => {
                let secret = key.mask_bytes(&grant.salt, &grant.masked_secret);
                vec![Action::Emit(Event::TotpReceived {
                    distributor: peer,
                    secret_base32: crate::totp::base32_encode(&secret),
                    params: grant.params,
                })]
            }
            Err(e) => refused(peer, "totp-enrol", Failure::Refused, e.to_string()),
        }
    }

    fn enrolled(&mut self, ephemeral: Ephemeral, answer: Answer) -> Vec<Action> {
        let peer = answer.peer;
        let grant = match answer.response {
            Ok(Response::Enrolled(grant)) => grant,
            other => return failed(peer, "enrol", other),
        };
        match ephemeral.enrol(&grant.distributor_key, &self.me, &peer, grant.epoch) {
            Ok(key) => {
                let secret = crate::round::Secret::from_bytes(*key.bytes());
                self.enrolment = Some(key);
                vec![
                    Action::Persist(Record::Enrolment {
                        peer,
                        epoch: grant.epoch,
                        key: secret,
                    }),
                    Action::Emit(Event::Enrolled {
                        peer,
                        epoch: grant.epoch,
                    }),
                ]
            }
            Err(e) => refused(peer, "enrol", Failure::Refused, e.to_string()),
        }
    }

    fn otp_answered(
        &mut self,
        now: Millis,
        peer: PeerId,
        asking: Asking,
        response: Result<Response, String>,
    ) -> Vec<Action> {
        let grant = match response {
            // No OTP lives longer than a day (the mesh config's bound): refuse nonsense from a peer.
            Ok(Response::Otp(grant))
                if grant.expires_at_ms > now.saturating_add(MAX_OTP_LIFETIME_MS) =>
            {
                return refused(
                    peer,
                    "otp",
                    Failure::Refused,
                    format!(
                        "the distributor claims an expiry {} ms away",
                        grant.expires_at_ms - now
                    ),
                );
            }
            Ok(Response::Otp(grant)) => grant,
            Ok(Response::Refused(Refusal::UnknownRound(_) | Refusal::NoRound))
                if !self.one_shot && asking.attempt < MAX_ATTEMPTS =>
            {
                self.retries
                    .push((now + RETRY_MS, asking.round, asking.attempt + 1));
                return Vec::new();
            }
            other => return failed(peer, "otp", other),
        };
        let mut actions = Vec::new();
        let salt_key = match (grant.epoch, &asking.ephemeral, &self.enrolment) {
            (Some(epoch), _, Some(enrolment)) => match enrolment.at(epoch) {
                Ok(key) => {
                    if key.epoch() != enrolment.epoch() {
                        // Move on: the older epoch's key is forgotten, durably.
                        let secret = crate::round::Secret::from_bytes(*key.bytes());
                        actions.push(Action::Persist(Record::Enrolment {
                            peer,
                            epoch,
                            key: secret,
                        }));
                        self.enrolment = Some(key.clone());
                    }
                    Ok(key.salt_key())
                }
                Err(e) => Err(format!("salted under epoch {epoch}: {e}")),
            },
            (None, Some(ephemeral), _) => ephemeral
                .salt_key(&grant.distributor_key, &self.me, &asking.distributor)
                .map_err(|e| e.to_string()),
            _ => Err("the distributor salted with a key this requester does not hold".to_string()),
        };
        let unsalted = salt_key.and_then(|key| {
            key.unsalt(grant.salted, &grant.salt, grant.digits)
                .map_err(|e| e.to_string())
        });
        match unsalted {
            Ok(otp) => actions.push(Action::Emit(Event::OtpReceived {
                round: grant.round,
                distributor: asking.distributor,
                otp: otp.to_string(),
                expires_at_ms: grant.expires_at_ms,
            })),
            Err(reason) => actions.extend(refused(
                peer,
                "otp",
                Failure::Refused,
                format!("could not remove the salt: {reason}"),
            )),
        }
        actions
    }
}
