//! A contributor in threshold mode: deals a Shamir sharing of a scalar drawn from its phrase, one
//! share sealed to each generator, and answers complaints about its dealing.
//!
//! ```text
//! Open(round) from the coordinator ─► input known? ── no ─► AskInput ─► user_input
//!                                  ─► every generator's key? ── no ─► Send(PublicKey) to each missing
//!                                  ─► phrase ─► s_i ─► Dealing ─► Publish(Deal)
//! Complaints(j, against ∋ me) ─► Publish(Justification: share j in clear, commitments)
//!     (never for `missing`: a generator that missed a dealing fetches it again, so withholding
//!     honest dealings on the network never makes a share public)
//! Sealed(transcript) ─► TranscriptChecked(included?)
//! ```
//! Generator keys come over request-response from each listed generator, which the connection
//! authenticates by PeerId. A key that changed is not a danger: generator j's share then does not
//! open, j complains, and the published answer gives j its share.

use crate::digest::Digest32;
use crate::mesh::MeshConfig;
use crate::phrase::{ClientId, Phrase, UserInput};
use crate::role::{Action, Event, Millis, Role, Tag, Tags, Verdict};
use crate::role::{Answer, Heard, Input, Rng};
use crate::round::RoundId;
use crate::seal::PublicKey;
use crate::threshold::dkg::{contribution_scalar, Dealing};
use crate::threshold::{Index, Params};
use crate::wire::{Complaints, Deal, Gossip, Justification, Request, Response, RoundOpen};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Submitted rounds remembered (to check transcripts and never deal twice).
pub const MAX_REMEMBERED_ROUNDS: usize = 64;

pub struct Contributor {
    client: ClientId,
    input: Option<UserInput>,
    mesh: Arc<MeshConfig>,
    params: Params,
    keys: BTreeMap<Index, PublicKey>,
    key_requests: HashMap<Tag, Index>,
    pending: Option<(RoundOpen, Option<UserInput>)>,
    /// The round dealt in and its dealing, kept to answer complaints until the round ends.
    dealt: Option<(RoundId, Dealing)>,
    submitted: BTreeMap<RoundId, Digest32>,
    /// The newest round whose transcript was checked (the coordinator publishes it more than once).
    checked: RoundId,
    tags: Tags,
}

impl std::fmt::Debug for Contributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "threshold::Contributor({})", self.client)
    }
}

impl Contributor {
    /// Generator j's own dealer, run inside its [`super::Generator`]: its dealer id, its tags
    /// apart from the generator's, and its own RSA key known (it cannot ask itself).
    pub(crate) fn for_generator(
        index: Index,
        key: PublicKey,
        mesh: Arc<MeshConfig>,
    ) -> Option<Contributor> {
        let client = crate::threshold::generator_dealer(index);
        // The phrase's 32 fresh random bytes make the scalar; the input adds nothing.
        let mut dealer = Contributor::new(client, Some(UserInput(0)), mesh)?;
        dealer.keys.insert(index, key);
        dealer.tags = Tags::starting_at(1 << 62);
        Some(dealer)
    }

    /// Whether `tag` is one of this dealer's requests.
    pub(crate) fn owns(&self, tag: Tag) -> bool {
        self.key_requests.contains_key(&tag)
    }

    /// `None` if the mesh is not in threshold mode.
    pub fn new(
        client: ClientId,
        input: Option<UserInput>,
        mesh: Arc<MeshConfig>,
    ) -> Option<Contributor> {
        Some(Contributor {
            client,
            input,
            params: mesh.threshold()?,
            mesh,
            keys: BTreeMap::new(),
            key_requests: HashMap::new(),
            pending: None,
            dealt: None,
            submitted: BTreeMap::new(),
            checked: RoundId(0),
            tags: Tags::default(),
        })
    }

    fn on_open(
        &mut self,
        now: Millis,
        source: PeerId,
        open: &RoundOpen,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        if self.mesh.coordinator() != Some(source)
            || self.submitted.contains_key(&open.round)
            || now > open.deadline_ms
            || self
                .pending
                .as_ref()
                .is_some_and(|(p, _)| p.round >= open.round)
        {
            return Vec::new();
        }
        self.pending = Some((open.clone(), self.input));
        let mut actions = Vec::new();
        if self.input.is_none() {
            actions.push(Action::AskInput { round: open.round });
        }
        actions.extend(self.advance(rng));
        actions
    }

