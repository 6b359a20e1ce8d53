//! Secrets never reach the logs or the metrics. A mesh runs with every otpmesh crate logging at
//! trace level and everything else at debug, in JSON; a requester gets an OTP, uses it, enrols and
//! takes a TOTP token; then every node log, every event line, every node's metrics and every
//! command's stderr is searched for every secret the run handled: contributor inputs, the OTP, the
//! TOTP secret, the enrolment key, the store keys, the generator's RSA key and the node identities.

mod common;

use common::{json_field, Mesh, BIN};
use std::path::Path;
use std::process::Command;

const LOG_FILTER: &str =
    "debug,otpmesh=trace,otpmesh_cli=trace,otpmesh_node=trace,otpmesh_protocol=trace";

/// Runs `otpmesh ARGS` at the test's log level; returns (stdout, stderr).
fn run(args: &[&str]) -> (std::process::Output, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", LOG_FILTER)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out, stderr)
}

/// Whether `text` holds `secret` as a whole token (digits not glued to other digits).
fn holds(text: &str, secret: &str) -> bool {
    let digits = secret.chars().all(|c| c.is_ascii_digit());
    text.match_indices(secret).any(|(i, _)| {
        !digits || {
            let before = text[..i].chars().next_back();
            let after = text[i + secret.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_digit())
                && !after.is_some_and(|c| c.is_ascii_digit())
        }
    })
}

fn hex_and_base64(bytes: &[u8]) -> Vec<String> {
    use data_encoding::{BASE64, BASE64_NOPAD};
    vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        BASE64.encode(bytes),
        BASE64_NOPAD.encode(bytes),
    ]
}

#[test]
fn no_secret_reaches_the_logs() {
    // JSON logs (fields as they are, unformatted) and metrics: both are searched.
    let mesh = Mesh::up_with_env(
        &["--metrics"],
        &[("RUST_LOG", LOG_FILTER), ("OTPMESH_LOG_FORMAT", "json")],
    );
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();
    let distributor = Mesh::listen(&json, "distributor-1");
    let requester = Mesh::data_dir(&json, "requester-1");
    let mut stderrs = Vec::new();
    // Each client command against distributor-1 as requester-1; its stderr is kept for the search.
    let mut client = |command: &[&str], extra: &[&str]| {
        let mut args = command.to_vec();
        args.extend([
            "--json",
            "--distributor",
            &distributor,
            "--data-dir",
            &requester,
        ]);
        args.extend(extra);
        let (out, err) = run(&args);
        assert!(out.status.success(), "{command:?}: {err}");
        stderrs.push(err);
        out
    };

    let out = client(&["request"], &[]);
    let otp = json_field(&out, "otp");
    // The search finds a secret where it is meant to be: on the requester's own stdout.
    assert!(holds(&String::from_utf8_lossy(&out.stdout), &otp));
    let out = client(&["verify"], &["--otp", &otp]);
    assert_eq!(json_field(&out, "result"), "accepted");
    client(&["enrol"], &[]);
    let out = client(&["totp", "enrol"], &[]);
    let uri = json_field(&out, "uri");
    let totp_secret = uri
        .split("secret=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("the URI carries the secret")
        .to_string();

    // Every secret of the run, in the forms it could be printed in.
    let mut secrets: Vec<(String, String)> = vec![
        ("the OTP".into(), otp.clone()),
        ("the TOTP secret".into(), totp_secret),
    ];
    let nodes = json["nodes"].as_array().unwrap();
    for node in nodes {
        let name = node["name"].as_str().unwrap();
        let dir = Path::new(node["data_dir"].as_str().unwrap());
        if let Ok(input) = std::fs::read_to_string(dir.join("input")) {
            secrets.push((format!("{name}'s input"), input.trim().to_string()));
        }
        for file in ["store.key", "identity.key"] {
            if let Ok(bytes) = std::fs::read(dir.join(file)) {
                // The identity file is a protobuf: a 4-byte header, then the Ed25519 secret key
                // (32 bytes) and its public key (32 bytes).
                let key = if file == "identity.key" {
                    &bytes[4..36]
                } else {
                    &bytes[..]
                };
                for form in hex_and_base64(key) {
                    secrets.push((format!("{name}'s {file}"), form));
                }
            }
        }
        if let Ok(pem) = std::fs::read_to_string(dir.join("generator.key.pem")) {
            for line in pem.lines().filter(|l| !l.starts_with("-----")) {
                secrets.push((format!("{name}'s RSA key"), line.to_string()));
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("enrolments")) {
            for entry in entries {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                for form in hex_and_base64(&bytes[8..]) {
                    secrets.push((format!("{name}'s enrolment key"), form));
                }
            }
        }
    }
    let kinds: std::collections::BTreeSet<_> = secrets
        .iter()
        .map(|(what, _)| what.split('\'').next_back().unwrap_or(what).to_string())
        .collect();
    assert!(
        secrets.len() > 40,
        "the run handled the secrets it should: {kinds:?}"
    );

    // Everything the run wrote that an operator would see.
    let mut logs = stderrs;
    let events: Vec<String> = mesh.events.try_iter().map(|v| v.to_string()).collect();
    logs.push(events.join("\n"));
    for node in nodes {
        let (status, metrics) = common::http("GET", node["metrics"].as_str().unwrap());
        assert_eq!(status, 200);
        logs.push(metrics);
    }
    assert!(mesh.stop().success());
    for node in nodes {
        let log = std::fs::read_to_string(node["log"].as_str().unwrap()).unwrap_or_default();
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(v["level"].is_string(), "{line}");
        }
        logs.push(log);
    }
    let total: usize = logs.iter().map(String::len).sum();
    assert!(total > 50_000, "only {total} bytes of logs: is tracing on?");
    for (what, secret) in &secrets {
        for log in &logs {
            assert!(
                !holds(log, secret),
                "{what} appears in the logs: …{}…",
                &log[log.find(secret.as_str()).unwrap().saturating_sub(80)..]
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
        }
    }
}
