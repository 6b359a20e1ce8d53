//! The generator: opens rounds, takes one phrase per client, seals, delivers, publishes transcripts.
//!
//! ```text
//! tick ─► no round open and interval passed ─► Persist(Opened) · Publish(Open)
//! phrase ─► checks ─► Decrypt(job) ──► decrypted ─► quorum reached? ─► seal
//! tick ─► deadline passed ─► ≥ minimum opened? seal : fail
//! seal ─► Persist(Round) · Publish(Sealed) · Send(Deliver) to every distributor until acknowledged
//! ```

use super::outbox::Outbox;
use super::{
    refuse, Action, Control, DecryptJob, Event, Millis, PhraseRefusal, Record, Role, Tags, Verdict,
};
use crate::digest::Digest32;
use crate::mesh::{Lookup, MeshConfig};
use crate::phrase::{ClientId, Phrase};
use crate::role::Opened;
use crate::role::{Answer, Heard, Inbound, Rng};
use crate::round::{self, RoundId, Secret, Transcript};
use crate::seal::PublicKey;
use crate::wire::{Delivery, Gossip, PhraseSubmission, Request, Response, RoundFailure, RoundOpen};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How often an open round is announced again, for nodes that joined late.
pub const REANNOUNCE_MS: Millis = 2_000;
/// Wait before retrying a delivery that failed.
pub const DELIVERY_RETRY_MS: Millis = 1_000;
/// Rounds whose delivery is still being retried; older ones are abandoned.
pub const MAX_PENDING_DELIVERIES: usize = 8;

#[derive(Debug)]
enum Slot {
    Opening,
    Opened(Phrase),
    Failed,
}

#[derive(Debug)]
struct OpenRound {
    announce: RoundOpen,
    slots: BTreeMap<ClientId, (Digest32, Slot)>,
    announced_at: Millis,
}

impl OpenRound {
    fn opened(&self) -> usize {
        self.slots
            .values()
            .filter(|(_, s)| matches!(s, Slot::Opened(_)))
            .count()
    }
}

#[derive(Debug)]
pub struct Generator {
    me: PeerId,
    mesh: Arc<MeshConfig>,
    lookup: Lookup,
    key: PublicKey,
    next_round: RoundId,
    head: Digest32,
    open: Option<OpenRound>,
    next_open_at: Millis,
    deliveries: Outbox,
    tags: Tags,
    /// Open rounds only when told to ([`Control::OpenRound`]), not on the interval.
    manual: bool,
}

impl Generator {
    /// `last_opened` and `last_sealed` come from the node's store after a restart.
    pub fn new(
        me: PeerId,
        mesh: Arc<MeshConfig>,
        key: PublicKey,
        last_opened: Option<RoundId>,
        last_sealed: Option<(Transcript, Secret)>,
    ) -> Generator {
        let after = |r: Option<RoundId>| r.map_or(1, |r| r.0 + 1);
        let sealed_round = last_sealed.as_ref().map(|(t, _)| t.round);
        let next_round = RoundId(after(last_opened).max(after(sealed_round)));
        let head = last_sealed
            .as_ref()
            .map_or(Digest32::ZERO, |(t, _)| t.commitment);
        let mut generator = Generator {
            me,
            lookup: Lookup::of(&mesh),
            mesh,
            key,
            next_round,
            head,
            open: None,
            next_open_at: 0,
            deliveries: Outbox::new("deliver", DELIVERY_RETRY_MS, MAX_PENDING_DELIVERIES),
            tags: Tags::default(),
            manual: false,
        };
        // A restart may have cut a delivery short: deliver the chain head again (distributors
        // acknowledge a round they already hold). Queued only: the first tick sends it.
        if let Some((transcript, secret)) = last_sealed {
            let _no_distributors_listed =
                generator.insert_delivery(Delivery { transcript, secret }, 0);
        }
        generator
    }

    /// Opens rounds only on [`Control::OpenRound`] (scenario replays).
    pub fn manual(mut self) -> Generator {
        self.manual = true;
        self
    }

    pub fn current_round(&self) -> Option<RoundId> {
        self.open.as_ref().map(|o| o.announce.round)
    }

