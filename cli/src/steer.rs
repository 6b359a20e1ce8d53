//! Steering a running mesh: kill a node, start it again, cut nodes off from each other, heal them.
//!
//! One meaning for a scenario's `kill`, `restart`, `partition` and `heal` steps and for
//! `otpmesh mesh kill|restart|partition|heal` on a running `mesh up`: both keep a [`Steering`]
//! beside their [`Backend`] and go through it.
//!
//! - A kill is SIGKILL (an aborted task in-process); the node is down until started again.
//! - A partition of `node` from `peers` blocks each pair on both sides (each node drops and refuses
//!   the other's connections); a node that is down learns it when it comes back.
//! - Healing `node` unblocks every pair its partitions made.

use crate::scenario::backend::Backend;
use libp2p::PeerId;
use otpmesh_node::control::ControlLine;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What steering needs to know of the mesh's nodes.
pub trait Nodes {
    /// The node's peer id, if the mesh has a node of that name.
    fn peer_id(&self, name: &str) -> Option<PeerId>;
    /// Whether it runs as a node with a control channel (a scenario's requesters do not: they
    /// only make one-shot requests).
    fn runs(&self, name: &str) -> bool;
}

/// Which nodes are down and who is cut off from whom.
#[derive(Debug, Default)]
pub struct Steering {
    down: BTreeSet<String>,
    /// Node → the peers a partition cut it off from (both ways).
    partitions: BTreeMap<String, BTreeSet<String>>,
    /// Kills whose end of stream has not arrived yet, per node.
    killed: HashMap<String, usize>,
}

impl Steering {
    pub fn is_down(&self, name: &str) -> bool {
        self.down.contains(name)
    }

    /// The nodes some partition holds, in name order.
    pub fn partitioned(&self) -> impl Iterator<Item = &String> {
        self.partitions.keys()
    }

    /// Who `node` is cut off from, by its own partitions or others'.
    pub fn cut_off(&self, node: &str) -> Vec<String> {
        let mut peers: BTreeSet<String> = self.partitions.get(node).cloned().unwrap_or_default();
        for (other, theirs) in &self.partitions {
            if theirs.contains(node) {
                peers.insert(other.clone());
            }
        }
        peers.into_iter().collect()
    }

    /// Kills `node`; it stays down until [`Steering::started`].
    pub async fn kill(&mut self, backend: &mut Backend, node: &str) -> anyhow::Result<()> {
        backend.kill(node).await?;
        *self.killed.entry(node.to_string()).or_default() += 1;
        self.down.insert(node.to_string());
        Ok(())
    }

    /// Kills `node` unless it is down already: what a restart does first.
    pub async fn stop_for_restart(
        &mut self,
        backend: &mut Backend,
        node: &str,
    ) -> anyhow::Result<()> {
        if self.is_down(node) {
            return Ok(());
        }
        self.kill(backend, node).await
    }

    /// `node`'s event stream has ended. True when nobody killed it: it died by itself, and is
    /// down from now on.
    pub fn ended(&mut self, node: &str) -> bool {
        match self.killed.get_mut(node) {
            Some(pending) if *pending > 0 => {
                *pending -= 1;
                false
            }
            _ => self.down.insert(node.to_string()),
        }
    }

    /// `node` runs again: it is up, and the partitions it was part of hold for it again (a fresh
    /// process remembers none).
    pub async fn started(&mut self, backend: &mut Backend, nodes: &impl Nodes, node: &str) {
        self.down.remove(node);
        let own: Vec<String> = self
            .partitions
            .get(node)
            .map(|peers| peers.iter().cloned().collect())
            .unwrap_or_default();
        self.block(backend, nodes, node, &own, true).await;
        // Partitions of other nodes that name this one.
        let others: Vec<String> = self
            .partitions
            .iter()
            .filter(|(n, peers)| *n != node && peers.contains(node))
            .map(|(n, _)| n.clone())
            .collect();
        for other in others {
            self.block(backend, nodes, node, std::slice::from_ref(&other), true)
                .await;
        }
    }

    /// Cuts `node` off from `peers`, on both sides, and remembers it for healing and restarts.
    pub async fn partition(
        &mut self,
        backend: &mut Backend,
        nodes: &impl Nodes,
        node: &str,
        peers: &[String],
    ) {
        self.block(backend, nodes, node, peers, true).await;
        self.partitions
            .entry(node.to_string())
            .or_default()
            .extend(peers.iter().filter(|p| *p != node).cloned());
    }

    /// Undoes every partition of `node`; returns the peers it is reconnected to.
    pub async fn heal(
        &mut self,
        backend: &mut Backend,
        nodes: &impl Nodes,
        node: &str,
    ) -> Vec<String> {
        let peers: Vec<String> = self
            .partitions
            .remove(node)
            .unwrap_or_default()
            .into_iter()
            .collect();
        self.block(backend, nodes, node, &peers, false).await;
        peers
    }

    /// Blocks (or unblocks) `node` and each of `peers` from each other, on both sides, on the
    /// nodes that are up; a node that is down learns it in [`Steering::started`].
    async fn block(
        &self,
        backend: &mut Backend,
        nodes: &impl Nodes,
        node: &str,
        peers: &[String],
        cut: bool,
    ) {
        let make = |peer| {
            if cut {
                ControlLine::Block { peer }
            } else {
                ControlLine::Unblock { peer }
            }
        };
        let Some(node_id) = nodes.peer_id(node) else {
            return;
        };
        for p in peers.iter().filter(|p| *p != node) {
            let Some(peer_id) = nodes.peer_id(p) else {
                continue;
            };
            // A node that cannot take the line is down or dying; its restart reapplies it.
            if !self.is_down(node) && nodes.runs(node) {
                let _ = backend.control(node, make(peer_id)).await;
            }
            if !self.is_down(p) && nodes.runs(p) {
                let _ = backend.control(p, make(node_id)).await;
            }
        }
    }
}
