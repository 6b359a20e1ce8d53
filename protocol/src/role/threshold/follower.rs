//! A requester node in threshold mode: after each round the coordinator seals, it asks every
//! distributor for an OTP of that round (a [`Requester`] per round), as single mode's following
//! requester does.
//!
//! ```text
//! Sealed(round) from the coordinator ─► wait SETTLE_MS (the key shares reach the distributors)
//!     ─► a Requester for the newest round ─► its Sends, tags moved into this round's range
//! response ─► back to the Requester whose range the tag is in
//! ```

use super::Requester;
use crate::mesh::MeshConfig;
use crate::role::{Action, Millis, Role, Tag, Verdict};
use crate::role::{Answer, Heard, Rng};
use crate::round::RoundId;
use crate::wire::Gossip;
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::sync::Arc;

/// How long after a seal before asking: the generators hand their shares over meanwhile.
pub const SETTLE_MS: Millis = 500;
/// Tags of one round's requester live in [n·TAG_RANGE, (n+1)·TAG_RANGE).
const TAG_RANGE: u64 = 1 << 32;

pub struct Follower {
    me: PeerId,
    mesh: Arc<MeshConfig>,
    /// The round to ask for, and when.
    due: Option<(RoundId, Millis)>,
    last_asked: Option<RoundId>,
    current: Option<(u64, Requester)>,
    generation: u64,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "threshold::Follower({}, asked {:?})",
            self.me, self.last_asked
        )
    }
}

impl Follower {
    pub fn new(me: PeerId, mesh: Arc<MeshConfig>) -> Follower {
        Follower {
            me,
            mesh,
            due: None,
            last_asked: None,
            current: None,
            generation: 0,
        }
    }

    fn shift(&self, actions: Vec<Action>) -> Vec<Action> {
        let base = self.current.as_ref().map_or(0, |(g, _)| g * TAG_RANGE);
        actions
            .into_iter()
            .map(|a| match a {
                Action::Send { peer, tag, request } => Action::Send {
                    peer,
                    tag: Tag(base + tag.0),
                    request,
                },
                other => other,
            })
            .collect()
    }
}

impl Role for Follower {
    fn tick(&mut self, now: Millis, rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        let Some((round, at)) = self.due else {
            return Vec::new();
        };
        let busy = self.current.as_ref().is_some_and(|(_, r)| !r.is_done());
        if now < at || busy {
            return Vec::new();
        }
        self.due = None;
        self.last_asked = Some(round);
        self.generation += 1;
        let distributors = self.mesh.distributors.iter().map(|m| m.peer_id).collect();
        let mut requester = Requester::issue_once(self.me, self.mesh.clone(), distributors);
        let actions = requester.start(now, rng);
        self.current = Some((self.generation, requester));
        self.shift(actions)
    }

    fn gossip(&mut self, now: Millis, heard: Heard, _rng: &mut dyn Rng) -> (Verdict, Vec<Action>) {
        let Heard { source, message } = heard;
        if let Gossip::Sealed(t) = message {
            let newer = self.last_asked.is_none_or(|r| t.round > r);
            if newer && self.mesh.coordinator() == Some(source) {
                self.due = Some((t.round, now + SETTLE_MS));
            }
        }
        (Verdict::Accept, Vec::new())
    }

    fn response(&mut self, now: Millis, answer: Answer, rng: &mut dyn Rng) -> Vec<Action> {
        let Some((generation, requester)) = &mut self.current else {
            return Vec::new();
        };
        if answer.tag.0 / TAG_RANGE != *generation {
            return Vec::new();
        }
        let tag = Tag(answer.tag.0 % TAG_RANGE);
        let actions = requester.response(now, Answer { tag, ..answer }, rng);
        self.shift(actions)
    }
}
