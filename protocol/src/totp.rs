//! Standard OTPs: HOTP (RFC 4226) and TOTP (RFC 6238) with SHA-1, SHA-256 or SHA-512, Base32 secrets
//! (RFC 4648) and `otpauth://` URIs, so authenticator apps and `oathtool` interoperate.
//!
//! ```text
//! HOTP(K, C) = truncate(HMAC-H(K, C as 8 big-endian bytes), digits)        RFC 4226 §5.3
//! TOTP(K, T) = HOTP(K, floor((T − T0) / period))                          RFC 6238 §4
//! ```

use crate::otp::{truncate, Digits, Otp};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest secret accepted (RFC 6238's SHA-512 seed is 64 bytes).
pub const MAX_SECRET_BYTES: usize = 128;
/// The default time step.
pub const DEFAULT_PERIOD: u64 = 30;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

impl FromStr for Algorithm {
    type Err = TotpError;
    fn from_str(s: &str) -> Result<Self, TotpError> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(TotpError::Algorithm(s.to_string())),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name().to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("algorithm {0:?} is not one of sha1, sha256, sha512")]
    Algorithm(String),
    #[error("secret is not valid Base32 (RFC 4648: letters A–Z and digits 2–7): {0}")]
    Base32(String),
    #[error("secret is empty")]
    Empty,
    #[error("secret is {0} bytes; at most {MAX_SECRET_BYTES} are accepted")]
    TooLong(usize),
    #[error("period must be at least 1 second")]
    Period,
    #[error("time {time} is before T0 {t0}")]
    BeforeEpoch { time: u64, t0: u64 },
}

/// HOTP: the code for counter `counter`.
pub fn hotp(alg: Algorithm, key: &[u8], counter: u64, digits: Digits) -> Otp {
    fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <M as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    let msg = counter.to_be_bytes();
    let out = match alg {
        Algorithm::Sha1 => mac::<Hmac<sha1::Sha1>>(key, &msg),
        Algorithm::Sha256 => mac::<Hmac<sha2::Sha256>>(key, &msg),
        Algorithm::Sha512 => mac::<Hmac<sha2::Sha512>>(key, &msg),
    };
    Otp::new(truncate(&out, digits), digits).expect("truncate stays below 10^digits")
}

/// A TOTP token's parameters (not its secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub algorithm: Algorithm,
    pub digits: Digits,
    /// Seconds per step.
    pub period: u64,
    /// Unix time the steps count from.
    pub t0: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            algorithm: Algorithm::Sha1,
            digits: Digits::new(6).expect("6 is valid"),
            period: DEFAULT_PERIOD,
            t0: 0,
        }
    }
}

impl Params {
    pub fn check(&self) -> Result<(), TotpError> {
        if self.period == 0 {
            return Err(TotpError::Period);
        }
        Ok(())
    }

    /// The time step `unix` falls in.
    pub fn step(&self, unix: u64) -> Result<u64, TotpError> {
        self.check()?;
        unix.checked_sub(self.t0)
            .map(|t| t / self.period)
            .ok_or(TotpError::BeforeEpoch {
                time: unix,
                t0: self.t0,
            })
    }

    /// TOTP: the code at Unix time `unix`.
    pub fn code(&self, key: &[u8], unix: u64) -> Result<Otp, TotpError> {
        Ok(hotp(self.algorithm, key, self.step(unix)?, self.digits))
    }

    /// The code of a given step.
    pub fn code_at_step(&self, key: &[u8], step: u64) -> Otp {
        hotp(self.algorithm, key, step, self.digits)
    }
}

/// A TOTP token's shared secret. Zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub zeroize::Zeroizing<Vec<u8>>);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?.into_vec();
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(serde::de::Error::invalid_length(
                bytes.len(),
                &"at most 128 bytes",
            ));
        }
        Ok(Secret(zeroize::Zeroizing::new(bytes)))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "totp::Secret(<{} bytes>)", self.0.len())
    }
}

/// A distributor's record of one requester's TOTP token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub secret: Secret,
    pub params: Params,
    /// The last step accepted (each step's code is accepted once).
    pub last_step: Option<u64>,
    /// Offset, in steps, of the last accepted code from the expected step.
    pub drift: i64,
}

