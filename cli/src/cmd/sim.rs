//! `otpmesh sim`: the deterministic simulator (`otpmesh_protocol::sim`), from the command line.

use super::{Failure, Outcome};
use crate::cli::SimArgs;
use anyhow::anyhow;
use otpmesh_protocol::sim::{net::Faults, Config, Sim};

pub fn run(args: SimArgs) -> Outcome {
    let bad = |e: String| Failure {
        code: 2,
        error: anyhow!(e),
    };
    let faults: Faults = args.faults.parse().map_err(|e| bad(format!("{e}")))?;
    let seed = args.seed.unwrap_or_else(rand::random);
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
    let replay = format!(
        "otpmesh sim --seed {seed} --contributors {} --distributors {} --requesters {} --rounds {} --requests {}{}{}",
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
    };
    let report = Sim::new(config)
        .map_err(|e| bad(e.to_string()))?
        .run_to_end();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "seed {seed}: {} rounds sealed, {} failed; {} OTPs issued, {} accepted, {} replays refused, \
             {} requests failed; {} messages ({} lost, {} duplicated); {} crashes, {} partitions; \
             {:.1} s virtual in {:.1} s; trace {}",
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
        );
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
