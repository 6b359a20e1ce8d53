//! `otpmesh mesh up`: a local mesh of real child processes on 127.0.0.1.
//!
//! Plans every node first (identity, ports, data dir), writes the mesh config they all share, starts
//! one `otpmesh node` per node with its stdout (JSON events) piped here and its stderr in its log
//! file, writes `mesh.json`, and follows the events until the rounds asked for are delivered.

use super::node::load_mesh;
use super::{Failure, Outcome};
use crate::cli::MeshUpArgs;
use crate::line::Line;
use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};
use otpmesh_node::{keys, NodeEvent};
use otpmesh_protocol::mesh::{Contributor, Member, MeshConfig, UserName, Verifier};
use otpmesh_protocol::phrase::ClientId;
use otpmesh_protocol::role::{self, Event};
use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Most nodes one `mesh up` starts.
pub const MAX_NODES: u32 = 512;
/// How long a child has to stop after SIGTERM before it is killed: longer than a node takes to
/// stop on its own.
const STOP_GRACE: Duration = super::node::STOP_BOUND.saturating_add(Duration::from_secs(2));

/// One planned node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeEntry {
    pub name: String,
    pub role: &'static str,
    pub peer_id: String,
    pub listen: Vec<String>,
    pub pid: Option<u32>,
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

#[derive(Serialize)]
struct MeshJson<'a> {
    nodes: &'a [NodeEntry],
    mesh_config: PathBuf,
}

/// Listen ports for `n` local nodes (TCP and UDP), each bound here and held until all are chosen.
///
/// They are drawn at random from *below* the kernel's ephemeral range: a port `bind(0)` hands out
/// comes from that range, and between now and the node binding it any outgoing connection or
/// port-0 listener on the machine (a parallel test's) could take it. Below the range only another
/// caller of this function could, and the random draw makes that unlikely.
pub fn free_ports(n: usize) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (ephemeral_low / 2, ephemeral_low);
    let mut rng = rand::thread_rng();
    let attempts = 64 * n + 1024;
    let mut tcp = Vec::with_capacity(n);
    let mut udp = Vec::with_capacity(n);
    for _ in 0..attempts {
        if tcp.len() == n && udp.len() == n {
            break;
        }
        let port = rng.gen_range(low..high);
        if tcp.len() < n {
            if let Ok(s) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                tcp.push(s);
            }
        } else if let Ok(s) = std::net::UdpSocket::bind(("127.0.0.1", port)) {
            udp.push(s);
        }
    }
    if tcp.len() < n || udp.len() < n {
        anyhow::bail!("found no {n} free ports between {low} and {high} on 127.0.0.1");
    }
    let tcp_ports = tcp
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    let udp_ports = udp
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok((tcp_ports, udp_ports))
}

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

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

struct Planned {
    entries: Vec<NodeEntry>,
    mesh_path: PathBuf,
    generator: String,
}

fn plan(args: &MeshUpArgs) -> anyhow::Result<Planned> {
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

/// Starts one node process; its events arrive on `events` as (name, JSON), then (name, None) when
/// its stdout closes. With `control`, its stdin is a pipe for control lines.
pub fn spawn(
    entry: &NodeEntry,
    events: mpsc::Sender<(String, Option<Line>)>,
    control: bool,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&entry.log)
        .with_context(|| format!("opening {}", entry.log.display()))?;
    let mut command = Command::new(&entry.restart[0]);
    command
        .args(&entry.restart[1..])
        .stdin(if control {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        // Its own process group: a Ctrl-C on the terminal reaches `mesh up` alone, which then
        // stops every node with one SIGTERM (a node takes a second signal as "stop at once").
        .process_group(0)
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info,libp2p_gossipsub=warn");
    }
    // A node here is configured by its argv alone (the restart line in mesh.json): the caller's
    // OTPMESH_* settings (a config file, a role) are not for every child. Logging is.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("OTPMESH_") && key != "OTPMESH_LOG_FORMAT" {
            command.env_remove(&*key);
        }
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", entry.name))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{}: no stdout", entry.name))?;
    let name = entry.name.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match Line::parse(&line) {
                Ok(line) => {
                    if events.send((name.clone(), Some(line))).await.is_err() {
                        return;
                    }
                }
                // Not an event of this version (its text may hold the user's own OTP: not logged).
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "a line the node printed is not an event")
                }
            }
        }
        let _ = events.send((name, None)).await;
    });
    Ok(child)
}

/// Asks every child to stop (SIGTERM), then kills what is still running after the grace period.
pub async fn stop_all(children: &mut HashMap<String, Child>) {
    for child in children.values() {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    // One deadline for all: they stop side by side.
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for (name, child) in children.iter_mut() {
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(%name, "did not stop after SIGTERM; killing");
            let _ = child.kill().await;
        }
    }
}

