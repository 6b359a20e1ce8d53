//! A key distribution centre's user on the network: talks to the centre over the rpc stream, and
//! moves a file to or from another user on a stream of its own ([`PROTOCOL`]).
//!
//! ```text
//!  sender (A)                                             receiver (B)
//!  User::call(centre, Session) ─► Grant ─► Credentials     User::call(centre, Present{addrs})
//!  send_file: connect(B's addrs) ─► open /otpmesh/kdc/1 ─► receive_file: Receiver::hello
//!     Hello ──────────────────────────────────────────────►   replay cache saved (0600), then
//!     ◄────────────────────────────────────────── Welcome      temp file (0600) in the target dir
//!     Chunk × n ──────────────────────────────────────────►   chunk by chunk, checked, written
//!     ◄───────────────────────────────────────── Received      fsync, rename into place, receipt
//! ```
//! Frames are `[len u32][seq u64][CBOR of kdc::message::Exchange]` ([`rpc::read_frame`]); every read
//! waits at most [`FRAME_TIMEOUT`]. A refused exchange ends with `Refused(reason)` and the receiver
//! goes on waiting for another.

use crate::rpc;
use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identity::Keypair, Multiaddr, PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use otpmesh_protocol::kdc::client::Credentials;
use otpmesh_protocol::kdc::exchange::{Incoming, Receiver, ReplayCache, Sender};
use otpmesh_protocol::kdc::message::{
    decode_exchange, encode_exchange, CentreRequest, CentreResponse, Exchange, Hello, CHUNK_BYTES,
    MAX_EXCHANGE_BYTES, MAX_FILE_BYTES,
};
use otpmesh_protocol::wire::{Request, Response};
use rand_core::OsRng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/otpmesh/kdc/1");
/// The longest wait for one frame, or for a connection.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// The replay cache's file in the receiver's data dir.
pub const REPLAY_CACHE_FILE: &str = "kdc-replay-cache";

