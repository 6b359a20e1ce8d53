//! Where a scenario's nodes run: real child processes (the default), or in this process.
//! Both report events as (node name, JSON) and take the same instructions.

use super::layout::Planned;
use super::simulated::Simulated;
use super::spec::RequestOutcome;
use crate::cmd::mesh::{spawn, NodeEntry};
use crate::line::{Line, Process};
use anyhow::{anyhow, Context};
use otpmesh_node::ask::{self, Answer, Asker, Code, Combined, Failed, Issued, Password, Question};
use otpmesh_node::control::ControlLine;
use otpmesh_node::Client;
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::wire::VerifyResult;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events buffered from all nodes.
pub const EVENT_QUEUE: usize = 16_384;
/// How long a one-shot request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a process whose output has closed may take to exit.
pub const REAP_WAIT: Duration = Duration::from_secs(5);

/// How long a node may take to read a control line off its stdin.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

pub type Events = mpsc::Receiver<(String, Option<Line>)>;

/// What a one-shot request came to.
#[derive(Clone, Debug)]
pub struct RequestResult {
    pub outcome: RequestOutcome,
    pub otp: Option<String>,
    pub round: Option<u64>,
    /// Threshold mode: the OTP's counter (verification names it).
    pub counter: Option<u64>,
    pub detail: String,
}

impl RequestResult {
    fn issued(otp: String, round: u64, counter: Option<u64>) -> RequestResult {
        RequestResult {
            outcome: RequestOutcome::Otp,
            otp: Some(otp),
            round: Some(round),
            counter,
            detail: String::new(),
        }
    }

    /// What a one-shot `otpmesh request --json` printed, or why it failed (exit code, error line).
    fn from_output(out: &std::process::Output) -> anyhow::Result<RequestResult> {
        if !out.status.success() {
            let code = out.status.code().unwrap_or(1) as u8;
            return Ok(RequestResult::from_failure(code, last_error(&out.stderr)));
        }
        let v: Value =
            serde_json::from_slice(&out.stdout).context("reading otpmesh request's JSON")?;
        Ok(RequestResult {
            outcome: RequestOutcome::Otp,
            otp: v["otp"].as_str().map(str::to_string),
            round: v["round"].as_u64(),
            // Threshold mode prints it as a string (it does not fit a JSON double).
            counter: v["counter"].as_str().and_then(|c| c.parse().ok()),
            detail: String::new(),
        })
    }

    /// Sorts a failure reason the way `otpmesh request`'s exit codes do.
    fn from_failure(code: u8, detail: String) -> RequestResult {
        let outcome = match code {
            3 => RequestOutcome::Unreachable,
            4 => RequestOutcome::Unauthorised,
            5 => RequestOutcome::NoRound,
            6 => RequestOutcome::QuorumUnavailable,
            _ => RequestOutcome::Refused,
        };
        RequestResult {
            outcome,
            otp: None,
            round: None,
            counter: None,
            detail,
        }
    }
}

/// Runs `otpmesh ARGS --json --distributor … --data-dir …` for `requester`, bounded in time.
async fn run_cli(
    args: &[&str],
    requester: &Planned,
    distributor: &Planned,
) -> anyhow::Result<std::process::Output> {
    run_cli_with(args, requester, &[distributor]).await
}

/// [`run_cli`] with one `--distributor` per distributor.
async fn run_cli_with(
    args: &[&str],
    requester: &Planned,
    distributors: &[&Planned],
) -> anyhow::Result<std::process::Output> {
    let exe = std::env::current_exe()?;
    let mut command = tokio::process::Command::new(exe);
    command.args(args).arg("--json");
    for d in distributors {
        command.arg("--distributor").arg(d.addr.to_string());
    }
    let run = command
        .arg("--data-dir")
        .arg(&requester.data_dir)
        .arg("--timeout-secs")
        .arg(REQUEST_TIMEOUT.as_secs().to_string())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), run)
        .await
        .map_err(|_| anyhow!("otpmesh {} did not finish", args[0]))?
        .map_err(Into::into)
}

