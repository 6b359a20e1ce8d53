//! The running `mesh up`: one loop that follows every node's events, supervises the processes and
//! carries out what the control socket asks.
//!
//! ```text
//!   node stdout ──(name, Line)──▶ ┐
//!   control.sock ──(Request)────▶ ├─▶ Lab::run ─▶ Steering + Backend (SIGKILL, spawn, block)
//!   restart timer, signals ─────▶ ┘        └────▶ mesh.json (state, pid, exit), the terminal
//! ```
//!
//! A node that dies is reported (its exit status, the last lines of its log) and marked `exited`
//! in `mesh.json`; the rest keep running. With `--restart-on-exit` it is started again after a
//! backoff that doubles up to [`MAX_BACKOFF`]. `mesh up` itself ends only on Ctrl-C, SIGTERM, or
//! once `--rounds N` are delivered.

use super::child::log_tail;
use super::control::{Asked, NodeStatus, Reply, Request};
use super::plan::{NodeEntry, State};
use super::ui::{self, view::View, Page};
use crate::cli::MeshUpArgs;
use crate::cmd::{Failure, Outcome};
use crate::line::Line;
use crate::scenario::backend::{Backend, Events};
use crate::steer::{Nodes, Steering};
use anyhow::anyhow;
use indicatif::ProgressBar;
use libp2p::PeerId;
use otpmesh_node::control::ControlLine;
use otpmesh_node::{keys, NodeEvent};
use otpmesh_protocol::role::{self, Event};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// First wait before a dead node is started again (`--restart-on-exit`); it doubles per restart.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a restarted node has to listen again before `mesh restart` says it did not.
const RESTART_WAIT: Duration = Duration::from_secs(30);
/// How long a round asked for by `mesh round` has to open.
const OPEN_WAIT: Duration = Duration::from_secs(15);
/// Lines of a dead node's log shown with its death.
const TAIL_LINES: usize = 5;

/// What `mesh up --json` says of its nodes' lives, between their own events.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum LabEvent<'a> {
    NodeExited {
        node: &'a str,
        status: &'a str,
        log_tail: &'a [String],
    },
    NodeStarted {
        node: &'a str,
        pid: Option<u32>,
        restarts: u32,
    },
    /// `--ui`: the live page's address.
    UiServing { url: &'a str },
}

/// A reply that waits on an event of the mesh.
enum Waiting {
    /// `mesh restart`: the node listens again.
    Listening {
        node: String,
        reply: oneshot::Sender<Reply>,
        until: Instant,
    },
    /// `mesh round`: the generator opens a round after `after`.
    Opened {
        after: u64,
        reply: oneshot::Sender<Reply>,
        until: Instant,
    },
}

impl Waiting {
    fn until(&self) -> Instant {
        match self {
            Waiting::Listening { until, .. } | Waiting::Opened { until, .. } => *until,
        }
    }
}

/// The nodes as the steering sees them.
struct Entries<'a>(&'a [NodeEntry]);

impl Nodes for Entries<'_> {
    fn peer_id(&self, name: &str) -> Option<PeerId> {
        self.0
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.peer_id.parse().ok())
    }

    fn runs(&self, name: &str) -> bool {
        self.0.iter().any(|e| e.name == name)
    }
}

#[derive(Serialize)]
struct MeshJson<'a> {
    nodes: &'a [NodeEntry],
    mesh_config: &'a PathBuf,
    /// The control socket (`otpmesh mesh status|kill|restart|… --dir DIR`).
    control: &'a PathBuf,
    /// `--ui`: the live page.
    #[serde(skip_serializing_if = "Option::is_none")]
    ui: Option<&'a str>,
}

/// `--ui`: the page and the picture it shows.
struct Live {
    page: Page,
    view: View,
    /// Something changed since the last picture was published.
    dirty: bool,
}

