//! The parts of a node, each built by one function: [`crate::start`] puts them together.

use crate::behaviour::Behaviour;
use crate::{keys, split_peer, status, store, NodeConfig, NodeError, RoleSpec, IDLE_TIMEOUT};
use libp2p::multiaddr::Protocol;
use libp2p::{gossipsub, noise, tcp, yamux, Multiaddr, PeerId, SwarmBuilder};
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::role::{self, pick};
use otpmesh_protocol::seal::PrivateKey;
use otpmesh_protocol::wire::{GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC};
use rand_core::SeedableRng;
use std::collections::HashMap;
use std::sync::Arc;

/// A role's state machine and what it was restored from.
pub(crate) struct Built<R = pick::Boxed> {
    pub role: R,
    pub rsa: Option<Arc<PrivateKey>>,
    pub store: Option<store::Store>,
    /// What the store says of the rounds, for the status until new ones come.
    pub rounds: status::Rounds,
}

/// The state machine for `config.role`: restored from the store for a generator or distributor,
/// and for a long-running node beside the beacon it keeps in threshold mode ([`pick::running`]).
pub(crate) fn role(
    config: &NodeConfig,
    mesh: &Arc<MeshConfig>,
    identity: &libp2p::identity::Keypair,
    one_shot: bool,
) -> Result<Built, NodeError> {
    let peer_id = identity.public().to_peer_id();
    let Built {
        role: inner,
        rsa,
        mut store,
        rounds,
    } = match &config.role {
        RoleSpec::Generator => generator(config, mesh, identity)?,
        RoleSpec::Distributor => {
            let db = store::Store::open(&config.data_dir)?;
            let state = db.distributor_state()?;
            let mut rounds = status::Rounds::default();
            if let Some((t, _)) = state.rounds.last() {
                rounds.sealed(t.round, t.commitment);
            }
            Built {
                role: pick::distributor(peer_id, mesh.clone(), state),
                rsa: None,
                store: Some(db),
                rounds,
            }
        }
        spec => Built {
            role: stateless(spec, config, mesh, peer_id)?.into(),
            rsa: None,
            store: None,
            rounds: status::Rounds::default(),
        },
    };
    let role = match one_shot {
        true => inner.into_role(),
        // The keeper's chain is in the store (opened for it if the role keeps nothing else).
        false => pick::running(peer_id, mesh, inner, || {
            let db = match store.take() {
                Some(db) => db,
                None => store::Store::open(&config.data_dir)?,
            };
            let held = db.rounds()?.into_iter().map(|(t, _)| t).collect();
            let keeper = role::threshold::Keeper::restore(mesh.clone(), db.beacon()?, held);
            store = Some(db);
            Ok::<_, NodeError>(keeper)
        })?,
    };
    Ok(Built {
        role,
        rsa,
        store,
        rounds,
    })
}

fn generator(
    config: &NodeConfig,
    mesh: &Arc<MeshConfig>,
    identity: &libp2p::identity::Keypair,
) -> Result<Built<pick::Inner>, NodeError> {
    let key = Arc::new(keys::load_or_create_rsa(
        &config.data_dir,
        mesh.settings.rsa_bits,
    )?);
    let db = store::Store::open(&config.data_dir)?;
    let last_sealed = db.rounds()?.pop();
    let last_opened = db.last_opened()?;
    let mut rounds = status::Rounds::default();
    if let Some(round) = last_opened {
        rounds.opened(round);
    }
    if let Some((t, _)) = &last_sealed {
        rounds.sealed(t.round, t.commitment);
    }
    let restart = pick::Restart {
        last_opened,
        last_sealed,
        manual: config.manual_rounds,
    };
    let generator = pick::generator(
        identity.clone(),
        mesh.clone(),
        key.public().clone(),
        restart,
    )
    .map_err(|e| NodeError::Role(e.to_string()))?;
    Ok(Built {
        role: generator.into(),
        rsa: Some(key),
        store: Some(db),
        rounds,
    })
}

/// A role that keeps nothing in the store: contributors, verifiers, requesters and one-shots.
fn stateless(
    spec: &RoleSpec,
    config: &NodeConfig,
    mesh: &Arc<MeshConfig>,
    peer_id: PeerId,
) -> Result<pick::Boxed, NodeError> {
    Ok(match spec {
        RoleSpec::Contributor { client, input } => pick::contributor(*client, *input, mesh.clone()),
        RoleSpec::Verifier { .. } => Box::new(role::Verifier::new(peer_id, mesh.clone())),
        RoleSpec::Requester { distributors } => {
            pick::requester(peer_id, mesh.clone(), distributors.clone())
        }
        RoleSpec::Ask(question) => question.role(peer_id, config, mesh)?,
        RoleSpec::Generator | RoleSpec::Distributor => {
            return Err(NodeError::Role(format!(
                "a {} is restored from its store",
                spec.name()
            )))
        }
    })
}

