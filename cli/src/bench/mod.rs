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

/// Runs `rounds` rounds on a fresh mesh of `k` contributors; returns each round's latency (ms).
async fn measure(k: u32, rounds: usize, in_process: bool) -> anyhow::Result<Vec<f64>> {
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
    let result = async {
        runner.start_mesh(Duration::from_secs(120)).await?;
        let mut latencies = Vec::new();
        for (i, step) in s.steps.iter().enumerate() {
            let t = Instant::now();
            let judged = runner.run_step(i, step).await?;
            if !judged.passed {
                bail!("k = {k}: {}: {}", step.name, judged.outcome);
            }
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(latencies)
    }
    .await;
    runner.backend.stop_all().await;
    result
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
            let mut lat = measure(k, args.rounds, in_process)
                .await
                .with_context(|| format!("k = {k}, {mode}"))?;
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
