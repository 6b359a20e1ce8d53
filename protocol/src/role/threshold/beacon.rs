//! The beacon on the network: distributors publish partials after each round, every node combines
//! T valid ones into the round's value, keeps the chain, serves it and catches up on what it missed.
//! The cryptography is [`crate::beacon`].
//!
//! ```text
//! Sealed(t_r) from the coordinator (or, to distributor j, a handover) ─► trusted transcript
//! distributor j holds k_j of r and knows B_prev ─► gossip Beacon(r, prev, y_j + DLEQ proof)
//! Beacon(r, prev, y_j) from distributor j ─► proof against K_j ─► pending partials of r
//!     ─► T of them with the prev this node expects ─► B_r ─► Persist(Beacon) ─► Emit(BeaconValue)
//!     ─► r's successor now knows its prev
//! a transcript without a value after CATCH_UP_AFTER_MS, or a gap behind the newest value
//!     ─► rr Beacon{before} to a distributor ─► entries, newest first: each transcript trusted only
//!        through a link to one already trusted, each value verified, each prev as expected
//! rr Beacon{before} from anyone ─► the entries before it, newest first, within the response bound
//! ```
//! The prev of round r is the value of the round whose transcript commitment r's transcript names
//! (all zeros for a first round), so which rounds are chained is public. A node that does not know
//! r's predecessor at all (it joined late) takes the prev T distributors agree on: that starts its
//! chain, and catch-up fills it in backwards, each older entry checked against the newer.

use super::super::{Action, Answer, Event, Heard, Millis, Role, Tag, Verdict};
use super::super::{Inbound, Rng, Typed};
use crate::beacon::{self, Entry, MAX_RUN};
use crate::digest::Digest32;
use crate::mesh::MeshConfig;
use crate::role::{self, Opened};
use crate::role::{DecryptJob, Distributor};
use crate::round::{RoundId, Transcript};
use crate::threshold::eval::{Input, Partial, PublicKey};
use crate::wire::{
    self, BeaconPartial, BeaconQuery, Gossip, Request, Response, MAX_BEACON_PAGE,
    MAX_RESPONSE_BYTES,
};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// How long a round may go without a value (its partials lost or missed) before the node asks.
pub const CATCH_UP_AFTER_MS: Millis = 3_000;
/// Between two catch-up questions.
pub const CATCH_UP_RETRY_MS: Millis = 2_000;
/// Partials of rounds this far past the newest trusted transcript are kept until it comes.
pub const MAX_EARLY_ROUNDS: u64 = 4;
/// The keeper's request tags carry this bit; a role's own never do.
pub const TAG_BIT: u64 = 1 << 63;
/// Room left in a catch-up answer for the envelope.
const PAGE_SLACK_BYTES: usize = 1024;

/// What this node expects as the prev of a round's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prev {
    Known(Digest32),
    /// The predecessor's transcript is known, its value not yet.
    Waiting,
    /// The predecessor is unknown here (the node joined late): T distributors decide.
    Free,
}

/// A node's beacon: trusted transcripts, the chain, partials waiting, and catch-up.
pub struct Keeper {
    mesh: Arc<MeshConfig>,
    /// Trusted transcripts of threshold rounds, and when each was learnt.
    transcripts: BTreeMap<RoundId, (Transcript, Millis)>,
    by_commitment: HashMap<Digest32, RoundId>,
    chain: BTreeMap<RoundId, Entry>,
    /// Trusted rounds without a value yet.
    open: BTreeSet<RoundId>,
    /// Rounds whose transcript came only with a handover (checked against one key share, from
    /// one generator): good for checking partials, never an anchor for catch-up.
    held_only: BTreeSet<RoundId>,
    /// The public key of each open round, worked out once (K_j for every j is 2N polynomial
    /// evaluations on the curve: too dear to repeat for every partial).
    keys: BTreeMap<RoundId, Arc<PublicKey>>,
    /// Valid partials, by round: at most one per shareholder (and prev).
    pending: BTreeMap<RoundId, Vec<(Digest32, Partial)>>,
    /// Rounds this node (a distributor) published its partial of.
    published: BTreeSet<RoundId>,
    /// The catch-up question in flight: its tag, when it was sent, and its `before`.
    asking: Option<(Tag, Millis, RoundId)>,
    last_asked: Millis,
    /// `before` values whose answers brought nothing, and how many times.
    fruitless: HashMap<RoundId, usize>,
    next_tag: u64,
    next_peer: usize,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "beacon::Keeper({} values, {} open)",
            self.chain.len(),
            self.open.len()
        )
    }
}

