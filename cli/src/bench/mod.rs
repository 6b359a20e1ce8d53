//! `otpmesh bench`: measurements with a baseline taken in the same invocation.
//!
//! `round`: latency from a round's opening to sealed-and-delivered for k contributors, on real
//! processes and in-process, against the floor a generator cannot beat: one RSA-OAEP decryption
//! (measured now, on one core) × k / cores.

use crate::cli::BenchRoundArgs;
use crate::cmd::Outcome;
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
use serde::Serialize;
use std::time::{Duration, Instant};

/// Most contributors a round benchmark starts.
pub const MAX_K: u32 = 512;
/// Decryptions timed for the baseline.
const FLOOR_SAMPLES: u32 = 100;

#[derive(Serialize)]
struct Row {
    k: u32,
    mode: &'static str,
    rounds: usize,
    latency_p50_ms: f64,
    latency_max_ms: f64,
    floor_ms: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    cores: usize,
    decrypt_ms: f64,
    rows: Vec<Row>,
}

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
            let opened = key.open(RoundId(1), ClientId(1), &ct, &mut rand::rngs::OsRng);
            assert!(opened.is_ok(), "the baseline's own ciphertext opens");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn scenario(k: u32, rounds: usize) -> Scenario {
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

/// What one benchmark mesh measured.
struct MeshRun {
    form_ms: f64,
    /// Each round's latency, open to sealed and delivered.
    latencies: Vec<f64>,
    /// RSS of each node process (empty in-process).
    rss_mb: Vec<f64>,
    /// Every event's arrival: (node, event, round, when).
    arrivals: Vec<(String, String, u64, std::time::Instant)>,
}

/// Starts a fresh mesh of `k` contributors, runs `rounds` rounds on it, and stops it.
async fn run_mesh(k: u32, rounds: usize, in_process: bool) -> anyhow::Result<MeshRun> {
    let s = scenario(k, rounds);
    let dir = tempfile::Builder::new()
        .prefix("otpmesh-bench-")
        .tempdir()?;
    let layout = layout::plan(&s, dir.path(), k as u64)?;
    let (backend, events) = Backend::new(in_process);
    let mut runner = Runner {
        scenario: &s,
        layout: &layout,
        backend,
        events,
        state: Default::default(),
        seed: k as u64,
    };
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
        let rss_mb = runner
            .backend
            .pids()
            .into_iter()
            .filter_map(rss_mb)
            .collect();
        Ok((form_ms, latencies, rss_mb))
    }
    .await;
    let arrivals = runner.state.arrivals.take().unwrap_or_default();
    runner.backend.stop_all().await;
    let (form_ms, latencies, rss_mb) = result?;
    Ok(MeshRun {
        form_ms,
        latencies,
        rss_mb,
        arrivals,
    })
}

pub async fn round(args: BenchRoundArgs) -> Outcome {
    let ks: Vec<u32> = args
        .k
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<u32>()
                .map_err(|e| anyhow!("--k {t:?}: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(bad) = ks.iter().find(|k| **k == 0 || **k > MAX_K) {
        return Err(anyhow!("--k {bad}: between 1 and {MAX_K} contributors").into());
    }
    if args.rounds == 0 || args.rounds > 100 {
        return Err(anyhow!("--rounds {}: between 1 and 100", args.rounds).into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let decrypt_ms = decrypt_cost()?;
    println!(
        "baseline: one RSA-2048 OAEP decryption = {decrypt_ms:.3} ms on one core; {cores} cores"
    );
    println!(
        "{:>5} {:<11} {:>7} {:>12} {:>12} {:>10} {:>7}",
        "k", "mode", "rounds", "p50 ms", "max ms", "floor ms", "ratio"
    );
    let mut rows = Vec::new();
    let modes: &[(&'static str, bool)] = match args.mode.as_str() {
        "both" => &[("in-process", true), ("processes", false)],
        "in-process" => &[("in-process", true)],
        "processes" => &[("processes", false)],
        other => return Err(anyhow!("--mode {other:?}: both, in-process or processes").into()),
    };
    for &k in &ks {
        for &(mode, in_process) in modes {
            let mut lat = run_mesh(k, args.rounds, in_process)
                .await
                .with_context(|| format!("k = {k}, {mode}"))?
                .latencies;
            lat.sort_by(f64::total_cmp);
            let floor_ms = decrypt_ms * k as f64 / cores as f64;
            let row = Row {
                k,
                mode,
                rounds: lat.len(),
                latency_p50_ms: lat[lat.len() / 2],
                latency_max_ms: lat[lat.len() - 1],
                floor_ms,
                ratio: lat[lat.len() / 2] / floor_ms,
            };
            println!(
                "{:>5} {:<11} {:>7} {:>12.1} {:>12.1} {:>10.1} {:>7.2}",
                row.k,
                row.mode,
                row.rounds,
                row.latency_p50_ms,
                row.latency_max_ms,
                row.floor_ms,
                row.ratio
            );
            rows.push(row);
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            suite: "round",
            cores,
            decrypt_ms,
            rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct MeshRow {
    nodes: usize,
    form_ms: f64,
    rss_avg_mb: f64,
    rss_max_mb: f64,
    gossip_p50_ms: f64,
    gossip_p99_ms: f64,
    samples: usize,
}

/// Resident memory of a process in MB, from /proc.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `otpmesh bench mesh`: meshes of N processes (1 generator, 1 distributor, N − 2 contributors):
/// time to form (every node listening and seeing the generator subscribe), RSS per node, and gossip
/// propagation (the generator's round announcement to each contributor's request for its input, both
/// as their events reach this process).
pub async fn mesh(args: crate::cli::BenchMeshArgs) -> Outcome {
    let sizes: Vec<u32> = args
        .nodes
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<u32>()
                .map_err(|e| anyhow!("--nodes {t:?}: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(bad) = sizes.iter().find(|n| **n < 3 || **n > MAX_K + 2) {
        return Err(anyhow!("--nodes {bad}: between 3 and {}", MAX_K + 2).into());
    }
    println!(
        "{:>6} {:>10} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "nodes", "form ms", "RSS avg MB", "RSS max MB", "gossip p50", "gossip p99", "samples"
    );
    let mut rows = Vec::new();
    for &n in &sizes {
        let k = n - 2;
        let run = run_mesh(k, args.rounds, false)
            .await
            .with_context(|| format!("{n} nodes"))?;
        let (form_ms, rss, arrivals) = (run.form_ms, run.rss_mb, run.arrivals);
        let mut delays = Vec::new();
        for (_, _, round, opened) in arrivals
            .iter()
            .filter(|(who, e, _, _)| who == "gen" && e == "round_opened")
        {
            for (_, _, _, at) in arrivals
                .iter()
                .filter(|(_, e, r, _)| e == "input_needed" && r == round)
            {
                delays.push(at.saturating_duration_since(*opened).as_secs_f64() * 1000.0);
            }
        }
        delays.sort_by(f64::total_cmp);
        let row = MeshRow {
            nodes: n as usize,
            form_ms,
            rss_avg_mb: rss.iter().sum::<f64>() / rss.len().max(1) as f64,
            rss_max_mb: rss.iter().copied().fold(0.0, f64::max),
            gossip_p50_ms: percentile(&delays, 0.5),
            gossip_p99_ms: percentile(&delays, 0.99),
            samples: delays.len(),
        };
        println!(
            "{:>6} {:>10.0} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>8}",
            row.nodes,
            row.form_ms,
            row.rss_avg_mb,
            row.rss_max_mb,
            row.gossip_p50_ms,
            row.gossip_p99_ms,
            row.samples
        );
        rows.push(row);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