enum Command {
    Connect {
        addr: Multiaddr,
        done: oneshot::Sender<Result<PeerId, String>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
}

/// One user's endpoint: its own small swarm (TCP, Noise, Yamux, streams only).
pub struct User {
    pub peer_id: PeerId,
    control: Control,
    commands: mpsc::Sender<Command>,
    swarm: tokio::task::JoinHandle<()>,
}

impl Drop for User {
    fn drop(&mut self) {
        self.swarm.abort();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn timed_out(what: &str) -> String {
    format!("no {what} within {FRAME_TIMEOUT:?}")
}

impl User {
    /// Starts the endpoint as `identity`, listening on `listen` (none for a sender).
    pub async fn start(identity: Keypair, listen: &[Multiaddr]) -> Result<User, String> {
        let peer_id = identity.public().to_peer_id();
        let mut swarm = rpc::bare_swarm(identity)?;
        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| format!("listening on {addr}: {e}"))?;
        }
        let control = swarm.behaviour().new_control();
        let (commands, mut queue) = mpsc::channel::<Command>(16);
        let want_listen = !listen.is_empty();
        let swarm = tokio::spawn(async move {
            let mut pending: HashMap<PeerId, Vec<oneshot::Sender<Result<PeerId, String>>>> =
                HashMap::new();
            let mut listening: Vec<Multiaddr> = Vec::new();
            let mut waiting_addrs: Vec<oneshot::Sender<Vec<Multiaddr>>> = Vec::new();
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::NewListenAddr { address, .. } => {
                            listening.push(address);
                            for reply in waiting_addrs.drain(..) {
                                let _ = reply.send(listening.clone());
                            }
                        }
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            for done in pending.remove(&peer_id).unwrap_or_default() {
                                let _ = done.send(Ok(peer_id));
                            }
                        }
                        SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                            for done in pending.remove(&peer).unwrap_or_default() {
                                let _ = done.send(Err(format!("dialling {peer}: {error}")));
                            }
                        }
                        _ => {}
                    },
                    command = queue.recv() => match command {
                        None => return,
                        Some(Command::ListenAddrs { reply }) => {
                            if listening.is_empty() && want_listen {
                                waiting_addrs.push(reply);
                            } else {
                                let _ = reply.send(listening.clone());
                            }
                        }
                        Some(Command::Connect { addr, done }) => {
                            let (Some(peer), _) = crate::split_peer(&addr) else {
                                let _ = done.send(Err(format!("{addr}: the address must end in /p2p/<peer id>")));
                                continue;
                            };
                            if swarm.is_connected(&peer) {
                                let _ = done.send(Ok(peer));
                            } else if let Err(e) = swarm.dial(addr.clone()) {
                                let _ = done.send(Err(format!("dialling {addr}: {e}")));
                            } else {
                                pending.entry(peer).or_default().push(done);
                            }
                        }
                    },
                }
            }
        });
        Ok(User {
            peer_id,
            control,
            commands,
            swarm,
        })
    }

    /// Where this endpoint listens (waits for the first address if it listens at all).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::ListenAddrs { reply })
            .await
            .map_err(|_| "the endpoint stopped".to_string())?;
        tokio::time::timeout(FRAME_TIMEOUT, rx)
            .await
            .map_err(|_| timed_out("listening address"))?
            .map_err(|_| "the endpoint stopped".to_string())
    }

    /// Connects to `addr` (ending in `/p2p/<peer id>`); returns the peer once connected.
    pub async fn connect(&self, addr: &Multiaddr) -> Result<PeerId, String> {
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect {
                addr: addr.clone(),
                done,
            })
            .await
            .map_err(|_| "the endpoint stopped".to_string())?;
        tokio::time::timeout(FRAME_TIMEOUT, rx)
            .await
            .map_err(|_| timed_out(&format!("connection to {addr}")))?
            .map_err(|_| "the endpoint stopped".to_string())?
    }

    /// One request to the centre at `centre` (a multiaddr ending in its PeerId). A refusal comes
    /// back as its reason.
    pub async fn call_centre(
        &self,
        centre: &Multiaddr,
        ask: CentreRequest,
    ) -> Result<CentreResponse, CentreFailure> {
        let peer = self
            .connect(centre)
            .await
            .map_err(CentreFailure::Unreachable)?;
        let mut control = self.control.clone();
        let session = rpc::Session::open(&mut control, peer)
            .await
            .map_err(CentreFailure::Unreachable)?;
        CentreFailure::judge(session.call(&Request::Kdc(ask)).await)
    }

    /// Accepts exchange streams (a receiver calls this once).
    pub fn accept(&self) -> Result<IncomingStreams, String> {
        self.control
            .clone()
            .accept(PROTOCOL)
            .map_err(|e| e.to_string())
    }

    /// Sends the file at `path` to the user `creds` are for, at its announced addresses.
    pub async fn send_file(
        &self,
        centre: &PeerId,
        creds: &Credentials,
        path: &Path,
    ) -> Result<Sent, String> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        if len > MAX_FILE_BYTES {
            return Err(format!(
                "{} is {len} bytes, more than the {MAX_FILE_BYTES} one exchange moves",
                path.display()
            ));
        }
        if creds.server_addrs.is_empty() {
            return Err(format!(
                "the centre knows no address for {}: is `otpmesh kdc receive` running as {0}?",
                creds.server
            ));
        }
        let mut last_error = String::new();
        let mut connected = false;
        for text in &creds.server_addrs {
            let Ok(addr) = text.parse::<Multiaddr>() else {
                last_error = format!("{text:?} is not a multiaddr");
                continue;
            };
            match self
                .connect(&addr.with(Protocol::P2p(creds.server_peer)))
                .await
            {
                Ok(_) => {
                    connected = true;
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        if !connected {
            return Err(format!(
                "cannot reach {} at {:?}: {last_error}",
                creds.server, creds.server_addrs
            ));
        }
        let mut control = self.control.clone();
        let stream = tokio::time::timeout(
            FRAME_TIMEOUT,
            control.open_stream(creds.server_peer, PROTOCOL),
        )
        .await
        .map_err(|_| timed_out("exchange stream"))?
        .map_err(|e| format!("opening the exchange stream: {e}"))?;
        let mut frames = Frames::new(stream);
        let (mut sender, hello) = Sender::hello(creds, centre, now_ms(), len, &mut OsRng);
        frames.send(&hello).await?;
        match frames.next().await? {
            Exchange::Welcome(proof) => sender.welcome(&proof).map_err(|e| e.to_string())?,
            Exchange::Refused(reason) => return Err(format!("{} refused: {reason}", creds.server)),
            other => return Err(unexpected(&other)),
        }
        let mut sent = 0u64;
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let want = (len - sent).min(CHUNK_BYTES as u64) as usize;
            file.read_exact(&mut buf[..want])
                .await
                .map_err(|e| format!("reading {}: {e} (did it change?)", path.display()))?;
            sent += want as u64;
            let last = sent == len;
            frames.send(&sender.chunk(&buf[..want], last)).await?;
            if last {
                break;
            }
        }
        frames.flush().await?;
        match frames.next().await? {
            Exchange::Received(receipt) => {
                let _ = frames.stream.close().await;
                let r = sender.receipt(&receipt).map_err(|e| e.to_string())?;
                Ok(Sent {
                    bytes: r.length,
                    blake3: r.blake3,
                })
            }
            Exchange::Refused(reason) => Err(format!("{} refused: {reason}", creds.server)),
            other => Err(unexpected(&other)),
        }
    }
}

