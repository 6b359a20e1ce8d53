//! How each stored value is encoded and decoded, apart from the database: the decoders are what a
//! corrupt or tampered database file reaches, so they are pure functions that the fuzz targets
//! (`fuzz/fuzz_targets/stored_records.rs`) call directly. Every decoder returns `None` for bytes
//! that are not a valid value of its kind; none panics.
//!
//! Secret values (rounds, enrolment keys, TOTP tokens, centre users' keys) are sealed with ChaCha20-Poly1305 under the
//! data dir's store key, bound to what they are stored under (AAD), so a value moved to another key
//! or table does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use libp2p::PeerId;
use otpmesh_protocol::role::distributor::kdc::User;
use otpmesh_protocol::round::{Secret, Transcript};
use otpmesh_protocol::totp;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// Largest stored value read back (a sealed round with the largest transcript).
pub const MAX_VALUE_BYTES: usize = otpmesh_protocol::wire::MAX_REQUEST_BYTES + 64;
/// Largest attempts record read back.
pub const MAX_ATTEMPTS_BYTES: usize = 64 * 1024;
const NONCE_BYTES: usize = 12;
const ENROLMENT_PLAIN_BYTES: usize = 8 + 32;

/// Seals and opens values under the store key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    /// Keys the MACs of rows kept in clear (the OTP table): a subkey of the store key.
    row_key: Zeroizing<[u8; 32]>,
}

/// Bytes of an OTP row's MAC.
pub const ROW_MAC_BYTES: usize = 16;

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            row_key: Zeroizing::new(blake3::derive_key("otpmesh/1 store otp row mac", key)),
        }
    }

    /// The MAC of an OTP row: its key (issuer, requester, round, counter) and its value (expiry,
    /// used). Whoever can write the database file but not read `store.key` cannot flip "used"
    /// back or forge a row.
    pub fn otp_row_mac(
        &self,
        key: (&[u8], &[u8], u64, u64),
        expires_at: u64,
        used: bool,
    ) -> [u8; ROW_MAC_BYTES] {
        let mut h = blake3::Hasher::new_keyed(&self.row_key);
        for part in [key.0, key.1] {
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(&key.2.to_be_bytes());
        h.update(&key.3.to_be_bytes());
        h.update(&expires_at.to_be_bytes());
        h.update(&[u8::from(used)]);
        let mut mac = [0u8; ROW_MAC_BYTES];
        mac.copy_from_slice(&h.finalize().as_bytes()[..ROW_MAC_BYTES]);
        mac
    }

    /// Whether `mac` is the row's (constant time).
    pub fn otp_row_ok(
        &self,
        key: (&[u8], &[u8], u64, u64),
        expires_at: u64,
        used: bool,
        mac: &[u8; ROW_MAC_BYTES],
    ) -> bool {
        let expected = blake3::Hash::from_bytes({
            let mut full = [0u8; 32];
            full[..ROW_MAC_BYTES].copy_from_slice(&self.otp_row_mac(key, expires_at, used));
            full
        });
        let mut given = [0u8; 32];
        given[..ROW_MAC_BYTES].copy_from_slice(mac);
        // blake3::Hash compares in constant time.
        expected == blake3::Hash::from_bytes(given)
    }

    /// nonce ‖ ciphertext, bound to `aad`.
    fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("ChaCha20-Poly1305 encryption of a bounded message cannot fail");
        out.extend_from_slice(&ct);
        out
    }

    fn open(&self, aad: &[u8], bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if bytes.len() < NONCE_BYTES || bytes.len() > MAX_VALUE_BYTES {
            return None;
        }
        let (nonce, ct) = bytes.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()
            .map(Zeroizing::new)
    }

    /// A sealed round: its transcript and secret, bound to the round number.
    pub fn seal_round(&self, transcript: &Transcript, secret: &Secret) -> Vec<u8> {
        let mut plain = Zeroizing::new(Vec::new());
        ciborium::into_writer(&(transcript, secret), &mut *plain)
            .expect("writing CBOR into a Vec cannot fail");
        self.seal(&transcript.round.0.to_be_bytes(), &plain)
    }

    pub fn open_round(&self, round: u64, bytes: &[u8]) -> Option<(Transcript, Secret)> {
        let plain = self.open(&round.to_be_bytes(), bytes)?;
        round_plain(round, &plain)
    }

    /// An enrolment key with its epoch, bound to the requester.
    pub fn seal_enrolment(&self, requester: &[u8], epoch: u64, key: &Secret) -> Vec<u8> {
        let mut plain = Zeroizing::new(epoch.to_be_bytes().to_vec());
        plain.extend_from_slice(key.as_bytes());
        self.seal(&enrolment_aad(requester), &plain)
    }

    pub fn open_enrolment(&self, requester: &[u8], bytes: &[u8]) -> Option<(u64, Secret)> {
        let plain = self.open(&enrolment_aad(requester), bytes)?;
        enrolment_plain(&plain)
    }

    /// A TOTP token, bound to the requester.
    pub fn seal_token(&self, requester: &[u8], token: &totp::Token) -> Vec<u8> {
        let mut plain = Zeroizing::new(Vec::new());
        ciborium::into_writer(token, &mut *plain).expect("writing CBOR into a Vec cannot fail");
        self.seal(&token_aad(requester), &plain)
    }

    pub fn open_token(&self, requester: &[u8], bytes: &[u8]) -> Option<totp::Token> {
        let plain = self.open(&token_aad(requester), bytes)?;
        token_plain(&plain)
    }

    /// A key distribution centre's user, bound to its name.
    pub fn seal_kdc_user(&self, user: &User) -> Vec<u8> {
        let mut plain = Zeroizing::new(Vec::new());
        ciborium::into_writer(user, &mut *plain).expect("writing CBOR into a Vec cannot fail");
        self.seal(&kdc_user_aad(user.name.as_str()), &plain)
    }

    pub fn open_kdc_user(&self, name: &str, bytes: &[u8]) -> Option<User> {
        let plain = self.open(&kdc_user_aad(name), bytes)?;
        kdc_user_plain(name, &plain)
    }
}

