//! # otpmesh node
//!
//! Runs one role of otpmesh on a libp2p swarm: TCP + Noise + Yamux and QUIC, gossipsub for rounds,
//! request-response for keys, deliveries and OTPs, identify, kad and (optionally) mDNS.
//!
//! [`start`] builds a node and returns a [`Node`]: a [`Client`] handle, a bounded stream of
//! [`NodeEvent`]s, and the [`EventLoop`] to spawn. The event loop owns the swarm, the role's state
//! machine and the store; everything else talks to it through the client over bounded channels.

#![warn(clippy::too_many_lines)]

pub mod ask;
pub mod behaviour;
mod build;
pub mod codec;
pub mod commit;
pub mod control;
pub mod event_loop;
pub mod http;
pub mod kdc;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod rpc;
pub mod simulated;
pub mod status;
pub mod store;
pub mod verifier;

pub use event_loop::EventLoop;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::phrase::{ClientId, UserInput};
use otpmesh_protocol::role::{self, Event};
use otpmesh_protocol::round::RoundId;
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Node events buffered for the consumer.
pub const EVENT_QUEUE: usize = 4096;
/// Commands buffered for the event loop.
pub const COMMAND_QUEUE: usize = 64;
/// Connections stay open this long without traffic.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Which role a node plays, with what it needs.
#[derive(Clone, Debug)]
pub enum RoleSpec {
    /// `input: None` asks the user every round ([`NodeEvent::InputNeeded`]).
    Contributor {
        client: ClientId,
        input: Option<UserInput>,
    },
    Generator,
    Distributor,
    /// The door of the services where codes are typed: its RADIUS and HTTP fronts.
    Verifier {
        fronts: verifier::Fronts,
    },
    /// Asks one of `distributors` (all listed ones when empty) after every sealed round.
    Requester {
        distributors: Vec<PeerId>,
    },
    /// A requester's one question (a command's), asked once without joining the gossip:
    /// [`ask::Asker`] runs it.
    Ask(ask::Question),
}

impl RoleSpec {
    /// A client's single exchange (a command's), not a node that stays in the mesh.
    pub fn is_one_shot(&self) -> bool {
        matches!(self, RoleSpec::Ask(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            RoleSpec::Contributor { .. } => "contributor",
            RoleSpec::Generator => "generator",
            RoleSpec::Distributor => "distributor",
            RoleSpec::Verifier { .. } => "verifier",
            // A requester's questions are a requester's too.
            RoleSpec::Requester { .. } | RoleSpec::Ask(_) => "requester",
        }
    }
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub role: RoleSpec,
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    /// Peers to dial and stay connected to.
    pub peers: Vec<Multiaddr>,
    pub mesh: MeshConfig,
    pub mdns: bool,
    /// Generator: open rounds only when told to ([`Client::open_round`]).
    pub manual_rounds: bool,
    /// Draw every random choice from a generator seeded by this and the PeerId, so a replay is
    /// reproducible. For tests and scenario replays only: a seeded node's secrets are guessable.
    pub seed: Option<u64>,
    /// Serve Prometheus metrics on `http://ADDR/metrics`.
    pub metrics: Option<std::net::SocketAddr>,
}

/// What a node tells its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeEvent {
    Listening {
        addr: Multiaddr,
    },
    Connected {
        peer: PeerId,
    },
    Disconnected {
        peer: PeerId,
    },
    Subscribed {
        peer: PeerId,
    },
    GossipRejected {
        peer: PeerId,
        reason: String,
    },
    RequestRejected {
        peer: PeerId,
        reason: String,
    },
    /// A peer crossed a limit: its requests are refused and its gossip ignored for a while.
    PeerPenalised {
        peer: PeerId,
        reason: String,
    },
    InputNeeded {
        round: RoundId,
    },
    #[serde(untagged)]
    Role(Event),
}

