//! `otpmesh node`: join a mesh as one role.

use super::{Failure, Outcome};
use crate::cli::{NodeArgs, Role};
use crate::line::{Line, Process};
use crate::output;
use crate::printer::Printer;
use anyhow::{anyhow, bail, Context};
use libp2p::{Multiaddr, PeerId};
use otpmesh_node::{NodeConfig, NodeEvent, RoleSpec};
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::phrase::{ClientId, UserInput};
use otpmesh_protocol::round::RoundId;
use std::io::IsTerminal;
use std::path::Path;

/// A node told to stop has this long (its grace for in-flight work, and some) before the process
/// gives up on stopping cleanly.
pub const STOP_BOUND: std::time::Duration =
    otpmesh_node::event_loop::STOP_GRACE.saturating_add(std::time::Duration::from_secs(3));

/// How long a stopped node waits for its last lines to be written (a reader that stopped reading
/// does not keep it from exiting).
const PRINT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Largest config, mesh or input file read.
pub const MAX_CONFIG_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a small text file, refusing anything larger than a config can be.
pub fn read_bounded(path: &Path) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    if len > MAX_CONFIG_FILE_BYTES {
        bail!(
            "{}: {len} bytes is more than the {MAX_CONFIG_FILE_BYTES} a config file may have",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
}

/// Loads and checks a mesh config.
pub fn load_mesh(path: &Path) -> anyhow::Result<MeshConfig> {
    let text = read_bounded(path)?;
    MeshConfig::from_toml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn parse_addrs(what: &str, texts: &[String]) -> anyhow::Result<Vec<Multiaddr>> {
    texts
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e| anyhow!("{what} {t:?} is not a multiaddr: {e}"))
        })
        .collect()
}

fn read_input(args: &NodeArgs) -> anyhow::Result<Option<UserInput>> {
    let text = match (&args.input, &args.input_file) {
        (Some(_), Some(_)) => bail!("give --input or --input-file, not both"),
        (Some(t), None) => t.clone(),
        (None, Some(path)) => read_bounded(path)?,
        (None, None) => return Ok(None),
    };
    Ok(Some(text.parse::<UserInput>().context("--input")?))
}

/// The parts of a node's settings that stand on their own: addresses, PeerIds, the input, the
/// mesh config.
pub struct Parts {
    pub listen: Vec<Multiaddr>,
    pub peers: Vec<Multiaddr>,
    pub distributors: Vec<PeerId>,
    pub input: Option<UserInput>,
    pub mesh: Option<MeshConfig>,
    pub metrics: Option<std::net::SocketAddr>,
}