/// Why a call to the centre failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CentreFailure {
    /// The centre could not be reached or did not answer.
    Unreachable(String),
    /// The centre answered with a refusal.
    Refused(otpmesh_protocol::wire::Refusal),
    /// The centre answered with something else than a centre's answer (its kind).
    Unexpected(&'static str),
}

impl CentreFailure {
    /// What the centre's answer to a kdc request (or its absence) means.
    pub fn judge(answer: Result<Response, String>) -> Result<CentreResponse, CentreFailure> {
        match answer {
            Ok(Response::Kdc(answer)) => Ok(answer),
            Ok(Response::Refused(refusal)) => Err(CentreFailure::Refused(refusal)),
            Ok(other) => Err(CentreFailure::Unexpected(other.kind())),
            Err(e) => Err(CentreFailure::Unreachable(e)),
        }
    }
}

impl std::fmt::Display for CentreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CentreFailure::Unreachable(e) => write!(f, "the centre is unreachable: {e}"),
            CentreFailure::Refused(e) => write!(f, "the centre refused: {e}"),
            CentreFailure::Unexpected(kind) => {
                write!(
                    f,
                    "the centre answered with a {kind} answer, not a centre's"
                )
            }
        }
    }
}

/// What a sender learns from the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub bytes: u64,
    pub blake3: [u8; 32],
}

/// What a receiver got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFile {
    pub from: String,
    pub from_peer: PeerId,
    pub bytes: u64,
    pub blake3: [u8; 32],
    pub path: PathBuf,
}

fn unexpected(frame: &Exchange) -> String {
    let kind = match frame {
        Exchange::Hello(_) => "hello",
        Exchange::Welcome(_) => "welcome",
        Exchange::Chunk { .. } => "chunk",
        Exchange::Received(_) => "receipt",
        Exchange::Refused(_) => "refusal",
    };
    format!("unexpected {kind} frame")
}

