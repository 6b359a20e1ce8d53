//! Threshold mode end to end: `mesh up --threshold 3/5` as real processes, OTPs requested and
//! verified from outside, and then the stores on disk: one distributor's whole state cannot make
//! the OTP, three can.

mod common;

use common::{Mesh, BIN};
use otpmesh_node::store::Store;
use otpmesh_protocol::otp::{Digits, Otp};
use otpmesh_protocol::role::threshold::otp_input;
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::threshold::eval::{self, KeyShare};
use otpmesh_protocol::threshold::Index;
use redb::ReadableTable;
use serde_json::Value;
use std::process::{Command, Output};

fn otpmesh(args: &[String]) -> Output {
    Command::new(BIN).args(args).output().expect("otpmesh runs")
}

/// `--distributor A --distributor B …` for every distributor of the mesh.
fn distributor_flags(json: &Value) -> Vec<String> {
    json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "distributor")
        .flat_map(|n| {
            let addr = n["listen"][0].as_str().unwrap().to_string();
            ["--distributor".to_string(), addr]
        })
        .collect()
}

#[test]
fn a_threshold_mesh_issues_and_verifies_once_and_no_single_store_holds_an_otp() {
    let mesh = Mesh::up(&[
        "--threshold",
        "3/5",
        "--contributors",
        "4",
        "--requesters",
        "2",
    ]);
    let handed = |g: &'static str| {
        move |v: &Value| v["node"] == g && v["event"] == "round_delivered_all" && v["round"] == 1
    };
    let (g1, g2, g3, g4, g5) = (
        handed("generator-1"),
        handed("generator-2"),
        handed("generator-3"),
        handed("generator-4"),
        handed("generator-5"),
    );
    let followed = |v: &Value| v["node"] == "requester-1" && v["event"] == "threshold_otp_received";
    mesh.wait_for_all(&[
        ("generator-1's handover", &g1),
        ("generator-2's handover", &g2),
        ("generator-3's handover", &g3),
        ("generator-4's handover", &g4),
        ("generator-5's handover", &g5),
        ("the requester node's OTP", &followed),
    ]);
    let json = mesh.mesh_json();
    let requester_dir = Mesh::data_dir(&json, "requester-1");
    let base = |cmd: &str| -> Vec<String> {
        let mut args: Vec<String> = [cmd, "--threshold", "--json", "--data-dir", &requester_dir]
            .map(String::from)
            .to_vec();
        args.extend(distributor_flags(&json));
        args
    };
    let out = otpmesh(&base("request"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let otp = got["otp"].as_str().unwrap().to_string();
    let round = got["round"].as_u64().unwrap();
    let counter: u64 = got["counter"].as_str().unwrap().parse().unwrap();
    assert_eq!(got["shareholders"].as_array().unwrap().len(), 3, "{got}");
    assert_eq!(got["bad_partials_from"].as_array().unwrap().len(), 0);

    let verify = |code: &str| {
        let mut args = base("verify");
        args.extend(
            [
                "--round",
                &round.to_string(),
                "--counter",
                &counter.to_string(),
                "--otp",
                code,
            ]
            .map(String::from),
        );
        let out = otpmesh(&args);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code(),
            v["result"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(verify(&otp), (Some(0), "accepted".to_string()));
    assert_eq!(verify(&otp), (Some(1), "used".to_string()), "single use");

    // Passwords: a blinded evaluation (RFC 9497 VOPRF) under the round's password key.
    let password = |requester: &str, extra: &[&str]| -> Value {
        let dir = Mesh::node(&json, requester)["data_dir"]
            .as_str()
            .unwrap()
            .to_string();
        let mut args: Vec<String> = ["password", "--json", "--data-dir", &dir]
            .map(String::from)
            .to_vec();
        args.extend(distributor_flags(&json));
        args.extend(extra.iter().map(|a| a.to_string()));
        let out = otpmesh(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let mine = password("requester-1", &[]);
    let again = password("requester-1", &[]);
    let theirs = password("requester-2", &[]);
    let text = |v: &Value| v["password"].as_str().unwrap().to_string();
    assert_eq!(text(&mine).chars().count(), 20, "{mine}");
    assert!(mine["bits"].as_u64().unwrap() >= 128, "{mine}");
    assert!(text(&mine) != text(&again) && text(&mine) != text(&theirs));
    let digits = password("requester-1", &["--length", "24", "--alphabet", "digits"]);
    assert!(text(&digits).len() == 24 && text(&digits).chars().all(|c| c.is_ascii_digit()));

    // Stop the mesh (the stores are locked while it runs) and read what the distributors keep.
    let (status, keep) = mesh.stop_keeping();
    assert!(status.success());
    // No node logged an OTP or a password (the requester node combined OTPs of its own too).
    let secrets = [
        otp.clone(),
        text(&mine),
        text(&again),
        text(&theirs),
        text(&digits),
    ];
    let mut combined_lines = 0;
    for entry in std::fs::read_dir(keep.path()).unwrap() {
        let log = entry.unwrap().path().join("node.log");
        let Ok(content) = std::fs::read_to_string(&log) else {
            continue;
        };
        for secret in &secrets {
            assert!(
                !content.contains(secret.as_str()),
                "{} logs a secret",
                log.display()
            );
        }
        combined_lines += content.matches("otp combined").count();
    }
    assert!(combined_lines > 0, "the requester node's log was read");
    let requester: libp2p::PeerId = Mesh::node(&json, "requester-1")["peer_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let input = otp_input(&requester, RoundId(round), counter);
    let digits = Digits::default();
    let mut partials = Vec::new();
    let mut public = None;
    // The verification went to all five and ended at the first three valid partials: at least
    // three marked the OTP used (a slower one may have had the request cut by the exit).
    let mut marked_used = 0;
    for j in 1..=5u32 {
        let data_dir = keep.path().join(format!("distributor-{j}"));
        let state = Store::open(&data_dir).unwrap().distributor_state().unwrap();
        let (transcript, share) = state
            .rounds
            .iter()
            .find(|(t, _)| t.round.0 == round)
            .expect("the round's key share is stored");
        if state
            .otps
            .iter()
            .any(|(o, _, used)| o.counter == counter && *used)
        {
            marked_used += 1;
        }
        if j > 3 {
            continue;
        }
        let share = KeyShare::from_bytes(Index(j), share.as_bytes()).unwrap();
        let key = transcript.threshold.as_ref().unwrap().key().unwrap();
        let partial = share.evaluate(&input, &mut rand::rngs::OsRng);
        if j == 1 {
            // Distributor 1 alone: its partial as if it were the key, and weighted as if it
            // were a quorum by itself, and its share used as the key scalar.
            let y = partial.point().unwrap();
            let lambda = otpmesh_protocol::threshold::poly::lagrange_at_zero(&[Index(1)], Index(1));
            for guess in [y, y * lambda] {
                let value = eval::otp(&guess, &input, digits);
                assert_ne!(Otp::new(value, digits).unwrap().to_string(), otp);
            }
            assert!(key.combine(std::slice::from_ref(&partial), &input).is_err());
        }
        partials.push(partial);
        public = Some(key);
    }
    assert!(
        marked_used >= 3,
        "{marked_used} distributors stored the OTP as used"
    );
    // Whoever can write distributor 4's node.redb (but not read its store.key) flips the spent
    // OTP back to unused: the row's MAC no longer matches, so it is refused and held as used.
    let dir4 = keep.path().join("distributor-4");
    {
        // The OTP table as node/src/store/otps.rs lays it out: in expiry order.
        type Key = (u64, &'static [u8], &'static [u8], u64, u64);
        type Row = (u64, Vec<u8>, Vec<u8>, u64, u64, [u8; 16]);
        const OTPS: redb::TableDefinition<Key, (bool, [u8; 16])> =
            redb::TableDefinition::new("otps_v3");
        let db = redb::Database::open(dir4.join("node.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(OTPS).unwrap();
            let rows: Vec<Row> = table
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    let (expires, i, r, round, c) = k.value();
                    let (_, mac) = v.value();
                    (expires, i.to_vec(), r.to_vec(), round, c, mac)
                })
                .filter(|row| row.4 == counter)
                .collect();
            assert_eq!(rows.len(), 1, "distributor 4 keeps the spent OTP's row");
            for (expires, i, r, round, c, mac) in &rows {
                table
                    .insert(
                        (*expires, i.as_slice(), r.as_slice(), *round, *c),
                        (false, *mac),
                    )
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let state = Store::open(&dir4).unwrap().distributor_state().unwrap();
    assert!(
        state
            .otps
            .iter()
            .any(|(o, _, used)| o.counter == counter && *used),
        "the flipped row is not believed"
    );
    let (y, bad) = public.unwrap().combine(&partials, &input).unwrap();
    assert!(bad.is_empty());
    let value = eval::otp(&y, &input, digits);
    assert_eq!(
        Otp::new(value, digits).unwrap().to_string(),
        otp,
        "three stores together do make it: the check above could fail"
    );
}

#[test]
fn threshold_commands_without_a_mesh_config_say_so_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("r1");
    let peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let distributor = format!("/ip4/127.0.0.1/tcp/9/p2p/{peer}");
    let data = data_dir.to_str().unwrap().to_string();
    for cmd in [
        vec!["request", "--threshold"],
        vec!["password"],
        vec![
            "verify",
            "--threshold",
            "--round",
            "1",
            "--counter",
            "1",
            "--otp",
            "12345678",
        ],
    ] {
        let mut args: Vec<String> = cmd.iter().map(|a| a.to_string()).collect();
        args.extend(["--distributor", &distributor, "--data-dir", &data].map(String::from));
        let out = otpmesh(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {stderr}");
        assert!(stderr.contains("--mesh FILE"), "{cmd:?}: {stderr}");
    }
    // A mesh config that is not a threshold mesh is refused too.
    let contributor = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let single = format!(
        "[[generators]]\npeer_id = \"{peer}\"\n\n[[contributors]]\nclient_id = 1\npeer_id = \"{contributor}\"\n"
    );
    std::fs::write(dir.path().join("mesh.toml"), single).unwrap();
    let mut args: Vec<String> = ["request", "--threshold"].map(String::from).to_vec();
    args.extend(["--distributor", &distributor, "--data-dir", &data].map(String::from));
    let out = otpmesh(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a threshold mesh"), "{stderr}");
}
