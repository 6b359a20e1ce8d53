//! Replays a scenario's steps against a running mesh and judges each against its expectations.

use super::backend::{Backend, Events};
use super::kdc;
use super::layout::{self, Layout};
use super::spec::{
    Attack, CodeChoice, NodeRole, RequestOutcome, RoundExpect, RoundOutcome, RoundUntil, Scenario,
    Step, StepSpec, Totals, WaitFor,
};
use crate::line::{Line, Process};
use crate::steer::Steering;
use anyhow::{anyhow, bail};
use otpmesh_node::control::ControlLine;
use otpmesh_node::NodeEvent;
use otpmesh_protocol::digest::Digest32;
use otpmesh_protocol::phrase::{ClientId, Phrase, UserInput};
use otpmesh_protocol::role::Event;
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::seal::PrivateKey;
use otpmesh_protocol::wire::VerifyResult;
use otpmesh_protocol::wire::{self, Gossip, PhraseSubmission, MAX_GOSSIP_BYTES};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long a round may take to open once asked.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Extra time, beyond the round deadline, for a round to seal and be delivered.
const ROUND_SLACK: Duration = Duration::from_secs(15);
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const INJECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rejections remembered.
const MAX_REJECTIONS: usize = 65_536;

#[derive(Clone, Debug, Serialize)]
pub struct SealedRound {
    pub id: u64,
    pub commitment: String,
    pub prev_commitment: String,
    pub included: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct IssuedOtp {
    pub requester: String,
    /// The distributor asked, or [`QUORUM`] in threshold mode.
    pub distributor: String,
    pub round: u64,
    pub otp: String,
    /// Threshold mode: the OTP's counter.
    pub counter: Option<u64>,
}

/// Who answered a threshold-mode request: a quorum of the distributors.
pub const QUORUM: &str = "a quorum";

#[derive(Default)]
pub struct State {
    opened: u64,
    pub sealed: BTreeMap<u64, SealedRound>,
    failed: BTreeMap<u64, String>,
    delivered: BTreeSet<u64>,
    /// Threshold mode: which distributors stored each round.
    stored: BTreeMap<u64, BTreeSet<String>>,
    listening: HashSet<String>,
    subscribed: HashSet<String>,
    rejections: Vec<(String, String)>,
    /// Who is down and who is cut off from whom (kills, restarts, partitions).
    steering: Steering,
    crashed: Vec<String>,
    round_inputs: BTreeMap<String, i128>,
    /// (node, peer id) pairs: the node has seen that peer subscribe to the topic.
    subscriptions: HashSet<(String, String)>,
    /// When set, every event's arrival: (node, event, when) — for benchmarks.
    pub arrivals: Option<Vec<(String, Line, std::time::Instant)>>,
    pub otps: Vec<IssuedOtp>,
    /// Beacon values each node reported: round → node → value (hex).
    pub beacon: BTreeMap<u64, BTreeMap<String, String>>,
    /// The code each user last typed fresh at a `login` step (what `code = "again"` types).
    pub typed: HashMap<String, zeroize::Zeroizing<String>>,
}

/// A step's verdict.
pub struct Judged {
    pub outcome: String,
    pub expected: String,
    pub passed: bool,
}

pub struct Runner<'a> {
    pub scenario: &'a Scenario,
    pub layout: &'a Layout,
    pub backend: Backend,
    pub events: Events,
    pub state: State,
    pub seed: u64,
}

