//! The one mode switch: which state machine a long-running role is for a mesh config (single or
//! threshold mode), and whether it keeps the beacon beside it. The node (`node/src/build.rs`) and
//! the simulator build their roles here; no other code asks which mode a mesh runs in to choose a
//! role.

use super::threshold::generator::NotShareholder;
use super::{threshold, Contributor, Distributor, Generator, Requester, Role};
use crate::id::RoundId;
use crate::mesh::MeshConfig;
use crate::phrase::{ClientId, UserInput};
use crate::role::distributor::Restored;
use crate::round::Transcript;
use crate::seal::PublicKey;
use crate::secret::Secret;
use libp2p_identity::{Keypair, PeerId};
use std::sync::Arc;
pub use threshold::beacon::Inner;

/// A boxed role, as the node and the simulator drive it.
pub type Boxed = Box<dyn Role + Send>;

/// What a generator was when it stopped (from its store).
#[derive(Default)]
pub struct Restart {
    pub last_opened: Option<RoundId>,
    /// The chain head: its transcript, and the round secret (single mode) or this generator's key
    /// share pair (threshold mode).
    pub last_sealed: Option<(Transcript, Secret)>,
    /// Opens rounds only when told to (scenario replays), not on the interval.
    pub manual: bool,
}

/// A generator: the single generator, or threshold generator j (an error if `identity` is not
/// one of the mesh's generators).
pub fn generator(
    identity: Keypair,
    mesh: Arc<MeshConfig>,
    key: PublicKey,
    restart: Restart,
) -> Result<Boxed, NotShareholder> {
    let Restart {
        last_opened,
        last_sealed,
        manual,
    } = restart;
    if mesh.threshold().is_none() {
        let me = identity.public().to_peer_id();
        let g = Generator::new(me, mesh, key, last_opened, last_sealed);
        return Ok(match manual {
            true => Box::new(g.manual()),
            false => Box::new(g),
        });
    }
    let g = threshold::Generator::new(identity, mesh, key, last_opened, last_sealed)?;
    Ok(match manual {
        true => Box::new(g.manual()),
        false => Box::new(g),
    })
}

/// A contributor: a phrase each round (single mode) or a dealing (threshold mode).
pub fn contributor(client: ClientId, input: Option<UserInput>, mesh: Arc<MeshConfig>) -> Boxed {
    match threshold::Contributor::new(client, input, mesh) {
        Some(dealer) => Box::new(dealer),
        None => Box::new(Contributor::new(client, input)),
    }
}

/// A distributor (one type for both modes: it holds round secrets or key shares), as
/// [`running`] takes it.
pub fn distributor(me: PeerId, mesh: Arc<MeshConfig>, restored: Restored) -> Inner {
    Inner::Distributor(Box::new(Distributor::new(me, mesh, restored)))
}

/// A long-running requester: follows `distributors` (none: the mesh's) for new rounds (single
/// mode), or keeps the threshold key of each sealed round (threshold mode).
pub fn requester(me: PeerId, mesh: Arc<MeshConfig>, distributors: Vec<PeerId>) -> Boxed {
    if mesh.threshold().is_some() {
        return Box::new(threshold::Follower::new(me, mesh));
    }
    let targets = match distributors.is_empty() {
        true => mesh.distributors.iter().map(|m| m.peer_id).collect(),
        false => distributors,
    };
    Box::new(Requester::follow(me, targets))
}

/// A long-running node's role as it runs: in threshold mode beside a beacon keeper, which
/// `keeper` restores (from the node's store) and which makes this node's partials when `inner`
/// is a distributor. One-shot sessions keep no beacon and are not passed here.
pub fn running<E>(
    me: PeerId,
    mesh: &MeshConfig,
    inner: Inner,
    keeper: impl FnOnce() -> Result<threshold::Keeper, E>,
) -> Result<Boxed, E> {
    Ok(match mesh.threshold() {
        Some(_) => Box::new(threshold::Beaconed::new(me, inner, keeper()?)),
        None => inner.into_role(),
    })
}
