//! The distributor: holds delivered round secrets and answers OTP requests with salted OTPs.
//!
//! ```text
//! Deliver(transcript, secret) from a listed generator ─► check commitment ─► Persist(Round) ─► Delivered
//! Otp(requester key) from a listed requester ─► counter+1 ─► Persist(Counter) ─► OTP, salted ─► Otp(grant)
//! ```
//! Every acknowledgement follows the `Persist` it depends on, so the node commits before it replies.

use super::{refuse, Action, Event, InboundId, Millis, Record, Role};
use crate::kx::Ephemeral;
use crate::mesh::MeshConfig;
use crate::otp::{self, SALT_BYTES};
use crate::round::{RoundId, Secret, Transcript};
use crate::wire::{Delivery, OtpGrant, OtpRequest, Refusal, Request, Response};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Rounds a distributor keeps; older rounds' OTPs have long expired.
pub const MAX_HELD_ROUNDS: usize = 16;
/// Unexpired OTPs remembered per requester (to never hand out a live OTP twice).
pub const MAX_LIVE_PER_REQUESTER: usize = 1024;
/// Requesters with unexpired OTPs remembered at once.
pub const MAX_TRACKED_REQUESTERS: usize = 65_536;
/// Counters tried before giving up on finding an OTP distinct from the live ones.
const MAX_COLLISION_RETRIES: u32 = 64;

#[derive(Debug)]
struct Held {
    transcript: Transcript,
    secret: Secret,
}

#[derive(Debug)]
pub struct Distributor {
    me: PeerId,
    mesh: Arc<MeshConfig>,
    rounds: BTreeMap<RoundId, Held>,
    counters: HashMap<(RoundId, PeerId), u64>,
    /// Per requester: (otp value, expiry) of OTPs still live.
    live: HashMap<PeerId, VecDeque<(u64, Millis)>>,
}

impl Distributor {
    /// `rounds` and `counters` come from the node's store after a restart.
    pub fn new(
        me: PeerId,
        mesh: Arc<MeshConfig>,
        rounds: Vec<(Transcript, Secret)>,
        counters: Vec<(RoundId, PeerId, u64)>,
    ) -> Distributor {
        let mut d = Distributor {
            me,
            mesh,
            rounds: BTreeMap::new(),
            counters: HashMap::new(),
            live: HashMap::new(),
        };
        for (transcript, secret) in rounds {
            d.rounds
                .insert(transcript.round, Held { transcript, secret });
        }
        d.prune();
        for (round, requester, next) in counters {
            if d.rounds.contains_key(&round) {
                d.counters.insert((round, requester), next);
            }
        }
        d
    }

    pub fn latest_round(&self) -> Option<RoundId> {
        self.rounds.keys().next_back().copied()
    }

    fn prune(&mut self) {
        while self.rounds.len() > MAX_HELD_ROUNDS {
            if let Some((old, _)) = self.rounds.pop_first() {
                self.counters.retain(|(r, _), _| *r != old);
            }
        }
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
            Some(held) if held.transcript.commitment == t.commitment => return vec![ack],
            Some(_) => {
                let refusal = Refusal::Invalid(format!(
                    "round {} is already held with another commitment",
                    t.round
                ));
                return refuse(peer, id, request, refusal);
            }
            None => {}
        }
        if self.latest_round().is_some_and(|latest| latest > t.round)
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
        self.prune();
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
        if !self.mesh.is_requester(&peer) {
            return refuse(
                peer,
                id,
                request,
                Refusal::Unauthorised(format!("{peer} is not a listed requester")),
            );
        }
        let round = match ask.round {
            Some(r) if self.rounds.contains_key(&r) => r,
            Some(r) => return refuse(peer, id, request, Refusal::UnknownRound(r)),
            None => match self.latest_round() {
                Some(r) => r,
                None => return refuse(peer, id, request, Refusal::NoRound),
            },
        };
        let ephemeral = Ephemeral::new(rng);
        let salt_key = match ephemeral.salt_key(&ask.requester_key, &peer, &self.me) {
            Ok(k) => k,
            Err(e) => return refuse(peer, id, request, Refusal::Invalid(e.to_string())),
        };
        if !self.live.contains_key(&peer) && self.live.len() >= MAX_TRACKED_REQUESTERS {
            self.live.retain(|_, l| l.iter().any(|(_, exp)| *exp > now));
            if self.live.len() >= MAX_TRACKED_REQUESTERS {
                let refusal =
                    Refusal::Unavailable("too many requesters with live OTPs; try later".into());
                return refuse(peer, id, request, refusal);
            }
        }
        let digits = self.mesh.settings.digits;
        let secret = &self.rounds[&round].secret;
        let live = self.live.entry(peer).or_default();
        live.retain(|(_, exp)| *exp > now);
        let counter = self.counters.entry((round, peer)).or_insert(0);
        let mut tries = 0;
        let (otp, used) = loop {
            let used = *counter;
            *counter += 1;
            let otp = otp::issue(secret, round, &peer, used, digits);
            tries += 1;
            if !live.iter().any(|(v, _)| *v == otp.value()) || tries >= MAX_COLLISION_RETRIES {
                break (otp, used);
            }
        };
        let next = *counter;
        let expires_at_ms = now + self.mesh.settings.otp_expiry_ms;
        if live.len() >= MAX_LIVE_PER_REQUESTER {
            live.pop_front();
        }
        live.push_back((otp.value(), expires_at_ms));
        let mut salt = [0u8; SALT_BYTES];
        rng.fill_bytes(&mut salt);
        let grant = OtpGrant {
            round,
            counter: used,
            digits,
            salted: salt_key.salt(otp, &salt),
            salt,
            distributor_key: ephemeral.public(),
            expires_at_ms,
        };
        vec![
            Action::Persist(Record::Counter {
                round,
                requester: peer,
                next,
            }),
            Action::Reply {
                to: id,
                response: Response::Otp(grant),
            },
            Action::Emit(Event::OtpIssued {
                round,
                requester: peer,
                counter: used,
                expires_at_ms,
            }),
        ]
    }
}

impl Role for Distributor {
    fn request(
        &mut self,
        now: Millis,
        peer: PeerId,
        id: InboundId,
        request: Request,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        match &request {
            Request::Deliver(d) => self.deliver(peer, id, &request, d),
            Request::Otp(ask) => self.issue(now, peer, id, &request, ask, rng),
            Request::PublicKey => refuse(
                peer,
                id,
                &request,
                Refusal::WrongRole(request.kind().into()),
            ),
        }
    }
}