    fn open_round(&mut self, now: Millis) -> Vec<Action> {
        let round = self.next_round;
        self.next_round = RoundId(round.0 + 1);
        let settings = &self.mesh.settings;
        let announce = RoundOpen {
            round,
            key_fingerprint: self.key.fingerprint(),
            quorum: self.mesh.quorum(),
            minimum: self.mesh.minimum(),
            deadline_ms: now + settings.deadline_ms,
            prev_commitment: self.head,
        };
        let event = Event::RoundOpened {
            round,
            quorum: announce.quorum,
            deadline_ms: announce.deadline_ms,
        };
        self.open = Some(OpenRound {
            announce: announce.clone(),
            slots: BTreeMap::new(),
            announced_at: now,
        });
        vec![
            Action::Persist(Record::Opened(round)),
            Action::Publish(Gossip::Open(announce)),
            Action::Emit(event),
        ]
    }

    fn on_phrase(&mut self, source: PeerId, p: &PhraseSubmission) -> (Verdict, Vec<Action>) {
        let Some(open) = self.open.as_mut().filter(|o| o.announce.round == p.round) else {
            // Late or early: not necessarily the sender's fault, so no penalty, but say so.
            let reason = format!("phrase for round {}, which is not open", p.round);
            return refused(p, source, PhraseRefusal::NotOpen, Verdict::Ignore(reason));
        };
        let reject = |kind, reason: String| refused(p, source, kind, Verdict::Reject(reason));
        if p.key_fingerprint != self.key.fingerprint() {
            return reject(
                PhraseRefusal::WrongKey,
                format!(
                    "sealed under key {}, not this generator's",
                    p.key_fingerprint
                ),
            );
        }
        if p.ciphertext.len() != self.key.ciphertext_len() {
            return reject(
                PhraseRefusal::WrongLength,
                format!(
                    "ciphertext is {} bytes; this generator's key takes {}",
                    p.ciphertext.len(),
                    self.key.ciphertext_len()
                ),
            );
        }
        if open.slots.contains_key(&p.client) {
            // Said, but not penalised: a contributor restarted within the round forgets it has
            // already sent (only this generator knows), and gossip score would graylist it.
            let reason = format!("second phrase for client {} in round {}", p.client, p.round);
            return refused(p, source, PhraseRefusal::Duplicate, Verdict::Ignore(reason));
        }
        open.slots.insert(
            p.client,
            (round::ciphertext_hash(&p.ciphertext), Slot::Opening),
        );
        let job = DecryptJob {
            round: p.round,
            client: p.client,
            ciphertext: p.ciphertext.clone(),
            share: None,
        };
        (Verdict::Accept, vec![Action::Decrypt(job)])
    }

    fn seal(&mut self, now: Millis) -> Vec<Action> {
        let Some(open) = self.open.take() else {
            return Vec::new();
        };
        let round = open.announce.round;
        let mut phrases = BTreeMap::new();
        let mut included = Vec::new();
        for (client, (hash, slot)) in open.slots {
            if let Slot::Opened(phrase) = slot {
                phrases.insert(client, phrase);
                included.push(round::Inclusion {
                    client,
                    ciphertext_hash: hash,
                });
            }
        }
        let secret = round::derive_secret(
            round,
            &self.head,
            &phrases,
            self.mesh.settings.hash_iterations,
        );
        let transcript = Transcript {
            round,
            generator: self.me,
            key_fingerprint: self.key.fingerprint(),
            included,
            prev_commitment: self.head,
            commitment: secret.commitment(round),
            sealed_at_ms: now,
            threshold: None,
        };
        self.head = transcript.commitment;
        self.next_open_at = now + self.mesh.settings.round_interval_ms;
        let event = Event::RoundSealed {
            round,
            commitment: transcript.commitment,
            prev_commitment: transcript.prev_commitment,
            included: transcript.clients(),
        };
        let mut actions = vec![
            Action::Persist(Record::Round {
                transcript: transcript.clone(),
                secret: secret.clone(),
            }),
            Action::Publish(Gossip::Sealed(transcript.clone())),
            Action::Emit(event),
        ];
        actions.extend(self.queue_delivery(Delivery { transcript, secret }, now));
        actions
    }

    fn fail(&mut self, now: Millis, reason: String) -> Vec<Action> {
        let Some(open) = self.open.take() else {
            return Vec::new();
        };
        let round = open.announce.round;
        self.next_open_at = now + self.mesh.settings.round_interval_ms;
        vec![
            Action::Publish(Gossip::Failed(RoundFailure {
                round,
                reason: reason.clone(),
            })),
            Action::Emit(Event::RoundFailed { round, reason }),
        ]
    }

    fn queue_delivery(&mut self, delivery: Delivery, now: Millis) -> Vec<Action> {
        let mut actions = self.insert_delivery(delivery, now);
        actions.extend(self.deliveries.due(now, &mut self.tags));
        actions
    }