impl Keeper {
    /// From the store: `entries` (the chain kept) and `transcripts` (rounds this node held: trusted
    /// because it checked them when they came).
    pub fn restore(
        mesh: Arc<MeshConfig>,
        entries: Vec<Entry>,
        transcripts: Vec<Transcript>,
    ) -> Self {
        let mut keeper = Keeper {
            mesh,
            transcripts: BTreeMap::new(),
            by_commitment: HashMap::new(),
            chain: BTreeMap::new(),
            open: BTreeSet::new(),
            held_only: BTreeSet::new(),
            keys: BTreeMap::new(),
            pending: BTreeMap::new(),
            published: BTreeSet::new(),
            asking: None,
            last_asked: 0,
            fruitless: HashMap::new(),
            next_tag: 0,
            next_peer: 0,
        };
        for e in entries {
            if e.verify().is_ok() {
                keeper.trust(e.transcript.clone(), 0);
                keeper.open.remove(&e.transcript.round);
                keeper.chain.insert(e.transcript.round, e);
            }
        }
        for t in transcripts {
            if t.threshold.is_some() && !keeper.transcripts.contains_key(&t.round) {
                keeper.trust(t, 0);
            }
        }
        keeper.prune();
        keeper
    }

    /// The chain's values, oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.chain.values()
    }

    pub fn get(&self, round: RoundId) -> Option<&Entry> {
        self.chain.get(&round)
    }

    /// The newest run of linked entries (what `otpmesh beacon export` writes), oldest first.
    pub fn newest_run(&self) -> Vec<Entry> {
        let mut run: Vec<Entry> = Vec::new();
        for e in self.chain.values().rev() {
            if let Some(next) = run.last() {
                if next.transcript.prev_commitment != e.transcript.commitment {
                    break;
                }
            }
            run.push(e.clone());
        }
        run.reverse();
        run
    }

    fn trust(&mut self, t: Transcript, now: Millis) {
        self.held_only.remove(&t.round);
        if let Some((old, _)) = self.transcripts.get(&t.round) {
            self.by_commitment.remove(&old.commitment);
            self.keys.remove(&t.round);
        }
        self.by_commitment.insert(t.commitment, t.round);
        if !self.chain.contains_key(&t.round) {
            self.open.insert(t.round);
        }
        self.transcripts.insert(t.round, (t, now));
    }

    fn prune(&mut self) {
        while self.transcripts.len() > MAX_RUN {
            if let Some((round, (t, _))) = self.transcripts.pop_first() {
                self.by_commitment.remove(&t.commitment);
                self.chain.remove(&round);
                self.open.remove(&round);
                self.keys.remove(&round);
            }
        }
        let oldest = self
            .transcripts
            .keys()
            .next()
            .copied()
            .unwrap_or(RoundId(0));
        self.published = self.published.split_off(&oldest);
        self.held_only = self.held_only.split_off(&oldest);
        self.fruitless.retain(|before, _| *before >= oldest);
        let newest = self.transcripts.keys().next_back().map_or(0, |r| r.0);
        self.pending
            .retain(|r, _| *r >= oldest && r.0 <= newest + MAX_EARLY_ROUNDS);
        self.pending.retain(|r, _| !self.chain.contains_key(r));
    }

    fn expected_prev(&self, t: &Transcript) -> Prev {
        if t.prev_commitment == Digest32::ZERO {
            return Prev::Known(Digest32::ZERO);
        }
        match self.by_commitment.get(&t.prev_commitment) {
            Some(r) => match self.chain.get(r) {
                Some(e) => Prev::Known(e.value.value),
                None => Prev::Waiting,
            },
            None => Prev::Free,
        }
    }

    /// A sealed transcript from the coordinator: trusted, and replaces one learnt otherwise.
    pub fn sealed(&mut self, now: Millis, t: &Transcript) {
        if t.threshold.is_none() || self.chain.contains_key(&t.round) {
            return;
        }
        let same = self
            .transcripts
            .get(&t.round)
            .is_some_and(|(old, _)| old.commitment == t.commitment);
        if same {
            // The handover came first: the seal makes the same transcript an anchor.
            self.held_only.remove(&t.round);
        } else {
            self.trust(t.clone(), now);
            self.prune();
        }
    }

    /// A transcript a distributor checked against its own key share: trusted unless the
    /// coordinator's says otherwise.
    pub fn held(&mut self, now: Millis, t: &Transcript) {
        if t.threshold.is_some() && !self.transcripts.contains_key(&t.round) {
            self.trust(t.clone(), now);
            self.held_only.insert(t.round);
            self.prune();
        }
    }

    /// A partial from its distributor (the source was checked by [`crate::role::check_gossip`]).
    pub fn partial(&mut self, m: &BeaconPartial) -> Verdict {
        if self.chain.contains_key(&m.round) {
            return Verdict::Ignore(format!("round {} has its beacon value", m.round));
        }
        if let Some((prev, _)) = self
            .pending
            .get(&m.round)
            .and_then(|held| held.iter().find(|(_, p)| p.index == m.partial.index))
        {
            return match *prev == m.prev {
                true => Verdict::Ignore(format!("a partial of round {} again", m.round)),
                false => Verdict::Reject(format!(
                    "distributor {} sent partials of round {} for two previous values",
                    m.partial.index.0, m.round
                )),
            };
        }
        if !self.transcripts.contains_key(&m.round) {
            let newest = self.transcripts.keys().next_back().map_or(0, |r| r.0);
            // Only rounds just past the newest transcript: it may not be here yet.
            if m.round.0 <= newest || m.round.0 > newest.saturating_add(MAX_EARLY_ROUNDS) {
                return Verdict::Ignore(format!(
                    "round {} has no transcript here and is not the next",
                    m.round
                ));
            }
            // Checked when its transcript comes.
            self.keep(m.round, m.prev, m.partial.clone());
            return Verdict::Accept;
        }
        let Some(key) = self.key(m.round) else {
            return Verdict::Ignore(format!("round {} has no usable key", m.round));
        };
        if key
            .check(&m.partial, &beacon::input(m.round.0, &m.prev))
            .is_none()
        {
            return Verdict::Reject(format!(
                "beacon partial of round {} does not verify against K_{}",
                m.round, m.partial.index.0
            ));
        }
        let expected = self
            .transcripts
            .get(&m.round)
            .map(|(t, _)| self.expected_prev(t));
        match expected {
            Some(Prev::Known(p)) if p != m.prev => Verdict::Ignore(format!(
                "beacon partial of round {} follows another value",
                m.round
            )),
            _ => {
                self.keep(m.round, m.prev, m.partial.clone());
                Verdict::Accept
            }
        }
    }

    /// The public key of trusted round `round` (worked out on first use, kept while it is open).
    fn key(&mut self, round: RoundId) -> Option<Arc<PublicKey>> {
        if let Some(key) = self.keys.get(&round) {
            return Some(key.clone());
        }
        let (t, _) = self.transcripts.get(&round)?;
        let key = Arc::new(t.threshold.as_ref()?.key()?);
        if self.open.contains(&round) {
            self.keys.insert(round, key.clone());
        }
        Some(key)
    }

    fn keep(&mut self, round: RoundId, prev: Digest32, partial: Partial) {
        let n = self.mesh.threshold().map_or(0, |p| p.n as usize);
        let held = self.pending.entry(round).or_default();
        // One partial per shareholder: a distributor cannot crowd out the others.
        let dup = held.iter().any(|(_, q)| q.index == partial.index);
        if !dup && held.len() < n {
            held.push((prev, partial));
        }
    }

    /// Publishes this node's partials and combines what it can, oldest round first.
    pub fn advance(&mut self, inner: &Inner, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.step(inner, rng, &mut actions) {}
        actions
    }

    /// One step of [`Keeper::advance`]: whether a round got its value (which may unblock the next).
    fn step(
        &mut self,
        inner: &Inner,
        rng: &mut dyn CryptoRngCore,
        actions: &mut Vec<Action>,
    ) -> bool {
        let open: Vec<RoundId> = self.open.iter().copied().collect();
        for round in open {
            let Some((t, _)) = self.transcripts.get(&round) else {
                continue;
            };
            let prev = match self.expected_prev(t) {
                Prev::Known(p) => Some(p),
                Prev::Waiting => continue,
                Prev::Free => None,
            };
            if let Some(p) = prev {
                if !self.published.contains(&round) {
                    let x: Input = beacon::input(round.0, &p);
                    if let Some(partial) = inner.partial(round, &x, rng) {
                        self.published.insert(round);
                        self.keep(round, p, partial.clone());
                        actions.push(Action::Publish(Gossip::Beacon(BeaconPartial {
                            round,
                            prev: p,
                            partial,
                        })));
                    }
                }
            }
            if let Some(entry) = self.combine(round, prev) {
                self.accept(entry, actions, false);
                return true;
            }
        }
        false
    }

    /// T checked partials of trusted round `round` with the expected prev (or, when free, any
    /// one prev).
    fn combine(&mut self, round: RoundId, prev: Option<Digest32>) -> Option<Entry> {
        let t = self.mesh.threshold()?.t as usize;
        if self.pending.get(&round)?.len() < t {
            return None;
        }
        let key = self.key(round)?;
        let held = self.pending.get(&round)?;
        let mut prevs: Vec<Digest32> = match prev {
            Some(p) => vec![p],
            None => held.iter().map(|(p, _)| *p).collect(),
        };
        prevs.sort_unstable_by_key(|p| p.0);
        prevs.dedup();
        for p in prevs {
            let partials: Vec<Partial> = held
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, partial)| partial.clone())
                .collect();
            if partials.len() < key.params.t as usize {
                continue;
            }
            // Partials kept before their transcript came are checked here.
            if let Ok(value) = beacon::combine(&key, round.0, &p, &partials) {
                let (transcript, _) = self.transcripts.get(&round)?;
                return Some(Entry {
                    transcript: transcript.clone(),
                    value,
                });
            }
        }
        None
    }

    fn accept(&mut self, entry: Entry, actions: &mut Vec<Action>, caught_up: bool) {
        let round = entry.transcript.round;
        actions.push(Action::Persist(crate::role::Record::Beacon(Box::new(
            entry.clone(),
        ))));
        actions.push(Action::Emit(Event::BeaconValue {
            round,
            value: entry.value.value,
            prev: entry.value.prev,
            from: entry.value.partials.iter().map(|p| p.index.0).collect(),
            caught_up,
        }));
        self.open.remove(&round);
        self.keys.remove(&round);
        self.pending.remove(&round);
        self.fruitless.clear();
        self.chain.insert(round, entry);
    }

    /// What to ask for: the rounds before the returned one.
    fn wanted(&self, now: Millis) -> Option<RoundId> {
        let stale = self.open.iter().rev().find(|r| {
            self.transcripts
                .get(r)
                .is_some_and(|(_, at)| now >= at + CATCH_UP_AFTER_MS)
        });
        let tries = |before: RoundId| self.fruitless.get(&before).copied().unwrap_or(0);
        let peers = self.mesh.distributors.len().max(1);
        if let Some(r) = stale {
            let before = RoundId(r.0.saturating_add(1));
            if tries(before) < peers {
                return Some(before);
            }
        }
        // The window is full: nothing older would be kept.
        if self.transcripts.len() >= MAX_RUN {
            return None;
        }
        // A gap behind the newest value: walk back along the transcripts' links.
        let mut cur = self.chain.values().next_back()?;
        let mut steps = 0;
        loop {
            let pc = cur.transcript.prev_commitment;
            if pc == Digest32::ZERO || steps >= MAX_RUN {
                return None;
            }
            match self.by_commitment.get(&pc).and_then(|r| self.chain.get(r)) {
                Some(e) => cur = e,
                None => {
                    let before = cur.transcript.round;
                    return (tries(before) < peers).then_some(before);
                }
            }
            steps += 1;
        }
    }

    /// Time passes: a catch-up question, if one is due.
    pub fn tick(&mut self, now: Millis, me: &PeerId) -> Vec<Action> {
        if let Some((_, at, _)) = self.asking {
            if now < at + 4 * CATCH_UP_RETRY_MS {
                return Vec::new();
            }
            self.asking = None;
        }
        if now < self.last_asked + CATCH_UP_RETRY_MS {
            return Vec::new();
        }
        let Some(before) = self.wanted(now) else {
            return Vec::new();
        };
        let peers: Vec<PeerId> = self
            .mesh
            .distributors
            .iter()
            .chain(&self.mesh.generators)
            .map(|m| m.peer_id)
            .filter(|p| p != me)
            .collect();
        if peers.is_empty() {
            return Vec::new();
        }
        let peer = peers[self.next_peer % peers.len()];
        self.next_peer += 1;
        self.next_tag += 1;
        let tag = Tag(TAG_BIT | self.next_tag);
        self.asking = Some((tag, now, before));
        self.last_asked = now;
        vec![Action::Send {
            peer,
            tag,
            request: Request::Beacon(BeaconQuery {
                before,
                limit: MAX_BEACON_PAGE as u32,
            }),
        }]
    }

    /// A catch-up answer: entries newest first.
    pub fn response(&mut self, answer: Answer) -> Vec<Action> {
        let (peer, tag, response) = (answer.peer, answer.tag, answer.response);
        let Some((asked, _, before)) = self.asking else {
            return Vec::new();
        };
        if asked != tag {
            return Vec::new();
        }
        self.asking = None;
        let entries = match response {
            Ok(Response::Beacon(entries)) => entries,
            other => {
                *self.fruitless.entry(before).or_default() += 1;
                return vec![Action::Emit(Event::BeaconCatchUp {
                    peer,
                    accepted: 0,
                    problem: Some(crate::role::failure_reason(other)),
                })];
            }
        };
        let (accepted, problem) = self.take(&entries, before);
        let mut actions = Vec::new();
        for e in &accepted {
            self.accept(e.clone(), &mut actions, true);
        }
        if accepted.is_empty() {
            *self.fruitless.entry(before).or_default() += 1;
        }
        self.prune();
        actions.push(Action::Emit(Event::BeaconCatchUp {
            peer,
            accepted: accepted.len() as u32,
            problem,
        }));
        actions
    }

    /// The entries of a catch-up answer this node can trust, oldest first, and what was wrong with
    /// the first it could not.
    fn take(&mut self, entries: &[Entry], before: RoundId) -> (Vec<Entry>, Option<String>) {
        let coordinator = self.mesh.coordinator();
        let mut linked: Vec<&Entry> = Vec::new();
        let mut problem = None;
        let mut last = before;
        // Newest first: each transcript is trusted if it is the one this node holds for its
        // round, or the one a trusted transcript names as its predecessor.
        for e in entries {
            let round = e.transcript.round;
            if round >= last {
                problem = Some(format!("round {round} is out of order"));
                break;
            }
            last = round;
            let sealed = coordinator
                .filter(|c| *c == e.transcript.generator)
                .map(|c| e.transcript.check_seal(&c));
            match sealed {
                Some(Ok(())) => {}
                Some(Err(err)) => {
                    problem = Some(format!("round {round}: {err}"));
                    break;
                }
                None => {
                    problem = Some(format!("round {round} was not sealed by the coordinator"));
                    break;
                }
            }
            // Hashing first, the link next, the proofs (the costly part) last.
            if let Err(err) = e.transcript.check(None) {
                problem = Some(format!("round {round}: {err}"));
                break;
            }
            let known = self
                .transcripts
                .get(&round)
                .filter(|_| !self.held_only.contains(&round))
                .map(|(t, _)| t.commitment);
            let named = self
                .transcripts
                .iter()
                .filter(|(r, _)| !self.held_only.contains(r))
                .any(|(_, (t, _))| t.prev_commitment == e.transcript.commitment);
            let trusted = match known {
                Some(c) => c == e.transcript.commitment,
                None => named,
            };
            if !trusted {
                problem = Some(format!(
                    "round {round}'s transcript links to none this node trusts"
                ));
                break;
            }
            if let Err(err) = e.verify() {
                problem = Some(err.to_string());
                break;
            }
            let same = self
                .transcripts
                .get(&round)
                .is_some_and(|(t, _)| t.commitment == e.transcript.commitment);
            if !same || self.held_only.contains(&round) {
                self.trust(e.transcript.clone(), 0);
            }
            linked.push(e);
        }
        // Oldest first: each value must follow the value this node expects before it.
        let mut accepted = Vec::new();
        for e in linked.into_iter().rev() {
            if self.chain.contains_key(&e.transcript.round) {
                continue;
            }
            match self.expected_prev(&e.transcript) {
                Prev::Known(p) if p != e.value.prev => {
                    problem = Some(format!(
                        "round {}'s value follows another value than this node's",
                        e.transcript.round
                    ));
                    break;
                }
                Prev::Waiting => continue,
                _ => {}
            }
            // A newer value already held must follow this one.
            let successor = self.chain.values().find(|s| {
                s.transcript.prev_commitment == e.transcript.commitment
                    && s.value.prev != e.value.value
            });
            if let Some(s) = successor {
                problem = Some(format!(
                    "round {}'s value is not the one round {} follows",
                    e.transcript.round, s.transcript.round
                ));
                break;
            }
            self.chain.insert(e.transcript.round, e.clone());
            accepted.push(e.clone());
        }
        // `accept` inserts again, with its events and records.
        for e in &accepted {
            self.chain.remove(&e.transcript.round);
        }
        (accepted, problem)
    }

    /// The entries before `before` (all, if none), newest first.
    pub fn before(&self, before: Option<RoundId>) -> impl Iterator<Item = &Entry> {
        let end = before.unwrap_or(RoundId(u64::MAX));
        self.chain.range(..end).rev().map(|(_, e)| e)
    }

    /// Serves a catch-up question: entries before `q.before`, newest first, within the bound.
    pub fn serve(&self, q: &BeaconQuery) -> Response {
        let limit = (q.limit as usize).min(MAX_BEACON_PAGE);
        let mut size = 0;
        let mut page = Vec::new();
        for e in self.before(Some(q.before)) {
            let bytes = wire::encode(e).len();
            if page.len() == limit || size + bytes > MAX_RESPONSE_BYTES - PAGE_SLACK_BYTES {
                break;
            }
            size += bytes;
            page.push(e.clone());
        }
        Response::Beacon(page)
    }
}