/// Every distributor of the scenario (threshold requests ask them all; the down ones fail).
pub(super) fn distributors(layout: &layout::Layout) -> Vec<&layout::Planned> {
    layout
        .nodes
        .iter()
        .filter(|n| n.role == NodeRole::Distributor)
        .collect()
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

impl Runner<'_> {
    fn generator(&self) -> &str {
        &self.scenario.generator().name
    }

    fn role_of(&self, name: &str) -> Option<NodeRole> {
        self.scenario.node(name).map(|n| n.role)
    }

    /// The integer a contributor gives for `round`: the step's, the node's, or one drawn from the seed.
    fn input_for(&self, name: &str, round: u64) -> i128 {
        if let Some(v) = self.state.round_inputs.get(name) {
            return *v;
        }
        if let Some(v) = self.scenario.node(name).and_then(|n| n.input) {
            return v.0;
        }
        layout::derive_u64(self.seed, &format!("input/{name}/{round}")) as i64 as i128
    }

    /// Folds one event into the state; answers contributors that ask for their integer.
    async fn absorb(&mut self, name: String, line: Option<Line>) -> anyhow::Result<()> {
        let Some(line) = line else {
            // The end of a node's event stream: expected after a kill, a crash otherwise.
            if self.state.steering.ended(&name) {
                self.state.listening.remove(&name);
                self.state.crashed.push(name);
            }
            return Ok(());
        };
        if let Some(arrivals) = &mut self.state.arrivals {
            if arrivals.len() < MAX_REJECTIONS {
                arrivals.push((name.clone(), line.clone(), Instant::now()));
            }
        }
        let from_generator = name == self.generator();
        let threshold = self.scenario.settings.threshold.is_some();
        let rejection = match line {
            Line::Node(NodeEvent::Listening { .. }) => {
                self.state.listening.insert(name.clone());
                None
            }
            Line::Node(NodeEvent::Subscribed { peer }) => {
                self.state
                    .subscriptions
                    .insert((name.clone(), peer.to_string()));
                self.state.subscribed.insert(name.clone());
                None
            }
            Line::Node(NodeEvent::InputNeeded { round })
                if self.role_of(&name) == Some(NodeRole::Contributor) =>
            {
                let value = self.input_for(&name, round.0).to_string();
                let line = ControlLine::Input { round, value };
                if let Err(e) = self.backend.control(&name, line).await {
                    tracing::debug!(%name, error = %e, "could not answer an input request");
                }
                None
            }
            Line::Node(NodeEvent::GossipRejected { reason, .. })
            | Line::Process(Process::ControlRefused { reason }) => Some(reason),
            Line::Node(NodeEvent::Role(event)) => {
                self.absorb_role(name.clone(), from_generator, threshold, event)
            }
            _ => None,
        };
        if let Some(reason) = rejection {
            if self.state.rejections.len() < MAX_REJECTIONS {
                self.state.rejections.push((name, reason));
            }
        }
        Ok(())
    }

    /// Folds a role's event into the state; a rejection's reason comes back.
    fn absorb_role(
        &mut self,
        name: String,
        from_generator: bool,
        threshold: bool,
        event: Event,
    ) -> Option<String> {
        match event {
            Event::RoundOpened { round, .. } if from_generator => {
                self.state.opened = self.state.opened.max(round.0)
            }
            Event::RoundSealed {
                round,
                commitment,
                prev_commitment,
                included,
            } if from_generator => {
                let sealed = SealedRound {
                    id: round.0,
                    commitment: commitment.to_string(),
                    prev_commitment: prev_commitment.to_string(),
                    included: included.iter().map(|c| c.0).collect(),
                };
                self.state.sealed.insert(round.0, sealed);
            }
            Event::RoundFailed { round, reason } if from_generator => {
                self.state.failed.insert(round.0, reason);
            }
            Event::RoundDeliveredAll { round } if from_generator && !threshold => {
                self.state.delivered.insert(round.0);
            }
            // Threshold mode: delivered once every live distributor holds its key share.
            Event::RoundStored { round, .. } if threshold => {
                let stored = self.state.stored.entry(round.0).or_default();
                stored.insert(name);
                let live = self
                    .scenario
                    .nodes_with(NodeRole::Distributor)
                    .filter(|n| !self.state.steering.is_down(&n.name))
                    .all(|n| stored.contains(&n.name));
                if live {
                    self.state.delivered.insert(round.0);
                }
            }
            Event::BeaconValue { round, value, .. } => {
                self.state
                    .beacon
                    .entry(round.0)
                    .or_default()
                    .insert(name, value.to_string());
            }
            Event::PhraseRejected { reason, .. } | Event::RequestRefused { reason, .. } => {
                return Some(reason)
            }
            _ => {}
        }
        None
    }

    /// Stops every node, taking their last lines meanwhile (their events keep the pipes moving).
    pub async fn stop_all(&mut self) {
        let (backend, events) = (&mut self.backend, &mut self.events);
        let drain = async {
            while events.recv().await.is_some() {}
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = backend.stop_all() => {}
            _ = drain => {}
        }
    }

    /// Takes the nodes' events for `within` (the state kept up to date), for a caller that has
    /// nothing to wait for but must not leave the nodes' lines unread.
    pub async fn pump_for(&mut self, within: Duration) -> anyhow::Result<()> {
        self.pump_until(within, |_| false).await.map(|_| ())
    }

    /// Takes events until `done` holds or the time runs out; says which.
    pub async fn pump_until(
        &mut self,
        within: Duration,
        done: impl Fn(&State) -> bool,
    ) -> anyhow::Result<bool> {
        if let Backend::Sim(_) = self.backend {
            return self.pump_simulated(within, done).await;
        }
        let end = tokio::time::Instant::now() + within;
        loop {
            if done(&self.state) {
                return Ok(true);
            }
            match tokio::time::timeout_at(end, self.events.recv()).await {
                Ok(Some((name, value))) => self.absorb(name, value).await?,
                Ok(None) => bail!("every node's event stream has closed"),
                Err(_) => return Ok(done(&self.state)),
            }
        }
    }

    /// [`Runner::pump_until`] on the simulator: the world steps until `done` holds or `within`
    /// of virtual time has passed.
    async fn pump_simulated(
        &mut self,
        within: Duration,
        done: impl Fn(&State) -> bool,
    ) -> anyhow::Result<bool> {
        let end = self.backend.clock() + within;
        loop {
            let Backend::Sim(sim) = &mut self.backend else {
                unreachable!("only the simulator pumps so");
            };
            if let Some((name, line)) = sim.next_line() {
                self.absorb(name, line).await?;
                continue;
            }
            if done(&self.state) {
                return Ok(true);
            }
            if sim.clock() >= end {
                return Ok(false);
            }
            sim.step()?;
        }
    }

    /// Starts every node that runs as one, and waits until each listens and has a subscribed peer.
    pub async fn start_mesh(&mut self, within: Duration) -> anyhow::Result<()> {
        let runnable: Vec<String> = self
            .layout
            .nodes
            .iter()
            .filter(|n| n.config.is_some())
            .map(|n| n.name.clone())
            .collect();
        for name in &runnable {
            self.backend.start(self.layout.node(name)).await?;
        }
        // Formed: every node listens, and every node but the generator has seen the generator
        // subscribe (so round announcements and phrases can flow at once).
        let generator = self.generator().to_string();
        let generator_id = self.layout.node(&generator).peer_id.to_string();
        let all = runnable.clone();
        let formed = self
            .pump_until(within, |s| {
                all.iter().all(|n| {
                    s.listening.contains(n)
                        && s.subscribed.contains(n)
                        && (*n == generator
                            || s.subscriptions.contains(&(n.clone(), generator_id.clone())))
                })
            })
            .await?;
        if !formed {
            let missing: Vec<&String> = runnable
                .iter()
                .filter(|n| !self.state.subscribed.contains(*n))
                .collect();
            bail!(
                "the mesh did not form within {within:?}: {missing:?} never saw a subscribed peer"
            );
        }
        Ok(())
    }

    pub async fn run_step(&mut self, index: usize, spec: &StepSpec) -> anyhow::Result<Judged> {
        match &spec.step {
            Step::Round {
                inputs,
                until,
                timeout_ms,
                expect,
            } => {
                self.state.round_inputs = inputs.iter().map(|(k, v)| (k.clone(), v.0)).collect();
                let within = timeout_ms.map(Duration::from_millis);
                self.round(until.unwrap_or(RoundUntil::Delivered), within, expect)
                    .await
            }
            Step::Request {
                requester,
                distributor,
                expect,
            } => {
                let seed = layout::derive_u64(self.seed, &format!("request/{index}"));
                let distributor = distributor.clone().unwrap_or_else(|| QUORUM.into());
                let result = if self.scenario.settings.threshold.is_some() {
                    let all = distributors(self.layout);
                    self.backend
                        .threshold_request(self.layout.node(requester), &all, seed)
                        .await?
                } else {
                    self.backend
                        .request(
                            self.layout.node(requester),
                            self.layout.node(&distributor),
                            seed,
                        )
                        .await?
                };
                let want = expect.outcome.unwrap_or(RequestOutcome::Otp);
                let mut passed = result.outcome == want;
                let outcome = match (&result.otp, result.round) {
                    (Some(otp), Some(round)) => {
                        self.state.otps.push(IssuedOtp {
                            requester: requester.clone(),
                            distributor: distributor.clone(),
                            round,
                            otp: otp.clone(),
                            counter: result.counter,
                        });
                        passed &= expect.round.is_none_or(|r| r == round);
                        format!("OTP {otp} for round {round}")
                    }
                    _ => format!("{}: {}", result.outcome.as_str(), result.detail),
                };
                let mut expected = want.as_str().to_string();
                if let Some(r) = expect.round {
                    expected.push_str(&format!(" for round {r}"));
                }
                Ok(Judged {
                    outcome,
                    expected,
                    passed,
                })
            }
            Step::Verify {
                requester,
                distributor,
                otp,
                expect,
            } => {
                let distributor = distributor.clone().unwrap_or_else(|| QUORUM.into());
                let last = self
                    .state
                    .otps
                    .iter()
                    .rev()
                    .find(|o| o.requester == *requester && o.distributor == distributor)
                    .cloned();
                let digits = self.scenario.settings.digits.get() as usize;
                let code = match (otp, &last) {
                    (CodeChoice::Last, Some(o)) => o.otp.clone(),
                    (CodeChoice::Last, None) => {
                        bail!("{requester} has no OTP from {distributor} to verify yet")
                    }
                    (CodeChoice::Wrong, Some(o)) => {
                        let n: u64 = o.otp.parse().unwrap_or(0);
                        format!("{:0digits$}", (n + 1) % 10u64.pow(digits as u32))
                    }
                    (CodeChoice::Wrong, None) => "0".repeat(digits),
                };
                let result = match (&last, self.scenario.settings.threshold.is_some()) {
                    (
                        Some(IssuedOtp {
                            round,
                            counter: Some(counter),
                            ..
                        }),
                        true,
                    ) => {
                        let all = distributors(self.layout);
                        self.backend
                            .threshold_verify(
                                self.layout.node(requester),
                                &all,
                                *round,
                                *counter,
                                &code,
                            )
                            .await?
                    }
                    (_, true) => bail!("{requester} has no threshold OTP to verify yet"),
                    (_, false) => {
                        self.backend
                            .verify(
                                self.layout.node(requester),
                                self.layout.node(&distributor),
                                &code,
                            )
                            .await?
                    }
                };
                let want = expect.result.unwrap_or(VerifyResult::Accepted);
                let outcome = match &result {
                    Ok(r) => format!("{} → {}", code, r.as_str()),
                    Err(e) => format!("{code} → error: {e}"),
                };
                Ok(Judged {
                    outcome,
                    expected: want.as_str().into(),
                    passed: matches!(result, Ok(r) if r == want),
                })
            }
            Step::Login {
                user,
                verifier,
                via,
                code,
                timeout_ms,
                expect,
            } => {
                let within = timeout_ms.map_or(super::login::LOGIN_TIMEOUT, Duration::from_millis);
                self.login(user, verifier, *via, *code, within, expect)
                    .await
            }
            Step::Kill { node } => {
                self.kill(node).await?;
                Ok(Judged {
                    outcome: "killed (SIGKILL)".into(),
                    expected: "-".into(),
                    passed: true,
                })
            }
            Step::Restart { node, timeout_ms } => {
                self.state
                    .steering
                    .stop_for_restart(&mut self.backend, node)
                    .await?;
                self.state.listening.remove(node);
                self.state.crashed.retain(|n| n != node);
                self.backend.start(self.layout.node(node)).await?;
                let within = timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis);
                let n = node.clone();
                let back = self
                    .pump_until(within, |s| s.listening.contains(&n))
                    .await?;
                self.state
                    .steering
                    .started(&mut self.backend, self.layout, node)
                    .await;
                let outcome = if back {
                    "restarted with the same identity and data"
                } else {
                    "did not come back"
                };
                Ok(Judged {
                    outcome: outcome.into(),
                    expected: "back".into(),
                    passed: back,
                })
            }
            Step::Partition { node, from } => {
                let peers: Vec<String> = match from {
                    Some(list) => list.clone(),
                    None => self
                        .layout
                        .nodes
                        .iter()
                        .filter(|n| n.name != *node && n.config.is_some())
                        .map(|n| n.name.clone())
                        .collect(),
                };
                self.state
                    .steering
                    .partition(&mut self.backend, self.layout, node, &peers)
                    .await;
                Ok(Judged {
                    outcome: format!("cut off from {}", peers.join(", ")),
                    expected: "-".into(),
                    passed: true,
                })
            }
            Step::Heal { node } => {
                let peers = self
                    .state
                    .steering
                    .heal(&mut self.backend, self.layout, node)
                    .await;
                Ok(Judged {
                    outcome: format!("reconnected to {}", peers.join(", ")),
                    expected: "-".into(),
                    passed: true,
                })
            }
            Step::Inject {
                from,
                attack,
                timeout_ms,
                expect,
            } => {
                let want = expect
                    .reason
                    .clone()
                    .unwrap_or_else(|| attack.reason().to_string());
                let within = timeout_ms.map_or(INJECT_TIMEOUT, Duration::from_millis);
                self.inject(index, from, *attack, &want, within).await
            }
            Step::Wait {
                event,
                round,
                node,
                timeout_ms,
                expect,
            } => {
                let within = timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis);
                self.wait(
                    *event,
                    round.unwrap_or(self.state.opened),
                    node.clone(),
                    within,
                    expect,
                )
                .await
            }
            Step::Expect(totals) => Ok(self.totals(totals)),
            Step::Password {
                requester,
                length,
                alphabet,
                chars,
            } => {
                let which = match (alphabet, chars) {
                    (_, Some(c)) => ("--chars", c.as_str()),
                    (a, None) => (
                        "--alphabet",
                        a.as_deref().unwrap_or("lower,upper,digits,symbols"),
                    ),
                };
                self.password(requester, *length, which).await
            }
            Step::Beacon {
                rounds,
                export,
                timeout_ms,
            } => {
                let within = timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis);
                self.beacon(rounds, export.as_deref(), within).await
            }
            Step::KdcRegister {
                user,
                distributor,
                kdc_name,
                passphrase,
                old_passphrase,
                expect,
            } => {
                let registration = kdc::Registration {
                    user: self.layout.node(user),
                    centre: self.layout.node(distributor),
                    name: kdc_name.as_deref().unwrap_or(user),
                    passphrase,
                    old_passphrase: old_passphrase.as_deref(),
                };
                match &mut self.backend {
                    Backend::Sim(sim) => kdc::simulated::register(sim, &registration, expect),
                    _ => kdc::process::register(&registration, expect).await,
                }
            }
            Step::KdcSend {
                from,
                to,
                distributor,
                to_name,
                bytes,
                passphrase,
                receiver_passphrase,
                otp,
                expect,
            } => {
                use rand::{RngCore, SeedableRng};
                let seeded = |what: &str| {
                    let seed = layout::derive_u64(self.seed, &format!("{what}/{index}"));
                    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
                };
                let mut file = vec![0u8; *bytes as usize];
                seeded("kdc").fill_bytes(&mut file);
                let code = match otp {
                    false => None,
                    true => Some(
                        self.state
                            .otps
                            .iter()
                            .rev()
                            .find(|o| o.requester == *from && o.distributor == *distributor)
                            .ok_or_else(|| anyhow!("{from} has no OTP from {distributor} to use"))?
                            .otp
                            .clone(),
                    ),
                };
                let transfer = kdc::Transfer {
                    from: self.layout.node(from),
                    to: self.layout.node(to),
                    centre: self.layout.node(distributor),
                    to_name: to_name.as_deref().unwrap_or(to),
                    file: &file,
                    passphrase,
                    receiver_passphrase,
                    otp: code.as_deref(),
                };
                match &mut self.backend {
                    Backend::Sim(sim) => {
                        let mut rng = seeded("kdc-keys");
                        kdc::simulated::send(sim, &transfer, expect, &mut rng)
                    }
                    _ => kdc::process::send(&transfer, expect).await,
                }
            }
        }
    }

    async fn password(
        &mut self,
        requester: &str,
        length: usize,
        which: (&str, &str),
    ) -> anyhow::Result<Judged> {
        use otpmesh_protocol::threshold::password::Alphabet;
        let set = match which.0 {
            "--chars" => Alphabet::chars(which.1),
            _ => Alphabet::classes(which.1),
        }
        .map_err(|e| anyhow!("{e}"))?;
        let all = distributors(self.layout);
        let got = self
            .backend
            .password(self.layout.node(requester), &all, length, which)
            .await?;
        let expected = format!(
            "{length} characters, all from the {} of the alphabet",
            set.len()
        );
        Ok(match got {
            Ok(password) => {
                let n = password.chars().count();
                let inside = password.chars().all(|c| set.contains(c));
                Judged {
                    outcome: format!(
                        "{n} characters, {} from the alphabet; about {} bits (not shown: only {requester} sees it)",
                        if inside { "all" } else { "NOT all" },
                        set.bits(n) as u32
                    ),
                    expected,
                    passed: n == length && inside,
                }
            }
            Err(e) => Judged {
                outcome: format!("no password: {e}"),
                expected,
                passed: false,
            },
        })
    }

    /// Every running node holds the same value for each of `rounds`; an exported chain verifies
    /// offline and a tampered copy does not.
    async fn beacon(
        &mut self,
        rounds: &[u64],
        export: Option<&str>,
        within: Duration,
    ) -> anyhow::Result<Judged> {
        use otpmesh_protocol::beacon;
        let nodes: Vec<String> = [
            NodeRole::Generator,
            NodeRole::Distributor,
            NodeRole::Contributor,
        ]
        .into_iter()
        .flat_map(|role| self.scenario.nodes_with(role).map(|n| n.name.clone()))
        .collect();
        let holds = |s: &State, node: &String, r: &u64| {
            s.beacon.get(r).is_some_and(|m| m.contains_key(node))
        };
        self.pump_until(within, |s| {
            nodes
                .iter()
                .filter(|n| !s.steering.is_down(n))
                .all(|n| rounds.iter().all(|r| holds(s, n, r)))
        })
        .await?;
        let live: Vec<&String> = nodes
            .iter()
            .filter(|n| !self.state.steering.is_down(n))
            .collect();
        let mut problems = Vec::new();
        let mut values = Vec::new();
        for r in rounds {
            let held = self.state.beacon.get(r);
            let missing: Vec<&str> = live
                .iter()
                .filter(|n| !holds(&self.state, n, r))
                .map(|n| n.as_str())
                .collect();
            if !missing.is_empty() {
                problems.push(format!("round {r}: no value at {}", missing.join(", ")));
            }
            let distinct: BTreeSet<&String> = live
                .iter()
                .filter_map(|n| held.and_then(|m| m.get(*n)))
                .collect();
            match distinct.len() {
                0 => {}
                1 => values.push(format!("{r}: {}", short(distinct.first().unwrap()))),
                k => problems.push(format!("round {r}: {k} different values")),
            }
        }
        let mut outcome = format!("{} nodes agree: {}", live.len(), values.join(", "));
        if let Some(node) = export {
            let dir = self.layout.node(node).data_dir.clone();
            let run = match &self.backend {
                // A simulated node holds its store open: read what it committed.
                Backend::Sim(sim) => match sim.beacon(node) {
                    Ok(entries) => crate::cmd::beacon::newest_run_among(entries).await,
                    Err(e) => Err(e),
                },
                _ => crate::cmd::beacon::newest_run(&dir).await,
            };
            match run {
                Ok(run) => {
                    let covered = rounds.iter().all(|r| run.iter().any(|e| e.round() == *r));
                    match beacon::verify_run(&run) {
                        Ok(()) if covered => {
                            outcome.push_str(&format!(
                                "; {node}'s export of {} values verifies offline",
                                run.len()
                            ));
                        }
                        Ok(()) => problems.push(format!("{node}'s export lacks some rounds")),
                        Err(e) => problems.push(format!("{node}'s export does not verify: {e}")),
                    }
                    let mut tampered = run.clone();
                    let middle = tampered.len() / 2;
                    if let Some(e) = tampered.get_mut(middle) {
                        e.value.value.0[0] ^= 1;
                        match beacon::verify_run(&tampered) {
                            Err(e) => outcome.push_str(&format!(", a tampered copy fails ({e})")),
                            Ok(()) => problems.push("a tampered export verifies".into()),
                        }
                    }
                }
                Err(e) => problems.push(format!("exporting {node}'s chain: {e:#}")),
            }
        }
        let passed = problems.is_empty();
        if !passed {
            outcome = format!("{outcome}; {}", problems.join("; "));
        }
        Ok(Judged {
            outcome,
            expected: format!(
                "one value per round {rounds:?} at every running node{}",
                if export.is_some() {
                    ", an export that verifies"
                } else {
                    ""
                }
            ),
            passed,
        })
    }

    async fn kill(&mut self, node: &str) -> anyhow::Result<()> {
        self.state.steering.kill(&mut self.backend, node).await?;
        self.state.listening.remove(node);
        Ok(())
    }

    async fn round(
        &mut self,
        until: RoundUntil,
        within: Option<Duration>,
        expect: &RoundExpect,
    ) -> anyhow::Result<Judged> {
        let generator = self.generator().to_string();
        if self.state.steering.is_down(&generator) {
            return Ok(self.judge_round(None, "the generator is down".into(), expect));
        }
        let before = self.state.opened;
        self.backend
            .control(&generator, ControlLine::OpenRound)
            .await?;
        if !self.pump_until(OPEN_TIMEOUT, |s| s.opened > before).await? {
            return Ok(self.judge_round(
                None,
                format!("no round opened within {OPEN_TIMEOUT:?}"),
                expect,
            ));
        }
        let round = self.state.opened;
        if until == RoundUntil::Opened {
            return Ok(Judged {
                outcome: format!("round {round} opened"),
                expected: "-".into(),
                passed: true,
            });
        }
        let within = within
            .unwrap_or(Duration::from_millis(self.scenario.settings.deadline_ms) + ROUND_SLACK);
        self.settle_round(round, until == RoundUntil::Delivered, within, expect)
            .await
    }

    async fn settle_round(
        &mut self,
        round: u64,
        delivered: bool,
        within: Duration,
        expect: &RoundExpect,
    ) -> anyhow::Result<Judged> {
        let start = self.backend.clock();
        let ended = self
            .pump_until(within, |s| {
                s.sealed.contains_key(&round) || s.failed.contains_key(&round)
            })
            .await?;
        if !ended {
            return Ok(self.judge_round(
                None,
                format!("round {round} neither sealed nor failed within {within:?}"),
                expect,
            ));
        }
        if let Some(reason) = self.state.failed.get(&round).cloned() {
            return Ok(self.judge_round(
                Some((RoundOutcome::Failed, vec![])),
                format!("round {round} failed: {reason}"),
                expect,
            ));
        }
        let sealed = self.state.sealed[&round].clone();
        let mut outcome = format!(
            "round {round} sealed with clients {:?}, commitment {}",
            sealed.included,
            short(&sealed.commitment)
        );
        if delivered {
            let left = within
                .saturating_sub(self.backend.clock().saturating_sub(start))
                .max(Duration::from_secs(5));
            if self
                .pump_until(left, |s| s.delivered.contains(&round))
                .await?
            {
                outcome.push_str(", delivered");
            } else {
                outcome.push_str(", NOT delivered in time");
                let mut judged = self.judge_round(
                    Some((RoundOutcome::Sealed, sealed.included)),
                    outcome,
                    expect,
                );
                judged.passed = false;
                return Ok(judged);
            }
        }
        Ok(self.judge_round(
            Some((RoundOutcome::Sealed, sealed.included)),
            outcome,
            expect,
        ))
    }

    fn judge_round(
        &self,
        result: Option<(RoundOutcome, Vec<u32>)>,
        outcome: String,
        expect: &RoundExpect,
    ) -> Judged {
        let mut wanted = Vec::new();
        // A round that never ended (or never opened) fails its step whatever was expected.
        let mut passed = result.is_some();
        let (got, included) = result.unwrap_or((RoundOutcome::Failed, vec![]));
        if let Some(o) = expect.outcome {
            wanted.push(format!("{o:?}").to_lowercase());
            passed &= o == got;
        }
        if !expect.includes.is_empty() {
            wanted.push(format!("includes {:?}", expect.includes));
            passed &= expect.includes.iter().all(|c| included.contains(c));
        }
        if !expect.excludes.is_empty() {
            wanted.push(format!("excludes {:?}", expect.excludes));
            passed &= !expect.excludes.iter().any(|c| included.contains(c));
        }
        if let Some(r) = &expect.reason {
            wanted.push(format!("reason contains {r:?}"));
            passed &= outcome.contains(r.as_str());
        }
        Judged {
            outcome,
            expected: if wanted.is_empty() {
                "-".into()
            } else {
                wanted.join(", ")
            },
            passed,
        }
    }

    async fn wait(
        &mut self,
        event: WaitFor,
        round: u64,
        node: Option<String>,
        within: Duration,
        expect: &RoundExpect,
    ) -> anyhow::Result<Judged> {
        match event {
            WaitFor::RoundSealed | WaitFor::RoundFailed => {
                self.settle_round(round, false, within, expect).await
            }
            WaitFor::RoundDelivered => self.settle_round(round, true, within, expect).await,
            WaitFor::RoundOpened => {
                let ok = self.pump_until(within, |s| s.opened >= round).await?;
                let outcome = if ok {
                    format!("round {round} opened")
                } else {
                    format!("round {round} did not open")
                };
                Ok(Judged {
                    outcome,
                    expected: "opened".into(),
                    passed: ok,
                })
            }
            WaitFor::Listening => {
                let n = node.ok_or_else(|| anyhow!("wait for listening needs a node"))?;
                let ok = self
                    .pump_until(within, |s| s.listening.contains(&n))
                    .await?;
                Ok(Judged {
                    outcome: format!("{n} {}", if ok { "listening" } else { "not listening" }),
                    expected: "listening".into(),
                    passed: ok,
                })
            }
        }
    }

    async fn inject(
        &mut self,
        index: usize,
        from: &str,
        attack: Attack,
        want: &str,
        within: Duration,
    ) -> anyhow::Result<Judged> {
        let hostile = self.layout.node(from).clone();
        if attack == Attack::UnlistedRequest {
            let distributor = self
                .scenario
                .nodes_with(NodeRole::Distributor)
                .next()
                .expect("validated")
                .name
                .clone();
            let seed = layout::derive_u64(self.seed, &format!("inject/{index}"));
            let result = self
                .backend
                .request(&hostile, self.layout.node(&distributor), seed)
                .await?;
            let passed =
                result.outcome == RequestOutcome::Unauthorised && result.detail.contains(want);
            let outcome = format!("request {:?}: {}", result.outcome, result.detail).to_lowercase();
            return Ok(Judged {
                outcome,
                expected: format!("refused: {want}"),
                passed,
            });
        }
        let round = self.state.opened;
        let open = round > 0
            && !self.state.sealed.contains_key(&round)
            && !self.state.failed.contains_key(&round);
        if attack.needs_open_round() && !open {
            bail!("attack `{attack:?}` needs an open round: put it after a round step with until = \"opened\"");
        }
        let mut rng = layout::rng(self.seed, &format!("inject/{index}"));
        let key = &self.layout.generator_key;
        let client = ClientId(hostile.client_id.expect("hostile peers have a client id"));
        let fp = key.fingerprint();
        let submission = |round: u64, ciphertext: Vec<u8>, fp: Digest32| {
            wire::encode_gossip(&Gossip::Phrase(PhraseSubmission {
                round: RoundId(round),
                client,
                key_fingerprint: fp,
                ciphertext,
            }))
        };
        let phrase = Phrase::build(UserInput(0), client, &mut rng)?;
        let messages: Vec<Vec<u8>> = match attack {
            Attack::Malformed => vec![b"\xff\x00 not CBOR at all".to_vec()],
            Attack::WrongSize => vec![submission(round, vec![0x5a; 100], fp)],
            Attack::Oversized => vec![vec![0u8; MAX_GOSSIP_BYTES + 100]],
            Attack::OtherKey => {
                let other =
                    PrivateKey::generate(key.bits(), &mut layout::rng(self.seed, "other-key"))?;
                vec![submission(
                    round,
                    other
                        .public()
                        .seal(RoundId(round), client, &phrase, &mut rng)?,
                    fp,
                )]
            }
            Attack::Replay => {
                let earlier = RoundId(round.saturating_sub(1));
                vec![submission(
                    round,
                    key.seal(earlier, client, &phrase, &mut rng)?,
                    fp,
                )]
            }
            Attack::Unlisted => vec![submission(
                round,
                key.seal(RoundId(round), client, &phrase, &mut rng)?,
                fp,
            )],
            Attack::Duplicate => {
                let valid = submission(
                    round,
                    key.seal(RoundId(round), client, &phrase, &mut rng)?,
                    fp,
                );
                vec![valid.clone(), valid]
            }
            Attack::UnlistedRequest => unreachable!("handled above"),
        };
        // The generator must be among the peers the hostile one publishes to.
        let pair = (
            from.to_string(),
            self.layout.node(self.generator()).peer_id.to_string(),
        );
        if !self
            .pump_until(within, |s| s.subscriptions.contains(&pair))
            .await?
        {
            bail!("{from} never saw the generator subscribe; cannot inject");
        }
        let mark = self.state.rejections.len();
        for bytes in messages {
            self.backend
                .control(
                    from,
                    ControlLine::PublishRaw {
                        hex: hex::encode(bytes),
                    },
                )
                .await?;
        }
        let generator = self.generator().to_string();
        let want_owned = want.to_string();
        let seen = self
            .pump_until(within, |s| {
                s.rejections[mark..]
                    .iter()
                    .any(|(n, r)| *n == generator && r.contains(&want_owned))
            })
            .await?;
        let outcome = match self.state.rejections[mark..]
            .iter()
            .find(|(n, r)| *n == generator && r.contains(want))
        {
            Some((_, reason)) => format!("rejected by {generator}: {reason}"),
            None if seen => "rejected".into(),
            None => {
                let other: Vec<&String> = self.state.rejections[mark..]
                    .iter()
                    .map(|(_, r)| r)
                    .collect();
                format!("not rejected as expected within {within:?} (saw {other:?})")
            }
        };
        Ok(Judged {
            outcome,
            expected: format!("rejected: {want}"),
            passed: seen,
        })
    }

    fn totals(&self, t: &Totals) -> Judged {
        let s = &self.state;
        let mut passed = true;
        let mut got = vec![format!(
            "{} sealed, {} failed, {} OTPs",
            s.sealed.len(),
            s.failed.len(),
            s.otps.len()
        )];
        let mut wanted = Vec::new();
        for (name, want, have) in [
            ("sealed", t.rounds_sealed, s.sealed.len()),
            ("failed", t.rounds_failed, s.failed.len()),
            ("OTPs", t.otps, s.otps.len()),
        ] {
            if let Some(w) = want {
                wanted.push(format!("{w} {name}"));
                passed &= w as usize == have;
            }
        }
        if let Some(want_chain) = t.chain {
            let linked = s
                .sealed
                .values()
                .collect::<Vec<_>>()
                .windows(2)
                .all(|w| w[1].prev_commitment == w[0].commitment);
            got.push(format!("chain {}", if linked { "links" } else { "BROKEN" }));
            wanted.push(format!(
                "chain {}",
                if want_chain { "links" } else { "broken" }
            ));
            passed &= linked == want_chain;
        }
        if !t.includes.is_empty() || !t.excludes.is_empty() {
            let round = t
                .round
                .or_else(|| s.sealed.keys().next_back().copied())
                .unwrap_or(0);
            let included = s
                .sealed
                .get(&round)
                .map(|r| r.included.clone())
                .unwrap_or_default();
            got.push(format!("round {round} includes {included:?}"));
            if !t.includes.is_empty() {
                wanted.push(format!("round {round} includes {:?}", t.includes));
                passed &= t.includes.iter().all(|c| included.contains(c));
            }
            if !t.excludes.is_empty() {
                wanted.push(format!("round {round} excludes {:?}", t.excludes));
                passed &= !t.excludes.iter().any(|c| included.contains(c));
            }
        }
        if !s.crashed.is_empty() {
            got.push(format!("crashed: {:?}", s.crashed));
            passed = false;
        }
        Judged {
            outcome: got.join(", "),
            expected: if wanted.is_empty() {
                "-".into()
            } else {
                wanted.join(", ")
            },
            passed,
        }
    }
}