    /// Queues a delivery to every distributor (the oldest past the bound is abandoned).
    fn insert_delivery(&mut self, delivery: Delivery, now: Millis) -> Vec<Action> {
        let round = delivery.transcript.round;
        let peers = self.mesh.distributors.iter().map(|m| m.peer_id).collect();
        let request = Request::Deliver(Box::new(delivery));
        self.deliveries.push(round, request, peers, now)
    }
}

/// A phrase turned away with `verdict` (Ignore or Reject), and the event that says why.
fn refused(
    p: &PhraseSubmission,
    source: PeerId,
    kind: PhraseRefusal,
    verdict: Verdict,
) -> (Verdict, Vec<Action>) {
    let reason = match &verdict {
        Verdict::Ignore(r) | Verdict::Reject(r) => r.clone(),
        Verdict::Accept => String::new(),
    };
    let event = Event::PhraseRejected {
        round: p.round,
        client: p.client,
        peer: source,
        kind,
        reason,
    };
    (verdict, vec![Action::Emit(event)])
}

impl Role for Generator {
    fn tick(&mut self, now: Millis, _rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let mut actions = Vec::new();
        match &mut self.open {
            Some(open) if now >= open.announce.deadline_ms => {
                let (have, minimum) = (open.opened(), open.announce.minimum as usize);
                if have >= minimum && have > 0 {
                    actions.extend(self.seal(now));
                } else {
                    let reason =
                        format!("deadline passed with {have} of the minimum {minimum} phrases");
                    actions.extend(self.fail(now, reason));
                }
            }
            Some(open) if now >= open.announced_at + REANNOUNCE_MS => {
                open.announced_at = now;
                actions.push(Action::Publish(Gossip::Open(open.announce.clone())));
            }
            Some(_) => {}
            None if !self.manual && now >= self.next_open_at => {
                actions.extend(self.open_round(now))
            }
            None => {}
        }
        actions.extend(self.deliveries.due(now, &mut self.tags));
        actions
    }

    fn gossip(&mut self, _now: Millis, heard: Heard, _rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        let Heard { source, message } = heard;
        match message {
            Gossip::Phrase(p) => self.on_phrase(source, p),
            _ => (Verdict::Accept, Vec::new()),
        }
    }

    fn request(&mut self, _now: Millis, asked: Inbound, _rng: &mut dyn Rng) -> Vec<Action> {
        let Inbound { peer, id, request } = asked;
        match request {
            Request::PublicKey => {
                vec![Action::Reply {
                    to: id,
                    response: Response::PublicKey(self.key.spki_der().to_vec()),
                }]
            }
            other => refuse(
                peer,
                id,
                &other,
                crate::wire::Refusal::WrongRole(other.kind().into()),
            ),
        }
    }

    fn response(&mut self, now: Millis, answer: Answer, _rng: &mut dyn Rng) -> Vec<Action> {
        let Answer { tag, response, .. } = answer;
        self.deliveries.answered(now, tag, response)
    }

    fn control(&mut self, now: Millis, control: Control) -> Vec<Action> {
        match control {
            Control::OpenRound if self.open.is_none() => self.open_round(now),
            Control::OpenRound => Vec::new(),
        }
    }

    fn decrypted(&mut self, now: Millis, job: DecryptJob, opened: Opened) -> Vec<Action> {
        // A single-mode generator asks for phrases only.
        let Opened::Phrase(phrase) = opened else {
            return Vec::new();
        };
        let Some(open) = self.open.as_mut().filter(|o| o.announce.round == job.round) else {
            return Vec::new();
        };
        let Some((_, slot @ Slot::Opening)) = open.slots.get_mut(&job.client) else {
            return Vec::new();
        };
        let peer = self.lookup.contributor_peer(job.client).unwrap_or(self.me);
        let event = match phrase {
            Some(p) => {
                *slot = Slot::Opened(p);
                Event::PhraseAccepted {
                    round: job.round,
                    client: job.client,
                }
            }
            None => {
                *slot = Slot::Failed;
                // Deliberately vague: the reason never leaves this node, and even here it does not
                // say which check failed.
                Event::PhraseRejected {
                    round: job.round,
                    client: job.client,
                    peer,
                    kind: PhraseRefusal::DidNotOpen,
                    reason: "phrase did not open".into(),
                }
            }
        };
        let mut actions = vec![Action::Emit(event)];
        if open.opened() >= open.announce.quorum as usize {
            actions.extend(self.seal(now));
        }
        actions
    }
}
