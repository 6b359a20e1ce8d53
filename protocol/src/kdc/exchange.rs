//! The exchange between two users: A shows B the ticket and an authenticator, B proves it opened
//! the ticket, A sends the file in sealed chunks, B answers with a receipt for the whole file.
//!
//! Chunks use the STREAM construction: ChaCha20-Poly1305 under a file key drawn from the session
//! key and the authenticator's nonce, with the chunk's index and a "last" flag in the nonce, so a
//! chunk cannot be reordered, repeated, dropped or truncated without failing, and the end of the
//! file is authenticated too. The receipt carries the length and BLAKE3 of the whole file.

use super::client::Credentials;
use super::message::{
    self, ApReply, Authenticator, Exchange, Hello, Receipt, Ticket, MAX_FILE_BYTES,
};
use super::seal::context;
use super::{Key, Name, Purpose, Sealed};
use crate::time::Millis;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::HashMap;
use zeroize::Zeroizing;

/// Authenticators a receiver remembers at once; when full of live entries, new ones are refused.
pub const MAX_REPLAY_ENTRIES: usize = 65_536;
/// The largest clock skew a receiver may allow. Replay-cache entries are kept for this long past
/// their authenticator's time whatever the skew of the run that wrote them, so a later run with a
/// larger skew still recognises them.
pub const MAX_SKEW_MS: Millis = 3_600_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("this ticket is for {0}, not for this receiver")]
    WrongServer(Name),
    #[error("the ticket does not open under this receiver's key: it was tampered with, or issued by another centre or for another key")]
    TicketUnreadable,
    #[error("the ticket names {expected} as its client, but the connection comes from {found}")]
    WrongPeer { expected: String, found: String },
    #[error(
        "the ticket expired at {expires_at_ms} ms (now {now_ms} ms, {skew_ms} ms skew allowed)"
    )]
    Expired {
        expires_at_ms: Millis,
        now_ms: Millis,
        skew_ms: Millis,
    },
    #[error("the ticket is not valid before {issued_at_ms} ms (now {now_ms} ms)")]
    NotYetValid {
        issued_at_ms: Millis,
        now_ms: Millis,
    },
    #[error("the authenticator does not open under the ticket's session key")]
    AuthenticatorUnreadable,
    #[error("the authenticator names {found}, the ticket {expected}")]
    ClientMismatch { expected: Name, found: Name },
    #[error("the sender's clock is {off_ms} ms off, more than the {skew_ms} ms allowed")]
    Skew { off_ms: Millis, skew_ms: Millis },
    #[error("this authenticator was seen before: a replay")]
    Replayed,
    #[error("the replay cache is full ({MAX_REPLAY_ENTRIES} live entries); try again later")]
    CacheFull,
    #[error("the file is {0} bytes, more than the {MAX_FILE_BYTES} allowed")]
    TooLarge(u64),
    #[error("chunk {got} came where chunk {expected} was due")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("chunk {0} does not open under the file key: tampered with or cut short")]
    BadChunk(u64),
    #[error("chunk {0} is short: every chunk but the last is full")]
    ShortChunk(u64),
    #[error("{received} bytes arrived for a file announced as {announced} bytes")]
    LengthMismatch { announced: u64, received: u64 },
    #[error("the receiver did not prove it holds the session key")]
    BadWelcome,
    #[error("the receipt does not match the file sent ({0})")]
    BadReceipt(String),
}

/// Authenticators seen, each until its clock-skew window has passed (a later copy fails the skew
/// check anyway).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayCache {
    seen: HashMap<[u8; 32], Millis>,
}

