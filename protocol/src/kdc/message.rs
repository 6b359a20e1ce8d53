//! What the centre and the two users send each other, and what the sealed boxes hold.
//!
//! Requests to the centre travel as [`crate::wire::Request::Kdc`] on the requester's rpc stream; the
//! exchange between two users travels as [`Exchange`] frames on a stream of its own.

use super::{Key, Name, Sealed};
use crate::codec::{self, WireError};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

/// Addresses a receiver may announce, and the longest one.
pub const MAX_PRESENCE_ADDRS: usize = 4;
pub const MAX_ADDR_BYTES: usize = 128;
/// Plaintext bytes per chunk of a file.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Largest exchange frame: a chunk, its tag and the envelope.
pub const MAX_EXCHANGE_BYTES: usize = CHUNK_BYTES + 1024;
/// Largest file one exchange moves (1 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Longest OTP code carried for pre-authentication.
pub const MAX_OTP_CHARS: usize = 16;

/// Registers `name` with `key`. A name already registered needs `proof`: an HMAC under its current
/// key over the name, the new key and the sender ([`super::client::register`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    pub name: Name,
    pub key: Key,
    #[serde(default, with = "serde_bytes")]
    pub proof: Option<[u8; 32]>,
}

/// A receiver tells the centre where it listens, so senders can reach it. `proof` is a
/// [`Preauth`] sealed under the name's key ([`super::client::present`]): a receiver started with
/// the wrong passphrase learns it at once, not when its first ticket fails to open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    pub name: Name,
    pub addrs: Vec<String>,
    pub proof: Sealed,
}

/// A asks for a session key to talk to `server`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    pub client: Name,
    pub server: Name,
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
    /// [`Preauth`] sealed under the client's key.
    pub preauth: Sealed,
    /// One of the client's otpmesh OTPs, checked (and used up) through the verify path.
    #[serde(default)]
    pub otp: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CentreRequest {
    Register(Register),
    Present(Present),
    Session(SessionRequest),
}

impl CentreRequest {
    pub(crate) fn check(&self) -> Result<(), WireError> {
        let field = |field, problem| Err(WireError::Field { field, problem });
        match self {
            CentreRequest::Present(p) if p.addrs.len() > MAX_PRESENCE_ADDRS => field(
                "addrs",
                format!("{} addresses, at most {MAX_PRESENCE_ADDRS}", p.addrs.len()),
            ),
            CentreRequest::Present(p) if p.addrs.iter().any(|a| a.len() > MAX_ADDR_BYTES) => {
                field("addrs", format!("an address over {MAX_ADDR_BYTES} bytes"))
            }
            CentreRequest::Session(s)
                if s.otp.as_ref().is_some_and(|o| o.len() > MAX_OTP_CHARS) =>
            {
                field("otp", format!("more than {MAX_OTP_CHARS} characters"))
            }
            _ => Ok(()),
        }
    }
}

/// The centre's answer to a session request: a box for A and a ticket A forwards to B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub for_client: Sealed,
    pub ticket: Sealed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CentreResponse {
    Registered { name: Name, replaced: bool },
    Present { name: Name },
    Session(Grant),
}

/// What A seals to the centre to show it holds its key (Kerberos' encrypted timestamp).
#[derive(Serialize, Deserialize)]
pub struct Preauth {
    pub ctime_ms: u64,
}

/// What the centre seals for A.
#[derive(Serialize, Deserialize)]
pub struct ForClient {
    pub session_key: Key,
    pub server: Name,
    pub server_peer: PeerId,
    pub server_addrs: Vec<String>,
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// What the centre seals for B.
#[derive(Serialize, Deserialize)]
pub struct Ticket {
    pub session_key: Key,
    pub client: Name,
    pub client_peer: PeerId,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// What A seals for B under the session key, with the ticket.
#[derive(Serialize, Deserialize)]
pub struct Authenticator {
    pub client: Name,
    pub ctime_ms: u64,
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
    pub file_len: u64,
}

/// B's answer to the authenticator: proof that it opened the ticket.
#[derive(Serialize, Deserialize)]
pub struct ApReply {
    pub ctime_ms: u64,
    #[serde(with = "serde_bytes")]
    pub nonce: [u8; 16],
}

/// B's receipt for the whole file.
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
pub struct Receipt {
    pub length: u64,
    #[serde(with = "serde_bytes")]
    pub blake3: [u8; 32],
}

/// The first frame of an exchange: the ticket (for `server`, B's name) and the authenticator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub server: Name,
    pub ticket: Sealed,
    pub authenticator: Sealed,
}

/// Frames on the exchange stream between A and B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exchange {
    /// A → B: the ticket and the authenticator.
    Hello(Hello),
    /// B → A: [`ApReply`] under the session key.
    Welcome(Sealed),
    /// A → B: one chunk of the file, sealed under the file key.
    Chunk {
        index: u64,
        last: bool,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// B → A: [`Receipt`] under the file key.
    Received(Sealed),
    /// Either side: the exchange ends, and why.
    Refused(String),
}

pub fn encode_exchange(m: &Exchange) -> Vec<u8> {
    codec::encode(m)
}

pub fn decode_exchange(bytes: &[u8]) -> Result<Exchange, WireError> {
    let m: Exchange = codec::decode(bytes, MAX_EXCHANGE_BYTES)?;
    match &m {
        Exchange::Chunk { data, .. } if data.len() > CHUNK_BYTES + 16 => Err(WireError::Field {
            field: "data",
            problem: format!("{} bytes, at most {}", data.len(), CHUNK_BYTES + 16),
        }),
        Exchange::Refused(reason) if reason.len() > codec::MAX_REASON_BYTES => {
            Err(WireError::Field {
                field: "reason",
                problem: format!("{} bytes", reason.len()),
            })
        }
        _ => Ok(m),
    }
}

/// Encodes a sealed box's plaintext.
pub(crate) fn to_plain<T: Serialize>(value: &T) -> zeroize::Zeroizing<Vec<u8>> {
    let mut out = zeroize::Zeroizing::new(Vec::new());
    ciborium::into_writer(value, &mut *out).expect("writing CBOR into a Vec cannot fail");
    out
}

/// Decodes a sealed box's plaintext (already bounded by the box's size).
pub(crate) fn from_plain<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    ciborium::from_reader(bytes).ok()
}