/// What a [`Beaconed`] wraps: a distributor, whose key shares make this node's partials, or a
/// role that makes none.
pub enum Inner {
    Distributor(Box<Distributor>),
    Other(Box<dyn Role + Send>),
}

impl From<Box<dyn Role + Send>> for Inner {
    fn from(role: Box<dyn Role + Send>) -> Inner {
        Inner::Other(role)
    }
}

impl Inner {
    /// The role alone (without a beacon keeper).
    pub fn into_role(self) -> Box<dyn Role + Send> {
        match self {
            Inner::Distributor(d) => d,
            Inner::Other(role) => role,
        }
    }

    fn role(&mut self) -> &mut (dyn Role + Send) {
        match self {
            Inner::Distributor(d) => d.as_mut(),
            Inner::Other(role) => role.as_mut(),
        }
    }

    /// This node's partial of the beacon input `x`, with its key share of `round`.
    fn partial(&self, round: RoundId, x: &Input, rng: &mut dyn CryptoRngCore) -> Option<Partial> {
        match self {
            Inner::Distributor(d) => d.beacon_partial(round, x, rng),
            Inner::Other(_) => None,
        }
    }
}

/// A role with a beacon keeper beside it: the keeper sees the coordinator's transcripts, beacon
/// gossip and catch-up traffic; everything else goes to the role as before.
pub struct Beaconed {
    me: PeerId,
    inner: Inner,
    keeper: Keeper,
}

