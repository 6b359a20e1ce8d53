//! `mesh up` as a local lab: a node's death is reported and survived, and the running mesh is
//! steered from another terminal (`otpmesh mesh status|kill|restart|partition|heal|round`).

mod common;

use common::{alive, request, verify_json, Mesh, BIN};
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

/// `otpmesh mesh ARGS --dir DIR`, run to its end.
fn steer(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("mesh")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("otpmesh runs")
}

fn steered(dir: &Path, args: &[&str]) -> Value {
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

fn otp_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "request failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["otp"].as_str().unwrap().to_string()
}

#[test]
fn a_killed_distributor_is_reported_survived_and_restarted_with_its_identity_and_otps() {
    let mut mesh = Mesh::up(&["--distributors", "3"]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let dir = mesh.dir.path().to_path_buf();
    let json = mesh.mesh_json();
    let control = json["control"]
        .as_str()
        .expect("mesh.json names the control socket");
    let meta = std::fs::metadata(control).unwrap();
    assert!(meta.file_type().is_socket(), "{control}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{control}");
    for n in json["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "running", "{n}");
    }
    let victim = Mesh::node(&json, "distributor-1").clone();
    let victim_addr = victim["listen"][0].as_str().unwrap().to_string();
    let survivor = Mesh::listen(&json, "distributor-2");
    let requester = Mesh::data_dir(&json, "requester-1");
    let requester = Path::new(&requester);
    // An OTP the victim has stored before it dies.
    let stored = otp_of(&request(&victim_addr, requester));

    let old_pid = victim["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exited = mesh.wait_for("distributor-1 reported dead", |v| {
        v["node"] == "distributor-1" && v["event"] == "node_exited"
    });
    assert!(
        exited["status"].as_str().unwrap_or("").contains("SIGKILL"),
        "{exited}"
    );
    assert!(
        mesh.child.try_wait().unwrap().is_none(),
        "mesh up must outlive one of its nodes"
    );
    let json = mesh.mesh_json();
    for n in json["nodes"].as_array().unwrap() {
        if n["name"] == "distributor-1" {
            assert_eq!(n["state"], "exited", "{n}");
        } else {
            assert_eq!(n["state"], "running", "{n}");
            assert!(alive(n["pid"].as_u64().unwrap()), "{n}");
        }
    }
    otp_of(&request(&survivor, requester));
    let status = steered(&dir, &["status"]);
    let states: Vec<(String, String)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap().to_string();
            (s("name"), s("state"))
        })
        .collect();
    assert!(
        states.contains(&("distributor-1".into(), "exited".into()))
            && states.contains(&("distributor-2".into(), "running".into())),
        "{states:?}"
    );

    // Restarted from another terminal: the same identity and data, a new process.
    steered(&dir, &["restart", "distributor-1"]);
    let json = mesh.mesh_json();
    let back = Mesh::node(&json, "distributor-1");
    assert_eq!(back["state"], "running", "{back}");
    assert_eq!(back["peer_id"], victim["peer_id"]);
    let new_pid = back["pid"].as_u64().unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(alive(new_pid));
    let verify = |code: &str| {
        verify_json(&[
            "verify",
            "--distributor",
            &victim_addr,
            "--otp",
            code,
            "--data-dir",
            requester.to_str().unwrap(),
        ])
    };
    assert_eq!(verify(&stored), (Some(0), "accepted".to_string()));

    // A partition as the scenario step makes one: distributor-2 and requester-1 refuse each
    // other until healed.
    steered(
        &dir,
        &["partition", "distributor-2", "--from", "requester-1"],
    );
    let cut = request(&survivor, requester);
    assert!(
        !cut.status.success(),
        "a partitioned distributor answered: {}",
        String::from_utf8_lossy(&cut.stdout)
    );
    steered(&dir, &["heal"]);
    otp_of(&request(&survivor, requester));

    // A round on demand, and an unknown node named as such.
    let round = steered(&dir, &["round"]);
    assert!(round["round"].as_u64().unwrap() >= 2, "{round}");
    let wrong = steer(&dir, &["kill", "distributor-9"]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("no node named distributor-9"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    let status = mesh.stop();
    assert!(status.success(), "mesh up exited with {status}");
    assert!(!alive(new_pid), "a restarted node outlived mesh up");
}
