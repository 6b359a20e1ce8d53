//! OTP maths: issuing an OTP from a round secret, and salting it for one requester.
//!
//! ```text
//! otp_key   = HKDF-SHA256(ikm = round secret, salt = "otpmesh/1/otp-key", info = round id)
//! otp       = reduce(HMAC-SHA256(otp_key, requester ‖ issuing distributor ‖ counter), digits)
//! mask      = reduce(HMAC-SHA256(salt_key, salt), digits)        salt: 16 fresh bytes per response
//! salted    = (otp + mask) mod 10^digits
//! reduce(m) = (first 8 bytes of m, big-endian) mod 10^digits
//! ```
//! [`reduce`] takes 64 bits, so every digit count up to 10 is uniform (bias below 10^10/2^64 ≈
//! 5·10⁻¹⁰); RFC 4226's 31-bit [`truncate`] would make a 10-digit code start with 0–2 only. TOTP
//! tokens ([`crate::totp`]) keep RFC 4226's truncation, which authenticator apps compute.
//! The salt key is known only to the requester and the distributor ([`crate::kx`]); the requester
//! computes the same mask and subtracts it.

use crate::id::RoundId;
use crate::secret::Secret;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

pub const MIN_DIGITS: u8 = 6;
pub const MAX_DIGITS: u8 = 10;
pub const DEFAULT_DIGITS: u8 = 8;
/// Bytes of fresh salt in every OTP response.
pub const SALT_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// How many decimal digits an OTP has (6–10).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Digits(u8);

impl Digits {
    pub fn new(n: u8) -> Result<Digits, OtpError> {
        if (MIN_DIGITS..=MAX_DIGITS).contains(&n) {
            Ok(Digits(n))
        } else {
            Err(OtpError::Digits(n))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    fn modulus(self) -> u64 {
        10u64.pow(self.0 as u32)
    }
}

impl Default for Digits {
    fn default() -> Self {
        Digits(DEFAULT_DIGITS)
    }
}

impl TryFrom<u8> for Digits {
    type Error = OtpError;
    fn try_from(n: u8) -> Result<Self, OtpError> {
        Digits::new(n)
    }
}

impl From<Digits> for u8 {
    fn from(d: Digits) -> u8 {
        d.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtpError {
    #[error("{0} digits is not allowed (OTPs have {MIN_DIGITS} to {MAX_DIGITS} digits)")]
    Digits(u8),
    #[error("salted value {value} has more than {digits} digits")]
    Salted { value: u64, digits: u8 },
}

/// A one-time password: a value below 10^digits, shown zero-padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Otp {
    value: u64,
    digits: Digits,
}

impl Otp {
    pub fn new(value: u64, digits: Digits) -> Result<Otp, OtpError> {
        if value >= digits.modulus() {
            return Err(OtpError::Salted {
                value,
                digits: digits.0,
            });
        }
        Ok(Otp { value, digits })
    }

    pub fn value(self) -> u64 {
        self.value
    }

    pub fn digits(self) -> Digits {
        self.digits
    }
}

impl fmt::Display for Otp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$}", self.value, width = self.digits.0 as usize)
    }
}

impl fmt::Debug for Otp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Otp(<redacted>)")
    }
}

/// 64 bits of an HMAC output reduced to `digits`: uniform for every digit count (see the module
/// doc). `mac` has at least 8 bytes (HMAC-SHA256 has 32).
pub fn reduce(mac: &[u8], digits: Digits) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&mac[..8]);
    u64::from_be_bytes(first) % digits.modulus()
}

/// RFC 4226 §5.3 dynamic truncation of an HMAC output, reduced to `digits`.
pub fn truncate(mac: &[u8], digits: Digits) -> u64 {
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let code = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    code as u64 % digits.modulus()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        mac.update(p);
    }
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// Issues the OTP for (`round`, `requester`, `issuer`, `counter`) from the round secret. The issuing
/// distributor is part of the input, so two distributors never hand a requester the same OTP.
pub fn issue(
    secret: &Secret,
    round: RoundId,
    requester: &PeerId,
    issuer: &PeerId,
    counter: u64,
    digits: Digits,
) -> Otp {
    let hk = Hkdf::<Sha256>::new(Some(b"otpmesh/1/otp-key"), secret.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(&round.0.to_be_bytes(), key.as_mut())
        .expect("32 bytes is a valid HKDF length");
    let mac = hmac(
        key.as_ref(),
        &[
            &requester.to_bytes(),
            &issuer.to_bytes(),
            &counter.to_be_bytes(),
        ],
    );
    Otp {
        value: reduce(mac.as_ref(), digits),
        digits,
    }
}

/// A key only one requester and one distributor hold; it keys the salt mask.
pub struct SaltKey(pub(crate) Zeroizing<[u8; 32]>);

impl fmt::Debug for SaltKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaltKey(<redacted>)")
    }
}