impl std::fmt::Debug for Beaconed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Beaconed({:?})", self.keeper)
    }
}

impl Beaconed {
    pub fn new(me: PeerId, inner: Inner, keeper: Keeper) -> Beaconed {
        Beaconed { me, inner, keeper }
    }

    /// The role's actions, with the keeper told of transcripts the role came to hold, and the
    /// keeper's own.
    fn after(
        &mut self,
        now: Millis,
        actions: Vec<Action>,
        rng: &mut dyn CryptoRngCore,
    ) -> Vec<Action> {
        self.watch(now, &actions);
        let mut actions = actions;
        actions.extend(self.keeper.advance(&self.inner, rng));
        actions
    }

    /// Tells the keeper of the transcripts in the role's actions.
    fn watch(&mut self, now: Millis, actions: &[Action]) {
        for a in actions {
            match a {
                // The coordinator's own seal (gossip does not come back to its sender).
                Action::Publish(Gossip::Sealed(t)) => self.keeper.sealed(now, t),
                Action::Persist(crate::role::Record::Round { transcript, .. }) => {
                    self.keeper.held(now, transcript)
                }
                _ => {}
            }
        }
    }
}

impl Role for Beaconed {
    fn start(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let actions = self.inner.role().start(now, rng);
        self.after(now, actions, rng)
    }

