//! How a node is doing, asked on its local control socket.
//!
//! A running node listens on `DATA_DIR/control.sock` (a Unix socket, 0600 in a 0700 directory:
//! only the node's own user can connect). A client writes one JSON line, `{"cmd":"status"}`, and
//! reads one back: a [`Status`], or `{"error": …}`. Only public facts about the node are in it
//! (its role, PeerId, peers, rounds, commitments, storage size); never a secret.
//! `{"cmd":"beacon","before":R,"limit":N}` asks for beacon entries before round R (or the newest),
//! newest first: a [`BeaconPage`] (public data too).
//!
//! ```text
//!  otpmesh status ──connect DATA_DIR/control.sock──► status server ──oneshot──► event loop
//!                 ◄──────────── one JSON line ◄──────────────────────── Status
//! ```

use otpmesh_protocol::digest::Digest32;
use otpmesh_protocol::round::RoundId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

/// The socket's file name in the data dir.
pub const SOCKET_FILE: &str = "control.sock";
/// Longest request line.
pub const MAX_REQUEST_LINE: usize = 1024;
/// Longest answer a client reads.
pub const MAX_ANSWER_LINE: usize = 1024 * 1024;
/// A beacon page stops before it would pass this many bytes of JSON (and is one entry at least).
pub const MAX_BEACON_PAGE_BYTES: usize = MAX_ANSWER_LINE / 2;
/// Most entries in one beacon page.
pub const MAX_BEACON_PAGE: u32 = 256;
/// Clients served at once; more wait.
pub const MAX_CLIENTS: usize = 8;
/// A client's whole exchange must finish within this.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// PeerIds listed in a status (the count is always whole).
pub const MAX_LISTED_PEERS: usize = 64;

/// A node's answer to `{"cmd":"status"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub role: String,
    pub peer_id: String,
    pub version: String,
    pub listen: Vec<String>,
    /// Peers connected now.
    pub peers: usize,
    /// Connections open now (one per peer, but for a moment while two dial each other).
    #[serde(default)]
    pub connections: usize,
    /// Up to [`MAX_LISTED_PEERS`] of them.
    pub peer_ids: Vec<String>,
    /// The latest round this node has seen opened (or sealed).
    pub current_round: Option<u64>,
    /// The latest round this node knows sealed, with its commitment.
    pub last_sealed: Option<Sealed>,
    /// Size of the node's database, for roles that keep one.
    pub storage_bytes: Option<u64>,
    pub uptime_s: u64,
    /// Where its metrics are served, if they are.
    pub metrics: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub round: u64,
    pub commitment: String,
}

/// The rounds a node has seen, kept up to date by the event loop.
#[derive(Clone, Debug, Default)]
pub struct Rounds {
    pub current: Option<RoundId>,
    pub sealed: Option<(RoundId, Digest32)>,
}

impl Rounds {
    pub fn opened(&mut self, round: RoundId) {
        self.current = self.current.max(Some(round));
    }

    pub fn sealed(&mut self, round: RoundId, commitment: Digest32) {
        self.opened(round);
        if self.sealed.is_none_or(|(r, _)| round >= r) {
            self.sealed = Some((round, commitment));
        }
    }

    pub fn to_sealed(&self) -> Option<Sealed> {
        self.sealed.map(|(round, commitment)| Sealed {
            round: round.0,
            commitment: commitment.to_hex(),
        })
    }
}

/// What the status server asks the event loop for.
pub enum Ask {
    Status(oneshot::Sender<Status>),
    Beacon {
        before: Option<u64>,
        limit: u32,
        reply: oneshot::Sender<BeaconPage>,
    },
}

/// Beacon entries a node holds, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconPage {
    /// Whether the node keeps a beacon at all (threshold mode).
    pub threshold: bool,
    pub entries: Vec<otpmesh_protocol::beacon::Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Status,
    Beacon {
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
}

