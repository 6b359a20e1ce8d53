//! A generator in threshold mode: takes its share of every dealing, complains about bad ones, and
//! once the round is sealed holds k_j and hands it to its distributor. Generator 1 also coordinates:
//! it opens rounds, proposes the dealings and seals the transcript.
//!
//! Every generator also deals into every round, as dealer `GENERATOR_DEALER_BASE + j` (an
//! embedded [`Contributor`]), and a round seals only with the dealings of at least t generators:
//! with at most t − 1 corrupt generators one honest dealing is always in the key, so no coalition
//! of contributors (however many client ids it holds, however it delays honest gossip) and fewer
//! than t generators knows k.
//!
//! ```text
//! tick (coordinator) ─► Persist(Opened) · Publish(Open)
//! round taken up ─► own dealer deals ─► Publish(Deal) (and taken here like any other)
//! Deal ─► checks ─► Decrypt(own share) ─► decrypted(Opened::Share)
//! coordinator: quorum of contributor dealings and all n generators' (or the deadline with the
//!     minimum and t generators') ─► Publish(Proposal)
//! Proposal ─► dealings missed here: Send(Dealing) to the coordinator (never answered in clear)
//! proposal + complaint_offset_ms, own shares decided ─► Publish(Complaints: against, missing)
//!     (a fixed offset: the time says nothing about which ciphertext opened)
//! Justification for own index ─► share checked against the commitments ─► replaces the bad one
//! coordinator: ready (Complaints) from at least t generators, all n or the window closed, every
//!     complaint answered ─► Q = proposal − unanswered − missing anywhere, with ≥ t generator
//!     dealings ─► Publish(Sealed, round key signed by the coordinator) (or Failed), and again
//!     RESEAL_COPIES times, RESEAL_MS apart, until the next round opens
//! Sealed ─► every dealing of Q has a good share here? ─► k_j, G·k_j == K_j
//!     ─► Persist(Round{transcript, k_j}) ─► Send(Handover) to distributor j until acknowledged
//! ```

use crate::digest::Digest32;
use crate::mesh::MeshConfig;
use crate::phrase::ClientId;
use crate::role::outbox::Outbox;
use crate::role::Opened;
use crate::role::{
    refuse, Action, Control, DecryptJob, Event, InboundId, Millis, PhraseRefusal, Record, Role,
    Tag, Tags, Verdict,
};
use crate::role::{Answer, Heard, Inbound, Rng};
use crate::round::{Inclusion, RoundId, Secret, ThresholdKey, Transcript};
use crate::seal::PublicKey;
use crate::threshold::dkg::{self, Received};
use crate::threshold::eval::KeyShare;
use crate::threshold::poly::{Pair, SharePair};
use crate::threshold::{dealing_generator, Index, Params};
use crate::wire::{
    Complaints, Deal, DealingRequest, Gossip, Handover, Justification, Proposal, Refusal, Request,
    Response, RoundFailure, RoundOpen,
};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::Contributor;

/// How often an open round is announced again.
pub const REANNOUNCE_MS: Millis = 2_000;
/// The coordinator publishes a sealed transcript this many times more, `RESEAL_MS` apart (gossip
/// does not retransmit: a generator that misses the transcript cannot hand its share over).
pub const RESEAL_COPIES: u32 = 4;
/// Between two copies of a sealed transcript.
pub const RESEAL_MS: Millis = 1_000;
/// Wait before retrying a handover that failed.
pub const HANDOVER_RETRY_MS: Millis = 1_000;
/// Handovers still being retried; older ones are abandoned.
pub const MAX_PENDING_HANDOVERS: usize = 8;

enum Share {
    Opening,
    Opened(SharePair),
    Failed,
}

struct Dealt {
    commitments: Pair,
    digest: Digest32,
    share: Share,
}

struct Round {
    open: RoundOpen,
    announced_at: Millis,
    dealings: BTreeMap<ClientId, Dealt>,
    /// The coordinator's proposal and when it came.
    proposal: Option<(Vec<Inclusion>, Millis)>,
    /// This generator's complaints, once published.
    complained: Option<BTreeSet<ClientId>>,
    /// Everyone's complaints (the coordinator decides on them).
    complaints: BTreeMap<Index, BTreeSet<ClientId>>,
    /// Everyone's missed dealings (left out of the round, never answered in clear).
    missing: BTreeMap<Index, BTreeSet<ClientId>>,
    /// Coordinator: the dealings as gossiped, for generators that missed one.
    deals: BTreeMap<ClientId, Deal>,
    /// Complaints answered with a share that matches the commitments.
    answered: BTreeSet<(ClientId, Index)>,
    /// Commitments learnt from justifications, for dealings this generator never received.
    justified_commitments: BTreeMap<ClientId, Pair>,
    /// The sealed transcript, while a share it needs is still on its way (and since when).
    sealed: Option<(Transcript, Millis)>,
}

impl Round {
    fn new(open: RoundOpen, now: Millis) -> Round {
        Round {
            open,
            announced_at: now,
            dealings: BTreeMap::new(),
            proposal: None,
            complained: None,
            complaints: BTreeMap::new(),
            missing: BTreeMap::new(),
            deals: BTreeMap::new(),
            answered: BTreeSet::new(),
            justified_commitments: BTreeMap::new(),
            sealed: None,
        }
    }

    fn id(&self) -> RoundId {
        self.open.round
    }

    /// Dealings in hand: (contributors', generators').
    fn counts(&self) -> (usize, usize) {
        let generators = self
            .dealings
            .keys()
            .filter(|c| dealing_generator(**c).is_some())
            .count();
        (self.dealings.len() - generators, generators)
    }

