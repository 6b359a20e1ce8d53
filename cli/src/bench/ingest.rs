//! `otpmesh bench ingest`: phrases per second a generator accepts (decrypted, checked and counted
//! into the round) with every core decrypting, against the ceiling: single-core RSA-OAEP
//! decryptions per second × cores, measured first in the same run.
//!
//! The generator and its contributors run in this process; every contributor answers its input
//! request at once, so the phrases reach the generator faster than it can decrypt them and the
//! rate between its first and last `phrase_accepted` is its own. That the contributors send
//! quickly and then idle keeps both cores for the generator.

use super::{decrypt_cost, run_mesh, MAX_K};
use crate::cli::BenchIngestArgs;
use crate::cmd::Outcome;
use anyhow::{anyhow, Context};
use otpmesh_protocol::role::Event;
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    round: u64,
    phrases: usize,
    per_s: f64,
    ceiling_per_s: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    cores: usize,
    decrypt_ms: f64,
    ceiling_per_s: f64,
    rows: Vec<Row>,
}

pub async fn ingest(args: BenchIngestArgs) -> Outcome {
    if args.phrases < 16 || args.phrases > MAX_K {
        return Err(anyhow!("--phrases {}: between 16 and {MAX_K}", args.phrases).into());
    }
    if args.rounds == 0 || args.rounds > 20 {
        return Err(anyhow!("--rounds {}: between 1 and 20", args.rounds).into());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let decrypt_ms = decrypt_cost()?;
    let ceiling_per_s = cores as f64 * 1000.0 / decrypt_ms;
    println!(
        "baseline: one RSA-2048 OAEP decryption = {decrypt_ms:.3} ms on one core; ceiling = {cores} cores × {:.0}/s = {ceiling_per_s:.0} phrases/s",
        1000.0 / decrypt_ms
    );
    let run = run_mesh(args.phrases, args.rounds, true, None)
        .await
        .with_context(|| format!("{} phrases per round", args.phrases))?;
    println!(
        "{:>6} {:>8} {:>12} {:>12} {:>7}",
        "round", "phrases", "accepted/s", "ceiling/s", "ratio"
    );
    // The generator's acceptances, by round.
    let mut by_round: std::collections::BTreeMap<u64, Vec<std::time::Instant>> = Default::default();
    for (who, line, at) in &run.arrivals {
        if let Some(Event::PhraseAccepted { round, .. }) = line.role() {
            if who == "gen" {
                by_round.entry(round.0).or_default().push(*at);
            }
        }
    }
    let mut rows = Vec::new();
    for (round, accepted) in by_round.into_iter().filter(|(r, _)| *r > 0) {
        let (Some(first), Some(last)) = (accepted.iter().min(), accepted.iter().max()) else {
            continue;
        };
        let span = last.duration_since(*first).as_secs_f64();
        if accepted.len() < 2 || span <= 0.0 {
            continue;
        }
        // n acceptances span n − 1 intervals.
        let per_s = (accepted.len() - 1) as f64 / span;
        let row = Row {
            round,
            phrases: accepted.len(),
            per_s,
            ceiling_per_s,
            ratio: per_s / ceiling_per_s,
        };
        println!(
            "{:>6} {:>8} {:>12.0} {:>12.0} {:>7.3}",
            row.round, row.phrases, row.per_s, row.ceiling_per_s, row.ratio
        );
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(anyhow!("no round accepted two phrases; nothing to measure").into());
    }
    let series = vec![
        (
            "accepted per second".to_string(),
            rows.iter().map(|r| (r.round as f64, r.per_s)).collect(),
        ),
        (
            "ceiling (decryptions/s × cores)".to_string(),
            rows.iter()
                .map(|r| (r.round as f64, r.ceiling_per_s))
                .collect(),
        ),
    ];
    args.out.plot(
        "ingest: phrases a generator accepts per second",
        "round",
        "phrases per second",
        &series,
    )?;

    let report = Report {
        suite: "ingest",
        cores,
        decrypt_ms,
        ceiling_per_s,
        rows,
    };
    args.out.write_json(&report)?;

    Ok(())
}