/// The bound socket, until the event loop serves it.
pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another node is running on {0} (its control socket answers)")]
    InUse(PathBuf),
    #[error("control socket {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// Binds `DATA_DIR/control.sock`. A socket file left by a node that died is replaced; one that
/// answers means another node runs on this data dir. `Ok(None)` (with a warning) when the path is
/// too long for a Unix socket: the node runs without one.
pub fn bind(data_dir: &Path) -> Result<Option<Socket>, SocketError> {
    let path = data_dir.join(SOCKET_FILE);
    let io = |e: std::io::Error| SocketError::Io {
        path: path.clone(),
        reason: e.to_string(),
    };
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => return Err(SocketError::InUse(data_dir.to_path_buf())),
            // Nobody listens: a node that died left it.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(&path).map_err(io)?
            }
            // Anything else (not ours to read, not a socket): leave it be, and say so.
            Err(e) => return Err(io(e)),
        }
    }
    let listener = match std::os::unix::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            warn!(path = %path.display(), error = %e, "no control socket: `otpmesh status` cannot ask this node");
            return Ok(None);
        }
        Err(e) => return Err(io(e)),
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let listener = UnixListener::from_std(listener).map_err(io)?;
    Ok(Some(Socket { listener, path }))
}

/// The server's task: it stops, and the socket file goes, when this is dropped.
pub struct Serving {
    task: tokio::task::AbortHandle,
    path: PathBuf,
}

impl Serving {
    pub fn spawn(socket: Socket, asks: mpsc::Sender<Ask>) -> Serving {
        let path = socket.path.clone();
        let task = tokio::spawn(serve(socket.listener, asks)).abort_handle();
        Serving { task, path }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, asks: mpsc::Sender<Ask>) {
    let slots = std::sync::Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!(error = %e, "control socket: accept failed");
                // Out of file descriptors and the like: pause rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let asks = asks.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, asks)).await;
        });
    }
}