    fn commitments_of(&self, client: ClientId) -> Option<&Pair> {
        self.dealings
            .get(&client)
            .map(|d| &d.commitments)
            .or_else(|| self.justified_commitments.get(&client))
    }
}

/// Why a generator cannot take its part yet, or at all.
enum Missing {
    /// A share still being decrypted here: only this node's CPU is in the way.
    Opening(String),
    /// An answer to a complaint may still be on its way.
    Wait(String),
    Never(String),
}

/// How much longer than `complaint_ms` a sealed round waits for this node's own decryptions.
const OPENING_GRACE_WINDOWS: u64 = 10;

/// k_j for transcript `t`: every qualified dealing's share must be here and good, the transcript's
/// public key the sum of their commitments, and G·k_j = K_j.
fn key_share(
    round: &Round,
    t: &Transcript,
    index: Index,
    params: Params,
    coordinator: &PeerId,
) -> Result<KeyShare, Missing> {
    t.check_round_key(coordinator, params)
        .map_err(|e| Missing::Never(format!("the transcript's round key: {e}")))?;
    let public = t
        .threshold
        .as_ref()
        .and_then(|k| k.key())
        .ok_or_else(|| Missing::Never("the transcript carries no usable public key".into()))?;
    let complained = round.complained.clone().unwrap_or_default();
    let mut k = SharePair::zero();
    let mut sum: Option<Pair> = None;
    for q in &t.included {
        let Some(d) = round.dealings.get(&q.client) else {
            return Err(Missing::Wait(format!(
                "no share of client {}'s dealing",
                q.client
            )));
        };
        if d.digest != q.ciphertext_hash {
            return Err(Missing::Never(format!(
                "client {}'s dealing here is not the one sealed",
                q.client
            )));
        }
        let answered = round.answered.contains(&(q.client, index));
        match &d.share {
            Share::Opened(s) if !complained.contains(&q.client) || answered => k.add(s),
            Share::Opening => {
                return Err(Missing::Opening(format!(
                    "client {}'s share is still opening",
                    q.client
                )))
            }
            _ => {
                return Err(Missing::Wait(format!(
                    "client {}'s share to this generator is bad and was not answered",
                    q.client
                )))
            }
        }
        sum = Some(match sum {
            None => d.commitments.clone(),
            Some(s) => s.add(&d.commitments),
        });
    }
    if sum.as_ref() != Some(&public.commitments) {
        return Err(Missing::Never(
            "the transcript's public key is not the sum of its dealings".into(),
        ));
    }
    let k = KeyShare::new(index, k);
    if !public.holds(&k) {
        return Err(Missing::Never(
            "the key share does not match the public key".into(),
        ));
    }
    Ok(k)
}

pub struct Generator {
    me: PeerId,
    /// Signs the round keys this generator seals as coordinator.
    identity: libp2p_identity::Keypair,
    index: Index,
    params: Params,
    mesh: Arc<MeshConfig>,
    key: PublicKey,
    coordinator: bool,
    next_round: RoundId,
    /// The newest round taken up (opened, announced or proposed); older ones are never revived.
    seen_round: RoundId,
    /// Dealings that came before their round's announcement (gossip does not keep order across
    /// senders), replayed when the round is taken up.
    early: Vec<(PeerId, Deal)>,
    head: Digest32,
    round: Option<Round>,
    next_open_at: Millis,
    handovers: Outbox,
    tags: Tags,
    manual: bool,
    /// This generator's own dealing into each round.
    dealer: Contributor,
    /// The newest round the dealer was given.
    dealt_into: RoundId,
    /// Dealings asked of the coordinator, by tag.
    fetches: HashMap<Tag, (RoundId, ClientId)>,
    /// The coordinator's last sealed transcript, published again until `RESEAL_COPIES` more
    /// copies are out or the next round opens: (transcript, next copy at, copies left).
    resealing: Option<(Transcript, Millis, u32)>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "threshold::Generator({}, {:?})",
            self.index.0, self.params
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("this node ({0}) is not a listed generator of the threshold mesh")]
pub struct NotShareholder(PeerId);

impl Generator {
    /// `last_opened` and `last_sealed` (the transcript and this generator's key share) come from
    /// the store after a restart; the share is handed over again.
    pub fn new(
        identity: libp2p_identity::Keypair,
        mesh: Arc<MeshConfig>,
        key: PublicKey,
        last_opened: Option<RoundId>,
        last_sealed: Option<(Transcript, Secret)>,
    ) -> Result<Generator, NotShareholder> {
        let me = identity.public().to_peer_id();
        let (Some(params), Some(index)) = (mesh.threshold(), mesh.generator_index(&me)) else {
            return Err(NotShareholder(me));
        };
        let dealer = Contributor::for_generator(index, key.clone(), mesh.clone())
            .ok_or(NotShareholder(me))?;
        let after = |r: Option<RoundId>| r.map_or(1, |r| r.0 + 1);
        let sealed_round = last_sealed.as_ref().map(|(t, _)| t.round);
        let next_round = RoundId(after(last_opened).max(after(sealed_round)));
        let mut generator = Generator {
            me,
            identity,
            index,
            params,
            coordinator: mesh.coordinator() == Some(me),
            mesh,
            key,
            next_round,
            seen_round: RoundId(next_round.0 - 1),
            early: Vec::new(),
            head: last_sealed
                .as_ref()
                .map_or(Digest32::ZERO, |(t, _)| t.commitment),
            round: None,
            next_open_at: 0,
            handovers: Outbox::new("handover", HANDOVER_RETRY_MS, MAX_PENDING_HANDOVERS),
            tags: Tags::default(),
            manual: false,
            dealer,
            dealt_into: RoundId(0),
            fetches: HashMap::new(),
            resealing: None,
        };
        // A restart may have cut the handover short: hand the chain head over again (the
        // distributor acknowledges a round it already holds). Queued only: the first tick sends it.
        if let Some((transcript, share)) = last_sealed {
            let _nothing_abandoned = generator.queue_handover(transcript, share, 0);
        }
        Ok(generator)
    }