impl Token {
    /// Checks `code` at Unix time `now` within ±`window` steps around the expected step shifted by
    /// the remembered drift. Every candidate is compared, whatever matches (constant time).
    pub fn check(&self, code: u64, now: u64, window: u32) -> Option<(u64, bool)> {
        use subtle::{ConditionallySelectable, ConstantTimeEq};
        let expected = self.params.step(now).ok()? as i64 + self.drift;
        let (mut found, mut at) = (subtle::Choice::from(0), 0u64);
        for offset in -(window as i64)..=(window as i64) {
            let step = expected + offset;
            if step < 0 {
                continue;
            }
            let hit = self
                .params
                .code_at_step(&self.secret.0, step as u64)
                .value()
                .ct_eq(&code);
            at.conditional_assign(&(step as u64), hit);
            found |= hit;
        }
        bool::from(found).then(|| (at, self.last_step.is_some_and(|last| at <= last)))
    }
}

/// Bytes of a token secret the distributor derives (RFC 4226 recommends 160 bits).
pub const SECRET_BYTES: usize = 20;

/// Base32 without padding (as in `otpauth://` URIs).
pub fn base32_encode(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// Base32, with or without padding, any case, spaces and dashes ignored.
pub fn base32_decode(text: &str) -> Result<Vec<u8>, TotpError> {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let clean = clean.trim_end_matches('=');
    if clean.is_empty() {
        return Err(TotpError::Empty);
    }
    let bytes = data_encoding::BASE32_NOPAD
        .decode(clean.as_bytes())
        .map_err(|e| TotpError::Base32(e.to_string()))?;
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(TotpError::TooLong(bytes.len()));
    }
    Ok(bytes)
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=…&digits=…&period=…` URI
/// authenticator apps import (Key Uri Format).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8], params: &Params) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&period={}",
        percent_encode(issuer),
        percent_encode(account),
        base32_encode(secret),
        percent_encode(issuer),
        params.algorithm.name(),
        params.digits.get(),
        params.period
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc4226_appendix_d() {
        let key = b"12345678901234567890";
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(
                hotp(
                    Algorithm::Sha1,
                    key,
                    counter as u64,
                    Digits::new(6).unwrap()
                )
                .value(),
                *want,
                "count {counter}"
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b() {
        let sha1 = b"12345678901234567890".as_slice();
        let sha256 = b"12345678901234567890123456789012".as_slice();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".as_slice();
        let rows: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (time, a, b, c) in rows {
            for (alg, key, want) in [
                (Algorithm::Sha1, sha1, a),
                (Algorithm::Sha256, sha256, b),
                (Algorithm::Sha512, sha512, c),
            ] {
                let params = Params {
                    algorithm: alg,
                    digits: Digits::new(8).unwrap(),
                    period: 30,
                    t0: 0,
                };
                assert_eq!(
                    params.code(key, time).unwrap().to_string(),
                    want,
                    "{alg} at {time}"
                );
            }
        }
    }

    #[test]
    fn base32_follows_rfc4648() {
        // RFC 4648 §10.
        for (plain, enc) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
        }
        assert_eq!(base32_decode("mzxw 6ytb-oi======").unwrap(), b"foobar");
        assert!(matches!(base32_decode("MZXW1"), Err(TotpError::Base32(_))));
        assert_eq!(base32_decode(""), Err(TotpError::Empty));
    }

    #[test]
    fn uris_carry_every_parameter() {
        let p = Params {
            algorithm: Algorithm::Sha256,
            digits: Digits::new(8).unwrap(),
            period: 60,
            t0: 0,
        };
        let uri = otpauth_uri("otp mesh", "erin@example", b"foobar", &p);
        assert_eq!(uri, "otpauth://totp/otp%20mesh:erin%40example?secret=MZXW6YTBOI&issuer=otp%20mesh&algorithm=SHA256&digits=8&period=60");
    }

    proptest! {
        #[test]
        fn base32_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
            prop_assert_eq!(base32_decode(&base32_encode(&bytes)).unwrap(), bytes);
        }
    }
}
