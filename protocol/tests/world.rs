//! The world every simulation runs on (`otpmesh_protocol::sim::World`): raw bytes are judged as a
//! node judges them, a blocked pair refuses each other's requests at once, and a crashed node's
//! requests are refused until it is added again.

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::{Distributor, Event, Requester, Verdict};
use otpmesh_protocol::sim::net::{Address, Faults};
use otpmesh_protocol::sim::{Observer, World};
use otpmesh_protocol::wire::{GOSSIP_TOPIC, USED_TOPIC};
use std::sync::Arc;

#[derive(Default)]
struct Seen {
    events: Vec<(Address, Event)>,
    judged: Vec<(PeerId, PeerId, Verdict)>,
}

impl Observer for Seen {
    fn event(&mut self, _world: &mut World, at: Address, event: Event) {
        self.events.push((at, event));
    }
    fn judged(&mut self, _world: &mut World, at: PeerId, from: PeerId, verdict: &Verdict) {
        self.judged.push((at, from, verdict.clone()));
    }
}

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

struct Mesh {
    world: World,
    seen: Seen,
    distributor: PeerId,
    requester: PeerId,
}

fn mesh() -> Mesh {
    let (generator, distributor, requester, contributor) = (peer(), peer(), peer(), peer());
    let mesh = MeshConfig::listing(&[generator], &[distributor], &[requester], &[contributor]);
    mesh.validate().unwrap();
    let mesh = Arc::new(mesh);
    let mut world = World::new(mesh.clone(), 5, 1_000_000, Faults::default());
    let mut seen = Seen::default();
    let role = Distributor::new(distributor, mesh, Restored::default());
    world.add(
        distributor,
        Box::new(role),
        &[GOSSIP_TOPIC, USED_TOPIC],
        &mut seen,
    );
    Mesh {
        world,
        seen,
        distributor,
        requester,
    }
}

/// Steps until `at` emits a RequestFailed (its reason), within `limit_ms` of virtual time.
fn failure_of(m: &mut Mesh, at: Address, limit_ms: u64) -> Option<String> {
    let end = m.world.now + limit_ms;
    while m.world.now < end {
        m.world.step(&mut m.seen);
        let found = m.seen.events.iter().find_map(|(a, e)| match e {
            Event::RequestFailed { reason, .. } if *a == at => Some(reason.clone()),
            _ => None,
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The requester asks the distributor for an OTP, from a one-shot session; its address.
fn ask(m: &mut Mesh) -> Address {
    let role = Requester::one_shot(m.requester, m.distributor);
    m.world
        .open_session(m.requester, Box::new(role), &mut m.seen)
}

#[test]
fn raw_bytes_are_judged_as_a_node_decodes_them() {
    let mut m = mesh();
    let hostile = peer();
    m.world
        .publish_raw(hostile, b"\xff\x00 not CBOR at all".to_vec());
    let end = m.world.now + 1_000;
    while m.seen.judged.is_empty() && m.world.now < end {
        m.world.step(&mut m.seen);
    }
    let (at, from, verdict) = m.seen.judged.first().expect("the distributor judged it");
    assert_eq!((*at, *from), (m.distributor, hostile));
    assert!(
        matches!(verdict, Verdict::Reject(r) if r.starts_with("undecodable gossip")),
        "{verdict:?}"
    );
}

#[test]
fn a_blocked_pair_refuses_at_once_and_a_crashed_node_until_it_is_back() {
    let mut m = mesh();
    m.world.block(m.requester, m.distributor, true);
    let at = ask(&mut m);
    // Refused within a round trip, long before the request timeout.
    let reason = failure_of(&mut m, at, 1_000).expect("refused at once");
    assert!(reason.contains("connection refused"), "{reason}");

    m.world.block(m.requester, m.distributor, false);
    m.world.crash(m.distributor);
    assert!(!m.world.is_up(&m.distributor));
    let at = ask(&mut m);
    let reason = failure_of(&mut m, at, 1_000).expect("refused at once");
    assert!(reason.contains("connection refused"), "{reason}");

    // Back, and unblocked: the request reaches the distributor, which has no round yet.
    let mesh = m.world.mesh.clone();
    let role = Distributor::new(m.distributor, mesh, Restored::default());
    m.world.add(
        m.distributor,
        Box::new(role),
        &[GOSSIP_TOPIC, USED_TOPIC],
        &mut m.seen,
    );
    let at = ask(&mut m);
    let reason = failure_of(&mut m, at, 1_000).expect("answered");
    assert!(!reason.contains("connection refused"), "{reason}");
}
