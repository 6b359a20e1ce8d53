//! `otpmesh bench ingest`: phrases per second a generator accepts (decrypted, checked and counted
//! into the round), against the ceiling of the cores it decrypts on: single-core RSA-OAEP
//! decryptions per second (measured first, in the same run) × those cores.
//!
//! Two placements, one after the other in the same run:
//! - `shared`: the generator and its contributors in this process, on every core (what the
//!   benchmark measured before issue 23: the contributors' signing and publishing compete with
//!   the generator's decryptions, so the ratio says little about the generator);
//! - `apart`: the generator in a child process pinned to core 0 (its decryption pool sized by the
//!   one core it sees: one worker), the contributors in this process pinned to the other cores.
//!   The ceiling is then one core's decryptions per second, and the ratio is the generator's own.
//!
//! Every contributor answers its input request at once, so the phrases reach the generator faster
//! than it can decrypt them; the rate is taken between its first and last `phrase_accepted`.

use super::{decrypt_cost, run_mesh, Placement, MAX_K};
use crate::cli::BenchIngestArgs;
use crate::cmd::Outcome;
use anyhow::{anyhow, Context};
use otpmesh_protocol::role::Event;
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    placement: &'static str,
    /// Cores the generator decrypts on.
    generator_cores: usize,
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
    println!(
        "baseline: one RSA-2048 OAEP decryption = {decrypt_ms:.3} ms on one core = {:.0}/s; {cores} cores",
        1000.0 / decrypt_ms
    );
    let mut placements = vec![("shared", cores, Placement::InProcess)];
    match pin_plan(cores) {
        Ok(wrap) => placements.push(("apart", 1, Placement::GeneratorApart { wrap })),
        Err(why) => println!("apart: not measured ({why})"),
    }
    println!(
        "{:<8} {:>6} {:>6} {:>8} {:>12} {:>12} {:>7}",
        "place", "cores", "round", "phrases", "accepted/s", "ceiling/s", "ratio"
    );
    let mut rows = Vec::new();
    for (name, generator_cores, placement) in placements {
        if let Placement::GeneratorApart { .. } = placement {
            // This process (the contributors, and every thread it starts from now on) off core 0.
            pin_this_process(&format!("1-{}", cores - 1))?;
        }
        let run = run_mesh(args.phrases, args.rounds, &placement, None)
            .await
            .with_context(|| format!("{name}: {} phrases per round", args.phrases))?;
        let ceiling_per_s = generator_cores as f64 * 1000.0 / decrypt_ms;
        for (round, per_s, phrases) in rates(&run.arrivals) {
            let row = Row {
                placement: name,
                generator_cores,
                round,
                phrases,
                per_s,
                ceiling_per_s,
                ratio: per_s / ceiling_per_s,
            };
            println!(
                "{:<8} {:>6} {:>6} {:>8} {:>12.0} {:>12.0} {:>7.3}",
                row.placement,
                row.generator_cores,
                row.round,
                row.phrases,
                row.per_s,
                row.ceiling_per_s,
                row.ratio
            );
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Err(anyhow!("no round accepted two phrases; nothing to measure").into());
    }
    let mut series = Vec::new();
    for place in ["shared", "apart"] {
        let of = || rows.iter().filter(move |r| r.placement == place);
        if of().next().is_none() {
            continue;
        }
        series.push((
            format!("accepted per second, {place}"),
            of().map(|r| (r.round as f64, r.per_s)).collect(),
        ));
        series.push((
            format!("ceiling, {place} (decryptions/s × generator cores)"),
            of().map(|r| (r.round as f64, r.ceiling_per_s)).collect(),
        ));
    }
    args.out.plot(
        "ingest: phrases a generator accepts per second",
        "round",
        "phrases per second",
        &series,
    )?;
    args.out.write_json(&Report {
        suite: "ingest",
        cores,
        decrypt_ms,
        rows,
    })?;
    Ok(())
}

/// The generator's acceptances per second in each round that accepted two or more phrases:
/// (round, per second, phrases).
fn rates(arrivals: &[(String, crate::line::Line, std::time::Instant)]) -> Vec<(u64, f64, usize)> {
    let mut by_round: std::collections::BTreeMap<u64, Vec<std::time::Instant>> = Default::default();
    for (who, line, at) in arrivals {
        if let Some(Event::PhraseAccepted { round, .. }) = line.role() {
            if who == "gen" {
                by_round.entry(round.0).or_default().push(*at);
            }
        }
    }
    by_round
        .into_iter()
        .filter(|(r, _)| *r > 0)
        .filter_map(|(round, accepted)| {
            let first = accepted.iter().min()?;
            let last = accepted.iter().max()?;
            let span = last.duration_since(*first).as_secs_f64();
            // n acceptances span n − 1 intervals.
            (accepted.len() >= 2 && span > 0.0)
                .then(|| (round, (accepted.len() - 1) as f64 / span, accepted.len()))
        })
        .collect()
}

/// How the generator is started on core 0: under `taskset -c 0`, where there are two cores or
/// more and util-linux's `taskset` is there.
fn pin_plan(cores: usize) -> Result<Vec<String>, String> {
    if cores < 2 {
        return Err("one core: nothing to keep the load apart on".into());
    }
    match std::process::Command::new("taskset").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(["taskset", "-c", "0"].map(String::from).to_vec()),
        _ => Err("no taskset (util-linux) to pin the generator with".into()),
    }
}

/// Pins every thread of this process to `cpus` (a taskset list, e.g. "1-3"); threads started
/// later inherit it.
fn pin_this_process(cpus: &str) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .output()
        .context("running taskset")?;
    if !out.status.success() {
        return Err(anyhow!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