/// The swarm: TCP and QUIC, Noise, yamux, and the node's behaviour.
pub(crate) fn swarm(
    identity: libp2p::identity::Keypair,
    config: &NodeConfig,
    registry: &mut libp2p::metrics::Registry,
) -> Result<libp2p::Swarm<Behaviour>, NodeError> {
    let kad_server = matches!(config.role, RoleSpec::Generator | RoleSpec::Distributor);
    let swarm = SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_quic()
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| {
            Behaviour::new(key, config.mdns, kad_server, registry)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

/// The gossip topics `role` follows: none for a one-shot, the phrases for a generator, the used
/// codes for a distributor.
pub(crate) fn topics(role: &RoleSpec, one_shot: bool) -> Vec<&'static str> {
    let mut topics = Vec::new();
    if !one_shot {
        topics.push(GOSSIP_TOPIC);
    }
    match role {
        RoleSpec::Generator => topics.push(PHRASE_TOPIC),
        RoleSpec::Distributor if !one_shot => topics.push(USED_TOPIC),
        _ => {}
    }
    topics
}

/// Subscribes to the role's topics and listens on the configured addresses.
pub(crate) fn subscribe_and_listen(
    swarm: &mut libp2p::Swarm<Behaviour>,
    config: &NodeConfig,
    one_shot: bool,
) -> Result<
    (
        gossipsub::IdentTopic,
        Vec<libp2p::core::transport::ListenerId>,
    ),
    NodeError,
> {
    let topic = gossipsub::IdentTopic::new(GOSSIP_TOPIC);
    for t in topics(&config.role, one_shot) {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossipsub::IdentTopic::new(t))
            .map_err(|e| NodeError::Transport(format!("subscribe: {e}")))?;
    }
    let mut listeners = Vec::new();
    for addr in &config.listen {
        crate::probe_tcp_port(addr)?;
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        listeners.push(id);
    }

    Ok((topic, listeners))
}

/// Peers' known addresses, and the ones to stay connected to (the mesh's generators and
/// distributors, and `--peer`s), each pair dialled from one side only.
#[allow(clippy::type_complexity)]
pub(crate) fn addresses(
    config: &NodeConfig,
    mesh: &MeshConfig,
    peer_id: PeerId,
    one_shot: bool,
) -> Result<
    (
        HashMap<PeerId, Vec<Multiaddr>>,
        Vec<(Option<PeerId>, Multiaddr)>,
    ),
    NodeError,
> {
    let mut addresses: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
    let mut keep = Vec::new();
    let contributor = matches!(config.role, RoleSpec::Contributor { .. });
    for (peer, addrs) in if one_shot {
        Vec::new()
    } else {
        mesh.known_addrs()
    } {
        for text in addrs {
            let addr: Multiaddr =
                text.parse()
                    .map_err(|e: libp2p::multiaddr::Error| NodeError::MeshAddr {
                        peer: peer.to_string(),
                        addr: text.clone(),
                        reason: e.to_string(),
                    })?;
            let (_, base) = split_peer(&addr);
            addresses.entry(peer).or_default().push(base.clone());
            // Stay connected to the mesh's generators and distributors; a contributor to its
            // generators alone (it asks nothing of distributors, and their gossip reaches it
            // through the generators): in threshold mode each kept connection is paid for by
            // every contributor, at every message and timer.
            let kept = mesh.is_generator(&peer) || (!contributor && mesh.is_distributor(&peer));
            if peer != peer_id && kept {
                keep.push((Some(peer), base.with(Protocol::P2p(peer))));
            }
        }
    }
    for addr in &config.peers {
        let (peer, base) = split_peer(addr);
        if let Some(peer) = peer {
            addresses.entry(peer).or_default().push(base);
        }
        keep.push((peer, addr.clone()));
    }
    // A bare `--peer` address that is a kept peer's is dialled by its PeerId, not a second time.
    let by_peer: Vec<Multiaddr> = keep
        .iter()
        .filter_map(|(p, a)| p.map(|_| a.clone()))
        .collect();
    keep.retain(|(peer, addr)| peer.is_some() || !by_peer.iter().any(|a| split_peer(a).1 == *addr));
    // Generators and distributors keep each other: of the two, only the lower PeerId dials (when
    // both did, every pair held two connections or more). This node is dialled only if the mesh
    // config says where it listens; otherwise it dials all the same.
    let core = |p: &PeerId| mesh.is_generator(p) || mesh.is_distributor(p);
    let dialled = core(&peer_id) && addresses.get(&peer_id).is_some_and(|a| !a.is_empty());
    keep.retain(|(peer, _)| match peer {
        Some(p) => *p != peer_id && !(dialled && *p < peer_id && core(p)),
        None => true,
    });

    Ok((addresses, keep))
}

/// The node's randomness: the OS's, or with `--seed` (tests) a stream fixed by seed and PeerId.
pub(crate) fn rng(seed: Option<u64>, peer_id: &PeerId) -> Box<dyn rand_core::CryptoRngCore + Send> {
    match seed {
        Some(seed) => {
            let mut h = blake3::Hasher::new_derive_key("otpmesh/1 seeded node rng");
            h.update(&seed.to_be_bytes());
            h.update(&peer_id.to_bytes());
            Box::new(rand_chacha::ChaCha20Rng::from_seed(
                *h.finalize().as_bytes(),
            ))
        }
        None => Box::new(rand_core::OsRng),
    }
}

/// The metrics listener, bound first: a taken port is an error before anything else starts.
#[allow(clippy::type_complexity)]
pub(crate) fn metrics_listener(
    config: &NodeConfig,
) -> Result<
    (
        Option<tokio::net::TcpListener>,
        Option<std::net::SocketAddr>,
    ),
    NodeError,
> {
    let metrics_listener = match config.metrics {
        Some(addr) => {
            let fail = |e: std::io::Error| NodeError::Metrics {
                addr: addr.to_string(),
                reason: e.to_string(),
            };
            let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
            listener.set_nonblocking(true).map_err(fail)?;
            Some(tokio::net::TcpListener::from_std(listener).map_err(fail)?)
        }
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(|e| NodeError::Metrics {
            addr: format!("{:?}", config.metrics),
            reason: e.to_string(),
        })?),
        None => None,
    };
    Ok((metrics_listener, metrics_addr))
}
