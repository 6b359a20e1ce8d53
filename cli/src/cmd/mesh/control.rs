//! The control socket of a running `mesh up`: `DIR/control.sock`, mode 0600, one JSON request
//! line in and one JSON reply line out per connection.
//!
//! ```text
//!  otpmesh mesh kill distributor-1 --dir DIR          mesh up (the lab)
//!     │  {"cmd":"kill","node":"distributor-1"}\n  ──▶  accept ─▶ lab loop ─▶ SIGKILL, mesh.json
//!     │  {"ok":true,"message":"killed …"}\n        ◀──  reply ◀─┘
//! ```
//!
//! Only whoever may open the socket file (its owner) can steer the mesh; the socket is bound in a
//! private directory and moved into place with its mode already set, so nobody else ever could.

use super::plan::{NodeEntry, State};
use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// The socket's name in the mesh's directory.
pub const SOCKET: &str = "control.sock";
/// Longest request or reply line.
pub const MAX_LINE: usize = 64 * 1024;
/// Connections served at once; more wait.
const MAX_CLIENTS: usize = 8;
/// How long a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a command may take: a restart waits for its node to listen again.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client asks of the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// SIGKILL, as a scenario's `kill` step; the node stays down until restarted.
    Kill {
        node: String,
    },
    /// Starts the node again with its own identity and data (killing it first if it runs).
    Restart {
        node: String,
    },
    /// Cuts each of `nodes` off from each of `from` (every other node when empty), both ways.
    Partition {
        nodes: Vec<String>,
        #[serde(default)]
        from: Vec<String>,
    },
    /// Undoes the partitions of `nodes` (all of them when empty).
    Heal {
        #[serde(default)]
        nodes: Vec<String>,
    },
    /// Asks the generator to open a round now.
    Round,
}

/// One node as `mesh status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: String,
    pub state: State,
    pub pid: Option<u32>,
    pub peer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    pub restarts: u32,
    /// The peers a partition cut it off from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut_off_from: Vec<String>,
}

impl NodeStatus {
    pub fn of(entry: &NodeEntry, cut_off_from: Vec<String>) -> NodeStatus {
        NodeStatus {
            name: entry.name.clone(),
            role: entry.role.to_string(),
            state: entry.state,
            pid: entry.pid,
            peer_id: entry.peer_id.clone(),
            exit: entry.exit.clone(),
            restarts: entry.restarts,
            cut_off_from,
        }
    }
}

/// The answer to a request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeStatus>>,
    /// `round`: the round that opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
}

impl Reply {
    pub fn done(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            message: message.into(),
            ..Reply::default()
        }
    }

    pub fn refused(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            message: message.into(),
            ..Reply::default()
        }
    }
}

/// A request with where its reply goes.
pub type Asked = (Request, oneshot::Sender<Reply>);

/// Binds `dir/control.sock` (0600) and hands every request to `lab`. Fails if another `mesh up`
/// still answers there.
pub async fn serve(dir: &Path, lab: mpsc::Sender<Asked>) -> anyhow::Result<PathBuf> {
    let path = dir.join(SOCKET);
    if UnixStream::connect(&path).await.is_ok() {
        bail!(
            "a mesh up already runs in {} (it answers on {})",
            dir.display(),
            path.display()
        );
    }
    let _ = std::fs::remove_file(&path);
    // Bound where only we can reach it, given its mode, then moved into place.
    let private = tempfile::Builder::new()
        .prefix(".control-")
        .tempdir_in(dir)
        .with_context(|| format!("making a private directory in {}", dir.display()))?;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))?;
    let bound = private.path().join(SOCKET);
    let listener = UnixListener::bind(&bound)
        .with_context(|| format!("binding the control socket {}", bound.display()))?;
    std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&bound, &path)
        .with_context(|| format!("moving the control socket to {}", path.display()))?;
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = clients.clone().acquire_owned().await else {
                return;
            };
            let lab = lab.clone();
            tokio::spawn(async move {
                answer(stream, lab).await;
                drop(permit);
            });
        }
    });
    Ok(path)
}

/// Reads one request off `stream`, has the lab carry it out, writes the reply.
async fn answer(stream: UnixStream, lab: mpsc::Sender<Asked>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64 + 1);
    let reply = match tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Reply::refused(format!("no request within {READ_TIMEOUT:?}")),
        Ok(Err(e)) => Reply::refused(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_LINE => {
            Reply::refused(format!("a request of more than {MAX_LINE} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::refused(format!("not a mesh request: {e}")),
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if lab.send((request, tx)).await.is_err() {
                    Reply::refused("the mesh is stopping")
                } else {
                    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
                        Ok(Ok(reply)) => reply,
                        Ok(Err(_)) => Reply::refused("the mesh is stopping"),
                        Err(_) => Reply::refused(format!("no answer within {ANSWER_TIMEOUT:?}")),
                    }
                }
            }
        },
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

/// Sends `request` to the `mesh up` running in `dir` and reads its reply.
pub async fn ask(dir: &Path, request: &Request) -> anyhow::Result<Reply> {
    let path = dir.join(SOCKET);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        anyhow!(
            "no mesh up answers in {} ({}: {e}); start one with otpmesh mesh up --dir {}",
            dir.display(),
            path.display(),
            dir.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64 + 1);
    tokio::time::timeout(ANSWER_TIMEOUT + READ_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| anyhow!("mesh up gave no answer within {ANSWER_TIMEOUT:?}"))??;
    if line.is_empty() {
        bail!("mesh up closed the control socket without an answer");
    }
    serde_json::from_str(&line).with_context(|| format!("reading mesh up's answer {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_the_cli_sends_them_and_unknown_fields_are_refused() {
        let r: Request = serde_json::from_str(r#"{"cmd":"partition","nodes":["a"]}"#).unwrap();
        assert_eq!(
            r,
            Request::Partition {
                nodes: vec!["a".into()],
                from: vec![]
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"kill","node":"a","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[tokio::test]
    async fn the_socket_is_private_and_a_second_mesh_in_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel::<Asked>(1);
        let path = serve(dir.path(), tx.clone()).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = serve(dir.path(), tx).await.unwrap_err().to_string();
        assert!(err.contains("already runs"), "{err}");
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let _ = reply.send(Reply::done(format!("{request:?}")));
            }
        });
        let reply = ask(dir.path(), &Request::Round).await.unwrap();
        assert!(reply.ok && reply.message == "Round", "{reply:?}");
        // Not a request: refused by name, and the server goes on answering.
        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(b"{\"cmd\":\"explode\"}\n").await.unwrap();
        let mut line = String::new();
        BufReader::new(raw).read_line(&mut line).await.unwrap();
        let refused: Reply = serde_json::from_str(&line).unwrap();
        assert!(
            !refused.ok && refused.message.contains("not a mesh request"),
            "{refused:?}"
        );
        assert!(ask(dir.path(), &Request::Status).await.unwrap().ok);
    }
}
