//! Pipelined request-response on one long-lived stream per peer: the OTP path.
//!
//! libp2p request-response opens a fresh yamux substream and negotiates the protocol for every
//! request (≈ 70–100 µs of server CPU on loopback, several Noise frames). A requester here opens one
//! stream to a distributor and keeps it; frames carry an id and are pipelined, and every request
//! gets exactly one reply with its id, in whatever order the replies are ready.
//!
//! ```text
//!  requester                                         distributor
//!  Session::call ──► [len u32][id u64][request]  ──► serve_stream ──► Inbound ──► event loop ──► role
//!  pending[id]   ◄── [len u32][id u64][response] ◄── writer       ◄── Replier::send ◄── Action::Reply
//! ```
//!
//! `len` counts the id and the body; bodies are the CBOR of [`wire`]. Bounds: a server reads no
//! further frame from a stream while [`MAX_IN_FLIGHT`] answers on it are owed, serves at most
//! [`MAX_STREAMS`] streams at once, and closes a stream whose frame exceeds the wire limits (it
//! cannot find the next frame after that). Replies waiting to be written are coalesced into one
//! write.

use crate::behaviour::REQUEST_TIMEOUT;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use libp2p::{identity::Keypair, noise, tcp, yamux, Multiaddr, PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use otpmesh_protocol::role::Tag;
use otpmesh_protocol::wire::{
    self, Request, Response, WireError, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/otpmesh/rpc/1");
/// How long one ask for a stream waits before it is made again (see [`Session::open`]).
pub const OPEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// Requests outstanding on one stream.
pub const MAX_IN_FLIGHT: usize = 64;
/// Streams a node serves at once; more are dropped on arrival.
pub const MAX_STREAMS: usize = 1024;
/// Requests queued for one peer before the stream takes them.
pub const MAX_QUEUED: usize = 256;
const ID_BYTES: usize = 8;
/// A frame's length and id, before its body.
pub const FRAME_HEADER_BYTES: usize = 4 + ID_BYTES;

/// Reads one frame of at most `max` body bytes; `None` at a clean end of stream. An oversize or
/// truncated frame is an error (the caller closes the stream).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(ID_BYTES..=max + ID_BYTES).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes; frames hold an id and at most {max} bytes"),
        ));
    }
    let mut id = [0u8; ID_BYTES];
    r.read_exact(&mut id).await?;
    let mut body = vec![0u8; len - ID_BYTES];
    r.read_exact(&mut body).await?;
    Ok(Some((u64::from_be_bytes(id), body)))
}

/// Appends `[len u32][id u64][body]` to `buf`.
pub fn push_frame(buf: &mut Vec<u8>, id: u64, body: &[u8]) {
    buf.extend_from_slice(&((body.len() + ID_BYTES) as u32).to_be_bytes());
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(body);
}

/// Writes frames as they come, coalescing whatever is queued into one write and one flush.
async fn write_frames<W: AsyncWrite + Unpin, T>(
    w: &mut W,
    frames: &mut mpsc::Receiver<(u64, Vec<u8>, T)>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    while let Some((id, body, guard)) = frames.recv().await {
        buf.clear();
        push_frame(&mut buf, id, &body);
        let mut guards = vec![guard];
        while let Ok((id, body, guard)) = frames.try_recv() {
            push_frame(&mut buf, id, &body);
            guards.push(guard);
        }
        w.write_all(&buf).await?;
        w.flush().await?;
    }
    Ok(())
}