pub(crate) enum Command {
    Input {
        round: RoundId,
        input: UserInput,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Control(role::Control),
    /// Verifier: a service's user typed `code`.
    Check {
        user: String,
        code: zeroize::Zeroizing<String>,
        reply: oneshot::Sender<(role::verifier::Outcome, String)>,
    },
    /// Drop and refuse connections with a peer (a transport-level partition).
    Block {
        peer: PeerId,
    },
    Unblock {
        peer: PeerId,
    },
    /// Publish bytes as they are (for fault injection: a hostile peer's view of the wire).
    PublishRaw {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the node has stopped")]
    Stopped,
    #[error("mesh config: {0}")]
    Mesh(#[from] otpmesh_protocol::mesh::MeshError),
    #[error(transparent)]
    Keys(#[from] keys::KeyFileError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("transport: {0}")]
    Transport(String),
    #[error(transparent)]
    Behaviour(#[from] behaviour::BehaviourError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error(transparent)]
    ControlSocket(#[from] status::SocketError),
    #[error("verifier: {0}")]
    Front(#[from] verifier::FrontError),
    #[error("cannot serve metrics on {addr}: {reason}")]
    Metrics { addr: String, reason: String },
    /// The role cannot run with this mesh config.
    #[error("{0}")]
    Role(String),
    #[error("bad address {addr:?} for {peer} in the mesh config: {reason}")]
    MeshAddr {
        peer: String,
        addr: String,
        reason: String,
    },
}

/// A handle to a running node.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl Client {
    async fn send(&self, command: Command) -> Result<(), NodeError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// The user's integer for `round` (after [`NodeEvent::InputNeeded`]).
    pub async fn input(&self, round: RoundId, input: UserInput) -> Result<(), NodeError> {
        self.send(Command::Input { round, input }).await
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ListenAddrs { reply }).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Verifier: judges `code` typed by `user` (the fronts' one path): the outcome and what the
    /// distributors said, in words.
    pub async fn check(
        &self,
        user: String,
        code: zeroize::Zeroizing<String>,
    ) -> Result<(role::verifier::Outcome, String), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Check { user, code, reply }).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Generator: opens the next round now (with `manual_rounds`, the only way rounds open).
    pub async fn open_round(&self) -> Result<(), NodeError> {
        self.send(Command::Control(role::Control::OpenRound)).await
    }

    /// Cuts this node off from `peer` at the transport: existing connections close, new ones are
    /// dropped, until [`Client::unblock`].
    pub async fn block(&self, peer: PeerId) -> Result<(), NodeError> {
        self.send(Command::Block { peer }).await
    }

    pub async fn unblock(&self, peer: PeerId) -> Result<(), NodeError> {
        self.send(Command::Unblock { peer }).await
    }

    /// Publishes `bytes` on the gossip topic without any check: how tests and scenarios play a
    /// hostile peer. Fails if no peer is subscribed yet.
    pub async fn publish_raw(&self, bytes: Vec<u8>) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::PublishRaw { bytes, reply }).await?;
        rx.await
            .map_err(|_| NodeError::Stopped)?
            .map_err(NodeError::Transport)
    }

    /// Stops the event loop; returns once it has.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let (done, rx) = oneshot::channel();
        self.send(Command::Shutdown { done }).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }
}

/// A started node: spawn `event_loop.run()`, read `events`, steer with `client`.
pub struct Node {
    pub peer_id: PeerId,
    /// Where `/metrics` is served (with [`NodeConfig::metrics`]).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Verifier: where its RADIUS front listens (UDP) and its HTTP front (TCP).
    pub radius_addr: Option<std::net::SocketAddr>,
    pub http_addr: Option<std::net::SocketAddr>,
    pub client: Client,
    pub events: mpsc::Receiver<NodeEvent>,
    pub event_loop: EventLoop,
}

/// Splits `/…/p2p/<peer>` into the peer and the address without it.
pub fn split_peer(addr: &Multiaddr) -> (Option<PeerId>, Multiaddr) {
    let mut base = addr.clone();
    match base.pop() {
        Some(Protocol::P2p(peer)) => (Some(peer), base),
        _ => (None, addr.clone()),
    }
}

/// libp2p listens with SO_REUSEPORT, so a second node told to listen on a port that is taken
/// would silently share it (and receive some of the other node's connections). A plain bind
/// first turns that into an error.
fn probe_tcp_port(addr: &Multiaddr) -> Result<(), NodeError> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) if port != 0 => {
                if let Some(ip) = ip {
                    std::net::TcpListener::bind((ip, port)).map_err(|e| NodeError::Listen {
                        addr: addr.to_string(),
                        reason: format!("{e} (is another node listening there?)"),
                    })?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Builds a node: loads or creates its keys and store, builds the swarm, starts listening.
/// Must run inside a tokio runtime.
pub fn start(config: NodeConfig) -> Result<Node, NodeError> {
    let one_shot = config.role.is_one_shot();
    if !one_shot {
        config.mesh.validate()?;
        for warning in config.mesh.warnings() {
            tracing::warn!(reason = %warning, "mesh config");
        }
    }
    let identity = keys::load_or_create_identity(&config.data_dir)?;
    let peer_id = identity.public().to_peer_id();
    let mesh = Arc::new(config.mesh.clone());
    // First, so that a second node on this data dir is told so before anything else fails.
    // One-shot commands share a requester's data dir with its running node: they serve no status.
    let control_socket = match one_shot {
        true => None,
        false => status::bind(&config.data_dir)?,
    };

    let built = build::role(&config, &mesh, &identity, one_shot)?;
    let (role, rsa, store, rounds) = (built.role, built.rsa, built.store, built.rounds);
    let (metrics_listener, metrics_addr) = build::metrics_listener(&config)?;
    let mut registry = libp2p::metrics::Registry::default();
    let node_metrics = metrics::Metrics::new(&mut registry);
    // The verifier's fronts, bound now: a taken port is an error at start.
    let fronts = match &config.role {
        RoleSpec::Verifier { fronts } => {
            Some((fronts.bind()?, verifier::Metrics::new(&mut registry)))
        }
        _ => None,
    };

    let mut swarm = build::swarm(identity, &config, &mut registry)?;
    let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);

    // Every node but a one-shot requester answers requests on long-lived streams too.
    let rpc_incoming = match one_shot {
        true => None,
        false => Some(
            swarm
                .behaviour()
                .stream
                .new_control()
                .accept(rpc::PROTOCOL)
                .map_err(|e| NodeError::Transport(e.to_string()))?,
        ),
    };
    let (rpc_inbound_tx, rpc_inbound) = mpsc::channel(event_loop::MAX_BATCH);
    let (rpc_done_tx, rpc_done) = mpsc::channel(rpc::MAX_QUEUED);

    let (topic, listeners) = build::subscribe_and_listen(&mut swarm, &config, one_shot)?;
    let (addresses, keep) = build::addresses(&config, &mesh, peer_id, one_shot)?;
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (status_tx, status_asks) = mpsc::channel(status::MAX_CLIENTS);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (decrypted_tx, decrypted_rx) =
        mpsc::channel(otpmesh_protocol::round::MAX_ROUND_CONTRIBUTORS);
    let (committer, commits) = match store {
        Some(store) => {
            let (c, rx) = commit::Committer::spawn(store, node_metrics.commit_seconds.clone())
                .map_err(|e| NodeError::Transport(format!("starting the commit thread: {e}")))?;
            (Some(c), Some(rx))
        }
        None => (None, None),
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let event_loop = EventLoop {
        swarm,
        role,
        mesh: (!one_shot).then_some(mesh),
        topic,
        committer,
        commits,
        parked: VecDeque::new(),
        next_batch: 0,
        rsa,
        decrypt_slots: Arc::new(Semaphore::new(workers)),
        decrypted_tx,
        decrypted_rx,
        commands,
        events: events_tx,
        events_dropped: 0,
        events_dropped_logged_at: 0,
        replies: HashMap::new(),
        checks: HashMap::new(),
        next_check: 0,
        next_inbound: 0,
        outbound: HashMap::new(),
        unpublished: VecDeque::new(),
        addresses,
        keep,
        blocked: HashSet::new(),
        limiter: limits::Limiter::new(config.mesh.settings.requests_per_peer_s),
        graylisted: HashSet::new(),
        last_flush: 0,
        rng: build::rng(config.seed, &peer_id),
        last_redial: 0,
        redial_backoff: event_loop::REDIAL_FIRST_RETRY_MS,
        data_dir: config.data_dir.clone(),
        rpc_incoming,
        rpc_inbound_tx,
        rpc_inbound,
        rpc_peers: HashMap::new(),
        rpc_done_tx,
        rpc_done,
        metrics: node_metrics,
        libp2p_metrics,
        metrics_server: metrics_listener.map(|l| (l, Arc::new(registry))),
        metrics_url: metrics_addr.map(|a| format!("http://{a}/metrics")),
        control_socket,
        status_asks,
        status_tx,
        rounds,
        role_name: config.role.name(),
        started_at: std::time::Instant::now(),
        listeners,
        stopping: false,
        unwritten: Arc::default(),
    };
    let client = Client {
        commands: commands_tx,
    };
    let (mut radius_addr, mut http_addr) = (None, None);
    if let Some((bound, metrics)) = fronts {
        (radius_addr, http_addr) = (bound.radius_addr, bound.http_addr);
        bound.spawn(client.clone(), metrics);
    }
    Ok(Node {
        peer_id,
        metrics_addr,
        radius_addr,
        http_addr,
        client,
        events,
        event_loop,
    })
}