    /// Fetches missing keys, and deals once every key and the input are there.
    fn advance(&mut self, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let Some((open, input)) = &self.pending else {
            return Vec::new();
        };
        let missing: Vec<Index> = self
            .params
            .indices()
            .filter(|j| !self.keys.contains_key(j))
            .collect();
        if !missing.is_empty() {
            let mut actions = Vec::new();
            for j in missing {
                if self.key_requests.values().any(|r| *r == j) {
                    continue;
                }
                let Some(peer) = self.mesh.generator_at(j) else {
                    continue;
                };
                let tag = self.tags.next();
                self.key_requests.insert(tag, j);
                actions.push(Action::Send {
                    peer,
                    tag,
                    request: Request::PublicKey,
                });
            }
            return actions;
        }
        let Some(input) = *input else {
            return Vec::new();
        };
        let (round, client) = (open.round, self.client);
        self.pending = None;
        let phrase = match Phrase::build(input, client, rng) {
            Ok(p) => p,
            Err(e) => {
                let reason = e.to_string();
                return vec![Action::Emit(Event::RoundFailed { round, reason })];
            }
        };
        let scalar =
            zeroize::Zeroizing::new(contribution_scalar(phrase.as_bytes(), round.0, client.0));
        let dealing = Dealing::new(*scalar, self.params, rng);
        let mut shares = Vec::with_capacity(self.params.n as usize);
        for j in self.params.indices() {
            let sealed = match (self.keys.get(&j), dealing.share(j)) {
                (Some(key), Some(share)) => key
                    .seal_share(round, client, j, &share.to_bytes(), rng)
                    .map_err(|e| e.to_string()),
                _ => Err(format!("no key for generator {}", j.0)),
            };
            match sealed {
                Ok(ct) => shares.push(serde_bytes::ByteBuf::from(ct)),
                Err(reason) => return vec![Action::Emit(Event::RoundFailed { round, reason })],
            }
        }
        let digest = Digest32(dealing.commitments.digest());
        let deal = Deal {
            round,
            client,
            commitments: dealing.commitments.to_wire(),
            shares,
            signature: None,
        };
        self.dealt = Some((round, dealing));
        self.submitted.insert(round, digest);
        while self.submitted.len() > MAX_REMEMBERED_ROUNDS {
            self.submitted.pop_first();
        }
        vec![
            Action::Publish(Gossip::Deal(deal)),
            Action::Emit(Event::PhraseSubmitted {
                round,
                client,
                ciphertext_hash: digest,
            }),
        ]
    }

    fn on_complaints(&mut self, c: &Complaints) -> Vec<Action> {
        let Some((round, dealing)) = &self.dealt else {
            return Vec::new();
        };
        if *round != c.round || !c.against.contains(&self.client) {
            return Vec::new();
        }
        let Some(share) = dealing.share(c.index) else {
            return Vec::new();
        };
        // That generator may hold a stale key of ours: fetch it again next round.
        self.keys.remove(&c.index);
        let answer = Justification {
            round: c.round,
            client: self.client,
            index: c.index,
            share: *share.to_bytes(),
            commitments: dealing.commitments.to_wire(),
        };
        vec![
            Action::Publish(Gossip::Justification(answer)),
            Action::Emit(Event::ComplaintAnswered {
                round: c.round,
                client: self.client,
                index: c.index.0,
            }),
        ]
    }
}

impl Role for Contributor {
    fn gossip(&mut self, now: Millis, heard: Heard, rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        let Heard { source, message } = heard;
        let actions = match message {
            Gossip::Open(open) => self.on_open(now, source, open, rng),
            Gossip::Complaints(c) => self.on_complaints(c),
            Gossip::Sealed(t) => {
                if self.dealt.as_ref().is_some_and(|(r, _)| *r <= t.round) {
                    self.dealt = None;
                }
                match self
                    .submitted
                    .get(&t.round)
                    .filter(|_| t.round > self.checked)
                {
                    Some(digest) => {
                        let included = t.includes(self.client, digest);
                        self.checked = t.round;
                        vec![Action::Emit(Event::TranscriptChecked {
                            round: t.round,
                            client: self.client,
                            included,
                        })]
                    }
                    None => Vec::new(),
                }
            }
            Gossip::Failed(f) => {
                if self.dealt.as_ref().is_some_and(|(r, _)| *r == f.round) {
                    self.dealt = None;
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        (Verdict::Accept, actions)
    }

    fn response(&mut self, _now: Millis, answer: Answer, rng: &mut dyn Rng) -> Vec<Action> {
        let (peer, tag, response) = (answer.peer, answer.tag, answer.response);
        let Some(index) = self.key_requests.remove(&tag) else {
            return Vec::new();
        };
        let key = match response {
            Ok(Response::PublicKey(der)) => {
                PublicKey::from_spki_der(&der).map_err(|e| e.to_string())
            }
            other => Err(crate::role::failure_reason(other)),
        };
        match key {
            Ok(key) => {
                self.keys.insert(index, key);
                self.advance(rng)
            }
            Err(reason) => {
                // The next announcement of the round tries again.
                self.pending = None;
                vec![Action::Emit(Event::RequestFailed {
                    peer,
                    request: "public-key".into(),
                    failure: crate::role::Failure::Unreachable,
                    reason,
                })]
            }
        }
    }

    fn user_input(&mut self, _now: Millis, input: Input, rng: &mut dyn Rng) -> Vec<Action> {
        match &mut self.pending {
            Some((open, slot)) if open.round == input.round => {
                *slot = Some(input.value);
                self.advance(rng)
            }
            _ => Vec::new(),
        }
    }
}