impl ReplayCache {
    /// Records `id` until `until`; a second sighting while it is held is a replay.
    pub fn insert(
        &mut self,
        now: Millis,
        id: [u8; 32],
        until: Millis,
    ) -> Result<(), ExchangeError> {
        if self.seen.get(&id).is_some_and(|t| *t >= now) {
            return Err(ExchangeError::Replayed);
        }
        if self.seen.len() >= MAX_REPLAY_ENTRIES {
            self.seen.retain(|_, t| *t >= now);
            if self.seen.len() >= MAX_REPLAY_ENTRIES {
                return Err(ExchangeError::CacheFull);
            }
        }
        self.seen.insert(id, until);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The live entries, for a file: 40 bytes each (id, until).
    pub fn to_bytes(&self, now: Millis) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, until) in self.seen.iter().filter(|(_, t)| **t >= now) {
            out.extend_from_slice(id);
            out.extend_from_slice(&until.to_be_bytes());
        }
        out
    }

    /// Reads [`ReplayCache::to_bytes`]; `None` if the bytes are not a whole number of entries or
    /// hold too many.
    pub fn from_bytes(bytes: &[u8]) -> Option<ReplayCache> {
        if !bytes.len().is_multiple_of(40) || bytes.len() / 40 > MAX_REPLAY_ENTRIES {
            return None;
        }
        let seen = bytes
            .chunks_exact(40)
            .map(|e| {
                let (id, until) = e.split_at(32);
                (
                    id.try_into().expect("split at 32"),
                    u64::from_be_bytes(until.try_into().expect("8 bytes left")),
                )
            })
            .collect();
        Some(ReplayCache { seen })
    }
}

fn authenticator_context(centre: &PeerId, client: &Name, server: &Name) -> Vec<u8> {
    context(&[
        &centre.to_bytes(),
        client.as_str().as_bytes(),
        server.as_str().as_bytes(),
    ])
}

fn file_key(session_key: &Key, nonce: &[u8; 16]) -> Key {
    session_key.subkey(Purpose::File, nonce)
}

fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

fn chunk_cipher(key: &Key) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(key.as_bytes().into())
}

/// A's side of one exchange.
pub struct Sender {
    session_key: Key,
    file_key: Key,
    ctime_ms: Millis,
    nonce: [u8; 16],
    file_len: u64,
    next: u64,
    sent: u64,
    hasher: blake3::Hasher,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sender(chunk {}, {} of {} bytes)",
            self.next, self.sent, self.file_len
        )
    }
}

impl Sender {
    /// Starts an exchange of a `file_len`-byte file: the Hello frame to send first.
    pub fn hello(
        creds: &Credentials,
        centre: &PeerId,
        now: Millis,
        file_len: u64,
        rng: &mut dyn CryptoRngCore,
    ) -> (Sender, Exchange) {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let authenticator = creds.session_key.seal(
            Purpose::Authenticator,
            &authenticator_context(centre, &creds.client, &creds.server),
            &message::to_plain(&Authenticator {
                client: creds.client.clone(),
                ctime_ms: now,
                nonce,
                file_len,
            }),
            rng,
        );
        let sender = Sender {
            session_key: creds.session_key.clone(),
            file_key: file_key(&creds.session_key, &nonce),
            ctime_ms: now,
            nonce,
            file_len,
            next: 0,
            sent: 0,
            hasher: blake3::Hasher::new(),
        };
        let hello = Exchange::Hello(Hello {
            server: creds.server.clone(),
            ticket: creds.ticket.clone(),
            authenticator,
        });
        (sender, hello)
    }

    /// Checks B's proof that it opened the ticket (mutual authentication).
    pub fn welcome(&self, sealed: &Sealed) -> Result<(), ExchangeError> {
        let reply: ApReply = self
            .session_key
            .open(Purpose::ApReply, &self.nonce, sealed)
            .and_then(|p| message::from_plain(&p))
            .ok_or(ExchangeError::BadWelcome)?;
        if reply.ctime_ms != self.ctime_ms || reply.nonce != self.nonce {
            return Err(ExchangeError::BadWelcome);
        }
        Ok(())
    }

    /// The next chunk; `last` on the final one (an empty file is one empty last chunk).
    pub fn chunk(&mut self, data: &[u8], last: bool) -> Exchange {
        let index = self.next;
        self.next += 1;
        self.sent += data.len() as u64;
        self.hasher.update(data);
        let sealed = chunk_cipher(&self.file_key)
            .encrypt(Nonce::from_slice(&chunk_nonce(index, last)), data)
            .expect("ChaCha20-Poly1305 encryption of a chunk cannot fail");
        Exchange::Chunk {
            index,
            last,
            data: sealed,
        }
    }