    fn tick(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let mut actions = self.inner.role().tick(now, rng);
        actions.extend(self.keeper.tick(now, &self.me));
        self.after(now, actions, rng)
    }

    fn gossip(&mut self, now: Millis, heard: Heard, rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        match heard.message {
            Gossip::Beacon(m) => {
                let verdict = self.keeper.partial(m);
                let actions = self.after(now, Vec::new(), rng);
                (verdict, actions)
            }
            Gossip::Sealed(t) => {
                // check_gossip let it through only from the coordinator.
                self.keeper.sealed(now, t);
                let (verdict, actions) = self.inner.role().gossip(now, heard, rng);
                (verdict, self.after(now, actions, rng))
            }
            _ => {
                let (verdict, actions) = self.inner.role().gossip(now, heard, rng);
                (verdict, self.after(now, actions, rng))
            }
        }
    }

    fn request(&mut self, now: Millis, asked: Inbound, rng: &mut dyn Rng) -> Vec<Action> {
        if let Request::Beacon(q) = &asked.request {
            return vec![Action::Reply {
                to: asked.id,
                response: self.keeper.serve(q),
            }];
        }
        let actions = self.inner.role().request(now, asked, rng);
        self.after(now, actions, rng)
    }

    fn response(&mut self, now: Millis, answer: Answer, rng: &mut dyn Rng) -> Vec<Action> {
        if answer.tag.0 & TAG_BIT != 0 {
            let actions = self.keeper.response(answer);
            return self.after(now, actions, rng);
        }
        let actions = self.inner.role().response(now, answer, rng);
        self.after(now, actions, rng)
    }

