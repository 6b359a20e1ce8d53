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
    #[error(
        "epoch {epoch} is retired: this key is at epoch {current} and older keys are forgotten"
    )]
    Retired { epoch: u64, current: u64 },
    #[error("epoch {epoch} is more than {MAX_RATCHET_STEPS} epochs after the enrolment's {current}: enrol again")]
    TooFar { epoch: u64, current: u64 },
}

/// Most epochs a key is ratcheted forward in one go.
pub const MAX_RATCHET_STEPS: u64 = 100_000;

/// An enrolment's key for one epoch (key recycling).
///
/// ```text
/// K_e0   = HKDF-SHA256(ikm = X25519(a, B), info = "otpmesh/1/enrol" ‖ requester ‖ distributor ‖ e0)
/// K_e+1  = HKDF-SHA256(ikm = K_e, info = "otpmesh/1/epoch" ‖ e+1)
/// ```
/// Each side keeps only the newest epoch's key: once it has moved on, a response salted under an
/// older epoch can no longer be unsalted, and a stolen key does not open the past.
#[derive(Clone, PartialEq, Eq)]
pub struct EpochKey {
    epoch: u64,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EpochKey(epoch {}, <secret>)", self.epoch)
    }
}

impl EpochKey {
    pub fn new(epoch: u64, key: [u8; 32]) -> EpochKey {
        EpochKey {
            epoch,
            key: Zeroizing::new(key),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// This key moved forward to `epoch` (itself if already there).
    pub fn at(&self, epoch: u64) -> Result<EpochKey, KxError> {
        if epoch < self.epoch {
            return Err(KxError::Retired {
                epoch,
                current: self.epoch,
            });
        }
        if epoch - self.epoch > MAX_RATCHET_STEPS {
            return Err(KxError::TooFar {
                epoch,
                current: self.epoch,
            });
        }
        let mut key = self.key.clone();
        for e in self.epoch + 1..=epoch {
            let mut next = Zeroizing::new([0u8; 32]);
            let mut info = b"otpmesh/1/epoch".to_vec();
            info.extend_from_slice(&e.to_be_bytes());
            Hkdf::<Sha256>::new(None, key.as_ref())
                .expand(&info, next.as_mut())
                .expect("32 bytes is a valid HKDF length");
            key = next;
        }
        Ok(EpochKey { epoch, key })
    }

    /// The salt key this epoch's responses are masked with.
    pub fn salt_key(&self) -> SaltKey {
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, self.key.as_ref())
            .expand(b"otpmesh/1/epoch-salt", key.as_mut())
            .expect("32 bytes is a valid HKDF length");
        SaltKey(key)
    }
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

    /// Enrolment: the key for `epoch` from this exchange, bound to both peers.
    pub fn enrol(
        &self,
        theirs: &[u8; 32],
        requester: &PeerId,
        distributor: &PeerId,
        epoch: u64,
    ) -> Result<EpochKey, KxError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*theirs));
        if !shared.was_contributory() {
            return Err(KxError::LowOrder);
        }
        let mut info = b"otpmesh/1/enrol".to_vec();
        info.extend_from_slice(&requester.to_bytes());
        info.extend_from_slice(&distributor.to_bytes());
        info.extend_from_slice(&epoch.to_be_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, shared.as_bytes())
            .expand(&info, key.as_mut())
            .expect("32 bytes is a valid HKDF length");
        Ok(EpochKey { epoch, key })
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
    fn enrolment_keys_agree_and_ratchet_forward_only() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let (r, d) = (PeerId::random(), PeerId::random());
        let (a, b) = (Ephemeral::new(&mut rng), Ephemeral::new(&mut rng));
        let ka = a.enrol(&b.public(), &r, &d, 10).unwrap();
        let kb = b.enrol(&a.public(), &r, &d, 10).unwrap();
        assert_eq!(ka, kb);
        let later = ka.at(13).unwrap();
        assert_eq!(
            later,
            kb.at(11).unwrap().at(13).unwrap(),
            "ratcheting in steps or at once agrees"
        );
        assert_ne!(later.bytes(), ka.bytes());
        assert_eq!(
            later.at(12).unwrap_err(),
            KxError::Retired {
                epoch: 12,
                current: 13
            }
        );
        assert!(matches!(
            later.at(13 + MAX_RATCHET_STEPS + 1),
            Err(KxError::TooFar { .. })
        ));
        let otp = Otp::new(42, Digits::default()).unwrap();
        let salt = [1u8; 16];
        let salted = ka.salt_key().salt(otp, &salt);
        assert_ne!(
            later
                .salt_key()
                .unsalt(salted, &salt, Digits::default())
                .unwrap(),
            otp,
            "another epoch's key does not unsalt"
        );
        assert_eq!(
            kb.salt_key()
                .unsalt(salted, &salt, Digits::default())
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
