//! Turns a scenario into a mesh on disk: seeded identities and keys, ports, the mesh config, and
//! how to start each node.

use super::spec::{NodeRole, Scenario};
use anyhow::Context;
use libp2p::identity::Keypair;
use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use otpmesh_node::{keys, NodeConfig, RoleSpec};
use otpmesh_protocol::mesh::{Contributor, Member, MeshConfig, UserName, Verifier};
use otpmesh_protocol::phrase::ClientId;
use otpmesh_protocol::seal::{PrivateKey, PublicKey};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::path::{Path, PathBuf};

/// The client id a hostile peer without one claims.
pub const HOSTILE_CLIENT_ID: u32 = 9_999;

/// 32 bytes derived from the run's seed for one purpose.
pub fn derive(seed: u64, purpose: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("otpmesh/1 scenario seed");
    h.update(&seed.to_be_bytes());
    h.update(purpose.as_bytes());
    *h.finalize().as_bytes()
}

pub fn rng(seed: u64, purpose: &str) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(derive(seed, purpose))
}

pub fn derive_u64(seed: u64, purpose: &str) -> u64 {
    u64::from_be_bytes(derive(seed, purpose)[..8].try_into().expect("8 bytes"))
}

#[derive(Clone, Debug)]
pub struct Planned {
    pub name: String,
    pub role: NodeRole,
    pub peer_id: PeerId,
    pub data_dir: PathBuf,
    /// Listen address with /p2p.
    pub addr: Multiaddr,
    pub client_id: Option<u32>,
    /// How to run it in-process (None: requesters, which only make one-shot requests).
    pub config: Option<NodeConfig>,
    /// How to run it as a process.
    pub argv: Vec<String>,
    /// Verifiers: where their fronts listen, and the secrets a client needs.
    pub door: Option<Door>,
}

/// A verifier's fronts as a client sees them: RADIUS (with the shared secret of 127.0.0.1, which
/// must send a Message-Authenticator) and HTTP (with a bearer token). Both are in 0600 files in
/// the verifier's data dir, as `mesh up` writes them.
#[derive(Clone)]
pub struct Door {
    pub radius: std::net::SocketAddr,
    pub secret: zeroize::Zeroizing<String>,
    pub http: std::net::SocketAddr,
    pub token: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Door(radius {}, http {}, <secrets>)",
            self.radius, self.http
        )
    }
}

/// Writes a verifier's clients and tokens files (0600) into `data_dir` and reads them back as
/// its fronts would.
fn door(
    data_dir: &Path,
    radius: std::net::SocketAddr,
    http: std::net::SocketAddr,
) -> anyhow::Result<(Door, otpmesh_node::verifier::Fronts)> {
    use otpmesh_node::verifier::{self, Fronts};
    keys::ensure_data_dir(data_dir)?;
    let (secret, token) = (verifier::fresh_secret(), verifier::fresh_secret());
    let clients = data_dir.join("radius-clients.toml");
    let loopback = std::net::Ipv4Addr::LOCALHOST.into();
    let text = verifier::radius_client_entry(loopback, &secret, true, verifier::DEFAULT_RATE_PER_S);
    keys::write_file(&clients, text.as_bytes(), 0o600)?;
    let tokens = data_dir.join("http-tokens.toml");
    let text = verifier::party_entry("scenario", &token);
    keys::write_file(&tokens, text.as_bytes(), 0o600)?;
    let fronts = Fronts {
        radius: Some((radius, verifier::load_radius_clients(&clients)?)),
        http: Some((http, verifier::load_parties(&tokens)?)),
    };
    let door = Door {
        radius,
        secret,
        http,
        token,
    };
    Ok((door, fronts))
}

pub struct Layout {
    pub nodes: Vec<Planned>,
    pub generator_key: PublicKey,
}

impl Layout {
    pub fn node(&self, name: &str) -> &Planned {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("validated node name")
    }
}

impl crate::steer::Nodes for Layout {
    fn peer_id(&self, name: &str) -> Option<PeerId> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.peer_id)
    }

    fn runs(&self, name: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.name == name && n.config.is_some())
    }
}