/// The node config of a one-shot command run with `requester`'s identity against `distributors`.
/// The asker for `requester`'s identity against `distributors`.
fn asker(
    requester: &Planned,
    distributors: &[&Planned],
    seed: Option<u64>,
) -> anyhow::Result<Asker> {
    Ok(Asker {
        data_dir: requester.data_dir.clone(),
        peers: distributors.iter().map(|d| d.addr.clone()).collect(),
        // The scenario's mesh.toml, beside every node's data dir: a threshold requester believes
        // only what it says.
        mesh: match crate::cmd::request::mesh_beside(&requester.data_dir) {
            Some(path) => crate::cmd::node::load_mesh(&path)?,
            None => MeshConfig::default(),
        },
        seed,
        timeout: REQUEST_TIMEOUT,
    })
}

/// The last `error: …` line a command printed (or all it printed).
fn last_error(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(stderr.trim())
        .to_string()
}

pub enum Backend {
    Process(Processes),
    InProcess(InProcess),
    /// Every node on the simulator, in virtual time.
    Sim(Box<Simulated>),
}

pub struct Processes {
    tx: mpsc::Sender<(String, Option<Line>)>,
    children: HashMap<String, (Child, ChildStdin)>,
    /// Kinds of event the nodes started from now on print but nobody reads (see [`spawn`]).
    unread: &'static [&'static str],
}

pub struct InProcess {
    tx: mpsc::Sender<(String, Option<Line>)>,
    nodes: HashMap<String, (Client, JoinHandle<()>)>,
    /// The nodes that run as child processes all the same ([`Backend::in_process_but`]).
    apart: Processes,
    apart_names: HashSet<String>,
    /// What their argv is run under (e.g. `taskset -c 0`).
    wrap: Vec<String>,
}

impl Processes {
    fn start(&mut self, node: &Planned, wrap: &[String]) -> anyhow::Result<()> {
        let entry = NodeEntry {
            name: node.name.clone(),
            role: "node",
            peer_id: node.peer_id.to_string(),
            listen: vec![node.addr.to_string()],
            data_dir: node.data_dir.clone(),
            log: node.data_dir.join("node.log"),
            restart: wrap.iter().cloned().chain(node.argv.clone()).collect(),
            ..NodeEntry::default()
        };
        self.start_entry(&entry)?;
        Ok(())
    }

    fn start_entry(&mut self, entry: &NodeEntry) -> anyhow::Result<Option<u32>> {
        let mut child = spawn(entry, self.tx.clone(), true, self.unread)?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("{}: no stdin", entry.name))?;
        let pid = child.id();
        self.children.insert(entry.name.clone(), (child, stdin));
        Ok(pid)
    }

    async fn reap(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let (mut child, _) = self.children.remove(name)?;
        match tokio::time::timeout(REAP_WAIT, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        }
    }

    async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let (mut child, _) = self
            .children
            .remove(name)
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        child
            .start_kill()
            .with_context(|| format!("killing {name}"))?;
        child.wait().await?;
        Ok(())
    }

    async fn control(&mut self, name: &str, line: ControlLine) -> anyhow::Result<()> {
        let (_, stdin) = self
            .children
            .get_mut(name)
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        let mut text = line.to_line();
        text.push('\n');
        // A node that stopped reading its stdin must not hang the runner.
        let write = async {
            stdin.write_all(text.as_bytes()).await?;
            stdin.flush().await
        };
        tokio::time::timeout(CONTROL_TIMEOUT, write)
            .await
            .map_err(|_| anyhow!("{name} took no control line within {CONTROL_TIMEOUT:?}"))?
            .with_context(|| format!("instructing {name}"))
    }

    async fn stop_all(&mut self) {
        let mut children: HashMap<String, Child> = self
            .children
            .drain()
            .map(|(name, (child, _stdin))| (name, child))
            .collect();
        crate::cmd::mesh::stop_all(&mut children).await;
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.children.get(name).and_then(|(c, _)| c.id())
    }

    fn pids(&self) -> Vec<u32> {
        self.children.values().filter_map(|(c, _)| c.id()).collect()
    }
}

impl Backend {
    pub fn new(in_process: bool) -> (Backend, Events) {
        if in_process {
            return Backend::in_process_but(HashSet::new(), Vec::new());
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let backend = Backend::Process(Processes {
            tx,
            children: HashMap::new(),
            unread: &[],
        });
        (backend, rx)
    }

    /// Every node in this process but those named in `apart`, which run as child processes
    /// under `wrap` (e.g. `["taskset", "-c", "0"]`: a benchmark keeps the node it measures on a
    /// core of its own, away from the load it puts on it).
    pub fn in_process_but(apart: HashSet<String>, wrap: Vec<String>) -> (Backend, Events) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let backend = Backend::InProcess(InProcess {
            apart: Processes {
                tx: tx.clone(),
                children: HashMap::new(),
                unread: &[],
            },
            tx,
            nodes: HashMap::new(),
            apart_names: apart,
            wrap,
        });
        (backend, rx)
    }

