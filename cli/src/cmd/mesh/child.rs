//! Starting and stopping the node processes of a local mesh.

use super::plan::NodeEntry;
use crate::line::Line;
use anyhow::{anyhow, Context};
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a child has to stop after SIGTERM before it is killed: longer than a node takes to
/// stop on its own.
const STOP_GRACE: Duration = crate::cmd::node::STOP_BOUND.saturating_add(Duration::from_secs(2));

/// Starts one node process; its events arrive on `events` as (name, JSON), then (name, None) when
/// its stdout closes. With `control`, its stdin is a pipe for control lines.
/// `unread`: kinds of event whose lines are taken off the pipe but neither parsed nor passed on
/// (a benchmark that asks a distributor for tens of thousands of OTPs a second has no use for a
/// line per OTP, and parsing them would take the CPU its own requesters need).
pub fn spawn(
    entry: &NodeEntry,
    events: mpsc::Sender<(String, Option<Line>)>,
    control: bool,
    unread: &'static [&'static str],
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&entry.log)
        .with_context(|| format!("opening {}", entry.log.display()))?;
    let mut command = Command::new(&entry.restart[0]);
    command
        .args(&entry.restart[1..])
        .stdin(if control {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group: a Ctrl-C on the terminal reaches `mesh up` alone, which then
        // stops every node with one SIGTERM (a node takes a second signal as "stop at once").
        .process_group(0)
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", crate::cmd::NODE_LOG);
    }
    // A node here is configured by its argv alone (the restart line in mesh.json): the caller's
    // OTPMESH_* settings (a config file, a role) are not for every child. Logging is.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("OTPMESH_") && key != "OTPMESH_LOG_FORMAT" {
            command.env_remove(&*key);
        }
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", entry.name))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{}: no stdout", entry.name))?;
    let name = entry.name.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let kind = line
                .strip_prefix("{\"event\":\"")
                .and_then(|rest| rest.split('"').next());
            if kind.is_some_and(|k| unread.contains(&k)) {
                continue;
            }
            match Line::parse(&line) {
                Ok(line) => {
                    if events.send((name.clone(), Some(line))).await.is_err() {
                        return;
                    }
                }
                // Not an event of this version (its text may hold the user's own OTP: not logged).
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "a line the node printed is not an event")
                }
            }
        }
        let _ = events.send((name, None)).await;
    });
    Ok(child)
}

/// Asks every child to stop (SIGTERM), then kills what is still running after the grace period.
pub async fn stop_all(children: &mut HashMap<String, Child>) {
    for child in children.values() {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    // One deadline for all: they stop side by side.
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for (name, child) in children.iter_mut() {
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(%name, "did not stop after SIGTERM; killing");
            let _ = child.kill().await;
        }
    }
}

/// The last `n` lines of a log file (read from its last 16 KiB).
pub fn log_tail(path: &std::path::Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL_BYTES: u64 = 16 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file
        .seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .is_err()
    {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.take(TAIL_BYTES).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_tail_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(super::log_tail(&log, 2), ["line 4998", "line 4999"]);
        assert!(super::log_tail(&dir.path().join("none"), 2).is_empty());
    }
}
