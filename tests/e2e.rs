//! End-to-end: the real `otpmesh` binary, real child processes, real sockets on 127.0.0.1.

mod common;

use common::{alive, json_field, request, succeeded, Mesh, BIN};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

fn otpmesh(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("otpmesh runs")
}

#[test]
fn mesh_up_then_requests_from_outside() {
    let mesh = Mesh::up(&[]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 7);
    for n in nodes {
        for key in [
            "name", "role", "peer_id", "listen", "pid", "data_dir", "log", "restart",
        ] {
            assert!(!n[key].is_null(), "mesh.json node lacks {key}: {n}");
        }
        assert!(
            alive(n["pid"].as_u64().unwrap()),
            "{} is not running",
            n["name"]
        );
    }
    let distributor = Mesh::node(&json, "distributor-1");
    let tcp = distributor["listen"][0].as_str().unwrap();
    let quic = distributor["listen"][1].as_str().unwrap();
    assert!(quic.contains("/quic-v1/"), "{quic}");
    let requester_dir = Mesh::data_dir(&json, "requester-1");

    let mut otps = Vec::new();
    for addr in [tcp, tcp, quic] {
        let out = request(addr, Path::new(&requester_dir));
        assert!(
            out.status.success(),
            "request via {addr} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let otp = v["otp"].as_str().unwrap().to_string();
        assert_eq!(otp.len(), 8, "{v}");
        assert!(otp.chars().all(|c| c.is_ascii_digit()));
        assert!(
            v["round"].as_u64().unwrap() >= 1 && v["expires_at"].is_string(),
            "{v}"
        );
        otps.push(otp);
    }
    assert_ne!(otps[0], otps[1]);
    assert_ne!(otps[1], otps[2]);

    // Verify: accepted once, then used; a wrong code is wrong. Exit 0 only for accepted.
    let verify = |code: &str| {
        common::verify_json(&[
            "verify",
            "--distributor",
            tcp,
            "--otp",
            code,
            "--data-dir",
            &requester_dir,
        ])
    };
    assert_eq!(verify(&otps[0]), (Some(0), "accepted".to_string()));
    assert_eq!(verify(&otps[0]), (Some(1), "used".to_string()));
    let wrong = format!("{:08}", (otps[1].parse::<u64>().unwrap() + 1) % 100_000_000);
    assert_eq!(verify(&wrong), (Some(1), "wrong".to_string()));
    assert_eq!(verify(&otps[1]), (Some(0), "accepted".to_string()));

    // Enrol, then request under the enrolment key; the key file is private.
    let out = succeeded(Command::new(BIN).args([
        "enrol",
        "--json",
        "--distributor",
        tcp,
        "--data-dir",
        &requester_dir,
    ]));
    let enrolled: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key_file = enrolled["key_file"].as_str().unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = request(tcp, Path::new(&requester_dir));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        verify(v["otp"].as_str().unwrap()),
        (Some(0), "accepted".to_string())
    );

    let stranger = tempfile::tempdir().unwrap();
    let out = request(tcp, stranger.path());
    assert_eq!(
        out.status.code(),
        Some(4),
        "an unlisted requester must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused this requester") && err.contains("not a listed requester"),
        "{err}"
    );

    let pids: Vec<u64> = nodes.iter().map(|n| n["pid"].as_u64().unwrap()).collect();
    let status = mesh.stop();
    assert!(status.success(), "mesh up exited with {status}");
    for pid in pids {
        assert!(
            !alive(pid),
            "child {pid} still running after mesh up stopped"
        );
    }
}

#[test]
fn mesh_up_rounds_exits_zero_after_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "mesh",
            "up",
            "--rounds",
            "2",
            "--contributors",
            "3",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("round 2: delivered to every distributor"),
        "{stdout}"
    );
    assert!(stdout.contains("sealed with clients [1,2,3]"), "{stdout}");
    let log = std::fs::read_to_string(dir.path().join("generator-1/node.log")).unwrap();
    assert!(log.contains("round_sealed"), "generator log lacks the seal");
}

