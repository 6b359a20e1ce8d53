//! Requests sent until acknowledged: a generator's deliveries (single mode: the round secret to
//! every distributor) and handovers (threshold mode: share j to distributor j) both go through one
//! [`Outbox`].
//!
//! ```text
//! push(round, request, peers) ─► due(now): Send to every waiting peer not in flight
//!   answer Delivered(round) ─► RoundDelivered · none left waiting ─► RoundDeliveredAll, forgotten
//!   anything else          ─► RequestFailed · retried `retry_ms` later
//!   more than `max` rounds ─► the oldest is abandoned: DeliveryAbandoned for each peer waiting
//! ```
//! Nothing is sent at `push`: the next [`Outbox::due`] sends it, so a role restored from its store
//! queues its last round in its constructor and its first tick delivers it.

use super::{failure_of, Action, Event, Millis, Tag, Tags};
use crate::id::RoundId;
use crate::wire::{Request, Response};
use libp2p_identity::PeerId;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug)]
struct Item {
    request: Request,
    waiting: BTreeSet<PeerId>,
    in_flight: BTreeSet<PeerId>,
    retry_at: Millis,
}

#[derive(Debug)]
pub struct Outbox {
    /// What the requests are called in [`Event::RequestFailed`] ("deliver", "handover").
    kind: &'static str,
    retry_ms: Millis,
    max: usize,
    items: BTreeMap<RoundId, Item>,
    in_flight: HashMap<Tag, (RoundId, PeerId)>,
}

