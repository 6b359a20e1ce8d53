//! `otpmesh bench round`: latency from a round's opening to sealed-and-delivered for k
//! contributors, on real processes and in-process, against the floor a generator cannot beat: one
//! RSA-OAEP decryption (measured now, on one core) × k / cores.

use super::{counts, decrypt_cost, run_mesh, MAX_K};
use crate::cli::BenchRoundArgs;
use crate::cmd::Outcome;
use anyhow::{anyhow, Context};
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    k: u32,
    mode: &'static str,
    /// "single", or the threshold ("9/16").
    setup: String,
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

pub async fn round(args: BenchRoundArgs) -> Outcome {
    let ks = counts(&args.k, "k", 1..=MAX_K)?;
    if args.rounds == 0 || args.rounds > 100 {
        return Err(anyhow!("--rounds {}: between 1 and 100", args.rounds).into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let decrypt_ms = decrypt_cost()?;
    println!(
        "baseline: one RSA-2048 OAEP decryption = {decrypt_ms:.3} ms on one core; {cores} cores"
    );
    println!(
        "{:>5} {:<11} {:<9} {:>7} {:>12} {:>12} {:>10} {:>7}",
        "k", "mode", "setup", "rounds", "p50 ms", "max ms", "floor ms", "ratio"
    );
    // With --threshold, each mesh is measured in single mode too, in this same run.
    let setups: Vec<Option<otpmesh_protocol::mesh::Threshold>> = match args.threshold {
        Some(t) => vec![None, Some(t)],
        None => vec![None],
    };
    let mut rows = Vec::new();
    let modes: &[(&'static str, bool)] = match args.mode.as_str() {
        "both" => &[("in-process", true), ("processes", false)],
        "in-process" => &[("in-process", true)],
        "processes" => &[("processes", false)],
        other => return Err(anyhow!("--mode {other:?}: both, in-process or processes").into()),
    };
    for &k in &ks {
        for (&(mode, in_process), setup) in modes
            .iter()
            .flat_map(|m| setups.iter().map(move |s| (m, *s)))
        {
            let label = setup.map_or("single".to_string(), |t| t.to_string());
            let mut lat = run_mesh(k, args.rounds, in_process, setup)
                .await
                .with_context(|| format!("k = {k}, {mode}, {label}"))?
                .latencies;
            lat.sort_by(f64::total_cmp);
            let floor_ms = decrypt_ms * k as f64 / cores as f64;
            let row = Row {
                k,
                mode,
                setup: label,
                rounds: lat.len(),
                latency_p50_ms: lat[lat.len() / 2],
                latency_max_ms: lat[lat.len() - 1],
                floor_ms,
                ratio: lat[lat.len() / 2] / floor_ms,
            };
            println!(
                "{:>5} {:<11} {:<9} {:>7} {:>12.1} {:>12.1} {:>10.1} {:>7.2}",
                row.k,
                row.mode,
                row.setup,
                row.rounds,
                row.latency_p50_ms,
                row.latency_max_ms,
                row.floor_ms,
                row.ratio
            );
            rows.push(row);
        }
    }
    let mut series: Vec<super::plot::Series> = modes
        .iter()
        .map(|(mode, _)| {
            let line = rows
                .iter()
                .filter(|r| r.mode == *mode)
                .map(|r| (r.k as f64, r.latency_p50_ms))
                .collect();
            (format!("p50 latency, {mode}"), line)
        })
        .collect();
    series.push((
        "floor: decryption × k / cores".to_string(),
        ks.iter()
            .map(|&k| (k as f64, decrypt_ms * k as f64 / cores as f64))
            .collect(),
    ));
    args.out.plot(
        "round: open to sealed and delivered",
        "contributors k",
        "milliseconds",
        &series,
    )?;

    let report = Report {
        suite: "round",
        cores,
        decrypt_ms,
        rows,
    };
    args.out.write_json(&report)?;

    Ok(())
}
