//! The libp2p behaviours a node runs, and how each is configured for small meshes.

use crate::codec::WireCodec;
use libp2p::metrics::Registry;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    gossipsub, identify, identity::Keypair, kad, mdns, ping, request_response, StreamProtocol,
};
use otpmesh_protocol::wire::{
    GOSSIP_TOPIC, MAX_GOSSIP_BYTES, PHRASE_TOPIC, RR_PROTOCOL, USED_TOPIC,
};
use std::time::Duration;

/// How long an outbound request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection is pinged, and how long a ping may take before the connection is
/// taken for dead and closed.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent request streams per connection.
pub const MAX_CONCURRENT_STREAMS: usize = 64;
pub const IDENTIFY_PROTOCOL: &str = "/otpmesh/id/1";
pub const KAD_PROTOCOL: &str = "/otpmesh/kad/1";

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Round announcements, phrases and transcripts, signed by their author and validated by us.
    /// Peers' subscriptions to any other topic are ignored: a stranger cannot make this node
    /// track (or count in its metrics) topics of its choosing.
    pub gossipsub:
        gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::WhitelistSubscriptionFilter>,
    /// Public key fetches and round deliveries (and OTP requests from older peers).
    pub rr: request_response::Behaviour<WireCodec>,
    /// Long-lived pipelined streams for the OTP path ([`crate::rpc`]).
    pub stream: libp2p_stream::Behaviour,
    /// Tells peers our listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// Peer routing on a private DHT, in server mode.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// Local discovery, off unless asked for.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

#[derive(Debug, thiserror::Error)]
pub enum BehaviourError {
    #[error("gossipsub config: {0}")]
    Gossipsub(String),
    #[error("mdns: {0}")]
    Mdns(String),
}

/// Gossipsub tuned for meshes of a handful to a few hundred nodes.
pub fn gossipsub_config() -> Result<gossipsub::Config, BehaviourError> {
    let (mesh_n_low, mesh_n, mesh_n_high, mesh_outbound_min) = (2, 4, 8, 1);
    // gossipsub 0.50 does not check these relations for the global mesh values; we do.
    assert!(mesh_outbound_min <= mesh_n_low && mesh_outbound_min <= mesh_n / 2);
    assert!(mesh_n_low <= mesh_n && mesh_n <= mesh_n_high);
    gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES + 1024)
        .mesh_n_low(mesh_n_low)
        .mesh_n(mesh_n)
        .mesh_n_high(mesh_n_high)
        .mesh_outbound_min(mesh_outbound_min)
        .heartbeat_interval(Duration::from_millis(500))
        .heartbeat_initial_delay(Duration::from_millis(100))
        .message_id_fn(|m: &gossipsub::Message| {
            let mut h = blake3::Hasher::new();
            h.update(&m.source.map(|p| p.to_bytes()).unwrap_or_default());
            h.update(&m.sequence_number.unwrap_or_default().to_be_bytes());
            h.update(&m.data);
            gossipsub::MessageId::from(h.finalize().as_bytes().to_vec())
        })
        .build()
        .map_err(|e| BehaviourError::Gossipsub(e.to_string()))
}

/// Below this gossip score a peer's messages are ignored and none are sent to it.
pub const GRAYLIST_THRESHOLD: f64 = -80.0;
/// Each invalid message a peer delivers costs `INVALID_MESSAGE_WEIGHT × count²`: a second invalid
/// message (-100) graylists a peer that has earned the most credit there is (+11).
pub const INVALID_MESSAGE_WEIGHT: f64 = -25.0;

/// Gossipsub v1.1 peer scoring, with every weight chosen for small listed meshes:
/// - invalid messages (P4, what validation rejects: bad signature, undecodable, from a peer not
///   listed for that message) are the main signal, decaying slowly (1 % a second), so a peer that
///   keeps sending junk stays graylisted;
/// - mesh delivery rates (P3, P3b) are off: rounds are minutes apart, and a quiet honest peer must
///   not be pruned for it;
/// - IP colocation (P6) is off: local meshes put every node on 127.0.0.1, and who may do what
///   comes from the mesh config, not from addresses;
/// - credit for time in the mesh and first deliveries is capped at +11, so it cannot buy
///   tolerance for junk;
/// - the application score carries this node's own verdicts ([`crate::limits`]).
pub fn peer_score() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    };
    let mut params = gossipsub::PeerScoreParams {
        // The credit of all topics together, so that it stays +11 however many topics a peer
        // delivers on.
        topic_score_cap: 11.0,
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        // Protocol misbehaviour (GRAFT during backoff, broken promises) counts past a few slips.
        behaviour_penalty_threshold: 6.0,
        ..Default::default()
    };
    for name in [GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC] {
        params
            .topics
            .insert(gossipsub::IdentTopic::new(name).hash(), topic.clone());
    }
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: GRAYLIST_THRESHOLD,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}

impl Behaviour {
    /// `kad_server`: serve the DHT (the mesh's generators and distributors). Contributors and
    /// requesters run kad as clients, so they are not handed out as peers to dial: a mesh of k
    /// contributors keeps O(k) connections instead of every node connecting to every other.
    /// Gossipsub's own metrics (mesh and topic health) go into `registry` under `gossipsub_`.
    pub fn new(
        key: &Keypair,
        mdns: bool,
        kad_server: bool,
        registry: &mut Registry,
    ) -> Result<Behaviour, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        let topics = [GOSSIP_TOPIC, PHRASE_TOPIC, USED_TOPIC]
            .into_iter()
            .map(|t| gossipsub::IdentTopic::new(t).hash())
            .collect();
        let mut gossipsub = gossipsub::Behaviour::new_with_subscription_filter(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossipsub_config()?,
            gossipsub::WhitelistSubscriptionFilter(topics),
        )
        .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?
        .with_metrics(
            registry.sub_registry_with_prefix("gossipsub"),
            gossipsub::MetricsConfig::default(),
        );
        let (params, thresholds) = peer_score();
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(BehaviourError::Gossipsub)?;
        let rr = request_response::Behaviour::with_codec(
            WireCodec,
            [(
                StreamProtocol::new(RR_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(REQUEST_TIMEOUT)
                .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS),
        );
        let identify = identify::Behaviour::new(identify::Config::new(
            IDENTIFY_PROTOCOL.into(),
            key.public(),
        ));
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_query_timeout(Duration::from_secs(30));
        // Peers come from the mesh config and identify; a periodic bootstrap with no known peer
        // only warns.
        kad_config.set_periodic_bootstrap_interval(None);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        kad.set_mode(Some(if kad_server {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        }));
        let mdns = if mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| BehaviourError::Mdns(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Behaviour {
            gossipsub,
            rr,
            stream: libp2p_stream::Behaviour::new(),
            identify,
            kad,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            mdns: mdns.into(),
        })
    }
}
