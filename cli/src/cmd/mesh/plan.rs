//! Plans a local mesh before anything starts: every node's identity, ports, data dir and argv,
//! the mesh config they share, and a verifier's secrets.

use crate::cli::MeshUpArgs;
use crate::cmd::node::load_mesh;
use anyhow::{bail, Context};
use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use otpmesh_node::keys;
use otpmesh_protocol::mesh::{Contributor, Member, MeshConfig, UserName, Verifier};
use otpmesh_protocol::phrase::ClientId;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::MAX_NODES;

/// Where a node of `mesh up` is in its life, as `mesh.json` and `mesh status` say it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Running,
    /// Ended (by itself, or `mesh kill`); `exit` says how.
    Exited,
    /// Ended, and `--restart-on-exit` starts it again after a backoff.
    Restarting,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Running => "running",
            State::Exited => "exited",
            State::Restarting => "restarting",
        })
    }
}

/// One planned node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeEntry {
    pub name: String,
    pub role: &'static str,
    pub peer_id: String,
    pub listen: Vec<String>,
    pub pid: Option<u32>,
    pub state: State,
    /// How it last ended (its exit status or signal), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// How often it was started again.
    pub restarts: u32,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// `http://127.0.0.1:PORT/metrics`, with `mesh up --metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Verifiers: `127.0.0.1:PORT` (UDP) and the file holding the RADIUS shared secret alone
    /// (`radclient -S FILE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub radius: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub radius_secret_file: Option<PathBuf>,
    /// Verifiers: `http://127.0.0.1:PORT/validate/check` and the file holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_token_file: Option<PathBuf>,
    pub restart: Vec<String>,
}

pub use super::ports::free_ports;

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A verifier's secrets, made once per data dir (0600): its RADIUS clients file (127.0.0.1, a
/// fresh shared secret; Message-Authenticator not required, because Debian 12's pam_radius_auth
/// 2.0 sends none; radclient works either way) and its HTTP tokens file, each with a file holding
/// the bare secret for clients (`radclient -S`, `curl -H "Authorization: Bearer $(cat …)"`).
/// Returns (secret file, token file).
fn verifier_files(data_dir: &Path, rate_per_s: u32) -> anyhow::Result<(PathBuf, PathBuf)> {
    keys::ensure_data_dir(data_dir)?;
    let (secret_file, token_file) = (data_dir.join("radius-secret"), data_dir.join("http-token"));
    if !secret_file.exists() {
        let secret = otpmesh_node::verifier::fresh_secret();
        let entry =
            otpmesh_node::verifier::radius_client_entry(LOOPBACK, &secret, false, rate_per_s);
        let clients = zeroize::Zeroizing::new(format!(
            "# RADIUS clients of this verifier. mesh up: Message-Authenticator is not required\n\
             # from 127.0.0.1, so that Debian 12's pam_radius_auth (which sends none) works;\n\
             # set require_message_authenticator = true where every client sends one.\n{}",
            entry.as_str()
        ));
        keys::write_file(
            &data_dir.join("radius-clients.toml"),
            clients.as_bytes(),
            0o600,
        )?;
        keys::write_file(&secret_file, secret.as_bytes(), 0o600)?;
    }
    if !token_file.exists() {
        let token = otpmesh_node::verifier::fresh_secret();
        let parties = otpmesh_node::verifier::party_entry("mesh-up", &token);
        keys::write_file(
            &data_dir.join("http-tokens.toml"),
            parties.as_bytes(),
            0o600,
        )?;
        keys::write_file(&token_file, token.as_bytes(), 0o600)?;
    }
    Ok((secret_file, token_file))
}

pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

pub struct Planned {
    pub entries: Vec<NodeEntry>,
    pub mesh_path: PathBuf,
    pub generator: String,
}