impl SaltKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SaltKey {
        SaltKey(Zeroizing::new(bytes))
    }

    fn mask(&self, salt: &[u8; SALT_BYTES], digits: Digits) -> u64 {
        let mac = hmac(self.0.as_ref(), &[b"otpmesh/1/salt-mask", salt]);
        reduce(mac.as_ref(), digits)
    }

    /// XORs `bytes` with a mask stream from this key and `salt` (salting a TOTP secret); applying it
    /// twice gives the bytes back.
    pub fn mask_bytes(&self, salt: &[u8; SALT_BYTES], bytes: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut mask = Zeroizing::new(vec![0u8; bytes.len()]);
        Hkdf::<Sha256>::new(Some(salt), self.0.as_ref())
            .expand(b"otpmesh/1/secret-mask", &mut mask)
            .expect("secrets are far below HKDF's length limit");
        Zeroizing::new(bytes.iter().zip(mask.iter()).map(|(b, m)| b ^ m).collect())
    }

    /// `(otp + mask) mod 10^digits`.
    pub fn salt(&self, otp: Otp, salt: &[u8; SALT_BYTES]) -> u64 {
        let m = otp.digits.modulus();
        (otp.value + self.mask(salt, otp.digits)) % m
    }

    /// Removes the mask from a salted value.
    pub fn unsalt(
        &self,
        salted: u64,
        salt: &[u8; SALT_BYTES],
        digits: Digits,
    ) -> Result<Otp, OtpError> {
        let m = digits.modulus();
        if salted >= m {
            return Err(OtpError::Salted {
                value: salted,
                digits: digits.0,
            });
        }
        Otp::new((salted + m - self.mask(salt, digits)) % m, digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn rfc4226_truncation_example() {
        // RFC 4226 §5.4: this HMAC-SHA-1 value truncates to 0x50ef7f19 = 1357872921.
        let mac = hex::decode("1f8698690e02ca16618550ef7f19da8e945b555a").unwrap();
        assert_eq!(truncate(&mac, Digits(10)), 1357872921);
        assert_eq!(truncate(&mac, Digits(6)), 872921);
    }

    #[test]
    fn digits_are_bounded() {
        assert!(Digits::new(5).is_err());
        assert!(Digits::new(11).is_err());
        assert_eq!(Digits::new(8).unwrap(), Digits::default());
        assert_eq!(Otp::new(7, Digits(6)).unwrap().to_string(), "000007");
    }

    #[test]
    fn otps_differ_across_counters_requesters_issuers_and_rounds() {
        let secret = Secret::from_bytes([3; 32]);
        // Fixed inputs: this checks one known sample, it does not gamble on a random one.
        let fixed = |b: u8| {
            libp2p_identity::Keypair::ed25519_from_bytes([b; 32])
                .unwrap()
                .public()
                .to_peer_id()
        };
        let (who, dist) = (fixed(1), fixed(2));
        let mut seen = HashSet::new();
        for counter in 0..2000 {
            seen.insert(issue(&secret, RoundId(1), &who, &dist, counter, Digits(8)).value());
        }
        // 2000 draws from 10^8 values: this fixed sample happens to have no collision (a random one
        // would collide 2% of the time; the distributor, not the maths, guarantees uniqueness).
        assert_eq!(seen.len(), 2000);
        let a = issue(&secret, RoundId(1), &who, &dist, 0, Digits(8));
        assert_ne!(a, issue(&secret, RoundId(2), &who, &dist, 0, Digits(8)));
        assert_ne!(
            a,
            issue(&secret, RoundId(1), &fixed(3), &dist, 0, Digits(8))
        );
        assert_ne!(a, issue(&secret, RoundId(1), &who, &fixed(3), 0, Digits(8)));
        assert_ne!(
            a,
            issue(
                &Secret::from_bytes([4; 32]),
                RoundId(1),
                &who,
                &dist,
                0,
                Digits(8)
            )
        );
    }

    proptest! {
        #[test]
        fn unsalt_inverts_salt(key in any::<[u8; 32]>(), salt in any::<[u8; 16]>(), d in MIN_DIGITS..=MAX_DIGITS, v in any::<u64>()) {
            let digits = Digits(d);
            let otp = Otp::new(v % digits.modulus(), digits).unwrap();
            let k = SaltKey::from_bytes(key);
            let salted = k.salt(otp, &salt);
            prop_assert!(salted < digits.modulus());
            prop_assert_eq!(k.unsalt(salted, &salt, digits).unwrap(), otp);
        }

        #[test]
        fn a_different_key_or_salt_does_not_unsalt(key in any::<[u8; 32]>(), other in any::<[u8; 32]>(), salt in any::<[u8; 16]>()) {
            prop_assume!(key != other);
            let digits = Digits(10);
            let otp = Otp::new(1234567890, digits).unwrap();
            let salted = SaltKey::from_bytes(key).salt(otp, &salt);
            // Masks are 31-bit HMAC truncations: two keys agreeing is a 2^-31 event per case.
            prop_assert_ne!(SaltKey::from_bytes(other).unsalt(salted, &salt, digits).unwrap(), otp);
        }

        #[test]
        fn oversize_salted_values_are_errors(v in 100_000_000u64.., salt in any::<[u8; 16]>()) {
            let r = SaltKey::from_bytes([1; 32]).unsalt(v, &salt, Digits(8));
            prop_assert!(matches!(r, Err(OtpError::Salted { .. })), "expected a salted-value error");
        }
    }
}
