//! What the live page shows: a bounded picture of the mesh, built from the nodes' events and the
//! lab's own state, serialized whole for every update.
//!
//! The view copies the fields it shows one by one out of typed events and never a whole event:
//! an OTP, a TOTP secret, a login code or a password a node prints never reaches it, whatever
//! events are added later. Every list is bounded ([`MAX_ROUNDS`], [`MAX_BEACON`],
//! [`MAX_REJECTIONS`]).

use super::super::plan::{NodeEntry, State};
use crate::line::Line;
use libp2p::PeerId;
use otpmesh_node::NodeEvent;
use otpmesh_protocol::role::Event;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Rounds kept on the timeline (the newest).
pub const MAX_ROUNDS: usize = 48;
/// Beacon values kept (the newest).
pub const MAX_BEACON: usize = 24;
/// Rejections kept (the newest).
pub const MAX_REJECTIONS: usize = 40;
/// Peers listed per node; a node of a big mesh shows a count beyond it.
pub const MAX_PEERS_LISTED: usize = 64;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub role: &'static str,
    pub peer_id: String,
    pub state: State,
    /// Listening and subscribed since it last started.
    pub ready: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub exit: Option<String>,
    /// The mesh's nodes it is connected to, by name (at most [`MAX_PEERS_LISTED`]).
    pub peers: Vec<String>,
    pub peer_count: usize,
    /// The nodes a partition cuts it off from.
    pub cut_off: Vec<String>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RoundState {
    Open,
    Sealed,
    Delivered,
    Failed,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Round {
    pub round: u64,
    pub state: RoundState,
    /// Milliseconds since `mesh up` started.
    pub opened_ms: u64,
    pub quorum: u32,
    /// Phrases (or dealings) the generators accepted.
    pub accepted: u32,
    /// Contributors the sealed round took in.
    pub included: Option<u32>,
    /// From opened to sealed.
    pub seal_ms: Option<u64>,
    /// From opened to delivered to every distributor.
    pub deliver_ms: Option<u64>,
    pub failure: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Beacon {
    pub round: u64,
    /// Public randomness: anyone may know it.
    pub value: String,
    pub prev: String,
    /// Distributor indices whose partials made it.
    pub from: Vec<u32>,
    /// The nodes that checked it and joined it to their chain.
    pub verified_by: BTreeSet<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Rejection {
    pub at_ms: u64,
    pub node: String,
    pub what: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// OTPs (or threshold partials) distributors issued.
    pub otps_issued: u64,
    /// OTPs requesters received and unsalted.
    pub otps_received: u64,
    /// Verifications by result (distributors, quorums and verifier checks).
    pub verifications: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct View {
    pub mode: &'static str,
    pub generator: String,
    /// Milliseconds since `mesh up` started, at this picture.
    pub now_ms: u64,
    pub nodes: Vec<Node>,
    pub rounds: VecDeque<Round>,
    pub beacon: VecDeque<Beacon>,
    pub counts: Counts,
    pub rejections: VecDeque<Rejection>,
    #[serde(skip)]
    names: HashMap<PeerId, String>,
    #[serde(skip)]
    links: HashMap<String, BTreeSet<String>>,
    #[serde(skip)]
    ready: HashMap<String, (bool, bool)>,
}

impl View {
    pub fn new(entries: &[NodeEntry], generator: &str, threshold: bool) -> View {
        let names = entries
            .iter()
            .filter_map(|e| Some((e.peer_id.parse().ok()?, e.name.clone())))
            .collect();
        let mut view = View {
            mode: if threshold { "threshold" } else { "single" },
            generator: generator.to_string(),
            now_ms: 0,
            nodes: Vec::new(),
            rounds: VecDeque::new(),
            beacon: VecDeque::new(),
            counts: Counts::default(),
            rejections: VecDeque::new(),
            names,
            links: HashMap::new(),
            ready: HashMap::new(),
        };
        view.refresh(entries, |_| Vec::new(), 0);
        view
    }

    /// Takes the nodes' states from the lab (`cut_off` says who a partition cuts a node off from).
    pub fn refresh(
        &mut self,
        entries: &[NodeEntry],
        cut_off: impl Fn(&str) -> Vec<String>,
        now_ms: u64,
    ) {
        self.now_ms = now_ms;
        self.nodes = entries
            .iter()
            .map(|e| {
                let linked = self.links.get(&e.name);
                let (listening, subscribed) = self.ready.get(&e.name).copied().unwrap_or_default();
                Node {
                    name: e.name.clone(),
                    role: e.role,
                    peer_id: e.peer_id.clone(),
                    state: e.state,
                    ready: e.state == State::Running && listening && subscribed,
                    pid: e.pid,
                    restarts: e.restarts,
                    exit: e.exit.clone(),
                    peers: linked
                        .map(|l| l.iter().take(MAX_PEERS_LISTED).cloned().collect())
                        .unwrap_or_default(),
                    peer_count: linked.map_or(0, BTreeSet::len),
                    cut_off: cut_off(&e.name),
                }
            })
            .collect();
    }

    /// Node `name` ended: it has no links any more, and is not ready until it listens again.
    pub fn ended(&mut self, name: &str) {
        self.ready.remove(name);
        if let Some(gone) = self.links.remove(name) {
            for peer in gone {
                if let Some(theirs) = self.links.get_mut(&peer) {
                    theirs.remove(name);
                }
            }
        }
    }

    /// Round `round` reached every distributor (the lab decides when, in either mode).
    pub fn delivered(&mut self, round: u64, now_ms: u64) {
        if let Some(r) = self.round(round) {
            r.state = RoundState::Delivered;
            r.deliver_ms = Some(now_ms.saturating_sub(r.opened_ms));
        }
    }

    /// Takes in one line node `name` printed.
    pub fn on_line(&mut self, name: &str, line: &Line, now_ms: u64) {
        let Line::Node(event) = line else { return };
        match event {
            NodeEvent::Listening { .. } => self.ready.entry(name.into()).or_default().0 = true,
            NodeEvent::Subscribed { .. } => self.ready.entry(name.into()).or_default().1 = true,
            NodeEvent::Connected { peer } => {
                if let Some(other) = self.names.get(peer).cloned() {
                    self.links.entry(name.into()).or_default().insert(other);
                }
            }
            NodeEvent::Disconnected { peer } => {
                if let (Some(other), Some(l)) = (self.names.get(peer), self.links.get_mut(name)) {
                    l.remove(other);
                }
            }
            NodeEvent::GossipRejected { reason, .. } => self.reject(name, "gossip", reason, now_ms),
            NodeEvent::RequestRejected { reason, .. } => {
                self.reject(name, "request", reason, now_ms)
            }
            NodeEvent::PeerPenalised { reason, .. } => {
                self.reject(name, "peer penalised", reason, now_ms)
            }
            NodeEvent::Role(event) => self.on_event(name, event, now_ms),
            NodeEvent::InputNeeded { .. } => {}
        }
    }

    fn on_event(&mut self, name: &str, event: &Event, now_ms: u64) {
        let from_generator = name == self.generator;
        match event {
            Event::RoundOpened { round, quorum, .. } if from_generator => {
                self.opened(round.0, *quorum, now_ms)
            }
            Event::PhraseAccepted { round, .. } if from_generator => {
                if let Some(r) = self.round(round.0) {
                    r.accepted += 1;
                }
            }
            Event::RoundSealed {
                round, included, ..
            } if from_generator => {
                if let Some(r) = self.round(round.0) {
                    if r.state == RoundState::Open {
                        r.state = RoundState::Sealed;
                    }
                    r.included = Some(included.len() as u32);
                    r.seal_ms = Some(now_ms.saturating_sub(r.opened_ms));
                }
            }
            Event::RoundFailed { round, reason } if from_generator => {
                if let Some(r) = self.round(round.0) {
                    r.state = RoundState::Failed;
                    r.failure = Some(reason.clone());
                }
                self.reject(name, "round failed", reason, now_ms);
            }
            Event::OtpIssued { .. } => self.counts.otps_issued += 1,
            Event::PartialIssued { verification, .. } if !verification => {
                self.counts.otps_issued += 1
            }
            Event::OtpReceived { .. } | Event::ThresholdOtpReceived { .. } => {
                self.counts.otps_received += 1
            }
            Event::OtpVerified { result, .. } | Event::ThresholdVerified { result, .. } => {
                self.count_verification(label(result))
            }
            Event::CheckDecided { outcome, .. } => {
                self.count_verification(format!("check {}", label(outcome)))
            }
            Event::BeaconValue {
                round,
                value,
                prev,
                from,
                ..
            } => self.beacon_value(name, round.0, value.to_hex(), prev.to_hex(), from),
            Event::PhraseRejected { reason, .. } => self.reject(name, "phrase", reason, now_ms),
            Event::DealingExcluded { reason, .. } => self.reject(name, "dealing", reason, now_ms),
            Event::RequestRefused {
                failure, reason, ..
            } if *failure == otpmesh_protocol::role::Failure::Unauthorised => {
                self.reject(name, "request refused", reason, now_ms)
            }
            _ => {}
        }
    }

    fn opened(&mut self, round: u64, quorum: u32, now_ms: u64) {
        if self.round(round).is_some() {
            return;
        }
        // Still open when a newer one opens: the generator moved on without it.
        self.rounds.push_back(Round {
            round,
            state: RoundState::Open,
            opened_ms: now_ms,
            quorum,
            accepted: 0,
            included: None,
            seal_ms: None,
            deliver_ms: None,
            failure: None,
        });
        while self.rounds.len() > MAX_ROUNDS {
            self.rounds.pop_front();
        }
    }

    fn round(&mut self, round: u64) -> Option<&mut Round> {
        self.rounds.iter_mut().rev().find(|r| r.round == round)
    }

    fn beacon_value(&mut self, node: &str, round: u64, value: String, prev: String, from: &[u32]) {
        if let Some(b) = self.beacon.iter_mut().find(|b| b.round == round) {
            b.verified_by.insert(node.to_string());
            return;
        }
        if self.beacon.back().is_some_and(|b| b.round > round) {
            // An old value a node caught up on, older than the chain shown.
            if self.beacon.len() >= MAX_BEACON
                || self.beacon.front().is_some_and(|b| b.round > round)
            {
                return;
            }
        }
        let at = self.beacon.partition_point(|b| b.round < round);
        self.beacon.insert(
            at,
            Beacon {
                round,
                value,
                prev,
                from: from.to_vec(),
                verified_by: BTreeSet::from([node.to_string()]),
            },
        );
        while self.beacon.len() > MAX_BEACON {
            self.beacon.pop_front();
        }
    }

    fn count_verification(&mut self, result: String) {
        *self.counts.verifications.entry(result).or_default() += 1;
    }

    fn reject(&mut self, node: &str, what: &'static str, reason: &str, now_ms: u64) {
        self.rejections.push_back(Rejection {
            at_ms: now_ms,
            node: node.to_string(),
            what,
            reason: reason.chars().take(300).collect(),
        });
        while self.rejections.len() > MAX_REJECTIONS {
            self.rejections.pop_front();
        }
    }
}

/// A unit enum's serde name (`accepted`, `wrong_code`).
fn label(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(map)) => map.keys().next().cloned().unwrap_or_default(),
        _ => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpmesh_protocol::round::RoundId;

    fn entry(name: &str, role: &'static str) -> NodeEntry {
        NodeEntry {
            name: name.into(),
            role,
            peer_id: PeerId::random().to_string(),
            ..NodeEntry::default()
        }
    }

    fn event(e: Event) -> Line {
        Line::Node(NodeEvent::Role(e))
    }

    #[test]
    fn an_otp_a_requester_prints_never_reaches_the_page() {
        let entries = [
            entry("generator-1", "generator"),
            entry("requester-1", "requester"),
        ];
        let mut view = View::new(&entries, "generator-1", false);
        let secret = "918273645501";
        let line = event(Event::OtpReceived {
            round: RoundId(1),
            distributor: PeerId::random(),
            otp: secret.into(),
            expires_at_ms: 9,
        });
        view.on_line("requester-1", &line, 5);
        let page = serde_json::to_string(&view).unwrap();
        assert_eq!(view.counts.otps_received, 1);
        assert!(!page.contains(secret), "{page}");
    }

    #[test]
    fn rounds_are_followed_from_open_to_delivered_and_bounded() {
        let entries = [entry("generator-1", "generator")];
        let mut view = View::new(&entries, "generator-1", false);
        for n in 1..=(MAX_ROUNDS as u64 + 5) {
            let opened = event(Event::RoundOpened {
                round: RoundId(n),
                quorum: 3,
                deadline_ms: 0,
            });
            view.on_line("generator-1", &opened, n * 100);
        }
        assert_eq!(view.rounds.len(), MAX_ROUNDS);
        assert_eq!(view.rounds.front().unwrap().round, 6);
        let last = MAX_ROUNDS as u64 + 5;
        let sealed = event(Event::RoundSealed {
            round: RoundId(last),
            commitment: Default::default(),
            prev_commitment: Default::default(),
            included: Vec::new(),
        });
        view.on_line("generator-1", &sealed, last * 100 + 40);
        view.delivered(last, last * 100 + 70);
        let r = view.rounds.back().unwrap();
        assert_eq!(
            (r.state, r.seal_ms, r.deliver_ms),
            (RoundState::Delivered, Some(40), Some(70))
        );
        // Another node's word on a round is not the generator's.
        let other = event(Event::RoundOpened {
            round: RoundId(999),
            quorum: 1,
            deadline_ms: 0,
        });
        view.on_line("distributor-1", &other, 1);
        assert!(view.rounds.iter().all(|r| r.round != 999));
    }

    #[test]
    fn links_follow_connections_and_a_dead_node_loses_them() {
        let entries = [entry("a", "distributor"), entry("b", "distributor")];
        let b: PeerId = entries[1].peer_id.parse().unwrap();
        let a: PeerId = entries[0].peer_id.parse().unwrap();
        let mut view = View::new(&entries, "g", false);
        view.on_line("a", &Line::Node(NodeEvent::Connected { peer: b }), 1);
        view.on_line("b", &Line::Node(NodeEvent::Connected { peer: a }), 1);
        view.refresh(&entries, |_| Vec::new(), 2);
        assert_eq!(view.nodes[0].peers, ["b"]);
        view.ended("b");
        view.refresh(&entries, |n| vec![format!("{n}-cut")], 3);
        assert!(view.nodes.iter().all(|n| n.peers.is_empty()));
        assert_eq!(view.nodes[1].cut_off, ["b-cut"]);
    }
}