pub fn plan(scenario: &Scenario, dir: &Path, seed: u64) -> anyhow::Result<Layout> {
    let exe = std::env::current_exe().context("finding the otpmesh binary")?;
    // A TCP port per node, and a verifier's RADIUS (UDP) and HTTP (TCP) ports besides.
    let count = scenario.nodes.len();
    let verifiers = scenario.nodes_with(NodeRole::Verifier).count();
    let (tcp_ports, udp_ports) = crate::cmd::mesh_ports(count + verifiers)?;
    let ports = tcp_ports[..count].to_vec();
    let mesh_path = dir.join("mesh.toml");
    let mut mesh = MeshConfig {
        settings: scenario.settings.clone(),
        ..Default::default()
    };
    let mut planned = Vec::new();
    let mut generator_key = None;
    for (spec, port) in scenario.nodes.iter().zip(ports) {
        let data_dir = dir.join(&spec.name);
        let keypair = Keypair::ed25519_from_bytes(derive(seed, &format!("identity/{}", spec.name)))
            .context("deriving an identity")?;
        keys::store_identity(&data_dir, &keypair)?;
        let peer_id = keypair.public().to_peer_id();
        let tcp: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse()?;
        let member = Member {
            peer_id,
            addrs: vec![tcp.to_string()],
            // Services know a requester by its node's name (a login step's `user`).
            name: match spec.role {
                NodeRole::Requester => UserName::new(&spec.name).ok(),
                _ => None,
            },
        };
        let client_id = match spec.role {
            NodeRole::Hostile => Some(spec.client_id.unwrap_or(HOSTILE_CLIENT_ID)),
            _ => spec.client_id,
        };
        match spec.role {
            NodeRole::Generator => {
                // Threshold mode has several generators, each with a key of its own.
                let purpose = match generator_key {
                    None => "rsa".to_string(),
                    Some(_) => format!("rsa/{}", spec.name),
                };
                let key =
                    PrivateKey::generate(scenario.settings.rsa_bits, &mut rng(seed, &purpose))?;
                keys::store_rsa(&data_dir, &key)?;
                generator_key.get_or_insert_with(|| key.public().clone());
                mesh.generators.push(member);
            }
            NodeRole::Distributor => mesh.distributors.push(member),
            NodeRole::Requester => mesh.requesters.push(member),
            NodeRole::Verifier => mesh.verifiers.push(Verifier {
                peer_id,
                addrs: member.addrs,
                users: vec!["*".into()],
            }),
            NodeRole::Contributor | NodeRole::Hostile if spec.is_listed() => {
                mesh.contributors.push(Contributor {
                    client_id: ClientId(client_id.expect("contributors have client ids")),
                    peer_id,
                    addrs: vec![],
                })
            }
            // Unlisted: only hostile peers can be (the scenario check refuses others).
            NodeRole::Contributor | NodeRole::Hostile => {}
        }
        planned.push(Planned {
            name: spec.name.clone(),
            role: spec.role,
            peer_id,
            data_dir,
            addr: tcp.with(Protocol::P2p(peer_id)),
            client_id,
            config: None,
            argv: Vec::new(),
            door: None,
        });
    }
    mesh.validate().context("the scenario's mesh config")?;
    keys::write_file(&mesh_path, toml::to_string(&mesh)?.as_bytes(), 0o644)?;

    let hubs: Vec<Multiaddr> = planned
        .iter()
        .filter(|p| matches!(p.role, NodeRole::Generator | NodeRole::Distributor))
        .map(|p| p.addr.clone())
        .collect();
    let mut fronts_at = tcp_ports[count..].iter().zip(&udp_ports);
    for p in &mut planned {
        let role = match p.role {
            NodeRole::Generator => RoleSpec::Generator,
            NodeRole::Distributor => RoleSpec::Distributor,
            NodeRole::Contributor | NodeRole::Hostile => RoleSpec::Contributor {
                client: ClientId(p.client_id.expect("has a client id")),
                input: None,
            },
            NodeRole::Requester => continue,
            NodeRole::Verifier => {
                let (http, radius) = fronts_at.next().expect("a port pair per verifier");
                let (door, fronts) = door(
                    &p.data_dir,
                    ([127, 0, 0, 1], *radius).into(),
                    ([127, 0, 0, 1], *http).into(),
                )?;
                p.door = Some(door);
                RoleSpec::Verifier { fronts }
            }
        };
        let (_, listen) = otpmesh_node::split_peer(&p.addr);
        let peers: Vec<Multiaddr> = hubs.iter().filter(|h| **h != p.addr).cloned().collect();
        let mut argv = vec![
            exe.display().to_string(),
            "node".into(),
            "--role".into(),
            role.name().into(),
            "--data-dir".into(),
            p.data_dir.display().to_string(),
            "--mesh".into(),
            mesh_path.display().to_string(),
            "--listen".into(),
            listen.to_string(),
            "--json".into(),
            "--control-stdin".into(),
            "--seed".into(),
            seed.to_string(),
        ];
        if let Some(id) = p.client_id {
            argv.extend(["--client-id".into(), id.to_string()]);
        }
        if p.role == NodeRole::Generator {
            argv.push("--manual-rounds".into());
        }
        if let Some(door) = &p.door {
            argv.extend([
                "--radius".into(),
                door.radius.to_string(),
                "--http".into(),
                door.http.to_string(),
            ]);
        }
        for peer in &peers {
            argv.extend(["--peer".into(), peer.to_string()]);
        }
        p.argv = argv;
        p.config = Some(NodeConfig {
            role,
            data_dir: p.data_dir.clone(),
            listen: vec![listen],
            peers,
            mesh: mesh.clone(),
            mdns: false,
            manual_rounds: p.role == NodeRole::Generator,
            seed: Some(seed),
            metrics: None,
        });
    }
    Ok(Layout {
        nodes: planned,
        generator_key: generator_key.expect("one generator"),
    })
}
