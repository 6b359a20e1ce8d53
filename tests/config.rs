//! Node configuration from the real binary: a setting comes from its flag, else its OTPMESH_*
//! variable, else the --config file, else the default; a bad file is refused with its file, line
//! and column; a real node runs with what the file and the environment say.

mod common;

use common::BIN;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `otpmesh ARGS` in `dir` with only these OTPMESH_* variables.
fn otpmesh(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.current_dir(dir).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTPMESH_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

/// `config show`'s line for `key`: (value, source).
fn shown(out: &Output, key: &str) -> (String, String) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key}:")))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"));
    if let Some(rest) = line.strip_prefix(&format!("{key} = ")) {
        let (value, source) = rest.rsplit_once("  # ").unwrap();
        (value.to_string(), source.to_string())
    } else {
        (String::new(), "default".to_string())
    }
}

const FILE: &str = r#"# a contributor
role = "contributor"
data_dir = "state"
client_id = 3
open = true
listen = ["/ip4/127.0.0.1/tcp/4001"]
"#;

#[test]
fn flags_beat_variables_beat_the_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("conf")).unwrap();
    std::fs::write(d.join("conf/node.toml"), FILE).unwrap();
    let file = ["config", "show", "--config", "conf/node.toml"];
    let with = |extra: &[&str], env: &[(&str, &str)]| {
        let args: Vec<&str> = file.iter().chain(extra).copied().collect();
        otpmesh(d, &args, env)
    };

    let out = with(&[], &[]);
    assert_eq!(shown(&out, "client_id"), ("3".into(), "file".into()));
    assert_eq!(shown(&out, "open"), ("true".into(), "file".into()));
    assert_eq!(shown(&out, "mdns"), ("false".into(), "default".into()));
    assert_eq!(shown(&out, "seed"), ("".into(), "default".into()));
    // Relative paths in a file are relative to the file.
    let data_dir = shown(&out, "data_dir").0;
    assert!(data_dir.ends_with(r#"conf/state""#), "{data_dir}");

    let env = [
        ("OTPMESH_CLIENT_ID", "5"),
        ("OTPMESH_OPEN", "false"),
        ("OTPMESH_MDNS", "1"),
        (
            "OTPMESH_LISTEN",
            "/ip4/127.0.0.1/tcp/5001,/ip4/127.0.0.1/udp/5001/quic-v1",
        ),
        ("OTPMESH_LOG_FORMAT", "json"),
    ];
    let out = with(&[], &env);
    assert_eq!(shown(&out, "client_id"), ("5".into(), "env".into()));
    assert_eq!(shown(&out, "open"), ("false".into(), "env".into()));
    assert_eq!(shown(&out, "mdns"), ("true".into(), "env".into()));
    assert_eq!(
        shown(&out, "listen"),
        (
            r#"["/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/udp/5001/quic-v1"]"#.into(),
            "env".into()
        )
    );
    assert_eq!(
        shown(&out, "log_format"),
        (r#""json""#.into(), "env".into())
    );
    assert_eq!(
        shown(&out, "role"),
        (r#""contributor""#.into(), "file".into())
    );

    let out = with(
        &[
            "--client-id",
            "7",
            "--listen",
            "/ip4/127.0.0.1/tcp/6001",
            "--log-format",
            "text",
        ],
        &env,
    );
    assert_eq!(shown(&out, "client_id"), ("7".into(), "flag".into()));
    assert_eq!(
        shown(&out, "listen"),
        (r#"["/ip4/127.0.0.1/tcp/6001"]"#.into(), "flag".into())
    );
    assert_eq!(
        shown(&out, "log_format"),
        (r#""text""#.into(), "flag".into())
    );
    assert_eq!(shown(&out, "open"), ("false".into(), "env".into()));

    // The config file itself may come from the environment; the input is never shown.
    let out = otpmesh(
        d,
        &["config", "show"],
        &[
            ("OTPMESH_CONFIG", "conf/node.toml"),
            ("OTPMESH_INPUT", "424242"),
        ],
    );
    assert_eq!(shown(&out, "client_id"), ("3".into(), "file".into()));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("# input = <hidden>  # env"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("424242"));
    // What show prints is itself a config file, which means the same wherever it is saved.
    std::fs::write(d.join("shown.toml"), &out.stdout).unwrap();
    let check = otpmesh(d, &["config", "check", "shown.toml"], &[]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let again = otpmesh(d, &["config", "show", "--config", "shown.toml"], &[]);
    assert_eq!(shown(&again, "data_dir"), (data_dir.clone(), "file".into()));

    // The input comes whole from one layer: a flag for the file hides the file's integer
    // (unquoted in TOML), instead of "both given".
    std::fs::write(d.join("conf/input.toml"), "client_id = 1\ninput = 42\n").unwrap();
    let out = otpmesh(
        d,
        &[
            "config",
            "show",
            "--config",
            "conf/input.toml",
            "--input-file",
            "secret",
        ],
        &[],
    );
    assert_eq!(shown(&out, "input"), ("".into(), "default".into()));
    assert!(shown(&out, "input_file").0.ends_with(r#"/secret""#));
    let out = otpmesh(d, &["config", "show", "--config", "conf/input.toml"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("# input = <hidden>  # file"));
}

#[test]
fn a_bad_file_is_refused_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "unknown.toml",
            format!("{FILE}bogus = 1\n"),
            "unknown.toml:7:1:",
            "unknown.toml:7:1: unknown field `bogus`",
        ),
        (
            "type.toml",
            "role = \"generator\"\n\nclient_id = \"three\"\n".to_string(),
            "type.toml:3:13:",
            "type.toml:3:13: invalid type",
        ),
        (
            "role.toml",
            "role = \"generatr\"\n".to_string(),
            "role.toml:1:8:",
            "role.toml:1:8: unknown variant `generatr`",
        ),
        (
            "syntax.toml",
            "role = \"generator\"\nlisten = [\n".to_string(),
            "syntax.toml:2:",
            "syntax.toml:2:11: unclosed array",
        ),
        (
            "addr.toml",
            "listen = [\"/ip4/127.0.0.1/tcp/1\", \"garbage\"]\n".to_string(),
            "addr.toml:",
            "\"garbage\" is not a multiaddr",
        ),
        (
            "peer.toml",
            "distributors = [\"12D3KooWnotapeer\"]\n".to_string(),
            "peer.toml:",
            "not a PeerId",
        ),
        (
            "mesh.toml",
            "role = \"generator\"\ndata_dir = \"g\"\nmesh = \"nowhere.toml\"\n".to_string(),
            "nowhere.toml",
            "No such file",
        ),
    ];
    for (name, text, place, what) in cases {
        std::fs::write(d.join(name), text).unwrap();
        for args in [
            vec!["config", "check", name],
            vec!["node", "--config", name],
        ] {
            let out = otpmesh(d, &args, &[]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            // A value that parses as TOML but means nothing is named by the node as well;
            // `config check` also names the file.
            assert!(err.contains(what), "{args:?}: {err}");
            assert!(args[0] == "node" || err.contains(place), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // A bad input is refused without repeating it (it is the contributor's secret).
    std::fs::write(d.join("input.toml"), "input = [424242]\n").unwrap();
    for args in [
        vec!["config", "check", "input.toml"],
        vec!["node", "--config", "input.toml"],
    ] {
        let out = otpmesh(d, &args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("input.toml:1:9: input must be an integer"),
            "{err}"
        );
        assert!(!err.contains("424242"), "{err}");
    }
    // A valid file missing what only a flag may give says so, and passes.
    std::fs::write(d.join("partial.toml"), "client_id = 2\n").unwrap();
    let out = otpmesh(d, &["config", "check", "partial.toml", "--json"], &[]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert!(v["notes"].to_string().contains("no role"), "{v}");
}

#[test]
fn a_node_runs_with_what_the_file_and_the_environment_say() {
    use otpmesh_protocol::mesh::{Contributor, Member, MeshConfig};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let peer = || {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    };
    let mut mesh = MeshConfig::default();
    for list in [&mut mesh.generators, &mut mesh.distributors] {
        list.push(Member {
            peer_id: peer(),
            addrs: vec![],
            name: None,
        });
    }
    mesh.contributors.push(Contributor {
        client_id: otpmesh_protocol::phrase::ClientId(1),
        peer_id: peer(),
        addrs: vec![],
    });
    std::fs::write(d.join("mesh.toml"), toml::to_string(&mesh).unwrap()).unwrap();
    std::fs::write(
        d.join("node.toml"),
        "role = \"requester\"\ndata_dir = \"req\"\nmesh = \"mesh.toml\"\njson = true\n",
    )
    .unwrap();
    let port = otpmesh_cli::cmd::mesh_ports(1).unwrap().0[0];
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut child = Command::new(BIN)
        .current_dir(d)
        .args(["node", "--config", "node.toml"])
        .env("OTPMESH_LISTEN", &listen)
        .env("OTPMESH_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + Duration::from_secs(60);
    let mut started = false;
    loop {
        let line = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("the node reports where it listens");
        // JSON events (the file's json = true), the role from the file, the port from the env.
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON event line");
        started |= v["event"] == "started" && v["role"] == "requester";
        if v["event"] == "listening" && v["addr"].as_str().unwrap().starts_with(&listen) {
            break;
        }
    }
    assert!(started);
    assert!(
        d.join("req/identity.key").is_file(),
        "data_dir from the file"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Logs in JSON, one object a line, as OTPMESH_LOG_FORMAT said.
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.lines().count() > 0);
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(logs.contains("node started"), "{logs}");
}