pub fn plan(args: &MeshUpArgs) -> anyhow::Result<Planned> {
    let (generators, distributors) = match args.threshold {
        None if args.generators != 1 => bail!(
            "--generators {}: single-generator mode runs exactly one generator; several need --threshold T/N",
            args.generators
        ),
        None => (1, args.distributors),
        Some(t) => {
            let n = t.0.n;
            for (flag, given) in [("generators", args.generators), ("distributors", args.distributors)] {
                if given != 1 && given != n {
                    bail!("--threshold {t} runs {n} {flag}, not --{flag} {given}");
                }
            }
            (n, n)
        }
    };
    if args.contributors == 0 || distributors == 0 {
        bail!("a mesh needs at least one contributor and one distributor");
    }
    let total = args.contributors + generators + distributors + args.requesters + args.verifiers;
    if total > MAX_NODES {
        bail!("{total} nodes is more than the {MAX_NODES} one mesh up starts");
    }
    let dir = absolute(&args.dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("finding the otpmesh binary")?;
    let mesh_path = dir.join("mesh.toml");

    let mut names: Vec<(&'static str, String)> = Vec::new();
    names.extend((1..=generators).map(|i| ("generator", format!("generator-{i}"))));
    names.extend((1..=distributors).map(|i| ("distributor", format!("distributor-{i}"))));
    names.extend((1..=args.contributors).map(|i| ("contributor", format!("contributor-{i}"))));
    names.extend((1..=args.requesters).map(|i| ("requester", format!("requester-{i}"))));
    names.extend((1..=args.verifiers).map(|i| ("verifier", format!("verifier-{i}"))));
    // With metrics, a second TCP port per node serves them; a verifier has a RADIUS (UDP) and an
    // HTTP (TCP) port besides.
    let per_node = if args.metrics { 2 } else { 1 };
    let fronts_at = names.len() * per_node;
    let (tcp, udp) = free_ports(fronts_at + args.verifiers as usize)?;
    let metrics_ports = &tcp[names.len()..fronts_at];

    let mut mesh = MeshConfig::default();
    mesh.settings.deadline_ms = args.deadline_ms;
    mesh.settings.round_interval_ms = args.interval_ms;
    mesh.settings.rsa_bits = args.rsa_bits;
    mesh.settings.requests_per_peer_s = args.requests_per_peer_s;
    mesh.settings.quorum = args.quorum.unwrap_or(0);
    mesh.settings.threshold = args.threshold;
    mesh.settings.code_period_s = args.code_period_s;
    let mut entries = Vec::new();
    let mut hubs = Vec::new();
    for (i, (role, name)) in names.iter().enumerate() {
        let data_dir = dir.join(name);
        let peer: PeerId = keys::load_or_create_identity(&data_dir)?
            .public()
            .to_peer_id();
        let tcp_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", tcp[i]).parse()?;
        let quic_addr: Multiaddr = format!("/ip4/127.0.0.1/udp/{}/quic-v1", udp[i]).parse()?;
        let member = Member {
            peer_id: peer,
            addrs: vec![tcp_addr.to_string()],
            // Services know a requester by its node's name (RADIUS User-Name, a web login).
            name: match *role {
                "requester" => Some(UserName::new(name)?),
                _ => None,
            },
        };
        match *role {
            "generator" => mesh.generators.push(member),
            "distributor" => mesh.distributors.push(member),
            "requester" => mesh.requesters.push(member),
            "verifier" => mesh.verifiers.push(Verifier {
                peer_id: peer,
                addrs: member.addrs,
                users: vec!["*".into()],
            }),
            _ => {
                let client_id = ClientId(mesh.contributors.len() as u32 + 1);
                mesh.contributors.push(Contributor {
                    client_id,
                    peer_id: peer,
                    addrs: member.addrs,
                });
            }
        }
        if matches!(*role, "generator" | "distributor") {
            hubs.push(tcp_addr.clone().with(Protocol::P2p(peer)));
        }
        let listen = vec![
            tcp_addr.with(Protocol::P2p(peer)).to_string(),
            quic_addr.clone().with(Protocol::P2p(peer)).to_string(),
        ];
        let mut argv: Vec<String> = vec![
            exe.display().to_string(),
            "node".into(),
            "--role".into(),
            role.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--mesh".into(),
            mesh_path.display().to_string(),
            "--listen".into(),
            format!("/ip4/127.0.0.1/tcp/{}", tcp[i]),
            "--listen".into(),
            quic_addr.to_string(),
            "--json".into(),
        ];
        if *role == "contributor" {
            let client = mesh.contributors.len();
            let input_file = data_dir.join("input");
            if !input_file.exists() {
                let input: i64 = rand::thread_rng().gen();
                keys::write_file(&input_file, input.to_string().as_bytes(), 0o600)?;
            }
            argv.extend([
                "--client-id".into(),
                client.to_string(),
                "--input-file".into(),
                input_file.display().to_string(),
            ]);
        }
        let metrics = metrics_ports.get(i).map(|port| format!("127.0.0.1:{port}"));
        if let Some(addr) = &metrics {
            argv.extend(["--metrics".into(), addr.clone()]);
        }
        let fronts = match *role {
            "verifier" => {
                let v = mesh.verifiers.len() - 1;
                let (radius, http) = (
                    format!("127.0.0.1:{}", udp[fronts_at + v]),
                    format!("127.0.0.1:{}", tcp[fronts_at + v]),
                );
                let files = verifier_files(&data_dir, args.radius_rate_per_s)?;
                argv.extend([
                    "--radius".into(),
                    radius.clone(),
                    "--http".into(),
                    http.clone(),
                ]);
                Some((radius, http, files))
            }
            _ => None,
        };
        let log = data_dir.join("node.log");
        entries.push(NodeEntry {
            name: name.clone(),
            role,
            peer_id: peer.to_string(),
            listen,
            pid: None,
            state: State::Running,
            exit: None,
            restarts: 0,
            data_dir,
            log,
            metrics: metrics.map(|addr| format!("http://{addr}/metrics")),
            radius: fronts.as_ref().map(|f| f.0.clone()),
            radius_secret_file: fronts.as_ref().map(|f| f.2 .0.clone()),
            http: fronts
                .as_ref()
                .map(|f| format!("http://{}/validate/check", f.1)),
            http_token_file: fronts.as_ref().map(|f| f.2 .1.clone()),
            restart: argv,
        });
    }
    for entry in &mut entries {
        for hub in &hubs {
            if !hub.to_string().ends_with(&entry.peer_id) {
                entry.restart.extend(["--peer".into(), hub.to_string()]);
            }
        }
    }
    let text = toml::to_string(&mesh).context("writing the mesh config")?;
    keys::write_file(&mesh_path, text.as_bytes(), 0o644)?;
    load_mesh(&mesh_path).context("checking the mesh config just written")?;
    Ok(Planned {
        entries,
        mesh_path,
        generator: names[0].1.clone(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let (tcp, udp) = super::free_ports(16).unwrap();
        let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768);
        for ports in [&tcp, &udp] {
            let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
            assert_eq!(distinct.len(), 16, "{ports:?}");
            assert!(ports.iter().all(|p| *p < ephemeral_low), "{ports:?}");
        }
        for p in tcp {
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("released for the node");
        }
    }
}