    /// Opens rounds only on [`Control::OpenRound`] (scenario replays).
    pub fn manual(mut self) -> Generator {
        self.manual = true;
        self
    }

    pub fn current_round(&self) -> Option<RoundId> {
        self.round.as_ref().map(Round::id)
    }

    fn open_round(&mut self, now: Millis) -> Vec<Action> {
        self.resealing = None;
        let round = self.next_round;
        self.next_round = RoundId(round.0 + 1);
        self.seen_round = round;
        let announce = RoundOpen {
            round,
            key_fingerprint: self.key.fingerprint(),
            quorum: self.mesh.quorum(),
            minimum: self.mesh.minimum(),
            deadline_ms: now + self.mesh.settings.deadline_ms,
            prev_commitment: self.head,
        };
        let event = Event::RoundOpened {
            round,
            quorum: announce.quorum,
            deadline_ms: announce.deadline_ms,
        };
        self.round = Some(Round::new(announce.clone(), now));
        vec![
            Action::Persist(Record::Opened(round)),
            Action::Publish(Gossip::Open(announce)),
            Action::Emit(event),
        ]
    }

    fn on_open(&mut self, now: Millis, source: PeerId, open: &RoundOpen) -> Vec<Action> {
        if self.coordinator || self.mesh.coordinator() != Some(source) {
            return Vec::new();
        }
        self.adopt(now, open.clone())
    }

    /// Takes up a round the coordinator announced (or proposed, if the announcement was missed),
    /// with the dealings that came early.
    fn adopt(&mut self, now: Millis, open: RoundOpen) -> Vec<Action> {
        if open.round <= self.seen_round {
            return Vec::new();
        }
        self.seen_round = open.round;
        let mut actions = vec![Action::Emit(Event::RoundOpened {
            round: open.round,
            quorum: open.quorum,
            deadline_ms: open.deadline_ms,
        })];
        self.round = Some(Round::new(open, now));
        let round = self.seen_round;
        for (source, deal) in std::mem::take(&mut self.early) {
            if deal.round == round {
                actions.extend(self.on_deal(now, source, &deal).1);
            }
        }
        actions
    }