impl Outbox {
    pub fn new(kind: &'static str, retry_ms: Millis, max: usize) -> Outbox {
        Outbox {
            kind,
            retry_ms,
            max,
            items: BTreeMap::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Queues `request` for `round` to each of `peers` (replacing an older one for the round);
    /// past the bound, the oldest round is abandoned. Sends nothing: see [`Outbox::due`].
    pub fn push(
        &mut self,
        round: RoundId,
        request: Request,
        peers: BTreeSet<PeerId>,
        now: Millis,
    ) -> Vec<Action> {
        if peers.is_empty() {
            return vec![Action::Emit(Event::RoundDeliveredAll { round })];
        }
        self.in_flight.retain(|_, (r, _)| *r != round);
        self.items.insert(
            round,
            Item {
                request,
                waiting: peers,
                in_flight: BTreeSet::new(),
                retry_at: now,
            },
        );
        let mut actions = Vec::new();
        while self.items.len() > self.max {
            let Some((old, item)) = self.items.pop_first() else {
                break;
            };
            self.in_flight.retain(|_, (r, _)| *r != old);
            actions.extend(item.waiting.into_iter().map(|distributor| {
                Action::Emit(Event::DeliveryAbandoned {
                    round: old,
                    distributor,
                })
            }));
        }
        actions
    }

    /// Sends every request that is due to each peer still waiting for it.
    pub fn due(&mut self, now: Millis, tags: &mut Tags) -> Vec<Action> {
        let mut actions = Vec::new();
        for (round, item) in self.items.iter_mut().filter(|(_, i)| i.retry_at <= now) {
            let idle: Vec<PeerId> = item.waiting.difference(&item.in_flight).copied().collect();
            for peer in idle {
                let tag = tags.next();
                item.in_flight.insert(peer);
                self.in_flight.insert(tag, (*round, peer));
                actions.push(Action::Send {
                    peer,
                    tag,
                    request: item.request.clone(),
                });
            }
        }
        actions
    }

    /// The answer to one of this outbox's requests (nothing for another tag).
    pub fn answered(
        &mut self,
        now: Millis,
        tag: Tag,
        response: Result<Response, String>,
    ) -> Vec<Action> {
        let Some((round, peer)) = self.in_flight.remove(&tag) else {
            return Vec::new();
        };
        let Some(item) = self.items.get_mut(&round) else {
            return Vec::new();
        };
        item.in_flight.remove(&peer);
        match response {
            Ok(Response::Delivered(r)) if r == round => {
                item.waiting.remove(&peer);
                let mut actions = vec![Action::Emit(Event::RoundDelivered {
                    round,
                    distributor: peer,
                })];
                if item.waiting.is_empty() {
                    self.items.remove(&round);
                    actions.push(Action::Emit(Event::RoundDeliveredAll { round }));
                }
                actions
            }
            other => {
                item.retry_at = now + self.retry_ms;
                let (failure, reason) = failure_of(other);
                vec![Action::Emit(Event::RequestFailed {
                    peer,
                    request: self.kind.into(),
                    failure,
                    reason,
                })]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Refusal;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn sends(actions: &[Action]) -> Vec<(PeerId, Tag)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { peer, tag, .. } => Some((*peer, *tag)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_request_goes_to_every_peer_until_each_acknowledges_it() {
        let (a, b) = (peer(), peer());
        let mut tags = Tags::default();
        let mut outbox = Outbox::new("deliver", 1_000, 8);
        assert!(outbox
            .push(RoundId(1), Request::PublicKey, [a, b].into(), 0)
            .is_empty());
        let first = sends(&outbox.due(0, &mut tags));
        assert_eq!(first.len(), 2);
        assert!(
            sends(&outbox.due(5_000, &mut tags)).is_empty(),
            "both in flight"
        );
        let (to_a, to_b) = match first[0].0 == a {
            true => (first[0].1, first[1].1),
            false => (first[1].1, first[0].1),
        };
        let acked = outbox.answered(10, to_a, Ok(Response::Delivered(RoundId(1))));
        assert!(matches!(
            acked[..],
            [Action::Emit(Event::RoundDelivered { .. })]
        ));
        let refused = Ok(Response::Refused(Refusal::Unavailable("busy".into())));
        let failed = outbox.answered(20, to_b, refused);
        assert!(matches!(
            failed[..],
            [Action::Emit(Event::RequestFailed { .. })]
        ));
        assert!(
            sends(&outbox.due(500, &mut tags)).is_empty(),
            "not before the retry"
        );
        let retried = sends(&outbox.due(1_020, &mut tags));
        assert_eq!(retried.iter().map(|s| s.0).collect::<Vec<_>>(), vec![b]);
        let done = outbox.answered(1_030, retried[0].1, Ok(Response::Delivered(RoundId(1))));
        assert!(matches!(
            done[..],
            [
                Action::Emit(Event::RoundDelivered { .. }),
                Action::Emit(Event::RoundDeliveredAll { round: RoundId(1) })
            ]
        ));
        assert!(outbox
            .answered(1_040, retried[0].1, Ok(Response::Delivered(RoundId(1))))
            .is_empty());
        assert!(sends(&outbox.due(10_000, &mut tags)).is_empty());
    }

    #[test]
    fn past_the_bound_the_oldest_round_is_abandoned_and_its_answers_ignored() {
        let a = peer();
        let mut tags = Tags::default();
        let mut outbox = Outbox::new("handover", 1_000, 2);
        outbox.push(RoundId(1), Request::PublicKey, [a].into(), 0);
        let old = sends(&outbox.due(0, &mut tags));
        outbox.push(RoundId(2), Request::PublicKey, [a].into(), 0);
        let abandoned = outbox.push(RoundId(3), Request::PublicKey, [a].into(), 0);
        assert!(matches!(
            abandoned[..],
            [Action::Emit(Event::DeliveryAbandoned {
                round: RoundId(1),
                ..
            })]
        ));
        assert!(outbox
            .answered(1, old[0].1, Ok(Response::Delivered(RoundId(1))))
            .is_empty());
        assert_eq!(sends(&outbox.due(1, &mut tags)).len(), 2, "rounds 2 and 3");
        assert!(matches!(
            outbox.push(RoundId(4), Request::PublicKey, BTreeSet::new(), 2)[..],
            [Action::Emit(Event::RoundDeliveredAll { round: RoundId(4) })]
        ));
    }
}
