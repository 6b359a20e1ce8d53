//! RADIUS packets, as much as a verifier needs: an Access-Request with a PAP User-Password
//! (RFC 2865) in, Access-Accept or Access-Reject out, with Message-Authenticator (RFC 3579).
//!
//! Written here on `md-5` + `hmac` (the RustCrypto generation the project uses) rather than
//! taken from a crate: `radius` 0.4 has no Message-Authenticator and pulls in all of tokio and an
//! older MD5, `radius-rust` needs a dictionary file and a second digest generation. This is the
//! whole of what is parsed; anything else in a packet is carried as an opaque attribute.
//!
//! ```text
//! 0      1      2             4                      20
//! | code | id   | length      | authenticator (16)   | attributes: type, length (≥ 2), value …
//! ```

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const ACCESS_REQUEST: u8 = 1;
pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;
pub const USER_NAME: u8 = 1;
pub const USER_PASSWORD: u8 = 2;
pub const REPLY_MESSAGE: u8 = 18;
pub const MESSAGE_AUTHENTICATOR: u8 = 80;

/// RFC 2865 §3: a packet is 20 to 4096 octets.
pub const MIN_PACKET: usize = 20;
pub const MAX_PACKET: usize = 4096;
/// RFC 2865 §5.2: a User-Password is 16 to 128 octets, in 16-octet blocks.
pub const MAX_PASSWORD: usize = 128;

type HmacMd5 = Hmac<Md5>;

/// Why a datagram is dropped (RFC 2865: silently, to the sender; counted and logged here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Drop {
    #[error("shorter than a RADIUS header or its length field")]
    Short,
    #[error("length field out of 20..=4096")]
    Length,
    #[error("an attribute overruns the packet or is shorter than 2 octets")]
    Attribute,
    #[error("not an Access-Request")]
    Code,
    #[error("no Message-Authenticator, and this client must send one")]
    NoAuthenticator,
    #[error("Message-Authenticator does not match (wrong shared secret?)")]
    BadAuthenticator,
    #[error("Message-Authenticator is not 16 octets, or given twice")]
    MalformedAuthenticator,
    #[error("no User-Name, or not one")]
    UserName,
    #[error("no PAP User-Password, or not 16..=128 octets in 16-octet blocks")]
    Password,
    #[error("unknown client")]
    UnknownClient,
    #[error("client over its rate limit")]
    RateLimited,
    #[error("too many requests being judged")]
    Busy,
}

impl Drop {
    /// Every metrics label [`Drop::label`] gives, so the counters exist at zero before the first
    /// drop.
    pub const LABELS: [&'static str; 8] = [
        "malformed",
        "not_access_request",
        "no_message_authenticator",
        "bad_authenticator",
        "missing_attribute",
        "unknown_client",
        "rate_limited",
        "busy",
    ];

    /// A metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Drop::Short | Drop::Length | Drop::Attribute | Drop::MalformedAuthenticator => {
                "malformed"
            }
            Drop::Code => "not_access_request",
            Drop::NoAuthenticator => "no_message_authenticator",
            Drop::BadAuthenticator => "bad_authenticator",
            Drop::UserName | Drop::Password => "missing_attribute",
            Drop::UnknownClient => "unknown_client",
            Drop::RateLimited => "rate_limited",
            Drop::Busy => "busy",
        }
    }
}

/// A decoded packet: its header and raw attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub code: u8,
    pub id: u8,
    pub authenticator: [u8; 16],
    /// The packet's bytes up to its length field (what authenticators cover).
    pub bytes: &'a [u8],
    /// (type, value, offset of the value in `bytes`).
    pub attributes: Vec<(u8, &'a [u8], usize)>,
}

impl<'a> Packet<'a> {
    /// Parses a datagram. Octets past the length field are padding (RFC 2865 §3).
    pub fn decode(datagram: &'a [u8]) -> Result<Packet<'a>, Drop> {
        if datagram.len() < MIN_PACKET {
            return Err(Drop::Short);
        }
        let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        if !(MIN_PACKET..=MAX_PACKET).contains(&length) {
            return Err(Drop::Length);
        }
        let bytes = datagram.get(..length).ok_or(Drop::Short)?;
        let mut attributes = Vec::new();
        let mut at = MIN_PACKET;
        while at < length {
            let (kind, len) = match bytes.get(at..at + 2) {
                Some([k, l]) => (*k, usize::from(*l)),
                _ => return Err(Drop::Attribute),
            };
            if len < 2 || at + len > length {
                return Err(Drop::Attribute);
            }
            attributes.push((kind, &bytes[at + 2..at + len], at + 2));
            at += len;
        }
        Ok(Packet {
            code: bytes[0],
            id: bytes[1],
            authenticator: bytes[4..20].try_into().expect("20 octets checked"),
            bytes,
            attributes,
        })
    }

    pub fn attribute(&self, kind: u8) -> Option<&'a [u8]> {
        self.attributes
            .iter()
            .find(|(k, _, _)| *k == kind)
            .map(|(_, v, _)| *v)
    }

