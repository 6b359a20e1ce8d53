//! Helpers shared by the node's test crates.
#![allow(dead_code)]

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use otpmesh_node::{Client, NodeConfig, NodeEvent, RoleSpec};
use otpmesh_protocol::mesh::{Member, MeshConfig};
use std::path::Path;
use std::time::Duration;
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(60);

/// A distributor node running in this process. It runs while this handle (its client) lives.
pub struct Distributor {
    /// Its listen address, ending in /p2p/<peer id>.
    pub addr: Multiaddr,
    pub peer: PeerId,
    client: Client,
    running: tokio::task::JoinHandle<()>,
}

impl Distributor {
    /// A distributor with data dir `dir` and no round (its generator never runs), listing
    /// `requesters`; returns once it listens on 127.0.0.1.
    pub async fn start(dir: &Path, requesters: &[&Keypair]) -> Distributor {
        let member = |peer_id| Member {
            peer_id,
            addrs: vec![],
            name: None,
        };
        let me = otpmesh_node::keys::load_or_create_identity(dir).unwrap();
        let mesh = MeshConfig {
            generators: vec![member(Keypair::generate_ed25519().public().to_peer_id())],
            distributors: vec![member(me.public().to_peer_id())],
            requesters: requesters
                .iter()
                .map(|k| member(k.public().to_peer_id()))
                .collect(),
            settings: otpmesh_protocol::mesh::Settings {
                quorum: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let node = otpmesh_node::start(NodeConfig {
            role: RoleSpec::Distributor,
            data_dir: dir.to_path_buf(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            peers: vec![],
            mesh,
            mdns: false,
            manual_rounds: false,
            seed: None,
            metrics: None,
        })
        .expect("distributor starts");
        let (peer, mut events, client) = (node.peer_id, node.events, node.client);
        let running = tokio::spawn(node.event_loop.run());
        let addr = timeout(WAIT, async {
            loop {
                match events.recv().await {
                    Some(NodeEvent::Listening { addr }) => return addr,
                    Some(_) => {}
                    None => panic!("distributor stopped"),
                }
            }
        })
        .await
        .expect("distributor listens");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        Distributor {
            addr: addr.with(Protocol::P2p(peer)),
            peer,
            client,
            running,
        }
    }

    /// Stops it; returns once its store is closed.
    pub async fn stop(self) {
        self.client.shutdown().await.unwrap();
        timeout(WAIT, self.running).await.unwrap().unwrap();
    }
}
