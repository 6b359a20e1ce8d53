//! The key distribution centre end to end: a `mesh up` mesh of real processes, its distributor as
//! the centre, and the real `otpmesh kdc` commands as two of its requesters.

mod common;

use common::{json_field, succeeded, Mesh, BIN, WAIT};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

struct Users {
    distributor: String,
    dirs: Vec<String>,
    root: PathBuf,
}

impl Users {
    fn of(mesh: &Mesh) -> Users {
        let json = mesh.mesh_json();
        let dir = |n: &str| {
            Mesh::node(&json, n)["data_dir"]
                .as_str()
                .unwrap()
                .to_string()
        };
        Users {
            distributor: Mesh::listen(&json, "distributor-1"),
            dirs: vec![dir("requester-1"), dir("requester-2"), dir("requester-3")],
            root: mesh.dir.path().to_path_buf(),
        }
    }

    fn passphrase(&self, text: &str) -> PathBuf {
        let path = self
            .root
            .join(format!("pass-{}", blake3::hash(text.as_bytes()).to_hex()));
        std::fs::write(&path, format!("{text}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// `otpmesh kdc SUB --json` as requester `who`, named `name`, with `pass`.
    fn kdc(&self, sub: &str, who: usize, name: &str, pass: &Path) -> Command {
        let mut c = Command::new(BIN);
        c.args([
            "kdc",
            sub,
            "--json",
            "--distributor",
            &self.distributor,
            "--data-dir",
        ])
        .arg(&self.dirs[who])
        .args(["--name", name, "--passphrase-file"])
        .arg(pass);
        c
    }
}

fn fails_with(out: &Output, code: i32, text: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(text), "expected {text:?} in: {stderr}");
}

/// A running `kdc receive --json`, its event lines read on a thread.
struct Receiving {
    child: Child,
    events: mpsc::Receiver<Value>,
}

impl Receiving {
    fn start(mut cmd: Command) -> Receiving {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Receiving { child, events }
    }

    fn next(&self, event: &str) -> Value {
        loop {
            let v = self
                .events
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no {event} from the receiver within {WAIT:?}"));
            if v["event"] == event {
                return v;
            }
        }
    }
}

/// A failing test does not leave the receiver behind, holding the suite's stderr.
impl Drop for Receiving {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn two_requesters_exchange_a_file_through_the_centre_and_every_failure_is_named() {
    let mesh = Mesh::up(&["--requesters", "3"]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let u = Users::of(&mesh);
    let (alice_pass, bob_pass) = (
        u.passphrase("alice's long passphrase"),
        u.passphrase("bob's long passphrase"),
    );
    let wrong_pass = u.passphrase("not alice's passphrase");

    // Register both; the name stays alice's.
    let out = u.kdc("register", 0, "alice", &alice_pass).output().unwrap();
    assert_eq!(json_field(&out, "registered"), "alice");
    let out = u.kdc("register", 1, "bob", &bob_pass).output().unwrap();
    assert_eq!(json_field(&out, "registered"), "bob");
    let out = u.kdc("register", 2, "alice", &wrong_pass).output().unwrap();
    fails_with(&out, 4, "the name alice is taken");
    let out = u
        .kdc("register", 2, "alice", &wrong_pass)
        .arg("--old-passphrase-file")
        .arg(&wrong_pass)
        .output()
        .unwrap();
    fails_with(&out, 4, "current passphrase given for alice is wrong");

    // Bob receives; alice sends a file with one of her OTPs as pre-authentication.
    let received = u.root.join("received.bin");
    let mut rx = u.kdc("receive", 1, "bob", &bob_pass);
    rx.arg("--out").arg(&received);
    let bob = Receiving::start(rx);
    bob.next("ready");
    let file: Vec<u8> = (0..1_000_003u32)
        .map(|i| (i.wrapping_mul(0x9E37_79B9) >> 11) as u8)
        .collect();
    let input = u.root.join("input.bin");
    std::fs::write(&input, &file).unwrap();
    let otp = json_field(
        &common::request(&u.distributor, Path::new(&u.dirs[0])),
        "otp",
    );
    let out = succeeded(
        u.kdc("send", 0, "alice", &alice_pass)
            .args(["--to", "bob", "--otp", &otp, "--file"])
            .arg(&input),
    );
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = bob.next("received");
    assert_eq!(std::fs::read(&received).unwrap(), file, "byte-identical");
    assert_eq!(got["from"], "alice");
    assert_eq!(got["blake3"], sent["blake3"]);
    assert_eq!(sent["blake3"], blake3::hash(&file).to_hex().as_str());
    let mut bob = bob;
    assert!(bob.child.wait().unwrap().success());
    assert_eq!(
        std::fs::metadata(&received).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Failures, each named, each refused by the centre before anything reaches bob.
    let send = |pass: &Path, to: &str, otp: Option<&str>| {
        let mut c = u.kdc("send", 0, "alice", pass);
        c.args(["--to", to, "--file"]).arg(&input);
        if let Some(otp) = otp {
            c.args(["--otp", otp]);
        }
        c.output().unwrap()
    };
    fails_with(
        &send(&wrong_pass, "bob", None),
        4,
        "wrong passphrase for alice",
    );
    fails_with(&send(&alice_pass, "zed", None), 4, "no user named zed");
    fails_with(
        &send(&alice_pass, "bob", Some(&otp)),
        4,
        "pre-authentication is used",
    );
    let out = Command::new(BIN)
        .args([
            "kdc",
            "send",
            "--distributor",
            &u.distributor,
            "--data-dir",
            &u.dirs[0],
            "--name",
            "Alice!",
            "--to",
            "bob",
            "--file",
        ])
        .arg(&input)
        .output()
        .unwrap();
    fails_with(&out, 2, "--name");
    // Bob is not receiving any more: the exchange itself fails, and says why.
    let out = send(&alice_pass, "bob", None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing secret reached the mesh's logs.
    for node in mesh.mesh_json()["nodes"].as_array().unwrap() {
        let path = node["log"].as_str().unwrap();
        let log = std::fs::read_to_string(path).unwrap();
        assert!(!log.is_empty(), "{path} is the node's log");
        assert!(!log.contains("long passphrase"), "{path}");
    }
    mesh.stop();
}
