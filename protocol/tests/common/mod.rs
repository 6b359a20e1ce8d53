//! Helpers shared by the protocol's test crates.

use libp2p_identity::PeerId;
use otpmesh_protocol::digest::Digest32;
use otpmesh_protocol::phrase::ClientId;
use otpmesh_protocol::round::{self, RoundId, Secret, Transcript};

/// The transcript of round 1, sealed by `generator` (key `key_fingerprint`) with client 1's phrase
/// and `secret`, as a distributor receives it.
pub fn round_one(generator: PeerId, key_fingerprint: Digest32, secret: &Secret) -> Transcript {
    Transcript {
        round: RoundId(1),
        generator,
        key_fingerprint,
        included: vec![round::Inclusion {
            client: ClientId(1),
            ciphertext_hash: round::ciphertext_hash(b"x"),
        }],
        prev_commitment: Default::default(),
        commitment: secret.commitment(RoundId(1)),
        sealed_at_ms: 0,
        threshold: None,
    }
}
