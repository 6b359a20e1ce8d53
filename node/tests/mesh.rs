//! In-process meshes: real libp2p nodes on 127.0.0.1 TCP in one test process, real RSA, real redb.

use libp2p::{Multiaddr, PeerId};
use otpmesh_node::ask::Asker;
use otpmesh_node::{keys, NodeConfig, NodeEvent, RoleSpec};
use otpmesh_protocol::digest::Digest32;
use otpmesh_protocol::mesh::{Contributor, Member, MeshConfig};
use otpmesh_protocol::phrase::{ClientId, Phrase, UserInput};
use otpmesh_protocol::role::Event;
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::seal::{PrivateKey, PublicKey};
use otpmesh_protocol::wire::{self, Gossip, PhraseSubmission};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

struct Running {
    peer: PeerId,
    client: otpmesh_node::Client,
    events: mpsc::Receiver<NodeEvent>,
    addr: Multiaddr,
}

impl Running {
    /// Waits for the first event `pick` accepts, skipping others.
    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&NodeEvent) -> Option<T>,
    ) -> T {
        let found = timeout(WAIT, async {
            while let Some(e) = self.events.recv().await {
                if let Some(t) = pick(&e) {
                    return Some(t);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(t)) => t,
            Ok(None) => panic!("node {} stopped while waiting for {what}", self.peer),
            Err(_) => panic!(
                "timed out after {WAIT:?} waiting for {what} at {}",
                self.peer
            ),
        }
    }
}

fn identity(dir: &Path) -> PeerId {
    keys::load_or_create_identity(dir)
        .unwrap()
        .public()
        .to_peer_id()
}

/// A node's config: `role` in `dir`, listening on `listen`, dialling `peers`.
fn config(
    role: RoleSpec,
    dir: PathBuf,
    mesh: &MeshConfig,
    listen: Multiaddr,
    peers: Vec<Multiaddr>,
) -> NodeConfig {
    NodeConfig {
        role,
        data_dir: dir,
        listen: vec![listen],
        peers,
        mesh: mesh.clone(),
        mdns: false,
        manual_rounds: false,
        seed: None,
        metrics: None,
    }
}

async fn spawn(role: RoleSpec, dir: PathBuf, mesh: &MeshConfig, peers: Vec<Multiaddr>) -> Running {
    let any_port = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let node = otpmesh_node::start(config(role, dir, mesh, any_port, peers)).expect("node starts");
    let (peer, client, mut events) = (node.peer_id, node.client, node.events);
    tokio::spawn(node.event_loop.run());
    let addr = timeout(WAIT, async {
        loop {
            if let Some(NodeEvent::Listening { addr }) = events.recv().await {
                return addr;
            }
        }
    })
    .await
    .expect("node listens");
    let addr = addr.with(libp2p::multiaddr::Protocol::P2p(peer));
    Running {
        peer,
        client,
        events,
        addr,
    }
}

struct Layout {
    root: tempfile::TempDir,
    mesh: MeshConfig,
}

impl Layout {
    fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// A mesh of one generator, one distributor, `contributors` contributors (clients 1..=n) and
    /// one listed requester; identities are created now so the mesh config can list them.
    fn new(contributors: u32) -> Layout {
        let root = tempfile::tempdir().unwrap();
        let member = |name: &str| Member {
            peer_id: identity(&root.path().join(name)),
            addrs: vec![],
            name: None,
        };
        let mut mesh = MeshConfig {
            generators: vec![member("generator")],
            distributors: vec![member("distributor")],
            requesters: vec![member("requester")],
            contributors: (1..=contributors)
                .map(|i| Contributor {
                    client_id: ClientId(i),
                    peer_id: identity(&root.path().join(format!("contributor-{i}"))),
                    addrs: vec![],
                })
                .collect(),
            ..Default::default()
        };
        mesh.settings.hash_iterations = 100;
        mesh.settings.round_interval_ms = 60_000;
        Layout { root, mesh }
    }

    /// Starts the generator and the distributor; returns them and their addresses to dial.
    async fn start_core(&self) -> (Running, Running, Vec<Multiaddr>) {
        let generator = spawn(
            RoleSpec::Generator,
            self.dir("generator"),
            &self.mesh,
            vec![],
        )
        .await;
        let peers = vec![generator.addr.clone()];
        let distributor = spawn(
            RoleSpec::Distributor,
            self.dir("distributor"),
            &self.mesh,
            peers,
        )
        .await;
        let hubs = vec![generator.addr.clone(), distributor.addr.clone()];
        (generator, distributor, hubs)
    }
}

/// Contributors 1 to 4, each answering `input(i)` every round.
async fn spawn_contributors(
    layout: &Layout,
    mesh: &MeshConfig,
    hubs: &[Multiaddr],
    input: impl Fn(u32) -> i128,
) -> Vec<Running> {
    let mut running = Vec::new();
    for i in 1..=4u32 {
        let role = RoleSpec::Contributor {
            client: ClientId(i),
            input: Some(UserInput(input(i))),
        };
        let dir = layout.dir(&format!("contributor-{i}"));
        running.push(spawn(role, dir, mesh, hubs.to_vec()).await);
    }
    running
}

fn sealed(e: &NodeEvent, round: RoundId) -> Option<Vec<ClientId>> {
    match e {
        NodeEvent::Role(Event::RoundSealed {
            round: r, included, ..
        }) if *r == round => Some(included.clone()),
        _ => None,
    }
}

fn delivered(e: &NodeEvent, round: RoundId) -> Option<()> {
    matches!(e, NodeEvent::Role(Event::RoundDeliveredAll { round: r }) if *r == round).then_some(())
}

/// Asks `distributor` for one OTP with the identity in `dir`, through the typed client API.
async fn request_once(dir: PathBuf, distributor: &Running) -> Result<(String, RoundId), String> {
    let asker = Asker {
        data_dir: dir,
        peers: vec![distributor.addr.clone()],
        mesh: MeshConfig::default(),
        seed: None,
        timeout: Duration::from_secs(30),
    };
    match asker.otp(distributor.peer).await {
        Ok(issued) => Ok((issued.otp, issued.round)),
        Err(failed) => Err(failed.reason),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_round_on_a_seven_node_mesh() {
    let layout = Layout::new(4);
    let mesh = &layout.mesh;
    let (mut generator, distributor, hubs) = layout.start_core().await;
    let mut requester = spawn(
        RoleSpec::Requester {
            distributors: vec![],
        },
        layout.dir("requester"),
        mesh,
        hubs.clone(),
    )
    .await;
    let mut contributors = spawn_contributors(&layout, mesh, &hubs, |i| i as i128 * 1000).await;

    let included = generator
        .wait_for("round 1 sealed", |e| sealed(e, RoundId(1)))
        .await;
    assert_eq!(included, (1..=4).map(ClientId).collect::<Vec<_>>());
    generator
        .wait_for("round 1 delivered", |e| delivered(e, RoundId(1)))
        .await;
    for c in &mut contributors {
        let ok = c
            .wait_for("transcript check", |e| match e {
                NodeEvent::Role(Event::TranscriptChecked {
                    round: RoundId(1),
                    included,
                    ..
                }) => Some(*included),
                _ => None,
            })
            .await;
        assert!(ok, "contributor {} not found in the transcript", c.peer);
    }
    let (otp, round) = requester
        .wait_for("requester OTP", |e| match e {
            NodeEvent::Role(Event::OtpReceived { otp, round, .. }) => Some((otp.clone(), *round)),
            _ => None,
        })
        .await;
    assert_eq!((otp.len(), round), (8, RoundId(1)));

    // A one-shot requester with the listed requester's identity, twice: two different OTPs.
    let first = request_once(layout.dir("requester"), &distributor)
        .await
        .unwrap();
    let second = request_once(layout.dir("requester"), &distributor)
        .await
        .unwrap();
    assert_eq!(first.1, RoundId(1));
    assert!(first.0.chars().all(|c| c.is_ascii_digit()) && first.0.len() == 8);
    assert_ne!(first.0, second.0);
    assert_ne!(first.0, otp);

    // An identity the mesh config does not list is refused, with the reason.
    let refused = request_once(layout.dir("stranger"), &distributor)
        .await
        .unwrap_err();
    assert!(refused.contains("not a listed requester"), "{refused}");
}

fn submission(round: u64, client: u32, fingerprint: Digest32, ciphertext: Vec<u8>) -> Vec<u8> {
    wire::encode_gossip(&Gossip::Phrase(PhraseSubmission {
        round: RoundId(round),
        client: ClientId(client),
        key_fingerprint: fingerprint,
        ciphertext,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_rejected_and_the_round_still_seals() {
    // Clients 1–4 are honest; client 5 is listed but hostile; "stranger" is not listed at all.
    let mut layout = Layout::new(5);
    layout.mesh.settings.quorum = 5;
    layout.mesh.settings.minimum = 4;
    layout.mesh.settings.deadline_ms = 8_000;
    let mesh = &layout.mesh;
    let (mut generator, distributor, hubs) = layout.start_core().await;
    let hostile_role = RoleSpec::Contributor {
        client: ClientId(5),
        input: None,
    };
    let mut hostile = spawn(
        hostile_role,
        layout.dir("contributor-5"),
        mesh,
        hubs.clone(),
    )
    .await;
    let stranger_role = RoleSpec::Contributor {
        client: ClientId(9),
        input: None,
    };
    let mut stranger = spawn(stranger_role, layout.dir("stranger"), mesh, hubs.clone()).await;
    // Held to the end: a node stops when its last client handle is dropped.
    let _honest = spawn_contributors(&layout, mesh, &hubs, |_| 7).await;

    // The hostile peers wait for round 1 and for the generator's subscription.
    hostile
        .wait_for("round 1 opened", |e| {
            matches!(e, NodeEvent::InputNeeded { round: RoundId(1) }).then_some(())
        })
        .await;
    stranger
        .wait_for("round 1 opened", |e| {
            matches!(e, NodeEvent::InputNeeded { round: RoundId(1) }).then_some(())
        })
        .await;
    let public = PublicKey::from_pem(
        &std::fs::read_to_string(layout.dir("generator").join(keys::RSA_PUBLIC_FILE)).unwrap(),
    )
    .unwrap();
    let fp = public.fingerprint();
    let mut rng = rand::rngs::OsRng;
    let phrase =
        |client| Phrase::build(UserInput(1), ClientId(client), &mut rand::rngs::OsRng).unwrap();
    let other_key = PrivateKey::generate(2048, &mut rng).unwrap();
    let under_other_key = other_key
        .public()
        .seal(RoundId(1), ClientId(5), &phrase(5), &mut rng)
        .unwrap();
    let valid = public
        .seal(RoundId(1), ClientId(5), &phrase(5), &mut rng)
        .unwrap();
    let for_client_1 = public
        .seal(RoundId(1), ClientId(1), &phrase(1), &mut rng)
        .unwrap();

    // Each peer's second invalid message graylists it (later ones are dropped unread), so the
    // junk is shared out: the stranger sends two invalid messages, the hostile contributor two
    // invalid ones (the last one last), a round number nobody could act on and a duplicate.
    stranger
        .client
        .publish_raw(b"\xff\x00 not cbor".to_vec())
        .await
        .unwrap();
    hostile
        .client
        .publish_raw(submission(999, 5, fp, valid.clone()))
        .await
        .unwrap();
    hostile
        .client
        .publish_raw(submission(1, 5, fp, vec![7; 100]))
        .await
        .unwrap();
    hostile
        .client
        .publish_raw(submission(1, 5, fp, under_other_key))
        .await
        .unwrap();
    hostile
        .client
        .publish_raw(submission(1, 5, fp, valid))
        .await
        .unwrap();
    // Its second invalid message (the duplicate above is said but not penalised: an honest
    // contributor restarted within a round sends one too).
    hostile
        .client
        .publish_raw(submission(1, 5, fp, vec![8; 200]))
        .await
        .unwrap();
    stranger
        .client
        .publish_raw(submission(1, 1, fp, for_client_1))
        .await
        .unwrap();

    let expected = [
        "undecodable gossip",
        "round 999, which is not open",
        "fits no allowed RSA key size",
        "phrase did not open",
        "second phrase for client 5",
        "client id 1 belongs to another peer",
    ];
    let mut seen = Vec::new();
    let mut penalised = Vec::new();
    let included = generator
        .wait_for("round 1 sealed after every rejection", |e| {
            match e {
                NodeEvent::GossipRejected { reason, .. } => seen.push(reason.clone()),
                NodeEvent::Role(Event::PhraseRejected { reason, .. }) => seen.push(reason.clone()),
                NodeEvent::PeerPenalised { peer, .. } => penalised.push(*peer),
                _ => {}
            }
            sealed(e, RoundId(1))
        })
        .await;
    let hostile_peer = identity(&layout.dir("contributor-5"));
    let stranger_peer = identity(&layout.dir("stranger"));
    assert!(
        penalised.contains(&hostile_peer) && penalised.contains(&stranger_peer),
        "both misbehaving peers are graylisted: {penalised:?}"
    );
    for want in expected {
        assert!(
            seen.iter().any(|r| r.contains(want)),
            "no rejection saying {want:?}; saw {seen:?}"
        );
    }
    assert_eq!(
        included,
        (1..=4).map(ClientId).collect::<Vec<_>>(),
        "only the honest phrases go in"
    );
    generator
        .wait_for("round 1 delivered", |e| delivered(e, RoundId(1)))
        .await;
    let (otp, _) = request_once(layout.dir("requester"), &distributor)
        .await
        .unwrap();
    assert_eq!(otp.len(), 8);
    let refused = request_once(layout.dir("contributor-5"), &distributor)
        .await
        .unwrap_err();
    assert!(refused.contains("not a listed requester"), "{refused}");
}

/// A port on 127.0.0.1 that was free a moment ago (the mesh config must name it before its node
/// listens on it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Generators and distributors keep connections to each other, so in a mesh of N of them both
/// sides of every pair dial. One connection per pair is enough: a second one costs every message
/// and every timer twice (a 96-node mesh held 7,275 connections where 2,544 pairs needed one).
/// All four start at once, the way `mesh up` starts them, and every pair must end up on one
/// connection once a round has been sealed and delivered over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_keep_each_other_hold_one_connection_per_pair() {
    let root = tempfile::tempdir().unwrap();
    let names = [
        "generator",
        "distributor-1",
        "distributor-2",
        "distributor-3",
    ];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let member = |i: usize| Member {
        peer_id: identity(&root.path().join(names[i])),
        addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", ports[i])],
        name: None,
    };
    let mut mesh = MeshConfig {
        generators: vec![member(0)],
        distributors: (1..4).map(member).collect(),
        contributors: vec![Contributor {
            client_id: ClientId(1),
            peer_id: identity(&root.path().join("contributor-1")),
            addrs: vec![],
        }],
        ..Default::default()
    };
    mesh.settings.hash_iterations = 100;
    mesh.settings.round_interval_ms = 60_000;
    // Every listener is bound before any event loop runs (and dials).
    let mut nodes: Vec<otpmesh_node::Node> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| {
            let role = if *name == "generator" {
                RoleSpec::Generator
            } else {
                RoleSpec::Distributor
            };
            let listen = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
            let dir = root.path().join(name);
            otpmesh_node::start(config(role, dir, &mesh, listen, vec![])).expect("node starts")
        })
        .collect();
    let generator_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", ports[0]).parse().unwrap();
    let contributor = RoleSpec::Contributor {
        client: ClientId(1),
        input: Some(UserInput(1)),
    };
    let (dir, listen) = (
        root.path().join("contributor-1"),
        "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
    );
    nodes.push(
        otpmesh_node::start(config(
            contributor,
            dir,
            &mesh,
            listen,
            vec![generator_addr],
        ))
        .expect("contributor starts"),
    );
    // Held to the end: a node stops when its last client handle is dropped.
    let mut running: Vec<Running> = nodes
        .into_iter()
        .map(|node| {
            tokio::spawn(node.event_loop.run());
            Running {
                peer: node.peer_id,
                client: node.client,
                events: node.events,
                addr: Multiaddr::empty(),
            }
        })
        .collect();
    running[0]
        .wait_for("round 1 delivered to every distributor", |e| {
            delivered(e, RoundId(1))
        })
        .await;
    for name in names.iter().chain(&["contributor-1"]) {
        let status = otpmesh_node::status::ask(&root.path().join(name))
            .await
            .unwrap();
        assert_eq!(
            status.connections, status.peers,
            "{name} holds {} connections to {} peers",
            status.connections, status.peers
        );
    }
}