    fn decrypted(&mut self, now: Millis, job: DecryptJob, opened: Opened) -> Vec<Action> {
        let actions = self.inner.role().decrypted(now, job, opened);
        // Partials that need these transcripts go out on the next tick.
        self.watch(now, &actions);
        actions
    }

    fn user_input(&mut self, now: Millis, input: role::Input, rng: &mut dyn Rng) -> Vec<Action> {
        let actions = self.inner.role().user_input(now, input, rng);
        self.after(now, actions, rng)
    }

    fn control(&mut self, now: Millis, control: crate::role::Control) -> Vec<Action> {
        let actions = self.inner.role().control(now, control);
        self.watch(now, &actions);
        actions
    }

    fn check(&mut self, now: Millis, typed: Typed, rng: &mut dyn Rng) -> Vec<Action> {
        self.inner.role().check(now, typed, rng)
    }
}

/// Why a single-generator mesh has no beacon (for the commands that ask).
pub const SINGLE_MODE: &str = "this mesh has no threshold key, and the beacon needs one: a value \
     is k·H(round, previous value) for a round key k that no node holds whole, made from T of N \
     distributors' partials. In single-generator mode the generator knows each round secret, so \
     it could predict every value and choose which to publish. Run a threshold mesh (`otpmesh mesh \
     up --threshold T/N`, or `threshold = \"T/N\"` in the mesh's [settings])";