pub struct Lab<'a> {
    pub args: &'a MeshUpArgs,
    pub entries: Vec<NodeEntry>,
    pub mesh_json: PathBuf,
    pub mesh_config: PathBuf,
    pub control: PathBuf,
    pub backend: Backend,
    pub generator: String,
    pub bar: ProgressBar,
    steering: Steering,
    listening: BTreeSet<String>,
    subscribed: BTreeSet<String>,
    formed: bool,
    delivered: u32,
    /// The last round the generator opened.
    opened: u64,
    /// Threshold mode: a round is delivered when every generator has handed its share over.
    handed: BTreeMap<u64, BTreeSet<String>>,
    waiting: Vec<Waiting>,
    /// Dead nodes to start again, and when (`--restart-on-exit`).
    due: BTreeMap<String, Instant>,
    live: Option<Live>,
    began: Instant,
}

/// Whether the loop goes on.
enum Next {
    Continue,
    Done,
}

impl<'a> Lab<'a> {
    pub fn new(
        args: &'a MeshUpArgs,
        entries: Vec<NodeEntry>,
        paths: (PathBuf, PathBuf, PathBuf),
        backend: Backend,
        generator: String,
        bar: ProgressBar,
    ) -> Lab<'a> {
        let (mesh_json, mesh_config, control) = paths;
        Lab {
            args,
            entries,
            mesh_json,
            mesh_config,
            control,
            backend,
            generator,
            bar,
            steering: Steering::default(),
            listening: BTreeSet::new(),
            subscribed: BTreeSet::new(),
            formed: false,
            delivered: 0,
            opened: 0,
            handed: BTreeMap::new(),
            waiting: Vec::new(),
            due: BTreeMap::new(),
            live: None,
            began: Instant::now(),
        }
    }

    /// `--ui`: shows the mesh on `page` from now on.
    pub fn show_on(&mut self, page: Page) {
        let view = View::new(
            &self.entries,
            &self.generator,
            self.args.threshold.is_some(),
        );
        self.emit(&LabEvent::UiServing { url: &page.url });
        self.live = Some(Live {
            page,
            view,
            dirty: true,
        });
    }

    /// The live page's URL, with `--ui`.
    pub fn ui_url(&self) -> Option<&str> {
        self.live.as_ref().map(|l| l.page.url.as_str())
    }

    fn millis(&self) -> u64 {
        self.began.elapsed().as_millis() as u64
    }

    /// Node `name`'s links are gone (it ended or was killed).
    fn unlinked(&mut self, name: &str) {
        if let Some(live) = &mut self.live {
            live.view.ended(name);
        }
    }

    /// Publishes a new picture to the live page, if anything changed.
    fn publish(&mut self) {
        let now = self.millis();
        let Some(live) = &mut self.live else { return };
        if !live.dirty {
            return;
        }
        live.dirty = false;
        let steering = &self.steering;
        live.view
            .refresh(&self.entries, |n| steering.cut_off(n), now);
        live.page.publish(&live.view);
    }

    fn say(&self, line: String) {
        if !self.args.json {
            self.bar.suspend(|| println!("{line}"));
        }
    }

    /// Prints one JSON line (with `--json`); false once nobody reads them.
    fn emit(&self, value: &impl Serialize) -> bool {
        if !self.args.json {
            return true;
        }
        let text = serde_json::to_string(value).unwrap_or_default();
        writeln!(std::io::stdout(), "{text}").is_ok()
    }

    fn entry(&mut self, name: &str) -> Option<&mut NodeEntry> {
        self.entries.iter_mut().find(|e| e.name == name)
    }

    /// Writes `mesh.json` as things stand.
    pub fn write_mesh_json(&self) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(&MeshJson {
            nodes: &self.entries,
            mesh_config: &self.mesh_config,
            control: &self.control,
            ui: self.ui_url(),
        })?;
        keys::write_file(&self.mesh_json, json.as_bytes(), 0o644)?;
        Ok(())
    }

    fn save(&self) {
        if let Err(e) = self.write_mesh_json() {
            tracing::warn!(error = %e, "could not update mesh.json");
        }
    }

    /// Starts every planned node.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.entries.len() {
            let pid = self.backend.start_process(&controlled(&self.entries[i]))?;
            self.entries[i].pid = pid;
        }
        self.write_mesh_json()
    }

    pub async fn run(&mut self, events: &mut Events, asked: &mut mpsc::Receiver<Asked>) -> Outcome {
        let deadline = tokio::time::sleep(Duration::from_secs(self.args.timeout_secs));
        tokio::pin!(deadline);
        let mut publish = tokio::time::interval(ui::PUBLISH_EVERY);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| anyhow!("installing the SIGTERM handler: {e}"))?;
        loop {
            let wake = self
                .due
                .values()
                .copied()
                .chain(self.waiting.iter().map(Waiting::until))
                .min();
            let next = tokio::select! {
                got = events.recv() => match got {
                    Some((name, line)) => self.on_line(name, line).await?,
                    None => return Err(anyhow!("the node event stream closed").into()),
                },
                Some((request, reply)) = asked.recv() => {
                    self.on_request(request, reply).await;
                    Next::Continue
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    self.on_timer().await;
                    Next::Continue
                }
                _ = &mut deadline, if self.args.rounds.is_some() => {
                    return Err(Failure { code: 1, error: anyhow!(
                        "only {} of {} rounds were delivered within {} s; see the node logs under {}",
                        self.delivered, self.args.rounds.unwrap_or(0), self.args.timeout_secs,
                        self.args.dir.display()) });
                }
                _ = publish.tick(), if self.live.is_some() => {
                    self.publish();
                    continue;
                }
                _ = sigterm.recv() => { self.say("stopping".into()); return Ok(()) }
                _ = tokio::signal::ctrl_c() => { self.say("stopping".into()); return Ok(()) }
            };
            if let Next::Done = next {
                return Ok(());
            }
            if let Some(live) = &mut self.live {
                live.dirty = true;
            }
            self.progress();
        }
    }

    fn progress(&mut self) {
        let total = self.entries.len();
        if !self.formed && self.subscribed.len() == total {
            self.formed = true;
            self.say(format!("mesh formed: all {total} nodes subscribed"));
        }
        let down = self
            .entries
            .iter()
            .filter(|e| e.state != State::Running)
            .count();
        let down = match down {
            0 => String::new(),
            n => format!(", {n} down"),
        };
        self.bar.set_message(if self.formed {
            format!("{} round(s) delivered{down}", self.delivered)
        } else {
            format!(
                "forming mesh: {}/{total} listening, {}/{total} subscribed{down}",
                self.listening.len(),
                self.subscribed.len()
            )
        });
    }

    async fn on_line(&mut self, name: String, line: Option<Line>) -> anyhow::Result<Next> {
        let Some(line) = line else {
            self.ended(&name).await;
            return Ok(Next::Continue);
        };
        let now = self.millis();
        if let Some(live) = &mut self.live {
            live.view.on_line(&name, &line, now);
        }
        // mesh.json says running before anyone reading the events hears the node listens.
        if let Line::Node(NodeEvent::Listening { .. }) = line {
            self.listened(&name);
        }
        if self.args.json {
            let mut tagged = serde_json::to_value(&line).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut tagged {
                map.insert("node".into(), Value::String(name.clone()));
            }
            // Whoever reads the events has gone (a closed pipe): stop the mesh, not panic.
            if !self.emit(&tagged) {
                return Ok(Next::Done);
            }
        }
        let event = match line {
            Line::Node(NodeEvent::Subscribed { .. }) => {
                self.subscribed.insert(name.clone());
                None
            }
            Line::Node(NodeEvent::GossipRejected { reason, .. }) => {
                self.say(format!("{name}: rejected: {reason}"));
                None
            }
            Line::Node(NodeEvent::Role(event)) => Some(event),
            _ => None,
        };
        Ok(match event {
            Some(event) => self.on_event(&name, event),
            None => Next::Continue,
        })
    }

    fn on_event(&mut self, name: &str, event: Event) -> Next {
        let from_generator = name == self.generator;
        match event {
            Event::RoundOpened { round, .. } if from_generator => {
                self.opened = self.opened.max(round.0);
                self.answer_opened();
                self.say(format!("round {round}: opened"));
            }
            Event::RoundSealed {
                round,
                included,
                commitment,
                ..
            } if from_generator => {
                let included: Vec<String> = included.iter().map(|c| c.0.to_string()).collect();
                self.say(format!(
                    "round {round}: sealed with clients [{}], commitment {commitment}",
                    included.join(",")
                ));
            }
            Event::RoundFailed { round, reason } if from_generator => {
                self.say(format!("round {round}: failed: {reason}"));
            }
            Event::RoundDeliveredAll { round } => {
                let generators = self.entries.iter().filter(|e| e.role == "generator");
                let all: BTreeSet<&str> = generators.map(|e| e.name.as_str()).collect();
                if !all.contains(name) {
                    return Next::Continue;
                }
                let by = self.handed.entry(round.0).or_default();
                by.insert(name.to_string());
                if by.len() < all.len() {
                    return Next::Continue;
                }
                self.handed.remove(&round.0);
                self.delivered += 1;
                let now = self.millis();
                if let Some(live) = &mut self.live {
                    live.view.delivered(round.0, now);
                }
                self.say(format!("round {round}: delivered to every distributor"));
                if self.args.rounds.is_some_and(|n| self.delivered >= n) {
                    self.bar.finish_and_clear();
                    self.say(format!(
                        "{} round(s) sealed and delivered; stopping the mesh",
                        self.delivered
                    ));
                    return Next::Done;
                }
            }
            Event::OtpReceived { round, .. } | Event::ThresholdOtpReceived { round, .. } => {
                self.say(format!("{name}: received an OTP for round {round}"))
            }
            // Only refusals of who asked are news; the others (no round yet, a retry) are routine.
            Event::RequestRefused {
                failure: role::Failure::Unauthorised,
                reason,
                ..
            }
            | Event::PhraseRejected { reason, .. } => {
                self.say(format!("{name}: rejected: {reason}"));
            }
            _ => {}
        }
        Next::Continue
    }

    /// Node `name` listens (again): it runs, and a `mesh restart` waiting on it is answered.
    fn listened(&mut self, name: &str) {
        self.listening.insert(name.to_string());
        if let Some(entry) = self.entry(name) {
            if entry.state != State::Running {
                entry.state = State::Running;
                self.save();
            }
        }
        let (done, rest) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| matches!(w, Waiting::Listening { node, .. } if node == name));
        self.waiting = rest;
        for w in done {
            if let Waiting::Listening { node, reply, .. } = w {
                let peer = self.entry(&node).map(|e| e.peer_id.clone());
                let _ = reply.send(Reply::done(format!(
                    "{node} is back as {}, with its own data",
                    peer.unwrap_or_default()
                )));
            }
        }
    }

    fn answer_opened(&mut self) {
        let opened = self.opened;
        let (done, rest) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| matches!(w, Waiting::Opened { after, .. } if opened > *after));
        self.waiting = rest;
        for w in done {
            if let Waiting::Opened { reply, .. } = w {
                let _ = reply.send(Reply {
                    round: Some(opened),
                    ..Reply::done(format!("round {opened} opened"))
                });
            }
        }
    }

    /// Node `name`'s output has ended. Unless the steering killed it, it died: say how, mark it,
    /// and with `--restart-on-exit` start it again after a backoff.
    async fn ended(&mut self, name: &str) {
        // A killed process's output may end after its successor has started: only a death by
        // itself says anything of the node as it is now.
        if !self.steering.ended(name) {
            return;
        }
        self.listening.remove(name);
        self.subscribed.remove(name);
        self.unlinked(name);
        let status = match self.backend.reap(name).await {
            Some(status) => describe(status),
            None => "ended".to_string(),
        };
        let restart = self.args.restart_on_exit;
        let Some(entry) = self.entry(name) else {
            return;
        };
        entry.state = if restart {
            State::Restarting
        } else {
            State::Exited
        };
        entry.exit = Some(status.clone());
        entry.pid = None;
        let (log, restarts) = (entry.log.clone(), entry.restarts);
        // mesh.json first: whoever reads the event finds it there.
        self.save();
        let tail = log_tail(&log, TAIL_LINES);
        self.emit(&LabEvent::NodeExited {
            node: name,
            status: &status,
            log_tail: &tail,
        });
        let mut text = format!(
            "{name} exited unexpectedly ({status}); the other nodes keep running. {}",
            if restart {
                let wait = backoff(restarts);
                self.due.insert(name.to_string(), Instant::now() + wait);
                format!("Restarting it in {wait:?}.")
            } else {
                format!("otpmesh mesh restart {name} --dir … starts it again.")
            }
        );
        if !tail.is_empty() {
            text.push_str(&format!("\n  last lines of {}:", log.display()));
            for line in &tail {
                text.push_str("\n    ");
                text.push_str(line);
            }
        }
        self.say(text);
    }

    /// Restarts what is due and refuses replies that waited too long.
    async fn on_timer(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.due.remove(&name);
            if let Err(e) = self.start(&name).await {
                self.say(format!("{name}: could not restart: {e:#}"));
            }
        }
        let (late, rest) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.until() <= now);
        self.waiting = rest;
        for w in late {
            let _ = match w {
                Waiting::Listening { node, reply, .. } => reply.send(Reply::refused(format!(
                    "{node} did not listen again within {RESTART_WAIT:?}; see its log"
                ))),
                Waiting::Opened { reply, .. } => reply.send(Reply::refused(format!(
                    "no round opened within {OPEN_WAIT:?}"
                ))),
            };
        }
    }

    /// Starts node `name` again (its own identity and data dir), killing it first if it runs.
    async fn start(&mut self, name: &str) -> anyhow::Result<()> {
        self.steering
            .stop_for_restart(&mut self.backend, name)
            .await?;
        self.listening.remove(name);
        self.subscribed.remove(name);
        self.unlinked(name);
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| anyhow!("no node named {name}"))?;
        let pid = self.backend.start_process(&controlled(entry))?;
        self.steering
            .started(&mut self.backend, &Entries(&self.entries), name)
            .await;
        let entry = self.entry(name).expect("found above");
        entry.pid = pid;
        entry.restarts += 1;
        entry.state = State::Restarting;
        let restarts = entry.restarts;
        self.save();
        self.emit(&LabEvent::NodeStarted {
            node: name,
            pid,
            restarts,
        });
        self.say(format!("{name}: started again (pid {})", pid.unwrap_or(0)));
        Ok(())
    }

    fn status(&self) -> Vec<NodeStatus> {
        self.entries
            .iter()
            .map(|e| NodeStatus::of(e, self.steering.cut_off(&e.name)))
            .collect()
    }

    /// The names in `names` that are not nodes of this mesh, as an error.
    fn unknown(&self, names: &[String]) -> Result<(), Reply> {
        match names
            .iter()
            .find(|n| !self.entries.iter().any(|e| &e.name == *n))
        {
            Some(n) => Err(Reply::refused(format!(
                "no node named {n} in this mesh (mesh status lists them)"
            ))),
            None => Ok(()),
        }
    }

    async fn on_request(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        if let Some((reply, answer)) = self.carry_out(request, reply).await {
            let _ = reply.send(answer);
        }
    }

    /// Does what `request` asks: the reply with its answer, or None when the reply waits on an
    /// event of the mesh (it is parked in `waiting`).
    async fn carry_out(
        &mut self,
        request: Request,
        reply: oneshot::Sender<Reply>,
    ) -> Option<(oneshot::Sender<Reply>, Reply)> {
        let names: Vec<String> = match &request {
            Request::Kill { node } | Request::Restart { node } => vec![node.clone()],
            Request::Partition { nodes, from } => [nodes.as_slice(), from].concat(),
            Request::Heal { nodes } => nodes.clone(),
            Request::Status | Request::Round => Vec::new(),
        };
        if let Err(refused) = self.unknown(&names) {
            return Some((reply, refused));
        }
        let done = match request {
            Request::Status => Reply {
                nodes: Some(self.status()),
                ..Reply::done(format!("{} nodes", self.entries.len()))
            },
            Request::Kill { node } => self.kill(&node).await,
            Request::Restart { node } => {
                self.due.remove(&node);
                if let Err(e) = self.start(&node).await {
                    return Some((reply, Reply::refused(format!("{node}: {e:#}"))));
                }
                self.waiting.push(Waiting::Listening {
                    node,
                    reply,
                    until: Instant::now() + RESTART_WAIT,
                });
                return None;
            }
            Request::Partition { nodes, from } => self.partition(&nodes, &from).await,
            Request::Heal { nodes } => self.heal(nodes).await,
            Request::Round => {
                let generator = self.generator.clone();
                if self.steering.is_down(&generator) {
                    return Some((reply, Reply::refused(format!("{generator} is down"))));
                }
                let asked = self
                    .backend
                    .control(&generator, ControlLine::OpenRound)
                    .await;
                if let Err(e) = asked {
                    return Some((reply, Reply::refused(format!("{e:#}"))));
                }
                self.waiting.push(Waiting::Opened {
                    after: self.opened,
                    reply,
                    until: Instant::now() + OPEN_WAIT,
                });
                return None;
            }
        };
        Some((reply, done))
    }

    async fn kill(&mut self, node: &str) -> Reply {
        if self.steering.is_down(node) {
            // Dead and waiting for its restart (`--restart-on-exit`): a kill means stay down.
            if self.due.remove(node).is_some() {
                if let Some(entry) = self.entry(node) {
                    entry.state = State::Exited;
                }
                self.save();
                return Reply::done(format!("{node} was down; its restart is cancelled"));
            }
            return Reply::refused(format!("{node} is not running"));
        }
        if let Err(e) = self.steering.kill(&mut self.backend, node).await {
            return Reply::refused(format!("{e:#}"));
        }
        self.listening.remove(node);
        self.subscribed.remove(node);
        self.unlinked(node);
        self.due.remove(node);
        if let Some(entry) = self.entry(node) {
            entry.state = State::Exited;
            entry.exit = Some("killed by mesh kill (SIGKILL)".into());
            entry.pid = None;
        }
        self.save();
        self.say(format!("{node}: killed (SIGKILL)"));
        Reply::done(format!("killed {node} (SIGKILL)"))
    }

    async fn partition(&mut self, nodes: &[String], from: &[String]) -> Reply {
        if nodes.is_empty() {
            return Reply::refused("partition names no node");
        }
        let mut said = Vec::new();
        for node in nodes {
            let peers: Vec<String> = if from.is_empty() {
                self.entries
                    .iter()
                    .map(|e| e.name.clone())
                    .filter(|n| n != node)
                    .collect()
            } else {
                from.to_vec()
            };
            self.steering
                .partition(&mut self.backend, &Entries(&self.entries), node, &peers)
                .await;
            said.push(format!("cut {node} off from {}", peers.join(", ")));
        }
        let text = said.join("; ");
        self.say(text.clone());
        Reply::done(text)
    }

    async fn heal(&mut self, nodes: Vec<String>) -> Reply {
        let nodes = if nodes.is_empty() {
            self.steering.partitioned().cloned().collect()
        } else {
            nodes
        };
        let mut said = Vec::new();
        for node in &nodes {
            let peers = self
                .steering
                .heal(&mut self.backend, &Entries(&self.entries), node)
                .await;
            if !peers.is_empty() {
                said.push(format!("reconnected {node} to {}", peers.join(", ")));
            }
        }
        let text = if said.is_empty() {
            "no partition to heal".to_string()
        } else {
            said.join("; ")
        };
        self.say(text.clone());
        Reply::done(text)
    }

    pub async fn stop(&mut self) {
        for w in self.waiting.drain(..) {
            let reply = match w {
                Waiting::Listening { reply, .. } | Waiting::Opened { reply, .. } => reply,
            };
            let _ = reply.send(Reply::refused("the mesh is stopping"));
        }
        self.backend.stop_all().await;
    }
}

/// `entry` as `mesh up` runs it: taking control lines on its stdin.
fn controlled(entry: &NodeEntry) -> NodeEntry {
    let mut entry = entry.clone();
    entry.restart.push("--control-stdin".into());
    entry
}

/// The wait before the restart that follows `restarts` earlier ones.
pub fn backoff(restarts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << restarts.min(16))
        .min(MAX_BACKOFF)
}

/// An exit status as people read it: `exit status 1`, `signal: 9 (SIGKILL)`.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
            Ok(s) => format!("signal {signal} ({s})"),
            Err(_) => format!("signal {signal}"),
        },
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(1), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3), FIRST_BACKOFF * 8);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn a_signal_is_named() {
        use std::os::unix::process::ExitStatusExt;
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(describe(killed), "signal 9 (SIGKILL)");
        let failed = std::process::ExitStatus::from_raw(1 << 8);
        assert_eq!(describe(failed), "exit status 1");
    }
}
