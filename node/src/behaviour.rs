//! The libp2p behaviours a node runs, and how each is configured for small meshes.

use crate::codec::WireCodec;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    gossipsub, identify, identity::Keypair, kad, mdns, ping, request_response, StreamProtocol,
};
use otpmesh_protocol::wire::{MAX_GOSSIP_BYTES, RR_PROTOCOL};
use std::time::Duration;

/// How long an outbound request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent request streams per connection.
pub const MAX_CONCURRENT_STREAMS: usize = 64;
pub const IDENTIFY_PROTOCOL: &str = "/otpmesh/id/1";
pub const KAD_PROTOCOL: &str = "/otpmesh/kad/1";

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Round announcements, phrases and transcripts, signed by their author and validated by us.
    pub gossipsub: gossipsub::Behaviour,
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

impl Behaviour {
    /// `kad_server`: serve the DHT (the mesh's generators and distributors). Contributors and
    /// requesters run kad as clients, so they are not handed out as peers to dial: a mesh of k
    /// contributors keeps O(k) connections instead of every node connecting to every other.
    pub fn new(key: &Keypair, mdns: bool, kad_server: bool) -> Result<Behaviour, BehaviourError> {
        let peer_id = key.public().to_peer_id();
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossipsub_config()?,
        )
        .map_err(|e| BehaviourError::Gossipsub(e.to_string()))?;
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
            ping: ping::Behaviour::default(),
            mdns: mdns.into(),
        })
    }
}