pub fn parse_parts(args: &NodeArgs) -> anyhow::Result<Parts> {
    let mut listen = parse_addrs("--listen", &args.listen)?;
    if listen.is_empty() {
        listen.push("/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr"));
    }
    let distributors = args
        .distributors
        .iter()
        .map(|t| {
            t.parse::<PeerId>()
                .map_err(|e| anyhow!("--distributor {t:?} is not a PeerId: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Parts {
        listen,
        peers: parse_addrs("--peer", &args.peers)?,
        distributors,
        input: read_input(args)?,
        mesh: args.mesh.as_deref().map(load_mesh).transpose()?,
        metrics: args
            .metrics
            .as_deref()
            .map(|t| {
                t.parse()
                    .map_err(|e| anyhow!("--metrics {t:?} is not an IP:PORT address: {e}"))
            })
            .transpose()?,
    })
}

/// The node's config, and whether a contributor has no input and must ask its user.
pub fn build(args: &NodeArgs) -> anyhow::Result<(NodeConfig, bool)> {
    let parts = parse_parts(args)?;
    let role = args.role.ok_or_else(|| {
        anyhow!("--role is required (contributor, generator, distributor, requester or verifier)")
    })?;
    let data_dir = args
        .data_dir
        .clone()
        .ok_or_else(|| anyhow!("--data-dir is required"))?;
    let mut mesh = parts
        .mesh
        .ok_or_else(|| anyhow!("--mesh FILE is required: the mesh config says who may do what"))?;
    mesh.open |= args.open;
    let mut ask = false;
    let role = match role {
        Role::Contributor => {
            let client = args
                .client_id
                .ok_or_else(|| anyhow!("a contributor needs --client-id N"))?;
            ask = parts.input.is_none() && !args.control_stdin;
            RoleSpec::Contributor {
                client: ClientId(client),
                input: parts.input,
            }
        }
        Role::Generator => RoleSpec::Generator,
        Role::Distributor => RoleSpec::Distributor,
        Role::Requester => RoleSpec::Requester {
            distributors: parts.distributors,
        },
        Role::Verifier => RoleSpec::Verifier {
            fronts: fronts(args, &data_dir)?,
        },
    };
    let config = NodeConfig {
        role,
        data_dir,
        listen: parts.listen,
        peers: parts.peers,
        mesh,
        mdns: args.mdns,
        manual_rounds: args.manual_rounds,
        seed: args.seed,
        metrics: parts.metrics,
    };
    Ok((config, ask))
}

fn socket_addr(flag: &str, text: &str) -> anyhow::Result<std::net::SocketAddr> {
    text.parse()
        .map_err(|e| anyhow!("--{flag} {text:?} is not an IP:PORT address: {e}"))
}

/// A verifier's fronts from its flags; each needs its secrets file (0600).
fn fronts(args: &NodeArgs, data_dir: &Path) -> anyhow::Result<otpmesh_node::verifier::Fronts> {
    use otpmesh_node::verifier;
    let mut fronts = verifier::Fronts::default();
    if args.radius.is_none() && args.http.is_none() {
        bail!("a verifier needs --radius IP:PORT, --http IP:PORT or both: they are its doors");
    }
    if let Some(text) = &args.radius {
        let addr = socket_addr("radius", text)?;
        let file = args
            .radius_clients
            .clone()
            .unwrap_or_else(|| data_dir.join("radius-clients.toml"));
        let clients = verifier::load_radius_clients(&file).context("--radius-clients")?;
        fronts.radius = Some((addr, clients));
    }
    if let Some(text) = &args.http {
        let addr = socket_addr("http", text)?;
        if !addr.ip().is_loopback() && !args.http_allow_remote {
            bail!(
                "--http {addr} is not a loopback address: put a TLS proxy in front and pass \
                 --http-allow-remote, or listen on 127.0.0.1"
            );
        }
        let file = args
            .http_tokens
            .clone()
            .unwrap_or_else(|| data_dir.join("http-tokens.toml"));
        let parties = verifier::load_parties(&file).context("--http-tokens")?;
        fronts.http = Some((addr, parties));
    }
    Ok(fronts)
}

/// Asks the user for the integer for `round` until one parses (or stdin closes).
fn prompt(round: RoundId) -> Option<UserInput> {
    let stdin = std::io::stdin();
    loop {
        eprint!("round {round}: enter an integer: ");
        let mut line = String::new();
        if stdin.read_line(&mut line).ok()? == 0 {
            return None;
        }
        match line.parse::<UserInput>() {
            Ok(input) => return Some(input),
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// Applies control lines from stdin until it closes; a bad line is reported as an event.
async fn read_control(client: otpmesh_node::Client) {
    use otpmesh_node::control::{ControlLine, MAX_CONTROL_LINE};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut stdin)
            .take(MAX_CONTROL_LINE as u64 + 1)
            .read_line(&mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let result = match ControlLine::parse(line.trim_end()) {
            Ok(control) => control.apply(&client).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "control line refused");
            println!(
                "{}",
                Line::Process(Process::ControlRefused {
                    reason: e.to_string()
                })
            );
            if line.len() > MAX_CONTROL_LINE {
                return;
            }
        }
    }
}

pub async fn run(args: NodeArgs) -> Outcome {
    let bad = |error| Failure { code: 2, error };
    let (config, can_prompt) = build(&args).map_err(bad)?;
    if can_prompt && !std::io::stdin().is_terminal() {
        return Err(bad(anyhow!("a contributor needs an integer each round: pass --input N or --input-file FILE, or run it on a terminal to be asked")));
    }
    let role = config.role.name();
    let node = otpmesh_node::start(config).map_err(|e| Failure::from(anyhow!(e)))?;
    let (client, mut events, peer_id) = (node.client.clone(), node.events, node.peer_id);
    tracing::info!(peer_id = %node.peer_id, role, "node started");
    let metrics = node.metrics_addr.map(|a| format!("http://{a}/metrics"));
    let radius = node.radius_addr.map(|a| a.to_string());
    let http = node.http_addr.map(|a| format!("http://{a}/validate/check"));
    if args.json {
        println!(
            "{}",
            Line::Process(Process::Started {
                peer_id: node.peer_id,
                role: role.into(),
                metrics,
                radius,
                http,
            })
        );
    } else {
        println!("{role} {} starting", node.peer_id);
        if let Some(url) = metrics {
            println!("metrics at {url}");
        }
        if let Some(addr) = radius {
            println!("RADIUS at {addr} (udp)");
        }
        if let Some(url) = http {
            println!("validate at {url}");
        }
    }
    let running = tokio::spawn(node.event_loop.run());
    if args.control_stdin {
        tokio::spawn(read_control(client.clone()));
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut out = Printer::start().context("starting the output thread")?;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if let NodeEvent::InputNeeded { round } = &event {
                        if can_prompt {
                            let (round, client) = (*round, client.clone());
                            tokio::spawn(async move {
                                if let Ok(Some(input)) = tokio::task::spawn_blocking(move || prompt(round)).await {
                                    let _ = client.input(round, input).await;
                                }
                            });
                        }
                    }
                    let line = if args.json { Some(output::json(&event)) } else { output::human(&event) };
                    if let Some(line) = line {
                        out.print(line);
                    }
                    // Lines go out together when events come in bursts: one write, not one each.
                    if events.is_empty() {
                        out.flush();
                    }
                }
                None => break,
            },
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Stop gracefully (in-flight requests answered, storage closed), within a bound. A second
    // Ctrl-C stops at once; another SIGTERM (a supervisor repeating itself, or `mesh up` after
    // the terminal's Ctrl-C reached its whole process group) does not.
    let stopped = tokio::select! {
        stopped = tokio::time::timeout(STOP_BOUND, client.shutdown()) => match stopped {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow!("the node failed before it could stop cleanly: {e}")),
            Err(_) => Err(anyhow!("the node did not stop within {STOP_BOUND:?}")),
        },
        _ = tokio::signal::ctrl_c() => {
            Err(anyhow!("stopped at once (Ctrl-C again) before the requests in flight were answered"))
        }
    };
    // What the node said while stopping, then that it stopped.
    while let Ok(event) = events.try_recv() {
        let line = if args.json {
            Some(output::json(&event))
        } else {
            output::human(&event)
        };
        if let Some(line) = line {
            out.print(line);
        }
    }
    if let Err(e) = stopped {
        out.finish(PRINT_GRACE);
        return Err(e.into());
    }
    if let Err(e) = running.await {
        out.finish(PRINT_GRACE);
        return Err(anyhow!("the node's event loop failed: {e}").into());
    }
    out.print(if args.json {
        Line::Process(Process::Stopped).to_string()
    } else {
        format!("{role} {peer_id} stopped")
    });
    out.finish(PRINT_GRACE);
    Ok(())
}