/// Replies handed to stream writers and not yet written: a stopping node waits for none to be
/// left ([`Owed::written`]).
#[derive(Default)]
pub struct Owed {
    count: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Owed {
    fn owe(self: &Arc<Owed>) -> Owing {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Owing(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns once every reply handed over so far is written (or its stream gone).
    pub async fn written(&self) {
        loop {
            let notified = self.notify.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One reply owed; dropped once written, or once its stream is gone.
struct Owing(Arc<Owed>);

impl Drop for Owing {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.notify.notify_waiters();
        }
    }
}

/// A request that arrived on a stream, for the event loop.
pub struct Inbound {
    pub peer: PeerId,
    pub request: Result<Request, WireError>,
    pub replier: Replier,
}

/// Answers one inbound request, exactly once.
pub struct Replier {
    id: u64,
    frames: mpsc::Sender<(u64, Vec<u8>, (OwnedSemaphorePermit, Owing))>,
    permit: OwnedSemaphorePermit,
    owed: Arc<Owed>,
}

impl Replier {
    pub fn send(self, response: &Response) {
        // Never full: the queue holds MAX_IN_FLIGHT and each entry carries one of that many permits.
        let owing = self.owed.owe();
        if self
            .frames
            .try_send((
                self.id,
                wire::encode_response(response),
                (self.permit, owing),
            ))
            .is_err()
        {
            debug!("requester closed its stream before the reply");
        }
    }
}

/// Streams open from one peer at a time; more are dropped as they arrive.
pub const MAX_STREAMS_PER_PEER: usize = 8;

/// Open streams per peer; a stream's [`PeerSlot`] gives its place back when the stream ends.
type OpenPerPeer = Arc<Mutex<HashMap<PeerId, usize>>>;

struct PeerSlot {
    peer: PeerId,
    open: OpenPerPeer,
    _total: OwnedSemaphorePermit,
}

impl PeerSlot {
    fn take(peer: PeerId, open: &OpenPerPeer, total: &Arc<Semaphore>) -> Option<PeerSlot> {
        let mut counts = open.lock().expect("stream counts are never poisoned");
        if counts
            .get(&peer)
            .is_some_and(|c| *c >= MAX_STREAMS_PER_PEER)
        {
            return None;
        }
        let total = total.clone().try_acquire_owned().ok()?;
        *counts.entry(peer).or_default() += 1;
        Some(PeerSlot {
            peer,
            open: open.clone(),
            _total: total,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.open.lock().expect("stream counts are never poisoned");
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// Accepts streams and serves each one until it closes: at most [`MAX_STREAMS`] in all and
/// [`MAX_STREAMS_PER_PEER`] from any one peer, so one peer cannot take every slot.
pub async fn serve(mut incoming: IncomingStreams, inbound: mpsc::Sender<Inbound>, owed: Arc<Owed>) {
    let total = Arc::new(Semaphore::new(MAX_STREAMS));
    let open = OpenPerPeer::default();
    while let Some((peer, stream)) = incoming.next().await {
        let Some(slot) = PeerSlot::take(peer, &open, &total) else {
            debug!(%peer, "rpc stream limit reached; stream dropped");
            continue;
        };
        tokio::spawn(serve_stream(
            peer,
            stream,
            inbound.clone(),
            owed.clone(),
            slot,
        ));
    }
}

async fn serve_stream(
    peer: PeerId,
    stream: Stream,
    inbound: mpsc::Sender<Inbound>,
    unwritten: Arc<Owed>,
    _slot: PeerSlot,
) {
    let (mut reader, mut writer) = stream.split();
    let (frames, mut queued) = mpsc::channel(MAX_IN_FLIGHT);
    let owed = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let writing = tokio::spawn(async move {
        if let Err(e) = write_frames(&mut writer, &mut queued).await {
            debug!(%peer, error = %e, "rpc stream: write failed");
        }
        let _ = writer.close().await;
    });
    loop {
        let Ok(permit) = owed.clone().acquire_owned().await else {
            break;
        };
        match read_frame(&mut reader, MAX_REQUEST_BYTES).await {
            Ok(Some((id, body))) => {
                let replier = Replier {
                    id,
                    frames: frames.clone(),
                    permit,
                    owed: unwritten.clone(),
                };
                let request = wire::decode_request(&body);
                if inbound
                    .send(Inbound {
                        peer,
                        request,
                        replier,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                debug!(%peer, error = %e, "rpc stream closed");
                break;
            }
        }
    }
    // Replies still owed go out before the stream closes.
    drop(frames);
    let _ = writing.await;
}

type Pending = Arc<
    Mutex<
        HashMap<
            u64,
            (
                oneshot::Sender<Result<Response, String>>,
                OwnedSemaphorePermit,
            ),
        >,
    >,
>;

struct Call {
    body: Vec<u8>,
    done: oneshot::Sender<Result<Response, String>>,
}

/// One open stream to a peer; clones share it, and calls on it are pipelined.
#[derive(Clone)]
pub struct Session {
    calls: mpsc::Sender<Call>,
}

impl Session {
    /// Opens a stream to `peer` (dialling it if needed, with the addresses the swarm knows).
    ///
    /// A stream asked for while the connection comes up can wait for good: libp2p-stream makes the
    /// connection's handler before the swarm reports the connection, and an ask that falls between
    /// the two parks on a dial of its own that nothing completes ("no stream within 10 s", seen
    /// under load). So each ask gets [`OPEN_RETRY`], and the next one finds the connection.
    pub async fn open(control: &mut Control, peer: PeerId) -> Result<Session, String> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let stream = loop {
            let ask = control.open_stream(peer, PROTOCOL);
            match tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + OPEN_RETRY),
                ask,
            )
            .await
            {
                Ok(opened) => {
                    break opened.map_err(|e| format!("connection to {peer} failed: {e}"))?
                }
                Err(_) if tokio::time::Instant::now() < deadline => continue,
                Err(_) => {
                    return Err(format!(
                        "connection to {peer}: no stream within {REQUEST_TIMEOUT:?}"
                    ))
                }
            }
        };
        let (calls, queue) = mpsc::channel(MAX_IN_FLIGHT);
        tokio::spawn(drive(stream, queue));
        Ok(Session { calls })
    }

    /// Sends `request` and waits for its reply (at most [`REQUEST_TIMEOUT`]).
    pub async fn call(&self, request: &Request) -> Result<Response, String> {
        let (done, reply) = oneshot::channel();
        let call = Call {
            body: wire::encode_request(request),
            done,
        };
        self.calls
            .send(call)
            .await
            .map_err(|_| "connection closed".to_string())?;
        tokio::time::timeout(REQUEST_TIMEOUT, reply)
            .await
            .map_err(|_| format!("no reply within {REQUEST_TIMEOUT:?}"))?
            .map_err(|_| "connection closed before the reply".to_string())?
    }

    pub fn is_closed(&self) -> bool {
        self.calls.is_closed()
    }
}

/// Writes calls and matches replies to them until the stream fails; then fails what is pending.
async fn drive(stream: Stream, mut calls: mpsc::Receiver<Call>) {
    let (mut reader, mut writer) = stream.split();
    let pending: Pending = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let writing = {
        let pending = pending.clone();
        async move {
            let mut next_id = 0u64;
            let mut buf = Vec::new();
            loop {
                let permit = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(io::Error::other)?;
                let Some(call) = calls.recv().await else {
                    return Ok::<(), io::Error>(());
                };
                buf.clear();
                let mut add = |call: Call, permit| {
                    next_id += 1;
                    push_frame(&mut buf, next_id, &call.body);
                    pending
                        .lock()
                        .expect("pending map lock")
                        .insert(next_id, (call.done, permit));
                };
                add(call, permit);
                while let Ok(permit) = slots.clone().try_acquire_owned() {
                    match calls.try_recv() {
                        Ok(call) => add(call, permit),
                        Err(_) => break,
                    }
                }
                writer.write_all(&buf).await?;
                writer.flush().await?;
            }
        }
    };
    let reading = {
        let pending = pending.clone();
        async move {
            while let Some((id, body)) = read_frame(&mut reader, MAX_RESPONSE_BYTES).await? {
                let waiting = pending.lock().expect("pending map lock").remove(&id);
                match waiting {
                    Some((done, _permit)) => {
                        let response = wire::decode_response(&body)
                            .map_err(|e| format!("undecodable response: {e}"));
                        let _ = done.send(response);
                    }
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("reply to request {id}, which is not pending"),
                        ))
                    }
                }
            }
            Ok(())
        }
    };
    let ended = tokio::select! {
        r = writing => r,
        r = reading => r,
    };
    let reason = match ended {
        Ok(()) => "connection closed before the reply".to_string(),
        Err(e) => format!("connection failed: {e}"),
    };
    for (_, (done, _)) in pending.lock().expect("pending map lock").drain() {
        let _ = done.send(Err(reason.clone()));
    }
}

/// What a dispatcher hands back to the event loop.
pub struct Done {
    pub peer: PeerId,
    pub tag: Tag,
    pub result: Result<Response, String>,
}

/// Sends one peer's requests over one session, reopening it when it fails; hands every outcome to
/// `done`. Ends when `queue` closes and every call has been answered or has failed.
pub async fn dispatch(
    mut control: Control,
    peer: PeerId,
    mut queue: mpsc::Receiver<(Tag, Request)>,
    done: mpsc::Sender<Done>,
) {
    let mut session: Option<Session> = None;
    let mut calls = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = queue.recv() => {
                let Some((tag, request)) = next else { break };
                if session.as_ref().is_none_or(Session::is_closed) {
                    session = match Session::open(&mut control, peer).await {
                        Ok(s) => Some(s),
                        Err(e) => {
                            let _ = done.send(Done { peer, tag, result: Err(e) }).await;
                            continue;
                        }
                    };
                }
                let s = session.clone().expect("opened above");
                calls.push(async move { (tag, s.call(&request).await) });
            }
            Some((tag, result)) = calls.next(), if !calls.is_empty() => {
                if done.send(Done { peer, tag, result }).await.is_err() {
                    return;
                }
            }
        }
    }
    while let Some((tag, result)) = calls.next().await {
        let _ = done.send(Done { peer, tag, result }).await;
    }
}

/// A swarm with nothing but the stream protocol, over TCP + Noise + Yamux.
pub fn bare_swarm(identity: Keypair) -> Result<libp2p::Swarm<libp2p_stream::Behaviour>, String> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| e.to_string())?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(crate::IDLE_TIMEOUT))
        .build())
}