/// Exchange frames on one stream.
struct Frames<S> {
    stream: S,
    seq: u64,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Frames<S> {
    fn new(stream: S) -> Frames<S> {
        Frames {
            stream,
            seq: 0,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, frame: &Exchange) -> Result<(), String> {
        self.buf.clear();
        rpc::push_frame(&mut self.buf, self.seq, &encode_exchange(frame));
        self.seq += 1;
        tokio::time::timeout(FRAME_TIMEOUT, self.stream.write_all(&self.buf))
            .await
            .map_err(|_| timed_out("room to write"))?
            .map_err(|e| format!("the exchange stream failed: {e}"))
    }

    async fn flush(&mut self) -> Result<(), String> {
        tokio::time::timeout(FRAME_TIMEOUT, self.stream.flush())
            .await
            .map_err(|_| timed_out("flush"))?
            .map_err(|e| format!("the exchange stream failed: {e}"))
    }

    async fn next(&mut self) -> Result<Exchange, String> {
        self.flush().await?;
        let frame = tokio::time::timeout(
            FRAME_TIMEOUT,
            rpc::read_frame(&mut self.stream, MAX_EXCHANGE_BYTES),
        )
        .await
        .map_err(|_| timed_out("answer"))?
        .map_err(|e| format!("the exchange stream failed: {e}"))?
        .ok_or_else(|| "the other side closed the exchange".to_string())?;
        decode_exchange(&frame.1).map_err(|e| format!("undecodable exchange frame: {e}"))
    }

    async fn refuse(&mut self, reason: &str) {
        let reason = otpmesh_protocol::wire::bounded_reason(reason.to_string());
        let _ = self.send(&Exchange::Refused(reason)).await;
        let _ = self.flush().await;
        let _ = self.stream.close().await;
    }
}

/// Loads the receiver's replay cache (empty if there is none yet).
pub fn load_replay_cache(data_dir: &Path) -> Result<ReplayCache, String> {
    let path = data_dir.join(REPLAY_CACHE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => ReplayCache::from_bytes(&bytes)
            .ok_or_else(|| format!("{} is not a replay cache", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReplayCache::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Saves the receiver's replay cache (its live entries), 0600, into `data_dir`.
pub fn save_replay_cache(data_dir: &Path, cache: &ReplayCache) -> Result<(), String> {
    crate::keys::write_file(
        &data_dir.join(REPLAY_CACHE_FILE),
        &cache.to_bytes(now_ms()),
        0o600,
    )
    .map_err(|e| e.to_string())
}

/// Streams waiting for their Hello to be read and judged; more are turned away on arrival.
pub const MAX_PENDING_HELLOS: usize = 16;
/// How long a new stream has to send its Hello once the receiver reads it.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = std::pin::Pin<
    Box<dyn std::future::Future<Output = (PeerId, Frames<Stream>, Result<Hello, String>)> + Send>,
>;

/// Reads a stream's first frame, which must be a Hello (within [`HELLO_TIMEOUT`] of being polled).
fn read_hello(peer: PeerId, stream: Stream) -> Pending {
    Box::pin(async move {
        let mut frames = Frames::new(stream);
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, frames.next()).await {
            Err(_) => Err(format!("no hello within {HELLO_TIMEOUT:?}")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Exchange::Hello(h))) => Ok(h),
            Ok(Ok(other)) => Err(unexpected(&other)),
        };
        (peer, frames, hello)
    })
}

/// Ends a stream with a refusal, without holding up the caller.
fn refuse_later(mut frames: Frames<Stream>, reason: String) {
    tokio::spawn(async move { frames.refuse(&reason).await });
}

/// Serves exchange streams until a file arrives whole and checked; each refused attempt is
/// reported to `refused` and the wait goes on. Streams are read concurrently up to their Hello (at
/// most [`MAX_PENDING_HELLOS`], so a peer that opens streams and sends nothing holds up nobody),
/// and judged in the order their Hellos arrive; one exchange runs at a time, and Hellos that arrive
/// meanwhile wait for it. The replay cache in `data_dir` is saved before an exchange is
/// acknowledged.
pub async fn receive_file(
    incoming: &mut IncomingStreams,
    receiver: &Receiver,
    data_dir: &Path,
    out: &Path,
    mut refused: impl FnMut(PeerId, String),
) -> Result<ReceivedFile, String> {
    let mut cache = load_replay_cache(data_dir)?;
    let mut hellos: futures::stream::FuturesUnordered<Pending> =
        futures::stream::FuturesUnordered::new();
    let admit = |peer: PeerId,
                 stream: Stream,
                 hellos: &mut futures::stream::FuturesUnordered<Pending>,
                 refused: &mut dyn FnMut(PeerId, String)| {
        if hellos.len() >= MAX_PENDING_HELLOS {
            refused(peer, "turned away: too many exchanges waiting".into());
            refuse_later(
                Frames::new(stream),
                "busy: too many exchanges waiting to start; try again".into(),
            );
        } else {
            hellos.push(read_hello(peer, stream));
        }
    };
    loop {
        let (peer, frames, hello) = tokio::select! {
            next = incoming.next() => {
                let Some((peer, stream)) = next else {
                    return Err("the endpoint stopped".into());
                };
                admit(peer, stream, &mut hellos, &mut refused);
                continue;
            }
            Some(read) = hellos.next(), if !hellos.is_empty() => read,
        };
        let hello = match hello {
            Ok(h) => h,
            Err(reason) => {
                refused(peer, reason.clone());
                refuse_later(frames, reason);
                continue;
            }
        };
        let (exchange, welcome) =
            match receiver.hello(now_ms(), &peer, &hello, &mut cache, &mut OsRng) {
                Ok(ok) => ok,
                Err(e) => {
                    refused(peer, e.to_string());
                    refuse_later(frames, e.to_string());
                    continue;
                }
            };
        if let Err(e) = save_replay_cache(data_dir, &cache) {
            let reason = format!("cannot save the replay cache: {e}");
            refused(peer, reason.clone());
            refuse_later(frames, reason);
            continue;
        }
        let run = run_exchange(frames, exchange, welcome, out);
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Some((other, stream)) = incoming.next() => {
                    admit(other, stream, &mut hellos, &mut refused);
                }
            }
        };
        match outcome {
            Ok(received) => return Ok(received),
            Err(reason) => refused(peer, reason),
        }
    }
}

/// An accepted exchange: Welcome, the chunks into a temporary file, the file into place, the
/// receipt.
async fn run_exchange(
    mut frames: Frames<Stream>,
    mut incoming: Incoming,
    welcome: Exchange,
    out: &Path,
) -> Result<ReceivedFile, String> {
    frames.send(&welcome).await?;
    let partial = match Partial::create(out) {
        Ok(p) => p,
        Err(e) => {
            frames.refuse("the receiver cannot store the file").await;
            return Err(e);
        }
    };
    loop {
        let (index, last, data) = match frames.next().await? {
            Exchange::Chunk { index, last, data } => (index, last, data),
            other => {
                let reason = unexpected(&other);
                frames.refuse(&reason).await;
                return Err(reason);
            }
        };
        let plain = match incoming.chunk(index, last, &data) {
            Ok(p) => p,
            Err(e) => {
                frames.refuse(&e.to_string()).await;
                return Err(e.to_string());
            }
        };
        if let Err(e) = partial.write(&plain) {
            frames.refuse("the receiver cannot store the file").await;
            return Err(e);
        }
        if incoming.is_done() {
            break;
        }
    }
    let path = match partial.finish(out) {
        Ok(p) => p,
        Err(e) => {
            frames.refuse("the receiver cannot store the file").await;
            return Err(e);
        }
    };
    frames.send(&incoming.receipt(&mut OsRng)).await?;
    frames.flush().await?;
    // The sender closes once it has read the receipt: waiting for that means the receipt is not
    // lost when this process exits right after.
    let _ = frames.stream.close().await;
    let _ = tokio::time::timeout(
        FRAME_TIMEOUT,
        rpc::read_frame(&mut frames.stream, MAX_EXCHANGE_BYTES),
    )
    .await;
    Ok(ReceivedFile {
        from: incoming.client.to_string(),
        from_peer: incoming.client_peer,
        bytes: incoming.file_len,
        blake3: incoming.blake3(),
        path,
    })
}

/// A file being received: a 0600 temporary file beside the target, removed unless finished.
struct Partial {
    path: PathBuf,
    file: std::fs::File,
    done: bool,
}

impl Partial {
    fn create(out: &Path) -> Result<Partial, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = out
            .file_name()
            .ok_or_else(|| format!("{} names no file", out.display()))?;
        let mut tag = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut tag);
        let path = dir.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            hex::encode(tag)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Partial {
            path,
            file,
            done: false,
        })
    }

    fn write(&self, bytes: &[u8]) -> Result<(), String> {
        use std::io::Write;
        (&self.file)
            .write_all(bytes)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))
    }

    fn finish(mut self, out: &Path) -> Result<PathBuf, String> {
        self.file
            .sync_all()
            .map_err(|e| format!("syncing {}: {e}", self.path.display()))?;
        std::fs::rename(&self.path, out)
            .map_err(|e| format!("moving the file into {}: {e}", out.display()))?;
        self.done = true;
        Ok(out.to_path_buf())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
