//! A node without its network, for the simulator (`otpmesh scenario run --sim`): the same role
//! state machine [`crate::start`] builds, from the same data dir (identity, RSA key, store,
//! enrolments), and the store it commits to. The simulated world carries its messages and its
//! clock; what the role makes durable goes through [`Parts::commit`], so a restart restores from
//! the store exactly as a process does.

use crate::{build, keys, store, NodeConfig, NodeError};
use libp2p::PeerId;
use otpmesh_protocol::role::{Record, Role};
use otpmesh_protocol::seal::PrivateKey;
use std::sync::Arc;

/// What the simulator needs of a node.
pub struct Parts {
    pub peer_id: PeerId,
    pub role: Box<dyn Role + Send>,
    /// A generator's RSA key: what its decryptions open with.
    pub rsa: Option<Arc<PrivateKey>>,
    /// The gossip topics it follows.
    pub topics: Vec<&'static str>,
    pub store: Durable,
}

/// Where a node's records go: its store (none for a node that keeps nothing). Dropping it
/// closes the store, as a process's death does.
pub struct Durable(Option<store::Store>);

/// Builds the node `config` describes, as [`crate::start`] would, without a swarm.
pub fn parts(config: &NodeConfig) -> Result<Parts, NodeError> {
    let one_shot = config.role.is_one_shot();
    if !one_shot {
        config.mesh.validate()?;
    }
    let identity = keys::load_or_create_identity(&config.data_dir)?;
    let mesh = Arc::new(config.mesh.clone());
    let built = build::role(config, &mesh, &identity, one_shot)?;
    Ok(Parts {
        peer_id: identity.public().to_peer_id(),
        role: built.role,
        rsa: built.rsa,
        topics: build::topics(&config.role, one_shot),
        store: Durable(built.store),
    })
}

impl Durable {
    /// The beacon values in the store, oldest first.
    pub fn beacon(&self) -> Result<Vec<otpmesh_protocol::beacon::Entry>, NodeError> {
        match &self.0 {
            Some(store) => Ok(store.beacon()?),
            None => Ok(Vec::new()),
        }
    }

    /// Makes `records` durable in the node's store, in one transaction (a node with no store
    /// keeps nothing).
    pub fn commit(&self, records: &[Record]) -> Result<(), NodeError> {
        let Some(store) = &self.0 else {
            return Ok(());
        };
        let records: Vec<&Record> = records.iter().collect();
        store.commit_all(&records).map_err(NodeError::from)
    }
}