    /// Checks B's receipt against what was sent.
    pub fn receipt(&self, sealed: &Sealed) -> Result<Receipt, ExchangeError> {
        let receipt: Receipt = self
            .file_key
            .open(Purpose::Receipt, &self.nonce, sealed)
            .and_then(|p| message::from_plain(&p))
            .ok_or_else(|| ExchangeError::BadReceipt("it does not open".into()))?;
        let expected = Receipt {
            length: self.sent,
            blake3: *self.hasher.finalize().as_bytes(),
        };
        if receipt != expected {
            return Err(ExchangeError::BadReceipt(format!(
                "{} bytes received, {} sent",
                receipt.length, self.sent
            )));
        }
        Ok(receipt)
    }
}

/// B: what it needs to accept exchanges.
#[derive(Debug)]
pub struct Receiver {
    pub centre: PeerId,
    pub name: Name,
    pub key: Key,
    pub max_skew_ms: Millis,
}

impl Receiver {
    /// Judges a Hello from `remote`: the Welcome to answer with and the exchange it opens, or why not.
    pub fn hello(
        &self,
        now: Millis,
        remote: &PeerId,
        hello: &Hello,
        cache: &mut ReplayCache,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<(Incoming, Exchange), ExchangeError> {
        let Hello {
            server,
            ticket,
            authenticator,
        } = hello;
        if server != &self.name {
            return Err(ExchangeError::WrongServer(server.clone()));
        }
        let skew = self.max_skew_ms.min(MAX_SKEW_MS);
        let ticket: Ticket = self
            .key
            .open(
                Purpose::Ticket,
                &super::context::ticket_context(&self.centre, &self.name),
                ticket,
            )
            .and_then(|p| message::from_plain(&p))
            .ok_or(ExchangeError::TicketUnreadable)?;
        if &ticket.client_peer != remote {
            return Err(ExchangeError::WrongPeer {
                expected: ticket.client_peer.to_string(),
                found: remote.to_string(),
            });
        }
        if now > ticket.expires_at_ms.saturating_add(skew) {
            return Err(ExchangeError::Expired {
                expires_at_ms: ticket.expires_at_ms,
                now_ms: now,
                skew_ms: skew,
            });
        }
        if ticket.issued_at_ms > now.saturating_add(skew) {
            return Err(ExchangeError::NotYetValid {
                issued_at_ms: ticket.issued_at_ms,
                now_ms: now,
            });
        }
        let auth: Authenticator = ticket
            .session_key
            .open(
                Purpose::Authenticator,
                &authenticator_context(&self.centre, &ticket.client, &self.name),
                authenticator,
            )
            .and_then(|p| message::from_plain(&p))
            .ok_or(ExchangeError::AuthenticatorUnreadable)?;
        if auth.client != ticket.client {
            return Err(ExchangeError::ClientMismatch {
                expected: ticket.client,
                found: auth.client,
            });
        }
        let off_ms = auth.ctime_ms.abs_diff(now);
        if off_ms > skew {
            return Err(ExchangeError::Skew {
                off_ms,
                skew_ms: skew,
            });
        }
        if auth.file_len > MAX_FILE_BYTES {
            return Err(ExchangeError::TooLarge(auth.file_len));
        }
        let id = blake3::hash(&context(&[
            ticket.client.as_str().as_bytes(),
            &auth.ctime_ms.to_be_bytes(),
            &auth.nonce,
        ]));
        cache.insert(
            now,
            *id.as_bytes(),
            auth.ctime_ms.saturating_add(MAX_SKEW_MS),
        )?;
        let welcome = ticket.session_key.seal(
            Purpose::ApReply,
            &auth.nonce,
            &message::to_plain(&ApReply {
                ctime_ms: auth.ctime_ms,
                nonce: auth.nonce,
            }),
            rng,
        );
        let incoming = Incoming {
            client: ticket.client,
            client_peer: ticket.client_peer,
            file_len: auth.file_len,
            file_key: file_key(&ticket.session_key, &auth.nonce),
            nonce: auth.nonce,
            next: 0,
            received: 0,
            done: false,
            hasher: blake3::Hasher::new(),
        };
        Ok((incoming, Exchange::Welcome(welcome)))
    }
}

/// B's side of one accepted exchange.
pub struct Incoming {
    pub client: Name,
    pub client_peer: PeerId,
    pub file_len: u64,
    file_key: Key,
    nonce: [u8; 16],
    next: u64,
    received: u64,
    done: bool,
    hasher: blake3::Hasher,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Incoming(from {}, {} of {} bytes)",
            self.client, self.received, self.file_len
        )
    }
}

