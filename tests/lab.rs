//! `mesh up` as a local lab: a node's death is reported and survived, and the running mesh is
//! steered from another terminal (`otpmesh mesh status|kill|restart|partition|heal|round`).

mod common;

use common::{alive, request, steer, steered, verify_json, Mesh, BIN};
use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

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

    // A second mesh up in the same directory is refused and leaves the running mesh's config be.
    let config = std::fs::read(dir.join("mesh.toml")).unwrap();
    let second = Command::new(BIN)
        .args(["mesh", "up", "--rounds", "1", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already runs"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(std::fs::read(dir.join("mesh.toml")).unwrap(), config);

    let status = mesh.stop();
    assert!(status.success(), "mesh up exited with {status}");
    assert!(!alive(new_pid), "a restarted node outlived mesh up");
}

/// Every WARN or ERROR line in the node logs under `dir`.
fn warnings(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(log) = std::fs::read_to_string(entry.path().join("node.log")) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().to_string();
        found.extend(
            log.lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .map(|l| format!("{name}: {l}")),
        );
    }
    found
}

/// A mesh up of a sound configuration says nothing at WARN while it forms and serves. (A 2/3
/// threshold mesh does warn, once a node, that two quorums may share one distributor: that is
/// about the configuration, and stays.)
#[test]
fn a_healthy_start_logs_no_warning() {
    for extra in [
        &["--distributors", "3", "--verifiers", "1"][..],
        &["--threshold", "3/4", "--contributors", "3"][..],
    ] {
        let (dir, json) = common::mesh_once(extra);
        let nodes = json["nodes"].as_array().unwrap().len();
        let logs = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("node.log").exists())
            .count();
        assert_eq!(logs, nodes, "{extra:?}: a log per node");
        let found = warnings(dir.path());
        assert!(found.is_empty(), "{extra:?}: {found:#?}");
    }
}

#[test]
fn restart_on_exit_brings_a_dead_node_back_and_mesh_kill_keeps_it_down() {
    let mesh = Mesh::up(&["--restart-on-exit"]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let dir = mesh.dir.path().to_path_buf();
    let json = mesh.mesh_json();
    let victim = Mesh::node(&json, "distributor-1").clone();
    let addr = victim["listen"][0].as_str().unwrap().to_string();
    let requester = Mesh::data_dir(&json, "requester-1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim["pid"].as_u64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    mesh.wait_for("distributor-1 reported dead", |v| {
        v["node"] == "distributor-1" && v["event"] == "node_exited"
    });
    assert_eq!(
        Mesh::node(&mesh.mesh_json(), "distributor-1")["state"],
        "restarting"
    );
    let started = mesh.wait_for("distributor-1 started again", |v| {
        v["node"] == "distributor-1" && v["event"] == "node_started"
    });
    assert_eq!(started["restarts"], 1, "{started}");
    mesh.wait_for("distributor-1 listening again", |v| {
        v["node"] == "distributor-1" && v["event"] == "listening"
    });
    let back = mesh.mesh_json();
    let back = Mesh::node(&back, "distributor-1");
    assert_eq!(back["peer_id"], victim["peer_id"]);
    assert_eq!(back["state"], "running", "{back}");
    otp_of(&request(&addr, Path::new(&requester)));

    // Killed on purpose, it stays down, and says so.
    steered(&dir, &["kill", "distributor-1"]);
    let status = steered(&dir, &["status"]);
    let node = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "distributor-1")
        .unwrap()
        .clone();
    assert_eq!(node["state"], "exited", "{node}");
    assert!(
        node["exit"].as_str().unwrap().contains("mesh kill"),
        "{node}"
    );
    let again = steer(&dir, &["kill", "distributor-1"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not running"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(mesh.stop().success());
}