    fn on_deal(&mut self, now: Millis, source: PeerId, deal: &Deal) -> (Verdict, Vec<Action>) {
        let refused = |kind, verdict: Verdict| {
            let reason = match &verdict {
                Verdict::Ignore(r) | Verdict::Reject(r) => r.clone(),
                Verdict::Accept => String::new(),
            };
            let event = Event::PhraseRejected {
                round: deal.round,
                client: deal.client,
                peer: source,
                kind,
                reason,
            };
            (verdict, vec![Action::Emit(event)])
        };
        // After the proposal, only the proposed dealings are still wanted (gossip can bring one
        // here after the proposal that names it).
        let wanted = |r: &Round| match &r.proposal {
            None => true,
            Some((proposed, _)) => {
                r.complained.is_none() && proposed.iter().any(|p| p.client == deal.client)
            }
        };
        let Some(round) = self
            .round
            .as_mut()
            .filter(|r| r.id() == deal.round && wanted(r))
        else {
            if deal.round > self.seen_round && !self.coordinator {
                // Perhaps only early: kept (for the newest round only, one per client, bounded)
                // until it opens.
                if self.early.iter().any(|(_, d)| d.round > deal.round) {
                    return (Verdict::Accept, Vec::new());
                }
                self.early
                    .retain(|(_, d)| d.round == deal.round && d.client != deal.client);
                if self.early.len() < crate::round::MAX_ROUND_CONTRIBUTORS {
                    self.early.push((source, deal.clone()));
                }
                return (Verdict::Accept, Vec::new());
            }
            let reason = format!("dealing for round {}, which is not open", deal.round);
            return refused(PhraseRefusal::NotOpen, Verdict::Ignore(reason));
        };
        let commitments = match Pair::from_wire(&deal.commitments)
            .and_then(|c| c.check_degree(self.params).map(|()| c))
        {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("dealing's commitments: {e}");
                return refused(PhraseRefusal::WrongLength, Verdict::Reject(reason));
            }
        };
        if deal.shares.len() != self.params.n as usize {
            let reason = format!(
                "dealing has {} shares; the mesh has {} generators",
                deal.shares.len(),
                self.params.n
            );
            return refused(PhraseRefusal::WrongLength, Verdict::Reject(reason));
        }
        let mine = &deal.shares[self.index.0 as usize - 1];
        if mine.len() != self.key.ciphertext_len() {
            let reason = format!(
                "share for generator {} is {} bytes; its key takes {}",
                self.index.0,
                mine.len(),
                self.key.ciphertext_len()
            );
            return refused(PhraseRefusal::WrongLength, Verdict::Reject(reason));
        }
        let digest = Digest32(commitments.digest());
        if let Some(held) = round.dealings.get(&deal.client) {
            // Only the proposed dealing may replace another one held for the client.
            let proposed = round.proposal.as_ref().and_then(|(p, _)| {
                p.iter()
                    .find(|i| i.client == deal.client)
                    .map(|i| i.ciphertext_hash)
            });
            // Never this generator's own dealing: it knows which one it dealt.
            let own = deal.client == crate::threshold::generator_dealer(self.index);
            if own || held.digest == digest || proposed != Some(digest) {
                let reason = format!(
                    "second dealing for client {} in round {}",
                    deal.client, deal.round
                );
                return refused(PhraseRefusal::Duplicate, Verdict::Ignore(reason));
            }
        }
        if self.coordinator {
            round.deals.insert(deal.client, deal.clone());
        }
        round.dealings.insert(
            deal.client,
            Dealt {
                commitments,
                digest,
                share: Share::Opening,
            },
        );
        let job = DecryptJob {
            round: deal.round,
            client: deal.client,
            ciphertext: mine.to_vec(),
            share: Some(self.index),
        };
        let mut actions = vec![
            Action::Decrypt(job),
            Action::Emit(Event::PhraseAccepted {
                round: deal.round,
                client: deal.client,
            }),
        ];
        let (contributors, generators) = round.counts();
        if self.coordinator
            && contributors >= round.open.quorum as usize
            && generators == self.params.n as usize
        {
            actions.extend(self.propose(now));
        }
        (Verdict::Accept, actions)
    }

    /// Coordinator: proposes the dealings received so far.
    fn propose(&mut self, now: Millis) -> Vec<Action> {
        let Some(round) = self.round.as_mut().filter(|r| r.proposal.is_none()) else {
            return Vec::new();
        };
        let dealings: Vec<Inclusion> = round
            .dealings
            .iter()
            .map(|(client, d)| Inclusion {
                client: *client,
                ciphertext_hash: d.digest,
            })
            .collect();
        round.proposal = Some((dealings.clone(), now));
        let proposal = Proposal {
            round: round.id(),
            dealings,
        };
        vec![Action::Publish(Gossip::Proposal(proposal))]
    }

    fn on_proposal(&mut self, now: Millis, proposal: &Proposal) -> Vec<Action> {
        let mut actions = Vec::new();
        if proposal.round > self.seen_round {
            // The announcement never came here: take the round up now. Dealings missed entirely
            // are complained of, and their shares come in the answers.
            let open = RoundOpen {
                round: proposal.round,
                key_fingerprint: self.key.fingerprint(),
                quorum: self.mesh.quorum(),
                minimum: self.mesh.minimum(),
                deadline_ms: now,
                prev_commitment: Digest32::ZERO,
            };
            actions.extend(self.adopt(now, open));
        }
        let Some(round) = self
            .round
            .as_mut()
            .filter(|r| r.id() == proposal.round && r.proposal.is_none())
        else {
            return actions;
        };
        round.proposal = Some((proposal.dealings.clone(), now));
        actions.extend(self.fetch_missing(proposal));
        actions
    }

    /// Asks the coordinator for every proposed dealing this generator does not hold as proposed.
    fn fetch_missing(&mut self, proposal: &Proposal) -> Vec<Action> {
        let Some(coordinator) = self.mesh.coordinator().filter(|c| *c != self.me) else {
            return Vec::new();
        };
        let Some(round) = self.round.as_ref().filter(|r| r.id() == proposal.round) else {
            return Vec::new();
        };
        let missed: Vec<ClientId> = proposal
            .dealings
            .iter()
            .filter(|p| {
                round
                    .dealings
                    .get(&p.client)
                    .is_none_or(|d| d.digest != p.ciphertext_hash)
            })
            .map(|p| p.client)
            .collect();
        let mut actions = Vec::new();
        self.fetches.retain(|_, (r, _)| *r == proposal.round);
        for client in missed {
            let tag = self.tags.next();
            self.fetches.insert(tag, (proposal.round, client));
            actions.push(Action::Send {
                peer: coordinator,
                tag,
                request: Request::Dealing(DealingRequest {
                    round: proposal.round,
                    client,
                }),
            });
        }
        actions
    }

    /// Publishes this generator's complaints at a fixed offset after the proposal
    /// (`complaint_offset_ms`), once every proposed dealing it holds is decided: `against` the shares
    /// that did not open or do not match, `missing` the dealings it never got.
    fn complain(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let (offset, window) = (
            self.mesh.settings.complaint_offset_ms,
            self.mesh.settings.complaint_ms,
        );
        let (index, params) = (self.index, self.params);
        let current = self.round.as_ref().map(Round::id);
        // A fetch still under way is waited for (within the window): it is not yet missing.
        let fetching = self.fetches.values().any(|(r, _)| Some(*r) == current);
        let Some(round) = self.round.as_mut().filter(|r| r.complained.is_none()) else {
            return Vec::new();
        };
        let Some((proposed, at)) = &round.proposal else {
            return Vec::new();
        };
        // Never before the offset, whatever has opened; after it, a share still opening is only
        // waiting for this node's CPU.
        let opening = proposed.iter().any(|p| {
            matches!(
                round.dealings.get(&p.client),
                Some(Dealt {
                    share: Share::Opening,
                    digest,
                    ..
                }) if *digest == p.ciphertext_hash
            )
        });
        if now < at + offset || opening || (fetching && now < at + window) {
            return Vec::new();
        }
        let (mut against, mut missing) = (BTreeSet::new(), BTreeSet::new());
        let mut received = Vec::new();
        for p in proposed {
            match round.dealings.get(&p.client) {
                Some(Dealt {
                    commitments,
                    digest,
                    share: Share::Opened(share),
                }) if *digest == p.ciphertext_hash => received.push(Received {
                    client: p.client.0,
                    commitments: commitments.clone(),
                    share: share.clone(),
                }),
                Some(d) if d.digest == p.ciphertext_hash => {
                    against.insert(p.client);
                }
                _ => {
                    missing.insert(p.client);
                }
            }
        }
        against.extend(
            dkg::complaints(index, params, &received, rng)
                .into_iter()
                .map(ClientId),
        );
        round.complained = Some(against.clone());
        round.complaints.insert(index, against.clone());
        round.missing.insert(index, missing.clone());
        let id = round.id();
        let mut actions = vec![Action::Publish(Gossip::Complaints(Complaints {
            round: id,
            index,
            against: against.iter().copied().collect(),
            missing: missing.iter().copied().collect(),
        }))];
        if !against.is_empty() {
            actions.push(Action::Emit(Event::Complained {
                round: id,
                index: index.0,
                against: against.into_iter().collect(),
            }));
        }
        actions.extend(self.try_close(now));
        actions
    }

    fn on_complaints(&mut self, now: Millis, c: &Complaints) -> Vec<Action> {
        let Some(round) = self.round.as_mut().filter(|r| r.id() == c.round) else {
            return Vec::new();
        };
        round
            .complaints
            .insert(c.index, c.against.iter().copied().collect());
        round
            .missing
            .insert(c.index, c.missing.iter().copied().collect());
        self.try_close(now)
    }

    fn on_justification(&mut self, now: Millis, j: &Justification) -> (Verdict, Vec<Action>) {
        let Some(round) = self.round.as_mut().filter(|r| r.id() == j.round) else {
            return (Verdict::Accept, Vec::new());
        };
        let Some((proposed, _)) = &round.proposal else {
            return (Verdict::Accept, Vec::new());
        };
        let Some(expected) = proposed.iter().find(|p| p.client == j.client) else {
            return (Verdict::Accept, Vec::new());
        };
        // A shareholder's index only: `answered` stays within proposal × n.
        if self.params.check(j.index).is_err() {
            return (
                Verdict::Reject(format!("justification for shareholder {}", j.index.0)),
                Vec::new(),
            );
        }
        let commitments = match Pair::from_wire(&j.commitments) {
            Ok(c) if Digest32(c.digest()) == expected.ciphertext_hash => c,
            _ => {
                return (
                    Verdict::Reject("justification's commitments are not the proposed ones".into()),
                    Vec::new(),
                )
            }
        };
        let share = SharePair::from_bytes(&j.share);
        let Some(share) = share.filter(|s| commitments.verify(j.index, s)) else {
            // A bad answer: the dealing stays complained of, and is left out.
            return (Verdict::Accept, Vec::new());
        };
        round.answered.insert((j.client, j.index));
        if j.index == self.index {
            // The proposed dealing, whatever this generator held for the client before (a
            // contributor that gossiped two dealings cannot leave a stale one here).
            round.dealings.insert(
                j.client,
                Dealt {
                    commitments: commitments.clone(),
                    digest: expected.ciphertext_hash,
                    share: Share::Opened(share),
                },
            );
        }
        round
            .justified_commitments
            .entry(j.client)
            .or_insert(commitments);
        let mut actions = self.try_close(now);
        actions.extend(self.retry_sealed(now));
        (Verdict::Accept, actions)
    }

    /// Coordinator: seals once every generator has complained (or the window closed) and every
    /// complaint is answered; the qualified set is the proposal minus the unanswered complaints.
    fn try_close(&mut self, now: Millis) -> Vec<Action> {
        if !self.coordinator {
            return Vec::new();
        }
        let window = self.mesh.settings.complaint_ms;
        let n = self.params.n as usize;
        let Some(round) = self.round.as_ref().filter(|r| r.sealed.is_none()) else {
            return Vec::new();
        };
        let Some((proposed, at)) = &round.proposal else {
            return Vec::new();
        };
        let unanswered: Vec<(ClientId, Index)> = round
            .complaints
            .iter()
            .flat_map(|(j, against)| against.iter().map(move |c| (*c, *j)))
            .filter(|key| !round.answered.contains(key))
            .collect();
        // Every generator has spoken and every complaint is answered: seal now. Otherwise wait
        // out the window, and a second one while answers to complaints may still be on their way.
        let all_in = round.complaints.len() == n;
        let ready = all_in && unanswered.is_empty();
        let waited = now >= at + window && (unanswered.is_empty() || now >= at + 2 * window);
        if !ready && !waited {
            return Vec::new();
        }
        // Readiness from at least t generators: the coordinator alone cannot vouch for shares
        // that nobody else checked.
        let spoken = round.complaints.len();
        if spoken < self.params.t as usize {
            let reason = format!(
                "only {spoken} generator(s) said they were ready; the threshold needs {}",
                self.params.t
            );
            return self.fail(now, reason);
        }
        // A generator that missed a dealing cannot take part with it. The dealing stays in Q while
        // at least t of the generators that spoke hold it (a missing report makes the reporter
        // unready, it does not shrink Q: one generator cannot keep dealings out); with fewer it is
        // left out.
        let (qualified, mut actions) = match qualify(round, proposed, &unanswered, self.params) {
            Ok(q) => q,
            Err(reason) => return self.fail(now, reason),
        };
        let sum = match key_of(round, &qualified, self.params) {
            Ok(sum) => sum,
            Err(reason) => {
                actions.extend(self.fail(now, reason));
                return actions;
            }
        };
        let mut key = ThresholdKey {
            params: self.params,
            public: sum.to_wire(),
            seal: None,
        };
        let id = round.id();
        let commitment = key.commitment(id, &self.head, &qualified);
        key.sign(id, commitment, &self.identity);
        let transcript = Transcript {
            round: id,
            generator: self.me,
            key_fingerprint: self.key.fingerprint(),
            commitment,
            included: qualified,
            prev_commitment: self.head,
            sealed_at_ms: now,
            threshold: Some(key),
        };
        actions.push(Action::Publish(Gossip::Sealed(transcript.clone())));
        self.resealing = Some((transcript.clone(), now + RESEAL_MS, RESEAL_COPIES));
        // The chain moves on with the publication, whether or not this generator's own share
        // works out.
        self.head = transcript.commitment;
        actions.extend(self.on_sealed(now, &transcript));
        actions
    }

    fn fail(&mut self, now: Millis, reason: String) -> Vec<Action> {
        let Some(round) = self.round.take() else {
            return Vec::new();
        };
        self.fetches.clear();
        self.next_open_at = now + self.mesh.settings.round_interval_ms;
        let id = round.id();
        let mut actions = Vec::new();
        if self.coordinator {
            actions.push(Action::Publish(Gossip::Failed(RoundFailure {
                round: id,
                reason: reason.clone(),
            })));
        }
        actions.push(Action::Emit(Event::RoundFailed { round: id, reason }));
        actions
    }

    /// Takes part in a sealed round: every qualified dealing needs a good share here. A share still
    /// opening, or a complaint whose answer is still on its way, is waited for (up to
    /// `complaint_ms` after the transcript came); anything else ends this generator's part.
    fn on_sealed(&mut self, now: Millis, t: &Transcript) -> Vec<Action> {
        let grace = self.mesh.settings.complaint_ms;
        let Some(round) = self.round.as_mut().filter(|r| r.id() == t.round) else {
            return Vec::new();
        };
        let since = round.sealed.as_ref().map_or(now, |(_, at)| *at);
        let coordinator = self.mesh.coordinator().unwrap_or(self.me);
        let outcome = key_share(round, t, self.index, self.params, &coordinator);
        let wait = match &outcome {
            Err(Missing::Wait(_)) => grace,
            Err(Missing::Opening(_)) => OPENING_GRACE_WINDOWS * grace,
            _ => 0,
        };
        if now < since + wait {
            round.sealed = Some((t.clone(), since));
            return Vec::new();
        }
        self.round = None;
        self.next_open_at = now + self.mesh.settings.round_interval_ms;
        let k = match outcome {
            Ok(k) => k,
            Err(Missing::Opening(reason) | Missing::Wait(reason) | Missing::Never(reason)) => {
                return vec![Action::Emit(Event::ShareUnavailable {
                    round: t.round,
                    reason,
                })]
            }
        };
        self.head = t.commitment;
        let share = Secret::from_share_pair(&k.to_bytes());
        let mut actions = vec![
            Action::Persist(Record::Round {
                transcript: t.clone(),
                secret: share.clone(),
            }),
            Action::Emit(Event::ShareHeld {
                round: t.round,
                index: self.index.0,
            }),
        ];
        if self.coordinator {
            actions.push(Action::Emit(Event::RoundSealed {
                round: t.round,
                commitment: t.commitment,
                prev_commitment: t.prev_commitment,
                included: t.clients(),
            }));
        }
        actions.extend(self.queue_handover(t.clone(), share, now));
        actions.extend(self.handovers.due(now, &mut self.tags));
        actions
    }

    /// The coordinator's next copy of its last sealed transcript, when due.
    fn reseal(&mut self, now: Millis) -> Vec<Action> {
        let Some((transcript, at, left)) = self.resealing.as_mut() else {
            return Vec::new();
        };
        if now < *at {
            return Vec::new();
        }
        let copy = Action::Publish(Gossip::Sealed(transcript.clone()));
        *at = now + RESEAL_MS;
        *left -= 1;
        if *left == 0 {
            self.resealing = None;
        }
        vec![copy]
    }

    /// A sealed transcript waiting for a share: tried again.
    fn retry_sealed(&mut self, now: Millis) -> Vec<Action> {
        let pending = self.round.as_ref().and_then(|r| r.sealed.clone());
        match pending {
            Some((t, _)) => self.on_sealed(now, &t),
            None => Vec::new(),
        }
    }

    /// Gives the own dealer the round taken up, once per round (it deals if the deadline has not
    /// passed).
    fn deal(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let Some(open) = self
            .round
            .as_ref()
            .filter(|r| r.proposal.is_none() && r.id() > self.dealt_into)
            .map(|r| r.open.clone())
        else {
            return Vec::new();
        };
        self.dealt_into = open.round;
        let Some(coordinator) = self.mesh.coordinator() else {
            return Vec::new();
        };
        let open = Gossip::Open(open);
        let (_, actions) = self.dealer.gossip(now, Heard::new(coordinator, &open), rng);
        self.take_dealer(now, actions)
    }

    /// The own dealer's actions: its requests and publications go out; its own dealing is also
    /// taken here (gossip does not come back to its sender); its contributor events are dropped.
    fn take_dealer(&mut self, now: Millis, actions: Vec<Action>) -> Vec<Action> {
        let mut out = Vec::new();
        for action in actions {
            match action {
                Action::Publish(Gossip::Deal(mut deal)) => {
                    let me = self.me;
                    deal.signature = self.identity.sign(&deal.signed()).ok().map(Into::into);
                    out.push(Action::Publish(Gossip::Deal(deal.clone())));
                    out.extend(self.on_deal(now, me, &deal).1);
                }
                Action::Emit(
                    Event::PhraseSubmitted { .. }
                    | Event::TranscriptChecked { .. }
                    | Event::RoundFailed { .. },
                ) => {}
                other => out.push(other),
            }
        }
        out
    }

    /// Coordinator: a proposed dealing, for a generator that missed it.
    fn serve_dealing(&self, peer: PeerId, id: InboundId, ask: &DealingRequest) -> Vec<Action> {
        let request = Request::Dealing(ask.clone());
        if !self.mesh.is_generator(&peer) {
            let why = Refusal::Unauthorised("only generators fetch dealings".into());
            return refuse(peer, id, &request, why);
        }
        let deal = self
            .round
            .as_ref()
            .filter(|r| r.id() == ask.round)
            .and_then(|r| r.deals.get(&ask.client));
        match deal {
            Some(deal) => vec![Action::Reply {
                to: id,
                response: Response::Dealing(Box::new(deal.clone())),
            }],
            None => {
                let why = Refusal::Unavailable(format!(
                    "no dealing of client {} held for round {}",
                    ask.client, ask.round
                ));
                refuse(peer, id, &request, why)
            }
        }
    }

    /// A dealing fetched from the coordinator: taken like a gossiped one if it is the one asked.
    fn fetched(
        &mut self,
        now: Millis,
        peer: PeerId,
        round: RoundId,
        client: ClientId,
        response: Result<Response, String>,
    ) -> Vec<Action> {
        // A generator's dealing only with its author's signature: a coordinator that could
        // substitute generators' dealings would choose k. A contributor's is the coordinator's
        // word (the proposal binds its commitments), which secrecy does not rest on.
        let authentic = |deal: &Deal| match dealing_generator(deal.client) {
            None => true,
            Some(j) => self
                .mesh
                .generator_at(j)
                .is_some_and(|author| deal.signed_by(&author)),
        };
        match response {
            Ok(Response::Dealing(deal))
                if deal.round == round && deal.client == client && authentic(&deal) =>
            {
                self.on_deal(now, peer, &deal).1
            }
            other => {
                let (failure, reason) = crate::role::failure_of(other);
                vec![Action::Emit(Event::RequestFailed {
                    peer,
                    request: "dealing".into(),
                    failure,
                    reason,
                })]
            }
        }
    }

    /// Queues share j for distributor j (sent by the next tick, then until acknowledged).
    fn queue_handover(
        &mut self,
        transcript: Transcript,
        share: Secret,
        now: Millis,
    ) -> Vec<Action> {
        let Some(distributor) = self.mesh.distributor_at(self.index) else {
            return Vec::new();
        };
        let round = transcript.round;
        let handover = Handover {
            transcript,
            index: self.index,
            share,
        };
        let request = Request::Handover(Box::new(handover));
        self.handovers
            .push(round, request, [distributor].into(), now)
    }
}