pub async fn up(args: MeshUpArgs) -> Outcome {
    let planned = plan(&args)?;
    let mut entries = planned.entries;
    let (tx, mut rx) = mpsc::channel(4096);
    let mut children = HashMap::new();
    for entry in &mut entries {
        let child = spawn(entry, tx.clone(), false)?;
        entry.pid = child.id();
        children.insert(entry.name.clone(), child);
    }
    drop(tx);
    let dir = absolute(&args.dir)?;
    let mesh_json = dir.join("mesh.json");
    let json = serde_json::to_string_pretty(&MeshJson {
        nodes: &entries,
        mesh_config: planned.mesh_path.clone(),
    })
    .context("writing mesh.json")?;
    keys::write_file(&mesh_json, json.as_bytes(), 0o644)?;
    for v in entries.iter().filter(|e| e.role == "verifier") {
        // Which setting lets every local PAM client in, said once (stderr: stdout is events).
        eprintln!(
            "{}: RADIUS on {} from 127.0.0.1 without a Message-Authenticator \
             (require_message_authenticator = false in {}, for Debian 12's pam_radius_auth); \
             /validate/check at {}",
            v.name,
            v.radius.as_deref().unwrap_or("?"),
            v.data_dir.join("radius-clients.toml").display(),
            v.http.as_deref().unwrap_or("?"),
        );
    }

    let result = follow(&args, &entries, &planned.generator, &mesh_json, &mut rx).await;
    stop_all(&mut children).await;
    result
}

async fn follow(
    args: &MeshUpArgs,
    entries: &[NodeEntry],
    generator: &str,
    mesh_json: &Path,
    rx: &mut mpsc::Receiver<(String, Option<Line>)>,
) -> Outcome {
    let total = entries.len();
    let bar = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let say = |line: String| {
        if !args.json {
            bar.suspend(|| println!("{line}"));
        }
    };
    say(format!(
        "mesh of {total} nodes starting; see {}",
        mesh_json.display()
    ));
    let mut listening = BTreeSet::new();
    let mut subscribed = BTreeSet::new();
    let mut formed = false;
    let mut delivered = 0u32;
    // Threshold mode: a round is delivered when every generator has handed its share over.
    let generators: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.role == "generator")
        .map(|e| e.name.as_str())
        .collect();
    let mut handed: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_secs));
    tokio::pin!(deadline);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        let (name, value) = tokio::select! {
            got = rx.recv() => match got {
                Some(got) => got,
                None => return Err(anyhow!("every node has exited").into()),
            },
            _ = &mut deadline, if args.rounds.is_some() => {
                return Err(Failure { code: 1, error: anyhow!(
                    "only {delivered} of {} rounds were delivered within {} s; see the node logs under {}",
                    args.rounds.unwrap_or(0), args.timeout_secs, args.dir.display()) });
            }
            _ = sigterm.recv() => { say("stopping".into()); return Ok(()) }
            _ = tokio::signal::ctrl_c() => { say("stopping".into()); return Ok(()) }
        };
        let Some(line) = value else {
            return Err(anyhow!("{name} exited unexpectedly; see its log").into());
        };
        if args.json {
            let mut tagged = serde_json::to_value(&line).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut tagged {
                map.insert("node".into(), Value::String(name.clone()));
            }
            // Whoever reads the events has gone (a closed pipe): stop the mesh, not panic.
            if writeln!(std::io::stdout(), "{tagged}").is_err() {
                return Ok(());
            }
        }
        let event = match line {
            Line::Node(NodeEvent::Listening { .. }) => {
                listening.insert(name.clone());
                None
            }
            Line::Node(NodeEvent::Subscribed { .. }) => {
                subscribed.insert(name.clone());
                None
            }
            Line::Node(NodeEvent::GossipRejected { reason, .. }) => {
                say(format!("{name}: rejected: {reason}"));
                None
            }
            Line::Node(NodeEvent::Role(event)) => Some(event),
            _ => None,
        };
        match event {
            Some(Event::RoundOpened { round, .. }) if name == generator => {
                say(format!("round {round}: opened"))
            }
            Some(Event::RoundSealed {
                round,
                included,
                commitment,
                ..
            }) if name == generator => {
                let included: Vec<String> = included.iter().map(|c| c.0.to_string()).collect();
                say(format!(
                    "round {round}: sealed with clients [{}], commitment {commitment}",
                    included.join(",")
                ));
            }
            Some(Event::RoundFailed { round, reason }) if name == generator => {
                say(format!("round {round}: failed: {reason}"));
            }
            Some(Event::RoundDeliveredAll { round }) if generators.contains(name.as_str()) => {
                let by = handed.entry(round.0).or_default();
                by.insert(name.clone());
                if by.len() < generators.len() {
                    continue;
                }
                handed.remove(&round.0);
                delivered += 1;
                say(format!("round {round}: delivered to every distributor"));
                if args.rounds.is_some_and(|n| delivered >= n) {
                    bar.finish_and_clear();
                    say(format!(
                        "{delivered} round(s) sealed and delivered; stopping the mesh"
                    ));
                    return Ok(());
                }
            }
            Some(Event::OtpReceived { round, .. } | Event::ThresholdOtpReceived { round, .. }) => {
                say(format!("{name}: received an OTP for round {round}"))
            }
            // Only refusals of who asked are news; the others (no round yet, a retry) are routine.
            Some(Event::RequestRefused {
                failure: role::Failure::Unauthorised,
                reason,
                ..
            })
            | Some(Event::PhraseRejected { reason, .. }) => {
                say(format!("{name}: rejected: {reason}"));
            }
            _ => {}
        }
        if !formed && subscribed.len() == total {
            formed = true;
            say(format!("mesh formed: all {total} nodes subscribed"));
        }
        bar.set_message(if formed {
            format!("{delivered} round(s) delivered")
        } else {
            format!(
                "forming mesh: {}/{total} listening, {}/{total} subscribed",
                listening.len(),
                subscribed.len()
            )
        });
    }
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