fn kdc_user_aad(name: &str) -> Vec<u8> {
    [b"kdc-user/".as_slice(), name.as_bytes()].concat()
}

/// The plaintext of a sealed centre user stored under `name`.
pub fn kdc_user_plain(name: &str, plain: &[u8]) -> Option<User> {
    let user: User = ciborium::from_reader(plain).ok()?;
    (user.name.as_str() == name).then_some(user)
}

fn enrolment_aad(requester: &[u8]) -> Vec<u8> {
    [b"enrolment/".as_slice(), requester].concat()
}

fn token_aad(requester: &[u8]) -> Vec<u8> {
    [b"totp/".as_slice(), requester].concat()
}

/// The plaintext of a sealed round stored under `round`.
pub fn round_plain(round: u64, plain: &[u8]) -> Option<(Transcript, Secret)> {
    let (transcript, secret): (Transcript, Secret) = ciborium::from_reader(plain).ok()?;
    let consistent = transcript.round.0 == round && transcript.check(Some(&secret)).is_ok();
    consistent.then_some((transcript, secret))
}

/// The plaintext of a sealed enrolment: epoch ‖ key.
pub fn enrolment_plain(plain: &[u8]) -> Option<(u64, Secret)> {
    if plain.len() != ENROLMENT_PLAIN_BYTES {
        return None;
    }
    let (epoch, key) = plain.split_at(8);
    Some((
        u64::from_be_bytes(epoch.try_into().ok()?),
        Secret::from_bytes(key.try_into().ok()?),
    ))
}

/// The plaintext of a sealed TOTP token.
pub fn token_plain(plain: &[u8]) -> Option<totp::Token> {
    ciborium::from_reader(plain).ok()
}

/// A requester's failed verifications: (failure times, locked until).
pub fn encode_attempts(failures: &[u64], locked_until: u64) -> Vec<u8> {
    let mut value = Vec::new();
    ciborium::into_writer(&(failures, locked_until), &mut value)
        .expect("writing CBOR into a Vec cannot fail");
    value
}

pub fn attempts(bytes: &[u8]) -> Option<(Vec<u64>, u64)> {
    if bytes.len() > MAX_ATTEMPTS_BYTES {
        return None;
    }
    ciborium::from_reader(bytes).ok()
}

/// A peer id stored as a key.
pub fn peer(bytes: &[u8]) -> Option<PeerId> {
    PeerId::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_open_only_where_they_were_sealed() {
        let sealer = Sealer::new(&[7; 32]);
        let key = Secret::from_bytes([9; 32]);
        let sealed = sealer.seal_enrolment(b"alice", 3, &key);
        let (epoch, opened) = sealer.open_enrolment(b"alice", &sealed).expect("opens");
        assert_eq!((epoch, opened.as_bytes()), (3, key.as_bytes()));
        assert!(sealer.open_enrolment(b"bob", &sealed).is_none());
        assert!(sealer.open_token(b"alice", &sealed).is_none());
        assert!(Sealer::new(&[8; 32])
            .open_enrolment(b"alice", &sealed)
            .is_none());
        assert!(sealer.open_enrolment(b"alice", &sealed[..11]).is_none());
    }

    #[test]
    fn attempts_round_trip_and_oversize_is_refused() {
        let bytes = encode_attempts(&[1, 2, 3], 99);
        assert_eq!(attempts(&bytes), Some((vec![1, 2, 3], 99)));
        assert_eq!(attempts(&[0xff; 3]), None);
        let huge = encode_attempts(&vec![u64::MAX; MAX_ATTEMPTS_BYTES / 8], 0);
        assert_eq!(attempts(&huge), None);
    }
}
