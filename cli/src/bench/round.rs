//! `otpmesh bench round`: latency from a round's opening to sealed-and-delivered for k
//! contributors, on real processes and in-process, against the floor a generator cannot beat: one
//! RSA-OAEP decryption (measured now, on one core) × k / cores.

use super::{counts, decrypt_cost, run_mesh, MAX_K};
use crate::cli::BenchRoundArgs;
use crate::cmd::Outcome;
use anyhow::{anyhow, Context};
use serde::Serialize;
use std::time::Instant;

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
    /// Where the time went, medians over the rounds (ms): open to the coordinator's last accepted
    /// dealing or phrase, then to sealed, then to stored at the last distributor.
    dealt_p50_ms: f64,
    sealed_p50_ms: f64,
    stored_p50_ms: f64,
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
        "{:>5} {:<11} {:<9} {:>7} {:>12} {:>12} {:>10} {:>7} {:>9} {:>9} {:>9}",
        "k",
        "mode",
        "setup",
        "rounds",
        "p50 ms",
        "max ms",
        "floor ms",
        "ratio",
        "dealt",
        "+sealed",
        "+stored"
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
            let run = run_mesh(
                k,
                args.rounds,
                &super::Placement::in_process(in_process),
                setup,
            )
            .await
            .with_context(|| format!("k = {k}, {mode}, {label}"))?;
            let mut lat = run.latencies;
            lat.sort_by(f64::total_cmp);
            let [dealt, sealed, stored] = phases(&run.arrivals, setup.is_some());
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
                dealt_p50_ms: dealt,
                sealed_p50_ms: sealed,
                stored_p50_ms: stored,
            };
            println!(
                "{:>5} {:<11} {:<9} {:>7} {:>12.1} {:>12.1} {:>10.1} {:>7.2} {:>9.1} {:>9.1} {:>9.1}",
                row.k,
                row.mode,
                row.setup,
                row.rounds,
                row.latency_p50_ms,
                row.latency_max_ms,
                row.floor_ms,
                row.ratio,
                row.dealt_p50_ms,
                row.sealed_p50_ms,
                row.stored_p50_ms
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

/// The medians over the rounds of a mesh run of three phases (ms): the coordinator's opening to
/// the last dealing (or phrase) it accepted, from there to its seal, and from there to the round
/// stored at the last distributor. The coordinator is `gen` in single mode and `g1` in threshold
/// mode; distributors are `dist` or `d1`….
fn phases(arrivals: &[(String, crate::line::Line, Instant)], threshold: bool) -> [f64; 3] {
    use otpmesh_protocol::role::Event;
    use std::collections::BTreeMap;
    let coordinator = if threshold { "g1" } else { "gen" };
    // Per round: opened, last accepted, sealed, last stored.
    let mut rounds: BTreeMap<u64, [Option<Instant>; 4]> = BTreeMap::new();
    for (who, line, at) in arrivals {
        let (slot, round) = match line.role() {
            Some(Event::RoundOpened { round, .. }) if who == coordinator => (0, round),
            Some(Event::PhraseAccepted { round, .. }) if who == coordinator => (1, round),
            Some(Event::RoundSealed { round, .. }) if who == coordinator => (2, round),
            Some(Event::RoundStored { round, .. }) if who.starts_with('d') => (3, round),
            _ => continue,
        };
        let times = rounds.entry(round.0).or_default();
        // The first opening; the last acceptance and storing; the first seal.
        times[slot] = match (slot, times[slot]) {
            (0 | 2, Some(first)) => Some(first),
            (_, Some(before)) => Some(before.max(*at)),
            (_, None) => Some(*at),
        };
    }
    let mut columns: [Vec<f64>; 3] = Default::default();
    for times in rounds.values() {
        if let [Some(opened), Some(dealt), Some(sealed), Some(stored)] = *times {
            let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
            columns[0].push(ms(opened, dealt));
            columns[1].push(ms(dealt, sealed));
            columns[2].push(ms(sealed, stored));
        }
    }
    columns.map(|mut c| {
        c.sort_by(f64::total_cmp);
        super::percentile(&c, 0.5)
    })
}