#[test]
fn request_errors_say_what_went_wrong() {
    // Nothing listens on this port: unreachable, exit 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let peer = "12D3KooWGzh8cCyBqJ2rE1ddn3hvqDW8eoHX6dH1oSWuPXS3WKEe";
    let out = request(&format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"), dir.path());
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not reach the distributor"));

    // No /p2p suffix: refused before dialing.
    let out = request(&format!("/ip4/127.0.0.1/tcp/{port}"), dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must end with /p2p/"));

    // A garbage address.
    let out = request("not-an-address", dir.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a multiaddr"));
}

#[test]
fn a_distributor_without_rounds_says_so() {
    // A distributor whose generator never runs; open membership admits any requester.
    let root = tempfile::tempdir().unwrap();
    let mesh = root.path().join("mesh.toml");
    let generator = "12D3KooWGzh8cCyBqJ2rE1ddn3hvqDW8eoHX6dH1oSWuPXS3WKEe";
    std::fs::write(
        &mesh,
        format!("[settings]\nquorum = 1\n[[generators]]\npeer_id = \"{generator}\"\n"),
    )
    .unwrap();
    let mut lonely = Command::new(BIN)
        .args([
            "node",
            "--role",
            "distributor",
            "--open",
            "--json",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--mesh",
        ])
        .arg(&mesh)
        .arg("--data-dir")
        .arg(root.path().join("distributor"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(lonely.stdout.take().unwrap()).lines();
    let (mut peer, mut addr) = (String::new(), String::new());
    while addr.is_empty() {
        let line = lines
            .next()
            .expect("the distributor prints events")
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str() {
            Some("started") => peer = v["peer_id"].as_str().unwrap().to_string(),
            Some("listening") => addr = v["addr"].as_str().unwrap().to_string(),
            _ => {}
        }
    }
    let out = request(
        &format!("{addr}/p2p/{peer}"),
        &root.path().join("requester"),
    );
    lonely.kill().unwrap();
    let _ = lonely.wait();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no round sealed yet"));
}

#[test]
fn node_flags_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = otpmesh(&["node", "--role", "generator", "--data-dir", d]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mesh FILE is required"));
    let mesh = dir.path().join("mesh.toml");
    std::fs::write(&mesh, "open = false\nsurprise = 1\n").unwrap();
    let out = otpmesh(&[
        "node",
        "--role",
        "generator",
        "--data-dir",
        d,
        "--mesh",
        mesh.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("surprise") && err.contains("line 2"),
        "{err}"
    );
    std::fs::write(&mesh, "[settings]\nquorum = 1\n[[generators]]\npeer_id = \"12D3KooWGzh8cCyBqJ2rE1ddn3hvqDW8eoHX6dH1oSWuPXS3WKEe\"\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "node",
            "--role",
            "contributor",
            "--client-id",
            "1",
            "--data-dir",
            d,
            "--mesh",
            mesh.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--input N"), "{err}");
    let out = otpmesh(&[
        "node",
        "--role",
        "contributor",
        "--client-id",
        "1",
        "--input",
        "4.5",
        "--data-dir",
        d,
        "--mesh",
        mesh.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an integer"), "{err}");
}

#[test]
fn a_use_at_one_distributor_becomes_used_at_the_others() {
    let mesh = Mesh::up(&["--distributors", "3"]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();
    let addr = |name: &str| {
        Mesh::node(&json, name)["listen"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (d1, d2, d3) = (
        addr("distributor-1"),
        addr("distributor-2"),
        addr("distributor-3"),
    );
    let requester_dir = Mesh::data_dir(&json, "requester-1");
    let verify = |at: &str, code: &str| {
        common::verify_json(&[
            "verify",
            "--distributor",
            at,
            "--otp",
            code,
            "--data-dir",
            &requester_dir,
        ])
        .1
    };
    let mut windows = Vec::new();
    for i in 0..10 {
        let out = request(&d1, Path::new(&requester_dir));
        let otp = json_field(&out, "otp");
        if i == 0 {
            // Only the issuer can accept it; before the use, the others do not know it at all
            // (once only: wrong codes count towards the lockout).
            assert_eq!(verify(&d2, &otp), "wrong");
        }
        assert_eq!(verify(&d1, &otp), "accepted");
        // The window: from distributor-1 reporting the acceptance to both others reporting the
        // marker, as their events reach this test (the same path for all three).
        let (mut accepted_at, mut pending) = (None, vec!["distributor-2", "distributor-3"]);
        while accepted_at.is_none() || !pending.is_empty() {
            let v = mesh.wait_for("the acceptance and its replication", |v| {
                (v["node"] == "distributor-1"
                    && v["event"] == "otp_verified"
                    && v["result"] == "accepted")
                    || v["event"] == "use_replicated"
            });
            if v["event"] == "otp_verified" {
                accepted_at = Some(Instant::now());
            } else {
                pending.retain(|n| v["node"] != *n);
            }
        }
        windows.push(Instant::now().saturating_duration_since(accepted_at.unwrap()));
        assert_eq!(verify(&d2, &otp), "used");
        assert_eq!(verify(&d3, &otp), "used");
    }
    windows.sort();
    eprintln!("use replication window (acceptance at distributor-1 → marker held at both others): p50 {:?}, max {:?}", windows[4], windows[9]);
    assert!(mesh.stop().success());
}