    /// Checks the Message-Authenticator (HMAC-MD5 over the packet with its own value zeroed):
    /// `Ok(true)` if present and right, `Ok(false)` if absent.
    pub fn check_message_authenticator(&self, secret: &[u8]) -> Result<bool, Drop> {
        let found: Vec<&(u8, &[u8], usize)> = self
            .attributes
            .iter()
            .filter(|(k, _, _)| *k == MESSAGE_AUTHENTICATOR)
            .collect();
        let (value, offset) = match found.as_slice() {
            [] => return Ok(false),
            [(_, v, o)] if v.len() == 16 => (*v, *o),
            _ => return Err(Drop::MalformedAuthenticator),
        };
        let mut zeroed = self.bytes.to_vec();
        zeroed[offset..offset + 16].fill(0);
        let mut mac = HmacMd5::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(&zeroed);
        let expected = mac.finalize().into_bytes();
        match bool::from(expected.as_slice().ct_eq(value)) {
            true => Ok(true),
            false => Err(Drop::BadAuthenticator),
        }
    }

    /// The PAP User-Password, unhidden (RFC 2865 §5.2), trailing NULs removed.
    pub fn user_password(&self, secret: &[u8]) -> Result<Zeroizing<Vec<u8>>, Drop> {
        let hidden = self.attribute(USER_PASSWORD).ok_or(Drop::Password)?;
        if hidden.is_empty() || hidden.len() > MAX_PASSWORD || hidden.len() % 16 != 0 {
            return Err(Drop::Password);
        }
        let mut plain = Zeroizing::new(Vec::with_capacity(hidden.len()));
        let mut previous: &[u8] = &self.authenticator;
        for block in hidden.chunks(16) {
            let mut md5 = Md5::new();
            md5.update(secret);
            md5.update(previous);
            let b = md5.finalize();
            plain.extend(block.iter().zip(b.iter()).map(|(c, b)| c ^ b));
            previous = block;
        }
        while plain.last() == Some(&0) {
            plain.pop();
        }
        Ok(plain)
    }
}

/// A reply to `request`: Message-Authenticator first (RFC 3579 §3.2, and the BlastRADIUS advice),
/// then Reply-Message, the Response Authenticator over it all.
pub fn reply(request: &Packet<'_>, code: u8, message: &str, secret: &[u8]) -> Vec<u8> {
    let message = &message.as_bytes()[..message.len().min(253)];
    let mut out = vec![code, request.id, 0, 0];
    out.extend_from_slice(&request.authenticator);
    out.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
    let ma_at = out.len();
    out.extend_from_slice(&[0; 16]);
    if !message.is_empty() {
        out.extend_from_slice(&[REPLY_MESSAGE, message.len() as u8 + 2]);
        out.extend_from_slice(message);
    }
    let length = (out.len() as u16).to_be_bytes();
    out[2..4].copy_from_slice(&length);
    let mut mac = HmacMd5::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&out);
    out[ma_at..ma_at + 16].copy_from_slice(&mac.finalize().into_bytes());
    let mut md5 = Md5::new();
    md5.update(&out);
    md5.update(secret);
    let response_authenticator = md5.finalize();
    out[4..20].copy_from_slice(&response_authenticator);
    out
}

