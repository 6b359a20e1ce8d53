//! `otpmesh sim`: the deterministic simulator (`otpmesh_protocol::sim`), from the command line:
//! one run of a given shape, or a swarm of runs whose shapes and faults come from their seeds.

use super::{Failure, Outcome};
use crate::cli::SimArgs;
use anyhow::anyhow;
use otpmesh_protocol::sim::{net::Faults, swarm, Config, Report, Sim};
use std::time::{Duration, Instant};

pub fn run(args: SimArgs) -> Outcome {
    let bad = |e: String| Failure {
        code: 2,
        error: anyhow!(e),
    };
    let faults: Faults = args.faults.parse().map_err(|e| bad(format!("{e}")))?;
    let seed = args.seed.unwrap_or_else(rand::random);
    if let Some(runs) = args.swarm {
        return run_swarm(seed, runs, Duration::from_secs(args.seconds), args.json);
    }
    let config = Config {
        seed,
        contributors: args.contributors,
        distributors: args.distributors,
        requesters: args.requesters,
        rounds: args.rounds,
        requests: args.requests.unwrap_or(args.requesters),
        faults,
        rsa_bits: args.rsa_bits,
        sabotage: false,
        threshold: args.threshold.map(|t| t.0),
    };
    let replay = replay(&config);
    let report = Sim::new(config)
        .map_err(|e| bad(e.to_string()))?
        .run_to_end();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", summary(&report));
    }
    if report.violations.is_empty() {
        return Ok(());
    }
    for v in &report.violations {
        eprintln!("violation: {v}");
    }
    Err(Failure {
        code: 1,
        error: anyhow!(
            "{} invariant(s) broken; replay with: {replay}",
            report.violations.len()
        ),
    })
}

/// The shortest command that runs `config` again.
fn replay(config: &Config) -> String {
    format!(
        "otpmesh sim --seed {} --contributors {} --distributors {} --requesters {} --rounds {} --requests {}{}{}",
        config.seed,
        config.contributors,
        config.distributors,
        config.requesters,
        config.rounds,
        config.requests,
        match config.faults.to_string() {
            f if f.is_empty() => String::new(),
            f => format!(" --faults {f}"),
        },
        match config.rsa_bits {
            2048 => String::new(),
            bits => format!(" --rsa-bits {bits}"),
        },
    ) + &match config.threshold {
        Some(p) => format!(" --threshold {}/{}", p.t, p.n),
        None => String::new(),
    }
}

fn summary(report: &Report) -> String {
    let beacon = match report.beacon_held {
        0 => String::new(),
        held => format!(
            "; beacon values for {} rounds, {held} held",
            report.beacon_rounds
        ),
    };
    format!(
        "seed {}: {} rounds sealed, {} failed{beacon}; {} OTPs issued, {} accepted, {} replays \
         refused, {} requests failed; {} messages ({} lost, {} duplicated); {} crashes, {} \
         partitions; {:.1} s virtual in {:.1} s; trace {}",
        report.seed,
        report.rounds_sealed,
        report.rounds_failed,
        report.otps_issued,
        report.otps_accepted,
        report.replays_refused,
        report.requests_failed,
        report.messages,
        report.lost,
        report.duplicated,
        report.crashes,
        report.partitions,
        report.virtual_ms as f64 / 1000.0,
        report.wall_ms as f64 / 1000.0,
        report.trace
    )
}

/// A swarm run that broke an invariant: its seed, the command that replays it, what broke.
#[derive(serde::Serialize)]
struct Broken {
    seed: u64,
    replay: String,
    violations: Vec<String>,
}

#[derive(serde::Serialize)]
struct SwarmReport {
    first_seed: u64,
    runs: u32,
    asked: u32,
    wall_ms: u64,
    threshold_runs: u32,
    faulty_runs: u32,
    rounds_sealed: u64,
    otps_accepted: u64,
    broken: Vec<Broken>,
}

/// Up to `runs` runs from seed `first` on, none started after `within`.
fn run_swarm(first: u64, runs: u32, within: Duration, json: bool) -> Outcome {
    let start = Instant::now();
    let mut out = SwarmReport {
        first_seed: first,
        runs: 0,
        asked: runs,
        wall_ms: 0,
        threshold_runs: 0,
        faulty_runs: 0,
        rounds_sealed: 0,
        otps_accepted: 0,
        broken: Vec::new(),
    };
    for i in 0..runs {
        if start.elapsed() >= within {
            break;
        }
        let config = swarm::shape(first.wrapping_add(u64::from(i)));
        let (seed, replay) = (config.seed, replay(&config));
        out.threshold_runs += u32::from(config.threshold.is_some());
        out.faulty_runs += u32::from(config.faults != Faults::default());
        let violations = match Sim::new(config) {
            Ok(sim) => {
                let report = sim.run_to_end();
                out.rounds_sealed += u64::from(report.rounds_sealed);
                out.otps_accepted += u64::from(report.otps_accepted);
                report.violations
            }
            Err(e) => vec![format!("the swarm drew a shape no run can have: {e}")],
        };
        out.runs += 1;
        if !violations.is_empty() {
            if !json {
                eprintln!(
                    "seed {seed}: {}; replay with: {replay}",
                    violations.join("; ")
                );
            }
            out.broken.push(Broken {
                seed,
                replay,
                violations,
            });
        }
    }
    out.wall_ms = start.elapsed().as_millis() as u64;
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "swarm from seed {first}: {} runs ({} threshold, {} with faults) in {:.1} s; {} rounds \
             sealed, {} OTPs accepted; {} broke an invariant",
            out.runs,
            out.threshold_runs,
            out.faulty_runs,
            out.wall_ms as f64 / 1000.0,
            out.rounds_sealed,
            out.otps_accepted,
            out.broken.len()
        );
    }
    match out.broken.first() {
        None => Ok(()),
        Some(b) => Err(Failure {
            code: 1,
            error: anyhow!(
                "{} of {} runs broke an invariant; the first replays with: {}",
                out.broken.len(),
                out.runs,
                b.replay
            ),
        }),
    }
}
