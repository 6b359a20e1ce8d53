//! `otpmesh bench`: measurements with a baseline taken in the same invocation; one file per suite.

mod ingest;
mod mesh;
mod plot;
mod round;
mod rsa;
mod serve;
mod sim;
mod soak;
mod threshold;
mod timeline;
mod verify;

pub use ingest::ingest;
pub use mesh::mesh;
pub use round::round;
pub use rsa::rsa;
pub use serve::{serve, tcp_baseline};
pub use sim::sim;
pub use soak::soak;
pub use threshold::threshold;
pub use verify::verify;

use serve::{enrolled, Requester, ENROLLED_OTP};

use crate::cli::BenchOutput;
use crate::scenario::backend::Backend;
use crate::scenario::layout;
use crate::scenario::runner::Runner;
use crate::scenario::spec::{
    NodeRole, NodeSpec, RoundExpect, RoundOutcome, RoundUntil, Scenario, Step, StepSpec,
};
use anyhow::{anyhow, bail, Context};
use otpmesh_protocol::mesh::Settings;
use otpmesh_protocol::phrase::{ClientId, Phrase, UserInput};
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::seal::PrivateKey;
use std::time::{Duration, Instant};

impl BenchOutput {
    /// Writes `report` to `--json FILE`, if given.
    fn write_json(&self, report: &impl serde::Serialize) -> anyhow::Result<()> {
        if let Some(path) = &self.json {
            std::fs::write(path, serde_json::to_string_pretty(report)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Draws `series` into `--plot FILE.svg`, if given.
    fn plot(
        &self,
        title: &str,
        x_label: &str,
        y_label: &str,
        series: &[plot::Series],
    ) -> anyhow::Result<()> {
        match &self.plot {
            Some(path) => plot::lines(path, title, x_label, y_label, series),
            None => Ok(()),
        }
    }
}

/// Parses a comma-separated list of counts given to `--flag`, each within `range`.
fn counts(
    text: &str,
    flag: &str,
    range: std::ops::RangeInclusive<u32>,
) -> anyhow::Result<Vec<u32>> {
    text.split(',')
        .map(|t| {
            let n: u32 = t
                .trim()
                .parse()
                .map_err(|e| anyhow!("--{flag} {t:?}: {e}"))?;
            if !range.contains(&n) {
                bail!(
                    "--{flag} {n}: between {} and {}",
                    range.start(),
                    range.end()
                );
            }
            Ok(n)
        })
        .collect()
}

/// The lines a distributor prints per OTP, which the serving benchmarks take off its pipe unread.
const LOAD_LINES: &[&str] = &["otp_issued", "otp_verified", "use_replicated"];

/// Most contributors a round benchmark starts.
pub const MAX_K: u32 = 512;
/// Decryptions timed for the baseline.
const FLOOR_SAMPLES: u32 = 100;

/// One RSA-2048 OAEP decryption on one core, in milliseconds (the median of a batch).
fn decrypt_cost() -> anyhow::Result<f64> {
    let mut rng = layout::rng(1, "bench/floor");
    let key = PrivateKey::generate(2048, &mut rng)?;
    let phrase = Phrase::build(UserInput(1), ClientId(1), &mut rng)?;
    let ct = key
        .public()
        .seal(RoundId(1), ClientId(1), &phrase, &mut rng)?;
    let mut samples: Vec<f64> = (0..FLOOR_SAMPLES)
        .map(|_| {
            let t = Instant::now();
            let opened = key.open(RoundId(1), ClientId(1), &ct);
            assert!(opened.is_ok(), "the baseline's own ciphertext opens");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// A mesh of one generator, one distributor, `k` contributors and `requesters` listed requesters
/// (`r1`…), with `rounds` steps each running a round until it is delivered.
fn scenario(k: u32, rounds: usize, requesters: u32) -> Scenario {
    let node = |name: String, role, client_id| NodeSpec {
        name,
        role,
        client_id,
        input: None,
        listed: None,
    };
    let mut nodes = vec![
        node("gen".into(), NodeRole::Generator, None),
        node("dist".into(), NodeRole::Distributor, None),
    ];
    nodes.extend((1..=k).map(|i| node(format!("c{i}"), NodeRole::Contributor, Some(i))));
    nodes.extend((1..=requesters).map(|i| node(format!("r{i}"), NodeRole::Requester, None)));
    let steps = (0..rounds)
        .map(|i| StepSpec {
            line: 0,
            name: format!("round {}", i + 1),
            narrate: None,
            step: Step::Round {
                inputs: Default::default(),
                until: Some(RoundUntil::Delivered),
                timeout_ms: Some(120_000),
                expect: RoundExpect {
                    outcome: Some(RoundOutcome::Sealed),
                    ..Default::default()
                },
            },
        })
        .collect();
    Scenario {
        name: format!("bench-round-{k}"),
        description: None,
        seed: Some(k as u64),
        settings: Settings {
            quorum: k,
            deadline_ms: 120_000,
            ..Default::default()
        },
        nodes,
        steps,
    }
}

/// Makes a bench scenario a threshold mesh: N generators and N distributors instead of one each.
fn into_threshold(s: &mut Scenario, t: otpmesh_protocol::mesh::Threshold) {
    s.nodes
        .retain(|n| !matches!(n.role, NodeRole::Generator | NodeRole::Distributor));
    let node = |name: String, role| NodeSpec {
        name,
        role,
        client_id: None,
        input: None,
        listed: None,
    };
    let mut front: Vec<NodeSpec> = (1..=t.0.n)
        .map(|i| node(format!("g{i}"), NodeRole::Generator))
        .collect();
    front.extend((1..=t.0.n).map(|i| node(format!("d{i}"), NodeRole::Distributor)));
    front.append(&mut s.nodes);
    s.nodes = front;
    s.settings.threshold = Some(t);
    s.name = format!("{}-threshold-{t}", s.name);
}

/// Plans `s` in a fresh temporary directory (removed when the returned handle drops).
fn plan(s: &Scenario, seed: u64) -> anyhow::Result<(tempfile::TempDir, layout::Layout)> {
    let dir = tempfile::Builder::new()
        .prefix("otpmesh-bench-")
        .tempdir()?;
    let layout = layout::plan(s, dir.path(), seed)?;
    Ok((dir, layout))
}

/// Where a bench mesh's nodes run.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Placement {
    InProcess,
    Processes,
    /// The generator as a child process under `wrap` (e.g. `taskset -c 0`), the rest in this
    /// process: the load apart from the node that is measured.
    GeneratorApart {
        wrap: Vec<String>,
    },
}

impl Placement {
    fn in_process(in_process: bool) -> Placement {
        match in_process {
            true => Placement::InProcess,
            false => Placement::Processes,
        }
    }
}

/// A runner for a planned bench mesh, its nodes placed as `placement` says.
fn runner<'a>(
    s: &'a Scenario,
    layout: &'a layout::Layout,
    placement: &Placement,
    seed: u64,
) -> Runner<'a> {
    let (backend, events) = match placement {
        Placement::InProcess => Backend::new(true),
        Placement::Processes => Backend::new(false),
        Placement::GeneratorApart { wrap } => {
            let apart = s
                .nodes
                .iter()
                .filter(|n| matches!(n.role, NodeRole::Generator))
                .map(|n| n.name.clone())
                .collect();
            Backend::in_process_but(apart, wrap.clone())
        }
    };
    Runner {
        scenario: s,
        layout,
        backend,
        events,
        state: Default::default(),
        seed,
    }
}

/// What one benchmark mesh measured.
struct MeshRun {
    form_ms: f64,
    /// Each round's latency, open to sealed and delivered.
    latencies: Vec<f64>,
    /// RSS of each node process (empty in-process).
    memory: Vec<Memory>,
    /// Every event's arrival: (node, event, when).
    arrivals: Vec<(String, crate::line::Line, std::time::Instant)>,
}

/// Starts a fresh mesh of `k` contributors, runs `rounds` rounds on it, and stops it.
async fn run_mesh(
    k: u32,
    rounds: usize,
    placement: &Placement,
    threshold: Option<otpmesh_protocol::mesh::Threshold>,
) -> anyhow::Result<MeshRun> {
    let mut s = scenario(k, rounds, 0);
    if let Some(t) = threshold {
        into_threshold(&mut s, t);
    }
    let (_dir, layout) = plan(&s, k as u64)?;
    let mut runner = runner(&s, &layout, placement, k as u64);
    runner.state.arrivals = Some(Vec::new());
    let result = async {
        let t = Instant::now();
        runner.start_mesh(Duration::from_secs(120)).await?;
        let form_ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut latencies = Vec::new();
        for (i, step) in s.steps.iter().enumerate() {
            let t = Instant::now();
            let judged = runner.run_step(i, step).await?;
            if !judged.passed {
                bail!("k = {k}: {}: {}", step.name, judged.outcome);
            }
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let memory = runner
            .backend
            .pids()
            .into_iter()
            .filter_map(memory)
            .collect();
        Ok((form_ms, latencies, memory))
    }
    .await;
    let arrivals = runner.state.arrivals.take().unwrap_or_default();
    runner.stop_all().await;
    let (form_ms, latencies, memory) = result?;
    Ok(MeshRun {
        form_ms,
        latencies,
        memory,
        arrivals,
    })
}

/// Memory of one process, in MB, from /proc.
#[derive(Clone, Copy, Default)]
struct Memory {
    /// VmRSS: every resident page mapped, including the executable's pages that all nodes share.
    rss: f64,
    /// RssAnon: this process's own memory (heap, stacks).
    private: f64,
    /// Pss: resident pages with each shared page divided among the processes sharing it.
    proportional: f64,
}

fn kb_field(text: &str, name: &str) -> Option<f64> {
    let kb: f64 = text
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Some(Memory {
        rss: kb_field(&status, "VmRSS:")?,
        private: kb_field(&status, "RssAnon:").unwrap_or(f64::NAN),
        proportional: kb_field(&rollup, "Pss:").unwrap_or(f64::NAN),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