/// An Access-Request as a client builds it (tests, benches): User-Name, hidden User-Password and,
/// with `authenticate`, a Message-Authenticator.
pub fn access_request(
    id: u8,
    authenticator: [u8; 16],
    user: &str,
    password: &[u8],
    secret: &[u8],
    authenticate: bool,
) -> Vec<u8> {
    let mut out = vec![ACCESS_REQUEST, id, 0, 0];
    out.extend_from_slice(&authenticator);
    out.extend_from_slice(&[USER_NAME, user.len() as u8 + 2]);
    out.extend_from_slice(user.as_bytes());
    let mut padded = password.to_vec();
    padded.resize(password.len().div_ceil(16).max(1) * 16, 0);
    let mut hidden = Vec::with_capacity(padded.len());
    let mut previous = authenticator.to_vec();
    for block in padded.chunks(16) {
        let mut md5 = Md5::new();
        md5.update(secret);
        md5.update(&previous);
        let b = md5.finalize();
        let c: Vec<u8> = block.iter().zip(b.iter()).map(|(p, b)| p ^ b).collect();
        hidden.extend_from_slice(&c);
        previous = c;
    }
    out.extend_from_slice(&[USER_PASSWORD, hidden.len() as u8 + 2]);
    out.extend_from_slice(&hidden);
    let ma_at = out.len() + 2;
    if authenticate {
        out.extend_from_slice(&[MESSAGE_AUTHENTICATOR, 18]);
        out.extend_from_slice(&[0; 16]);
    }
    let length = (out.len() as u16).to_be_bytes();
    out[2..4].copy_from_slice(&length);
    if authenticate {
        let mut mac = HmacMd5::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(&out);
        out[ma_at..ma_at + 16].copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

/// Whether `response` is a reply to a request with `request_authenticator` under `secret`.
pub fn response_is_authentic(
    response: &[u8],
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> bool {
    let Ok(p) = Packet::decode(response) else {
        return false;
    };
    let mut md5 = Md5::new();
    md5.update(&p.bytes[..4]);
    md5.update(request_authenticator);
    md5.update(&p.bytes[20..]);
    md5.update(secret);
    bool::from(md5.finalize().as_slice().ct_eq(&p.authenticator))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"testing123";

    #[test]
    fn every_drop_label_is_listed_for_the_zeroed_counters() {
        let all = [
            Drop::Short,
            Drop::Length,
            Drop::Attribute,
            Drop::Code,
            Drop::NoAuthenticator,
            Drop::BadAuthenticator,
            Drop::MalformedAuthenticator,
            Drop::UserName,
            Drop::Password,
            Drop::UnknownClient,
            Drop::RateLimited,
            Drop::Busy,
        ];
        for why in all {
            assert!(Drop::LABELS.contains(&why.label()), "{why:?}");
        }
    }

    #[test]
    fn a_request_round_trips_and_its_password_unhides() {
        for password in [
            &b"123456"[..],
            b"0123456789abcdef",
            b"a-rather-longer-one-of-33-octets!",
        ] {
            let bytes = access_request(7, [9; 16], "alice", password, SECRET, true);
            let p = Packet::decode(&bytes).unwrap();
            assert_eq!((p.code, p.id), (ACCESS_REQUEST, 7));
            assert_eq!(p.attribute(USER_NAME), Some(&b"alice"[..]));
            assert_eq!(p.check_message_authenticator(SECRET), Ok(true));
            assert_eq!(p.user_password(SECRET).unwrap().as_slice(), password);
            assert_eq!(
                p.check_message_authenticator(b"wrong"),
                Err(Drop::BadAuthenticator)
            );
        }
        let bare = access_request(1, [1; 16], "bob", b"1", SECRET, false);
        assert_eq!(
            Packet::decode(&bare)
                .unwrap()
                .check_message_authenticator(SECRET),
            Ok(false)
        );
    }

    #[test]
    fn a_reply_is_authentic_under_the_secret_only() {
        let bytes = access_request(3, [5; 16], "alice", b"42", SECRET, true);
        let request = Packet::decode(&bytes).unwrap();
        let out = reply(&request, ACCESS_ACCEPT, "accepted", SECRET);
        assert!(response_is_authentic(&out, &[5; 16], SECRET));
        assert!(!response_is_authentic(&out, &[5; 16], b"other"));
        assert!(!response_is_authentic(&out, &[6; 16], SECRET));
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.attribute(REPLY_MESSAGE), Some(&b"accepted"[..]));
        // Its Message-Authenticator is computed over the request's authenticator.
        let mut check = out.clone();
        check[4..20].copy_from_slice(&[5; 16]);
        assert_eq!(
            Packet::decode(&check)
                .unwrap()
                .check_message_authenticator(SECRET),
            Ok(true)
        );
    }

    #[test]
    fn malformed_datagrams_are_named() {
        assert_eq!(Packet::decode(&[1; 10]), Err(Drop::Short));
        let mut long = access_request(1, [1; 16], "a", b"1", SECRET, false);
        long[2..4].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(Packet::decode(&long), Err(Drop::Length));
        let mut overrun = access_request(1, [1; 16], "a", b"1", SECRET, false);
        overrun[21] = 200;
        assert_eq!(Packet::decode(&overrun), Err(Drop::Attribute));
        let mut zero = access_request(1, [1; 16], "a", b"1", SECRET, false);
        zero[21] = 0;
        assert_eq!(Packet::decode(&zero), Err(Drop::Attribute));
        // Padding past the length field is ignored.
        let mut padded = access_request(1, [1; 16], "a", b"1", SECRET, false);
        padded.extend_from_slice(&[0xAA; 7]);
        assert!(Packet::decode(&padded).is_ok());
        // A User-Password that is not in 16-octet blocks.
        let mut odd = vec![ACCESS_REQUEST, 1, 0, 0];
        odd.extend_from_slice(&[0; 16]);
        odd.extend_from_slice(&[USER_PASSWORD, 7, 1, 2, 3, 4, 5]);
        let len = (odd.len() as u16).to_be_bytes();
        odd[2..4].copy_from_slice(&len);
        assert_eq!(
            Packet::decode(&odd).unwrap().user_password(SECRET),
            Err(Drop::Password)
        );
    }
}