/// A bare requester: its own swarm, with nothing but the stream protocol, and one session to one
/// peer. For load generators and tests that run many requesters in one process.
pub struct Endpoint {
    pub session: Session,
    swarm: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.swarm.abort();
    }
}

impl Endpoint {
    /// Dials `addr` (ending in `/p2p/<peer id>`) as `identity` and opens a session.
    pub async fn connect(identity: Keypair, addr: &Multiaddr) -> Result<Endpoint, String> {
        let (Some(peer), _) = crate::split_peer(addr) else {
            return Err(format!("{addr}: the address must end in /p2p/<peer id>"));
        };
        let mut swarm = bare_swarm(identity)?;
        let mut control = swarm.behaviour().new_control();
        swarm
            .dial(addr.clone())
            .map_err(|e| format!("dialling {addr}: {e}"))?;
        // Connected before the stream is asked for: asked while the dial is under way, the
        // stream could wait for a dial of its own that is never made.
        let connected = tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                match swarm.select_next_some().await {
                    libp2p::swarm::SwarmEvent::ConnectionEstablished { peer_id, .. }
                        if peer_id == peer =>
                    {
                        return Ok(());
                    }
                    libp2p::swarm::SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(format!("dialling {addr}: {error}"));
                    }
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| format!("dialling {addr}: no connection within {REQUEST_TIMEOUT:?}"))?;
        connected?;
        let swarm = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        match Session::open(&mut control, peer).await {
            Ok(session) => Ok(Endpoint { session, swarm }),
            Err(e) => {
                swarm.abort();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bounds_are_enforced() {
        let mut buf = Vec::new();
        push_frame(&mut buf, 7, b"hello");
        push_frame(&mut buf, 8, b"");
        let mut r = futures::io::Cursor::new(buf);
        assert_eq!(
            read_frame(&mut r, 16).await.unwrap(),
            Some((7, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r, 16).await.unwrap(), Some((8, vec![])));
        assert_eq!(read_frame(&mut r, 16).await.unwrap(), None);

        let mut big = Vec::new();
        push_frame(&mut big, 1, &[0u8; 17]);
        let err = read_frame(&mut futures::io::Cursor::new(big), 16)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("frame of 25 bytes"), "{err}");

        let short = 3u32.to_be_bytes().to_vec();
        assert!(read_frame(&mut futures::io::Cursor::new(short), 16)
            .await
            .is_err());
        // A stream cut inside a frame is an error, not a clean end.
        let mut cut = Vec::new();
        push_frame(&mut cut, 1, b"abcdef");
        cut.truncate(10);
        assert!(read_frame(&mut futures::io::Cursor::new(cut), 16)
            .await
            .is_err());
    }
}
