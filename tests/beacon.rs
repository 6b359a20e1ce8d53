//! The beacon end to end, on real processes: a threshold mesh makes values; the mesh stops; its
//! generators, distributors and contributors come back, and a node that did not exist while the
//! first requester ran (new identity, empty data dir) catches up from the network. Both report
//! the same values; an exported chain verifies offline and a tampered one does not.

mod common;

use common::{mesh_once, restart_argv, Mesh, BIN, WAIT};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

fn otpmesh(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("otpmesh runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Node processes, killed when dropped.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `beacon get --round R --json` on a data dir: the value's JSON.
fn value_of(dir: &str, round: u64) -> Value {
    let out = otpmesh(&[
        "beacon",
        "get",
        "--data-dir",
        dir,
        "--round",
        &round.to_string(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "round {round} at {dir}: {}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_node_that_never_met_the_first_reports_the_same_beacon_and_the_chain_verifies_offline() {
    let mesh = Mesh::up(&[
        "--threshold",
        "2/3",
        "--contributors",
        "3",
        "--interval-ms",
        "300",
    ]);
    let third = |v: &Value| {
        v["node"] == "requester-1" && v["event"] == "beacon_value" && v["round"].as_u64() >= Some(3)
    };
    mesh.wait_for("requester-1's third beacon value", third);
    let json = mesh.mesh_json();
    let (status, dir) = mesh.stop_keeping();
    assert!(status.success(), "mesh up stops cleanly: {status:?}");
    let first = Mesh::data_dir(&json, "requester-1");

    // Everything but requester-1 comes back; a new node joins that requester-1 never met.
    let mut nodes = Nodes(Vec::new());
    for node in json["nodes"].as_array().unwrap() {
        if node["name"] == "requester-1" {
            continue;
        }
        let argv = restart_argv(node);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        nodes.0.push(child);
    }
    let fresh = dir.path().join("fresh");
    let mesh_toml = dir.path().join("mesh.toml");
    let mut args: Vec<String> = [
        "node",
        "--role",
        "requester",
        "--json",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--mesh",
    ]
    .map(String::from)
    .to_vec();
    args.push(mesh_toml.display().to_string());
    args.push("--data-dir".into());
    args.push(fresh.display().to_string());
    for node in json["nodes"].as_array().unwrap() {
        if node["role"] == "distributor" {
            args.push("--peer".into());
            args.push(node["listen"][0].as_str().unwrap().to_string());
        }
    }
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    nodes.0.push(child);
    let (tx, events) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    // The fresh node holds rounds 1..3 once it has fetched them (and it says it fetched them).
    let end = Instant::now() + WAIT;
    let mut fetched = Vec::new();
    while !(1..=3).all(|r| fetched.contains(&r)) {
        let left = end.saturating_duration_since(Instant::now());
        let v = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the fresh node fetched only {fetched:?} within {WAIT:?}"));
        if v["event"] == "beacon_value" && v["caught_up"] == true {
            fetched.push(v["round"].as_u64().unwrap());
        }
    }

    let fresh_dir = fresh.display().to_string();
    for round in 1..=3 {
        let (a, b) = (value_of(&first, round), value_of(&fresh_dir, round));
        assert_eq!(a["value"], b["value"], "round {round}");
        assert_eq!(a["transcript_commitment"], b["transcript_commitment"]);
        assert_eq!(a["value"].as_str().unwrap().len(), 64);
    }
    let one = value_of(&first, 1);
    assert_eq!(one["prev"], "0".repeat(64), "the chain starts at zeros");
    assert_eq!(
        value_of(&first, 2)["prev"],
        one["value"],
        "and each binds the one before"
    );

    // Exported from the running fresh node, checked offline; tampered, refused.
    let chain = dir.path().join("chain.json");
    let out = otpmesh(&[
        "beacon",
        "export",
        "--data-dir",
        &fresh_dir,
        "--out",
        chain.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    drop(nodes);
    let verify = |file: &Path, extra: &[&str]| {
        let mut args = vec!["beacon", "verify", file.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        otpmesh(&args)
    };
    let out = verify(&chain, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert!(report["values"].as_u64().unwrap() >= 3);
    assert_eq!(
        report["first_round"], 1,
        "the fetched chain reaches back to round 1"
    );
    let head = report["head"].as_str().unwrap().to_string();
    assert!(verify(&chain, &["--head", &head]).status.success());
    let out = verify(&chain, &["--head", &"ab".repeat(32)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    // With the mesh config, every round key must carry the coordinator's signature; a config
    // naming another coordinator (here: generator 2 first) refuses the same file.
    let mesh_path = mesh_toml.to_str().unwrap();
    let out = verify(&chain, &["--mesh", mesh_path]);
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(&mesh_toml).unwrap();
    let ids: Vec<&str> = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "generator")
        .map(|n| n["peer_id"].as_str().unwrap())
        .collect();
    let swapped = config
        .replace(ids[0], "GENERATOR-ONE")
        .replace(ids[1], ids[0])
        .replace("GENERATOR-ONE", ids[1]);
    let other = dir.path().join("other-mesh.toml");
    std::fs::write(&other, swapped).unwrap();
    let out = verify(&chain, &["--mesh", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("not the coordinator's"),
        "{}",
        text(&out)
    );

    let export: Value = serde_json::from_str(&std::fs::read_to_string(&chain).unwrap()).unwrap();
    let tampered = |name: &str, change: &dyn Fn(&mut Value)| {
        let mut copy = export.clone();
        change(&mut copy);
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(&copy).unwrap()).unwrap();
        let out = verify(&path, &[]);
        assert_eq!(out.status.code(), Some(4), "{name}: {}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let error = tampered("value.json", &|c| {
        c["entries"][1]["value"]["value"] = Value::from("11".repeat(32))
    });
    assert!(error.contains("round 2"), "{error}");
    let error = tampered("gap.json", &|c| {
        c["entries"].as_array_mut().unwrap().remove(1);
    });
    assert!(error.contains("does not name"), "{error}");
    let error = tampered("proof.json", &|c| {
        let s = &mut c["entries"][0]["value"]["partials"][0]["proof"]["s"][0];
        *s = Value::from((s.as_u64().unwrap() + 1) % 256);
    });
    assert!(error.contains("round 1"), "{error}");
    let error = tampered("clients.json", &|c| {
        c["entries"][2]["transcript"]["included"]
            .as_array_mut()
            .unwrap()
            .pop();
    });
    assert!(error.contains("round 3"), "{error}");
}

#[test]
fn a_single_generator_mesh_explains_that_the_beacon_needs_a_threshold_key() {
    let (_dir, json) = mesh_once(&["--contributors", "2"]);
    let distributor = Mesh::data_dir(&json, "distributor-1");
    for cmd in ["get", "export"] {
        let out = otpmesh(&["beacon", cmd, "--data-dir", &distributor]);
        assert_eq!(out.status.code(), Some(6), "{}", text(&out));
        let said = text(&out);
        assert!(
            said.contains("threshold key") && said.contains("predict"),
            "says why: {said}"
        );
    }
    let out = otpmesh(&["beacon", "verify", "/nonexistent/chain.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