/// The dealings that stay in Q, and an exclusion event for each one left out (complained about
/// and unanswered, or held by fewer than t of the generators that spoke).
fn qualify(
    round: &Round,
    proposed: &[Inclusion],
    unanswered: &[(ClientId, Index)],
    params: Params,
) -> Result<(Vec<Inclusion>, Vec<Action>), String> {
    let spoken = round.complaints.len();
    let t = params.t as usize;
    let missed: BTreeMap<ClientId, Vec<Index>> =
        round
            .missing
            .iter()
            .fold(BTreeMap::new(), |mut acc, (j, clients)| {
                for c in clients {
                    acc.entry(*c).or_insert_with(Vec::new).push(*j);
                }
                acc
            });
    let mut excluded: BTreeSet<ClientId> = unanswered.iter().map(|(c, _)| *c).collect();
    excluded.extend(
        missed
            .iter()
            .filter(|(_, by)| spoken - by.len() < t)
            .map(|(c, _)| *c),
    );
    let ready = round
        .complaints
        .keys()
        .filter(|j| {
            round.missing.get(j).is_none_or(|m| {
                m.iter()
                    .all(|c| excluded.contains(c) || !proposed.iter().any(|p| p.client == *c))
            })
        })
        .count();
    if ready < t {
        let reason = format!(
            "only {ready} generator(s) hold every dealing of the round; the threshold needs {t}"
        );
        return Err(reason);
    }
    let qualified: Vec<Inclusion> = proposed
        .iter()
        .filter(|p| !excluded.contains(&p.client))
        .cloned()
        .collect();
    let actions: Vec<Action> = excluded
        .iter()
        .map(|client| {
            let by: Vec<String> = unanswered
                .iter()
                .filter(|(c, _)| c == client)
                .map(|(_, j)| j.0.to_string())
                .collect();
            let reason = match missed.get(client) {
                Some(at) if by.is_empty() => format!(
                    "only {} generator(s) received it; generator(s) {} never did",
                    spoken - at.len(),
                    at.iter()
                        .map(|j| j.0.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!(
                    "generator(s) {} complained and no matching share was published",
                    by.join(", ")
                ),
            };
            Action::Emit(Event::DealingExcluded {
                round: round.id(),
                client: *client,
                reason,
            })
        })
        .collect();
    Ok((qualified, actions))
}

/// The round key's commitments Σ C_i over Q, once Q is safe to seal: fewer than t key shares
/// public, at least t generator dealings and the round's minimum of contributor dealings.
fn key_of(round: &Round, qualified: &[Inclusion], params: Params) -> Result<Pair, String> {
    // A shareholder whose every qualified share was published in answers has a public k_j;
    // T of those would make k public.
    let public_shares = params
        .indices()
        .filter(|j| {
            qualified
                .iter()
                .all(|q| round.answered.contains(&(q.client, *j)))
        })
        .count();
    if public_shares >= params.t as usize {
        let reason = format!(
            "{public_shares} key shares would be public (their generators received every \
             share in a published answer), at least the threshold {}",
            params.t
        );
        return Err(reason);
    }
    let minimum = (round.open.minimum as usize).max(2);
    let generators = qualified
        .iter()
        .filter(|q| dealing_generator(q.client).is_some())
        .count();
    if generators < params.t as usize {
        let reason = format!(
            "{generators} generator dealing(s) qualified; a round key needs at least {}",
            params.t
        );
        return Err(reason);
    }
    let contributed = qualified.len() - generators;
    let sum = qualified
        .iter()
        .map(|p| round.commitments_of(p.client).cloned())
        .collect::<Option<Vec<Pair>>>()
        .and_then(|all| all.into_iter().reduce(|a, b| a.add(&b)));
    if contributed < minimum {
        return Err(format!(
            "{contributed} of the minimum {minimum} contributor dealings qualified"
        ));
    }
    sum.ok_or_else(|| "a qualified dealing's commitments are unknown".to_string())
}

impl Role for Generator {
    fn tick(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let mut actions = self.deal(now, rng);
        let coordinator = self.coordinator;
        let t = self.params.t as usize;
        match &mut self.round {
            Some(r) if coordinator && r.proposal.is_none() && now >= r.open.deadline_ms => {
                let minimum = (r.open.minimum as usize).max(1);
                let (have, generators) = r.counts();
                if have >= minimum && generators >= t {
                    actions.extend(self.propose(now));
                } else {
                    let reason = format!(
                        "deadline passed with {have} of the minimum {minimum} contributor \
                         dealings and {generators} of the {t} generator dealings needed"
                    );
                    actions.extend(self.fail(now, reason));
                }
            }
            Some(r)
                if coordinator && r.proposal.is_none() && now >= r.announced_at + REANNOUNCE_MS =>
            {
                r.announced_at = now;
                actions.push(Action::Publish(Gossip::Open(r.open.clone())));
            }
            Some(r) if r.sealed.is_some() => actions.extend(self.retry_sealed(now)),
            Some(r) if r.proposal.is_some() => {
                actions.extend(self.complain(now, rng));
                actions.extend(self.try_close(now));
            }
            Some(r)
                if !coordinator
                    && now > r.open.deadline_ms + 2 * self.mesh.settings.complaint_ms =>
            {
                // The coordinator went quiet: give the round up.
                actions.extend(self.fail(now, "no proposal from the coordinator".into()));
            }
            Some(_) => {}
            None if coordinator && !self.manual && now >= self.next_open_at => {
                actions.extend(self.open_round(now))
            }
            None => {}
        }
        actions.extend(self.reseal(now));
        actions.extend(self.handovers.due(now, &mut self.tags));
        actions
    }

    fn gossip(&mut self, now: Millis, heard: Heard, rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        let Heard { source, message } = heard;
        // The own dealer hears the rounds' course (complaints to answer, seals, failures).
        let (_, dealt) = self.dealer.gossip(now, heard, rng);
        let mut own = self.take_dealer(now, dealt);
        let actions = match message {
            Gossip::Deal(d) => {
                let (verdict, mut actions) = self.on_deal(now, source, d);
                own.append(&mut actions);
                return (verdict, own);
            }
            Gossip::Justification(j) => return self.on_justification(now, j),
            Gossip::Open(open) => self.on_open(now, source, open),
            Gossip::Proposal(p) => self.on_proposal(now, p),
            Gossip::Complaints(c) => self.on_complaints(now, c),
            Gossip::Sealed(t) if !self.coordinator && self.mesh.coordinator() == Some(source) => {
                self.on_sealed(now, t)
            }
            Gossip::Failed(f) if !self.coordinator && self.current_round() == Some(f.round) => {
                self.fail(now, f.reason.clone())
            }
            _ => Vec::new(),
        };
        own.extend(actions);
        (Verdict::Accept, own)
    }

    fn request(&mut self, _now: Millis, asked: Inbound, _rng: &mut dyn Rng) -> Vec<Action> {
        let Inbound { peer, id, request } = asked;
        match request {
            Request::PublicKey => vec![Action::Reply {
                to: id,
                response: Response::PublicKey(self.key.spki_der().to_vec()),
            }],
            Request::Dealing(ask) => self.serve_dealing(peer, id, &ask),
            other => refuse(peer, id, &other, Refusal::WrongRole(other.kind().into())),
        }
    }

    fn response(&mut self, now: Millis, answer: Answer, rng: &mut dyn Rng) -> Vec<Action> {
        if self.dealer.owns(answer.tag) {
            let actions = self.dealer.response(now, answer, rng);
            return self.take_dealer(now, actions);
        }
        let (peer, tag, response) = (answer.peer, answer.tag, answer.response);
        if let Some((round, client)) = self.fetches.remove(&tag) {
            return self.fetched(now, peer, round, client, response);
        }
        self.handovers.answered(now, tag, response)
    }

    fn control(&mut self, now: Millis, control: Control) -> Vec<Action> {
        match control {
            Control::OpenRound if self.coordinator && self.round.is_none() => self.open_round(now),
            Control::OpenRound => Vec::new(),
        }
    }

    fn decrypted(&mut self, now: Millis, job: DecryptJob, opened: Opened) -> Vec<Action> {
        // A threshold generator asks for its key shares only.
        let Opened::Share(share) = opened else {
            return Vec::new();
        };
        let Some(round) = self.round.as_mut().filter(|r| r.id() == job.round) else {
            return Vec::new();
        };
        let Some(dealt) = round.dealings.get_mut(&job.client) else {
            return Vec::new();
        };
        if !matches!(dealt.share, Share::Opening) {
            return Vec::new();
        }
        dealt.share = match share.and_then(|bytes| SharePair::from_bytes(&bytes)) {
            Some(s) => Share::Opened(s),
            None => Share::Failed,
        };
        // Complaints go out from the next tick, at their fixed offset.
        self.retry_sealed(now)
    }
}
