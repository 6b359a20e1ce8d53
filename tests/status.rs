//! `otpmesh status` against a real `mesh up`: every role answers over its control socket with its
//! role, PeerId, peers, rounds and the last sealed commitment; a stopped node is named; a second
//! node on a running node's data dir is refused.

mod common;

use common::{Mesh, BIN};
use serde_json::Value;
use std::process::Command;

fn status(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).arg("status").args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn every_role_answers_and_a_stopped_node_is_named() {
    let mesh = Mesh::up(&["--requesters", "1", "--metrics"]);
    // Contributors and the requester learn a round is sealed from its transcript: wait for the
    // requester to have an OTP of it, by then every node has seen it.
    let sealed = mesh.wait_for("round 1 sealed", |v| {
        v["node"] == "generator-1" && v["event"] == "round_sealed"
    });
    let round = sealed["round"].as_u64().unwrap();
    let commitment = sealed["commitment"].as_str().unwrap().to_string();
    mesh.wait_for_all(&[
        ("the distributor stored it", &|v: &Value| {
            v["node"] == "distributor-1" && v["event"] == "round_stored" && v["round"] == round
        }),
        ("the requester got an OTP of it", &|v: &Value| {
            v["node"] == "requester-1" && v["event"] == "otp_received" && v["round"] == round
        }),
    ]);
    let dir = mesh.dir.path().to_str().unwrap().to_string();
    let json = mesh.mesh_json();

    let (code, text) = status(&["--mesh", &dir, "--json"]);
    assert_eq!(code, Some(0), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let nodes = answer["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), json["nodes"].as_array().unwrap().len());
    for node in nodes {
        let name = node["name"].as_str().unwrap();
        let planned = Mesh::node(&json, name);
        assert_eq!(node["role"], planned["role"], "{name}");
        assert_eq!(node["peer_id"], planned["peer_id"], "{name}");
        assert!(node["peers"].as_u64().unwrap() >= 1, "{name}: {node}");
        assert!(
            node["current_round"].as_u64().unwrap() >= round,
            "{name}: {node}"
        );
        assert_eq!(node["metrics"], planned["metrics"], "{name}");
        assert!(
            !node["listen"].as_array().unwrap().is_empty(),
            "{name}: {node}"
        );
        let sealed = &node["last_sealed"];
        match node["role"].as_str().unwrap() {
            // The generator sealed it, the distributor stored it, contributors and requesters saw
            // its transcript: all name a sealed round, round 1's commitment if it is still the
            // last.
            _ if sealed["round"] == round => {
                assert_eq!(sealed["commitment"], commitment.as_str(), "{name}")
            }
            _ => assert!(sealed["round"].as_u64().unwrap() > round, "{name}: {node}"),
        }
        match node["role"].as_str().unwrap() {
            "generator" | "distributor" => {
                assert!(node["storage_bytes"].as_u64().unwrap() > 0, "{name}")
            }
            _ => assert!(node["storage_bytes"].is_null(), "{name}"),
        }
    }

    // One node, for people.
    let distributor = Mesh::node(&json, "distributor-1");
    let (code, text) = status(&["--data-dir", distributor["data_dir"].as_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("distributor 12D3KooW"), "{text}");
    assert!(text.contains("last sealed  round"), "{text}");
    assert!(text.contains("storage"), "{text}");

    // A second node on a running node's data dir is refused, naming why.
    let requester = Mesh::node(&json, "requester-1");
    // Its own argv, listening elsewhere.
    let mut argv = common::restart_argv(requester);
    for i in 1..argv.len() {
        if argv[i - 1] == "--listen" {
            argv[i] = "/ip4/127.0.0.1/tcp/0".into();
        }
    }
    let out = Command::new(BIN).args(&argv[1..]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("another node is running"), "{err}");

    // A stopped node does not answer, and is named.
    let pid = Mesh::node(&json, "contributor-1")["pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = std::time::Instant::now() + common::WAIT;
    while common::alive(pid) {
        assert!(std::time::Instant::now() < end, "contributor-1 still alive");
        std::thread::yield_now();
    }
    let contributor = Mesh::data_dir(&json, "contributor-1");
    let (code, text) = status(&["--data-dir", &contributor, "--json"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("no node answers"), "{text}");
    drop(mesh);
}