    /// Nodes started as processes from now on: the lines of these kinds of event are taken off
    /// their pipes unread (a benchmark's load makes a line per OTP that it has no use for).
    pub fn leave_unread(&mut self, kinds: &'static [&'static str]) {
        match self {
            Backend::Process(p) => p.unread = kinds,
            Backend::InProcess(p) => p.apart.unread = kinds,
            Backend::Sim(_) => {}
        }
    }

    /// Every node on the simulator, its choices drawn from `seed`.
    pub fn simulated(seed: u64) -> (Backend, Events) {
        // Nothing sends on it: the simulator's lines come from `Simulated::next_line`.
        let (_, rx) = mpsc::channel(1);
        (Backend::Sim(Box::new(Simulated::new(seed))), rx)
    }

    /// The time the nodes live in: the wall clock's, or the simulator's virtual one (both since
    /// the Unix epoch).
    pub fn clock(&self) -> Duration {
        match self {
            Backend::Sim(s) => s.clock(),
            _ => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// Lets `by` pass on the nodes' clock.
    pub async fn sleep(&mut self, by: Duration) -> anyhow::Result<()> {
        match self {
            Backend::Sim(s) => s.sleep(by),
            _ => {
                tokio::time::sleep(by).await;
                Ok(())
            }
        }
    }

    /// Asks `question` once as `requester` of `distributors`, reading the answer as `A`: the
    /// answer, or why none came (in time).
    async fn ask<A: Answer>(
        &mut self,
        question: Question,
        requester: &Planned,
        distributors: &[&Planned],
        seed: Option<u64>,
    ) -> anyhow::Result<Result<A, Failed>> {
        let asker = asker(requester, distributors, seed)?;
        Ok(match self {
            Backend::Sim(s) => s
                .ask(&asker.config(question), REQUEST_TIMEOUT, ask::read::<A>)?
                .unwrap_or_else(|| Err(Failed::no_answer(REQUEST_TIMEOUT))),
            _ => asker.ask(question).await,
        })
    }

    pub async fn start(&mut self, node: &Planned) -> anyhow::Result<()> {
        match self {
            Backend::Sim(s) => s.start(node)?,
            Backend::Process(p) => p.start(node, &[])?,
            Backend::InProcess(p) if p.apart_names.contains(&node.name) => {
                p.apart.start(node, &p.wrap)?
            }
            Backend::InProcess(p) => {
                let config = node
                    .config
                    .clone()
                    .ok_or_else(|| anyhow!("{} does not run as a node", node.name))?;
                let started = otpmesh_node::start(config)
                    .with_context(|| format!("starting {}", node.name))?;
                let (client, mut events) = (started.client, started.events);
                let (tx, name, peer) = (p.tx.clone(), node.name.clone(), node.peer_id);
                let _ = tx
                    .send((
                        name.clone(),
                        Some(Line::Process(Process::Started {
                            peer_id: peer,
                            role: format!("{:?}", node.role).to_lowercase(),
                            metrics: None,
                            radius: None,
                            http: None,
                        })),
                    ))
                    .await;
                let event_loop = started.event_loop;
                let handle = tokio::spawn(async move {
                    let forward = async {
                        while let Some(e) = events.recv().await {
                            if tx.send((name.clone(), Some(Line::Node(e)))).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = event_loop.run() => {}
                        _ = forward => {}
                    }
                    let _ = tx.send((name, None)).await;
                });
                p.nodes.insert(node.name.clone(), (client, handle));
            }
        }
        Ok(())
    }

    /// Starts `entry`'s argv as a process with a control pipe on its stdin (the argv must say
    /// `--control-stdin`); returns its process id.
    pub fn start_process(&mut self, entry: &NodeEntry) -> anyhow::Result<Option<u32>> {
        match self {
            Backend::Process(p) => p.start_entry(entry),
            Backend::InProcess(p) if p.apart_names.contains(&entry.name) => {
                p.apart.start_entry(entry)
            }
            _ => Err(anyhow!("{} cannot run as a process here", entry.name)),
        }
    }

    /// How the process of node `name`, whose output has ended, exited: its exit status or the
    /// signal that ended it (one it does not end within [`REAP_WAIT`] is killed).
    pub async fn reap(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        match self {
            Backend::Process(p) => p.reap(name).await,
            Backend::InProcess(p) => p.apart.reap(name).await,
            Backend::Sim(_) => None,
        }
    }

    /// The OS process id of node `name`, if it runs as a process.
    pub fn pid(&self, name: &str) -> Option<u32> {
        match self {
            Backend::Process(p) => p.pid(name),
            Backend::InProcess(p) => p.apart.pid(name),
            Backend::Sim(_) => None,
        }
    }

    /// The OS process ids of the nodes running as processes.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Backend::Process(p) => p.pids(),
            Backend::InProcess(p) => p.apart.pids(),
            Backend::Sim(_) => Vec::new(),
        }
    }

    /// Stops a node abruptly: SIGKILL for a process, an aborted task in-process.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        match self {
            Backend::Sim(s) => s.kill(name)?,
            Backend::Process(p) => p.kill(name).await?,
            Backend::InProcess(p) if p.apart.children.contains_key(name) => {
                p.apart.kill(name).await?
            }
            Backend::InProcess(p) => {
                let (_, handle) = p
                    .nodes
                    .remove(name)
                    .ok_or_else(|| anyhow!("{name} is not running"))?;
                handle.abort();
                let _ = handle.await;
            }
        }
        Ok(())
    }

    pub async fn control(&mut self, name: &str, line: ControlLine) -> anyhow::Result<()> {
        match self {
            Backend::Sim(s) => s.control(name, line)?,
            Backend::Process(p) => p.control(name, line).await?,
            Backend::InProcess(p) if p.apart.children.contains_key(name) => {
                p.apart.control(name, line).await?
            }
            Backend::InProcess(p) => {
                let (client, _) = p
                    .nodes
                    .get(name)
                    .ok_or_else(|| anyhow!("{name} is not running"))?;
                line.apply(client)
                    .await
                    .map_err(|e| anyhow!("{name}: {e}"))?;
            }
        }
        Ok(())
    }

    /// One OTP request from `requester`'s identity to `distributor`.
    pub async fn request(
        &mut self,
        requester: &Planned,
        distributor: &Planned,
        seed: u64,
    ) -> anyhow::Result<RequestResult> {
        if let Backend::Process(_) = self {
            let args = ["request", "--seed", &seed.to_string()];
            let out = run_cli(&args, requester, distributor).await?;
            return RequestResult::from_output(&out);
        }
        let question = Question::Otp {
            distributor: distributor.peer_id,
        };
        let answer = self
            .ask::<Issued>(question, requester, &[distributor], Some(seed))
            .await?;
        Ok(match answer {
            Ok(i) => RequestResult::issued(i.otp, i.round.0, None),
            Err(f) => RequestResult::from_failure(f.failure.exit_code(), f.reason),
        })
    }

    /// One verification of `code` by `requester` at `distributor`: the verdict, or why there is none.
    pub async fn verify(
        &mut self,
        requester: &Planned,
        distributor: &Planned,
        code: &str,
    ) -> anyhow::Result<Result<VerifyResult, String>> {
        if let Backend::Process(_) = self {
            let out = run_cli(&["verify", "--otp", code], requester, distributor).await?;
            let parsed: Option<VerifyResult> = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| serde_json::from_value(v["result"].clone()).ok());
            return Ok(parsed.ok_or_else(|| last_error(&out.stderr)));
        }
        let question = Question::Verify {
            distributor: distributor.peer_id,
            code: code.to_string(),
        };
        let answer = self
            .ask::<VerifyResult>(question, requester, &[distributor], None)
            .await?;
        Ok(answer.map_err(|f| f.reason))
    }

    /// Threshold mode: one OTP for `requester` from a quorum of `distributors`.
    pub async fn threshold_request(
        &mut self,
        requester: &Planned,
        distributors: &[&Planned],
        seed: u64,
    ) -> anyhow::Result<RequestResult> {
        if let Backend::Process(_) = self {
            let args = ["request", "--threshold", "--seed", &seed.to_string()];
            let out = run_cli_with(&args, requester, distributors).await?;
            return RequestResult::from_output(&out);
        }
        let question = Question::ThresholdOtp {
            distributors: distributors.iter().map(|d| d.peer_id).collect(),
        };
        let answer = self
            .ask::<Combined>(question, requester, distributors, Some(seed))
            .await?;
        Ok(match answer {
            Ok(c) => RequestResult::issued(c.otp, c.round.0, Some(c.counter)),
            Err(f) => RequestResult::from_failure(f.failure.exit_code(), f.reason),
        })
    }

    /// Threshold mode: `requester` presents `code` for (round, counter) to a quorum.
    pub async fn threshold_verify(
        &mut self,
        requester: &Planned,
        distributors: &[&Planned],
        round: u64,
        counter: u64,
        code: &str,
    ) -> anyhow::Result<Result<VerifyResult, String>> {
        if let Backend::Process(_) = self {
            let (round_text, counter_text) = (round.to_string(), counter.to_string());
            let args = [
                "verify",
                "--threshold",
                "--round",
                &round_text,
                "--counter",
                &counter_text,
                "--otp",
                code,
            ];
            let out = run_cli_with(&args, requester, distributors).await?;
            let parsed: Option<VerifyResult> = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| serde_json::from_value(v["result"].clone()).ok());
            return Ok(parsed.ok_or_else(|| last_error(&out.stderr)));
        }
        let question = Question::ThresholdVerify {
            distributors: distributors.iter().map(|d| d.peer_id).collect(),
            round: otpmesh_protocol::round::RoundId(round),
            counter,
            code: code.to_string(),
        };
        let answer = self
            .ask::<VerifyResult>(question, requester, distributors, None)
            .await?;
        Ok(answer.map_err(|f| f.reason))
    }

    /// Threshold mode: a password for `requester` from `distributors` (`which`: the
    /// `--alphabet`/`--chars` flag and its value). The password, or why none came.
    pub async fn password(
        &mut self,
        requester: &Planned,
        distributors: &[&Planned],
        length: usize,
        which: (&str, &str),
    ) -> anyhow::Result<Result<zeroize::Zeroizing<String>, String>> {
        if let Backend::Process(_) = self {
            let length_text = length.to_string();
            let args = ["password", "--length", &length_text, which.0, which.1];
            let out = run_cli_with(&args, requester, distributors).await?;
            let parsed = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v["password"].as_str().map(|p| p.to_string().into()));
            return Ok(parsed.ok_or_else(|| last_error(&out.stderr)));
        }
        let alphabet = match which.0 {
            "--chars" => otpmesh_protocol::threshold::password::Alphabet::chars(which.1),
            _ => otpmesh_protocol::threshold::password::Alphabet::classes(which.1),
        }
        .map_err(|e| anyhow!("{e}"))?;
        let question = Question::Password {
            distributors: distributors.iter().map(|d| d.peer_id).collect(),
            alphabet,
            length,
        };
        let answer = self
            .ask::<Password>(question, requester, distributors, None)
            .await?;
        Ok(answer.map(|p| p.password).map_err(|f| f.reason))
    }

    /// Threshold mode: `requester`'s current time-step code from `distributors` (as `otpmesh code`
    /// shows it): (code, step, seconds left), or why none came.
    pub async fn code(
        &mut self,
        requester: &Planned,
        distributors: &[&Planned],
    ) -> anyhow::Result<Result<(zeroize::Zeroizing<String>, u64, u64), (u8, String)>> {
        if let Backend::Process(_) = self {
            let out = run_cli_with(&["code"], requester, distributors).await?;
            let parsed = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| {
                    Some((
                        v["code"].as_str()?.to_string().into(),
                        v["step"].as_u64()?,
                        v["seconds_left"].as_u64()?,
                    ))
                });
            let code = out.status.code().unwrap_or(1) as u8;
            return Ok(parsed.ok_or_else(|| (code, last_error(&out.stderr))));
        }
        let answer = self
            .ask::<Code>(Question::Code, requester, distributors, None)
            .await?;
        Ok(match answer {
            Ok(c) => Ok((c.code, c.step, c.seconds_left)),
            Err(f) => Err((f.failure.exit_code(), f.reason)),
        })
    }

    pub async fn stop_all(&mut self) {
        match self {
            Backend::Sim(s) => s.stop_all(),
            Backend::Process(p) => p.stop_all().await,
            Backend::InProcess(p) => {
                p.apart.stop_all().await;
                // Side by side: each lingers a moment for requests in flight, and a bench mesh
                // holds hundreds.
                let stopping = p.nodes.drain().map(|(_, (client, handle))| async move {
                    let _ = client.shutdown().await;
                    let _ = handle.await;
                });
                futures::future::join_all(stopping).await;
            }
        }
    }
}