impl Incoming {
    /// Opens the next chunk; its plaintext goes to the file.
    pub fn chunk(
        &mut self,
        index: u64,
        last: bool,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ExchangeError> {
        if self.done || index != self.next {
            return Err(ExchangeError::OutOfOrder {
                expected: self.next,
                got: index,
            });
        }
        let plain = chunk_cipher(&self.file_key)
            .decrypt(Nonce::from_slice(&chunk_nonce(index, last)), data)
            .map(Zeroizing::new)
            .map_err(|_| ExchangeError::BadChunk(index))?;
        if !last && plain.len() != super::message::CHUNK_BYTES {
            return Err(ExchangeError::ShortChunk(index));
        }
        self.next += 1;
        self.received += plain.len() as u64;
        let mismatch = ExchangeError::LengthMismatch {
            announced: self.file_len,
            received: self.received,
        };
        if self.received > self.file_len || (last && self.received != self.file_len) {
            return Err(mismatch);
        }
        self.hasher.update(&plain);
        self.done = last;
        Ok(plain)
    }

    /// Whether the last chunk has arrived (and everything checked out).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The BLAKE3 of what arrived.
    pub fn blake3(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }

    /// The receipt frame, once done.
    pub fn receipt(&self, rng: &mut dyn CryptoRngCore) -> Exchange {
        let receipt = Receipt {
            length: self.received,
            blake3: self.blake3(),
        };
        Exchange::Received(self.file_key.seal(
            Purpose::Receipt,
            &self.nonce,
            &message::to_plain(&receipt),
            rng,
        ))
    }
}

/// Why an exchange run with [`in_memory`] ended: the side that stopped it and its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    #[error("the receiver refused: {0}")]
    Receiver(ExchangeError),
    #[error("the sender stopped: {0}")]
    Sender(ExchangeError),
    #[error("a frame did not survive its encoding: {0}")]
    Frame(String),
}

/// One whole exchange with no transport between the sides (the simulator's): `creds`' holder, at
/// `client_peer`, sends `file` to `receiver`, every frame encoded and decoded as a stream carries
/// it. What arrived, and the receipt the sender checked.
pub fn in_memory(
    creds: &Credentials,
    client_peer: &PeerId,
    receiver: &Receiver,
    cache: &mut ReplayCache,
    now: Millis,
    file: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Result<(Vec<u8>, Receipt), Stopped> {
    let carry = |frame: Exchange| {
        message::decode_exchange(&message::encode_exchange(&frame))
            .map_err(|e| Stopped::Frame(e.to_string()))
    };
    let (mut sender, hello) = Sender::hello(creds, &receiver.centre, now, file.len() as u64, rng);
    let Exchange::Hello(hello) = carry(hello)? else {
        return Err(Stopped::Frame("the first frame is not a Hello".into()));
    };
    let (mut incoming, welcome) = receiver
        .hello(now, client_peer, &hello, cache, rng)
        .map_err(Stopped::Receiver)?;
    let Exchange::Welcome(proof) = carry(welcome)? else {
        return Err(Stopped::Frame(
            "the answer to a Hello is not a Welcome".into(),
        ));
    };
    sender.welcome(&proof).map_err(Stopped::Sender)?;
    let mut chunks: Vec<&[u8]> = file.chunks(message::CHUNK_BYTES).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let mut arrived = Vec::with_capacity(file.len());
    for (i, data) in chunks.iter().enumerate() {
        let Exchange::Chunk { index, last, data } =
            carry(sender.chunk(data, i + 1 == chunks.len()))?
        else {
            return Err(Stopped::Frame("a chunk frame is not a chunk".into()));
        };
        let plain = incoming
            .chunk(index, last, &data)
            .map_err(Stopped::Receiver)?;
        arrived.extend_from_slice(&plain);
    }
    let Exchange::Received(receipt) = carry(incoming.receipt(rng))? else {
        return Err(Stopped::Frame("the receipt frame is not a receipt".into()));
    };
    let receipt = sender.receipt(&receipt).map_err(Stopped::Sender)?;
    Ok((arrived, receipt))
}
