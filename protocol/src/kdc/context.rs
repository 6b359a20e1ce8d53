//! The contexts the centre and its users seal and MAC under: each binds the centre's PeerId and
//! the names involved, so a box or proof made for one exchange opens in no other.

use super::seal::context;
use super::{Key, Name, Purpose};
use libp2p_identity::PeerId;

/// The proof of the current key that re-registering a name needs.
pub fn reregister_proof(
    old: &Key,
    centre: &PeerId,
    name: &Name,
    new: &Key,
    peer: &PeerId,
) -> [u8; 32] {
    old.mac(
        Purpose::Reregister,
        &[
            &centre.to_bytes(),
            name.as_str().as_bytes(),
            new.as_bytes(),
            &peer.to_bytes(),
        ],
    )
}

pub fn preauth_context(centre: &PeerId, client: &Name, server: &Name, nonce: &[u8]) -> Vec<u8> {
    context(&[
        &centre.to_bytes(),
        client.as_str().as_bytes(),
        server.as_str().as_bytes(),
        nonce,
    ])
}

pub fn present_context(centre: &PeerId, name: &Name) -> Vec<u8> {
    context(&[&centre.to_bytes(), name.as_str().as_bytes(), b"present"])
}

pub fn for_client_context(centre: &PeerId, client: &Name, nonce: &[u8]) -> Vec<u8> {
    context(&[&centre.to_bytes(), client.as_str().as_bytes(), nonce])
}

pub fn ticket_context(centre: &PeerId, server: &Name) -> Vec<u8> {
    context(&[&centre.to_bytes(), server.as_str().as_bytes()])
}
