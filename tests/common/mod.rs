//! Helpers shared by the end-to-end tests: a background `mesh up` and one-shot commands.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_otpmesh");
pub const WAIT: Duration = Duration::from_secs(120);

/// Picks the events a test waits for.
pub type Pick<'a> = dyn Fn(&Value) -> bool + 'a;

/// A `mesh up` running in the background, its JSON events read on a thread.
pub struct Mesh {
    pub child: Child,
    pub events: mpsc::Receiver<Value>,
    pub dir: tempfile::TempDir,
}

impl Mesh {
    pub fn up(extra: &[&str]) -> Mesh {
        Mesh::up_with_env(extra, &[])
    }

    /// `mesh up` with extra environment variables (its nodes inherit them).
    pub fn up_with_env(extra: &[&str], env: &[(&str, &str)]) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["mesh", "up", "--json", "--deadline-ms", "30000", "--dir"])
            .arg(dir.path())
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mesh up starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Mesh { child, events, dir }
    }

    pub fn wait_for(&self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if pick(&v) => return v,
                Ok(_) => {}
                Err(_) => panic!("no {what} within {WAIT:?}\n{}", self.post_mortem()),
            }
        }
    }

    /// What a failed wait prints: each node's state in mesh.json and the last lines of its log,
    /// so that a failure in CI can be read from its output alone.
    pub fn post_mortem(&self) -> String {
        let Ok(text) = std::fs::read_to_string(self.dir.path().join("mesh.json")) else {
            return "no mesh.json".to_string();
        };
        let Ok(json) = serde_json::from_str::<Value>(&text) else {
            return format!("mesh.json is not JSON: {text}");
        };
        let mut out = String::new();
        for node in json["nodes"].as_array().into_iter().flatten() {
            let log = node["log"].as_str().unwrap_or_default();
            let lines = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = lines.lines().rev().take(8).collect();
            out += &format!(
                "== {} ({}):\n{}\n",
                node["name"],
                node["state"],
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        out
    }

    /// Waits until every one of `wanted` has matched some event, in any order.
    /// Returns every event it read.
    pub fn wait_for_all(&self, wanted: &[(&str, &Pick<'_>)]) -> Vec<Value> {
        let end = Instant::now() + WAIT;
        let mut seen = vec![false; wanted.len()];
        let mut read = Vec::new();
        while seen.contains(&false) {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(v) = self.events.recv_timeout(left) else {
                let missing: Vec<&str> = wanted
                    .iter()
                    .zip(&seen)
                    .filter(|(_, s)| !**s)
                    .map(|((what, _), _)| *what)
                    .collect();
                panic!("within {WAIT:?}, no {missing:?}\n{}", self.post_mortem());
            };
            for (i, (_, pick)) in wanted.iter().enumerate() {
                seen[i] |= pick(&v);
            }
            read.push(v);
        }
        read
    }

    pub fn mesh_json(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("mesh.json")).unwrap())
            .unwrap()
    }

    pub fn node<'a>(json: &'a Value, name: &str) -> &'a Value {
        json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("{name} in mesh.json"))
    }

    /// The first address node `name` listens on, from mesh.json.
    pub fn listen(json: &Value, name: &str) -> String {
        Self::node(json, name)["listen"][0]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Node `name`'s data directory, from mesh.json.
    pub fn data_dir(json: &Value, name: &str) -> String {
        Self::node(json, name)["data_dir"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Stops `mesh up` with SIGTERM (its nodes stop with it) and keeps its directory.
    pub fn stop_keeping(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let status = self
            .terminate()
            .expect("mesh up stops within 30 s of SIGTERM");
        // Self still drops (and finds mesh up gone); the directory it is left is an empty one.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
            .expect("mesh up stops within 30 s of SIGTERM")
    }

    /// SIGTERM to `mesh up`, which stops its nodes; its exit status, or None if it is still
    /// running 30 s later.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // Told when it exits, without reaping it (WNOWAIT): `try_wait` below collects the status.
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            use nix::sys::wait::{waitid, Id, WaitPidFlag};
            let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
            let _ = tx.send(());
        });
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        exited.recv_timeout(Duration::from_secs(30)).ok()?;
        self.child.try_wait().ok().flatten()
    }
}

/// A test that fails mid-way still stops its mesh: `mesh up` runs until it is told to stop, and
/// left behind it (with its nodes) would hold the test's stderr open, so that whatever reads the
/// suite's output (CI's `tee`) would wait for ever.
impl Drop for Mesh {
    fn drop(&mut self) {
        if self.terminate().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Runs `command` to its end and returns what it printed, failing the test (with the command and
/// its stderr) unless it exited 0.
pub fn succeeded(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn request(distributor: &str, data_dir: &Path) -> Output {
    Command::new(BIN)
        .args([
            "request",
            "--json",
            "--distributor",
            distributor,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .unwrap()
}

/// Runs `otpmesh ARGS --json` for a verification: its exit code and the `result` it printed.
pub fn verify_json(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--json")
        .output()
        .expect("otpmesh runs");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        v["result"].as_str().unwrap_or("").to_string(),
    )
}

/// The string `field` of a successful command's JSON output (fails the test, with its stderr,
/// if the command failed).
pub fn json_field(out: &Output, field: &str) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in the output"))
        .to_string()
}

/// `GET url` (http://IP:PORT/PATH) over a plain socket: (status, body).
pub fn http(method: &str, url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name` (with its labels, as printed) in Prometheus text; 0 if absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Runs `mesh up --rounds 1 EXTRA` to its end: a mesh with one round delivered, every node
/// stopped, its data kept. Returns the dir and mesh.json.
pub fn mesh_once(extra: &[&str]) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    succeeded(
        Command::new(BIN)
            .args(["mesh", "up", "--rounds", "1"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path()),
    );
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("mesh.json")).unwrap())
            .unwrap();
    (dir, json)
}

/// A node's restart argv from mesh.json (the binary first).
pub fn restart_argv(node: &Value) -> Vec<String> {
    node["restart"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// A Debian tool some tests need, or None when missing outside CI (`.ci/run` installs them, so
/// there a missing tool is a failure).
pub fn tool(name: &'static str, package: &str) -> Option<&'static str> {
    // Found on PATH (some tools, radclient and pamtester among them, have no --version).
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing in CI: .ci/run must install {package}"
        );
        eprintln!(
            "{name} is not installed (apt-get install {package}): this check does not run here"
        );
        return None;
    }
    Some(name)
}

/// `otpmesh mesh ARGS --dir DIR`, run to its end.
pub fn steer(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("mesh")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("otpmesh runs")
}

/// `otpmesh mesh ARGS --dir DIR --json`, which must succeed and print JSON.
pub fn steered(dir: &Path, args: &[&str]) -> Value {
    let out = steer(dir, &[args, &["--json"]].concat());
    assert!(
        out.status.success(),
        "mesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mesh {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
