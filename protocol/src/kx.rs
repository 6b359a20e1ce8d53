//! The X25519 exchange that gives one requester and one distributor their salt key.
//!
//! The requester sends a fresh X25519 public key with its OTP request; the distributor answers with
//! its own fresh public key. Both derive
//! `salt_key = HKDF-SHA256(ikm = X25519(a, B), info = "otpmesh/1/salt-key" ‖ requester ‖ distributor)`.
//! The exchange runs inside the Noise channel that authenticates both PeerIds, and the PeerIds are
//! bound into the key, so a key is good for one pair of peers only.

use crate::otp::SaltKey;
use hkdf::Hkdf;
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KxError {
    #[error("the peer's X25519 key is a low-order point (no shared secret)")]
    LowOrder,
}

/// One side's fresh key pair for a single exchange.
pub struct Ephemeral {
    secret: StaticSecret,
    public: [u8; 32],
}

impl Ephemeral {
    pub fn new(rng: &mut dyn CryptoRngCore) -> Ephemeral {
        let secret = StaticSecret::random_from_rng(&mut *rng);
        let public = PublicKey::from(&secret).to_bytes();
        Ephemeral { secret, public }
    }

    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Derives the salt key for (`requester`, `distributor`) from the peer's public key.
    pub fn salt_key(
        &self,
        theirs: &[u8; 32],
        requester: &PeerId,
        distributor: &PeerId,
    ) -> Result<SaltKey, KxError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*theirs));
        if !shared.was_contributory() {
            return Err(KxError::LowOrder);
        }
        let mut info = b"otpmesh/1/salt-key".to_vec();
        info.extend_from_slice(&requester.to_bytes());
        info.extend_from_slice(&distributor.to_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, shared.as_bytes())
            .expand(&info, key.as_mut())
            .expect("32 bytes is a valid HKDF length");
        Ok(SaltKey(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::{Digits, Otp};
    use rand::SeedableRng;

    #[test]
    fn both_sides_derive_the_same_key_and_only_for_their_pair() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let (r, d) = (PeerId::random(), PeerId::random());
        let a = Ephemeral::new(&mut rng);
        let b = Ephemeral::new(&mut rng);
        let ka = a.salt_key(&b.public(), &r, &d).unwrap();
        let kb = b.salt_key(&a.public(), &r, &d).unwrap();
        let otp = Otp::new(12345678, Digits::default()).unwrap();
        let salt = [9u8; 16];
        assert_eq!(
            kb.unsalt(ka.salt(otp, &salt), &salt, Digits::default())
                .unwrap(),
            otp
        );
        let wrong_pair = b.salt_key(&a.public(), &d, &r).unwrap();
        assert_ne!(
            wrong_pair
                .unsalt(ka.salt(otp, &salt), &salt, Digits::default())
                .unwrap(),
            otp
        );
    }

    #[test]
    fn low_order_keys_are_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let a = Ephemeral::new(&mut rng);
        assert_eq!(
            a.salt_key(&[0u8; 32], &PeerId::random(), &PeerId::random())
                .unwrap_err(),
            KxError::LowOrder
        );
    }
}