async fn answer(stream: tokio::net::UnixStream, asks: mpsc::Sender<Ask>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_LINE as u64 + 1))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(line.trim_end()) {
        _ if line.len() > MAX_REQUEST_LINE => {
            serde_json::json!({"error": format!("request longer than {MAX_REQUEST_LINE} bytes")})
        }
        Ok(Request::Status) => {
            let (tx, rx) = oneshot::channel();
            match asks.send(Ask::Status(tx)).await {
                Ok(()) => match rx.await {
                    Ok(status) => serde_json::to_value(status)?,
                    Err(_) => serde_json::json!({"error": "the node is stopping"}),
                },
                Err(_) => serde_json::json!({"error": "the node is stopping"}),
            }
        }
        Ok(Request::Beacon { before, limit }) => {
            let (tx, rx) = oneshot::channel();
            let ask = Ask::Beacon {
                before,
                limit: limit.unwrap_or(MAX_BEACON_PAGE).min(MAX_BEACON_PAGE),
                reply: tx,
            };
            match asks.send(ask).await {
                Ok(()) => match rx.await {
                    Ok(page) => serde_json::to_value(page)?,
                    Err(_) => serde_json::json!({"error": "the node is stopping"}),
                },
                Err(_) => serde_json::json!({"error": "the node is stopping"}),
            }
        }
        Err(e) => {
            serde_json::json!({"error": format!("not a request ({e}); try {{\"cmd\":\"status\"}}")})
        }
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Asks the node running on `data_dir` for its status.
pub async fn ask(data_dir: &Path) -> Result<Status, String> {
    let value = exchange(data_dir, "{\"cmd\":\"status\"}\n").await?;
    serde_json::from_value(value).map_err(|e| format!("the node's answer is not a status: {e}"))
}

/// Asks the node running on `data_dir` for beacon entries before `before` (or the newest).
pub async fn ask_beacon(
    data_dir: &Path,
    before: Option<u64>,
    limit: u32,
) -> Result<BeaconPage, String> {
    let line = serde_json::json!({"cmd": "beacon", "before": before, "limit": limit});
    let value = exchange(data_dir, &format!("{line}\n")).await?;
    serde_json::from_value(value)
        .map_err(|e| format!("the node's answer is not a beacon page: {e}"))
}

/// One exchange on the control socket: a request line, the answer (an `error` turned into Err).
async fn exchange(data_dir: &Path, request: &str) -> Result<serde_json::Value, String> {
    let path = data_dir.join(SOCKET_FILE);
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|e| format!("no node answers on {} ({e})", path.display()))?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(read.take(MAX_ANSWER_LINE as u64))
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("the node's answer is not JSON: {e}"))?;
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            return Err(format!("the node says: {error}"));
        }
        Ok(value)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            format!(
                "{} did not answer within {CLIENT_TIMEOUT:?}",
                path.display()
            )
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            role: "distributor".into(),
            peer_id: "12D3KooWtest".into(),
            version: "0".into(),
            listen: vec![],
            peers: 2,
            connections: 2,
            peer_ids: vec![],
            current_round: Some(7),
            last_sealed: None,
            storage_bytes: Some(1),
            uptime_s: 0,
            metrics: None,
        }
    }

    /// Answers every ask with `status()` until the channel closes.
    fn answer_asks(mut asks: mpsc::Receiver<Ask>) {
        tokio::spawn(async move {
            while let Some(ask) = asks.recv().await {
                match ask {
                    Ask::Status(tx) => {
                        let _ = tx.send(status());
                    }
                    Ask::Beacon { reply, .. } => {
                        let _ = reply.send(BeaconPage {
                            threshold: false,
                            entries: vec![],
                        });
                    }
                }
            }
        });
    }

    async fn raw(path: &Path, request: &[u8]) -> String {
        let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn one_node_per_data_dir_stale_sockets_replaced_bad_requests_named() {
        let dir = tempfile::tempdir().unwrap();
        let socket = bind(dir.path()).unwrap().unwrap();
        let path = dir.path().join(SOCKET_FILE);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (tx, rx) = mpsc::channel(MAX_CLIENTS);
        answer_asks(rx);
        let serving = Serving::spawn(socket, tx);

        assert_eq!(ask(dir.path()).await.unwrap(), status());
        let page = ask_beacon(dir.path(), Some(3), 2).await.unwrap();
        assert!(!page.threshold && page.entries.is_empty());
        assert!(matches!(bind(dir.path()), Err(SocketError::InUse(_))));
        let answer = raw(&path, b"{\"cmd\":\"reboot\"}\n").await;
        assert!(
            answer.contains("error") && answer.contains("reboot"),
            "{answer}"
        );
        let answer = raw(&path, &[b'x'; MAX_REQUEST_LINE + 1]).await;
        assert!(answer.contains("longer than"), "{answer}");

        // Stopping removes the socket; a file left by a node that died is replaced.
        drop(serving);
        assert!(!path.exists());
        assert!(ask(dir.path())
            .await
            .unwrap_err()
            .contains("no node answers"));
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let socket = bind(dir.path()).unwrap().unwrap();
        let (tx, rx) = mpsc::channel(MAX_CLIENTS);
        answer_asks(rx);
        let _serving = Serving::spawn(socket, tx);
        assert_eq!(ask(dir.path()).await.unwrap().current_round, Some(7));
    }

    #[test]
    fn rounds_only_move_forward() {
        let mut rounds = Rounds::default();
        rounds.sealed(RoundId(3), Digest32([3; 32]));
        rounds.sealed(RoundId(2), Digest32([2; 32]));
        rounds.opened(RoundId(1));
        assert_eq!(rounds.current, Some(RoundId(3)));
        assert_eq!(rounds.to_sealed().unwrap().round, 3);
        rounds.opened(RoundId(4));
        assert_eq!(rounds.current, Some(RoundId(4)));
    }
}
