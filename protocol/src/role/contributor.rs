//! The contributor: for each round a listed generator opens, builds a phrase from its user's input,
//! seals it to the generator's key and gossips it; then checks the transcript includes it.
//!
//! ```text
//! Open(round, key fingerprint) ─► input known? ── no ─► AskInput ─► user_input
//!                              ─► key known?   ── no ─► Send(PublicKey) ─► response (fingerprint must match)
//!                              ─► Publish(Phrase)
//! Sealed(transcript) ─► TranscriptChecked(included?)
//! ```

use super::{Action, Event, Millis, Role, Tag, Tags, Verdict};
use crate::digest::Digest32;
use crate::phrase::{ClientId, Phrase, UserInput};
use crate::role::{Answer, Heard, Input, Rng};
use crate::round::{self, RoundId};
use crate::seal::{self, PublicKey};
use crate::wire::{Gossip, PhraseSubmission, Request, Response, RoundOpen};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, HashMap};

/// Submitted rounds remembered (to check transcripts and never submit twice).
pub const MAX_REMEMBERED_ROUNDS: usize = 64;
/// Generator keys cached.
pub const MAX_CACHED_KEYS: usize = 8;

#[derive(Debug)]
pub struct Contributor {
    client: ClientId,
    /// A fixed input for every round; `None`: ask the user each round.
    input: Option<UserInput>,
    keys: HashMap<Digest32, PublicKey>,
    /// The round waiting for its input or its key, with the generator that opened it.
    pending: Option<(RoundOpen, PeerId, Option<UserInput>)>,
    key_request: Option<Tag>,
    submitted: BTreeMap<RoundId, Digest32>,
    tags: Tags,
}

impl Contributor {
    pub fn new(client: ClientId, input: Option<UserInput>) -> Contributor {
        Contributor {
            client,
            input,
            keys: HashMap::new(),
            pending: None,
            key_request: None,
            submitted: BTreeMap::new(),
            tags: Tags::default(),
        }
    }

    fn on_open(
        &mut self,
        now: Millis,
        generator: PeerId,
        open: &RoundOpen,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        if self.submitted.contains_key(&open.round) || now > open.deadline_ms {
            return Vec::new();
        }
        if let Some((pending, _, _)) = &self.pending {
            if pending.round >= open.round {
                return Vec::new();
            }
        }
        self.pending = Some((open.clone(), generator, self.input));
        let mut actions = Vec::new();
        if self.input.is_none() {
            actions.push(Action::AskInput { round: open.round });
        }
        actions.extend(self.advance(rng));
        actions
    }

    /// Moves the pending round on: fetches the key if needed (while the user types), and submits
    /// once both the key and the input are there.
    fn advance(&mut self, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let Some((open, generator, input)) = &self.pending else {
            return Vec::new();
        };
        let Some(key) = self.keys.get(&open.key_fingerprint) else {
            if self.key_request.is_some() {
                return Vec::new();
            }
            let tag = self.tags.next();
            self.key_request = Some(tag);
            return vec![Action::Send {
                peer: *generator,
                tag,
                request: Request::PublicKey,
            }];
        };
        let Some(input) = input else {
            return Vec::new();
        };
        let (round, client) = (open.round, self.client);
        let sealed = Phrase::build(*input, client, rng)
            .map_err(|e| e.to_string())
            .and_then(|phrase| {
                key.seal(round, client, &phrase, rng)
                    .map_err(|e| e.to_string())
            });
        let fingerprint = open.key_fingerprint;
        self.pending = None;
        let ciphertext = match sealed {
            Ok(ct) => ct,
            Err(reason) => return vec![Action::Emit(Event::RoundFailed { round, reason })],
        };
        let hash = round::ciphertext_hash(&ciphertext);
        self.submitted.insert(round, hash);
        while self.submitted.len() > MAX_REMEMBERED_ROUNDS {
            self.submitted.pop_first();
        }
        let submission = PhraseSubmission {
            round,
            client,
            key_fingerprint: fingerprint,
            ciphertext,
        };
        vec![
            Action::Publish(Gossip::Phrase(submission)),
            Action::Emit(Event::PhraseSubmitted {
                round,
                client,
                ciphertext_hash: hash,
            }),
        ]
    }
}

impl Role for Contributor {
    fn gossip(&mut self, now: Millis, heard: Heard, rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        let Heard { source, message } = heard;
        let actions = match message {
            Gossip::Open(open) => self.on_open(now, source, open, rng),
            Gossip::Sealed(t) => match self.submitted.get(&t.round) {
                Some(hash) => {
                    let included = t.includes(self.client, hash);
                    vec![Action::Emit(Event::TranscriptChecked {
                        round: t.round,
                        client: self.client,
                        included,
                    })]
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        (Verdict::Accept, actions)
    }

    fn response(&mut self, _now: Millis, answer: Answer, rng: &mut dyn Rng) -> Vec<Action> {
        let (peer, tag, response) = (answer.peer, answer.tag, answer.response);
        if self.key_request != Some(tag) {
            return Vec::new();
        }
        self.key_request = None;
        let Some((open, _, _)) = &self.pending else {
            return Vec::new();
        };
        let expected = open.key_fingerprint;
        let key = match response {
            Ok(Response::PublicKey(der)) => {
                PublicKey::from_spki_der(&der).map_err(|e| e.to_string())
            }
            other => Err(super::failure_reason(other)),
        };
        match key {
            Ok(key) if key.fingerprint() == expected => {
                if self.keys.len() >= MAX_CACHED_KEYS {
                    self.keys.clear();
                }
                self.keys.insert(expected, key);
                self.advance(rng)
            }
            Ok(key) => {
                self.pending = None;
                let found = seal::fingerprint_of(key.spki_der());
                vec![Action::Emit(Event::KeyMismatch {
                    generator: peer,
                    expected,
                    found,
                })]
            }
            Err(reason) => {
                // The next announcement of the round tries again.
                self.pending = None;
                vec![Action::Emit(Event::RequestFailed {
                    peer,
                    request: "public-key".into(),
                    failure: super::Failure::Unreachable,
                    reason,
                })]
            }
        }
    }

    fn user_input(&mut self, _now: Millis, input: Input, rng: &mut dyn Rng) -> Vec<Action> {
        match &mut self.pending {
            Some((open, _, slot)) if open.round == input.round => {
                *slot = Some(input.value);
                self.advance(rng)
            }
            _ => Vec::new(),
        }
    }
}
