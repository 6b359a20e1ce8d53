//! `otpmesh bench sim`: the deterministic simulator at scale (one round, one OTP per requester,
//! each verified then replayed), single mode for several contributor counts and threshold mode
//! for several N, against the floor the simulator cannot beat on one core: every RSA-OAEP
//! decryption the run needs, at the cost of one measured now.

use super::{counts, decrypt_cost};
use crate::cli::BenchSimArgs;
use crate::cmd::{Failure, Outcome};
use anyhow::{anyhow, bail};
use otpmesh_protocol::mesh::{Threshold, MAX_LISTED_PEERS};
use otpmesh_protocol::sim::{net::Faults, Config, Sim};
use serde::Serialize;

#[derive(Serialize)]
struct Row {
    /// "single", or the threshold ("9/16").
    setup: String,
    contributors: u32,
    distributors: u32,
    messages: u64,
    otps_accepted: u32,
    wall_s: f64,
    /// RSA decryptions the run needs: one per phrase (single); every generator opens its share
    /// of every dealing, the generators' own dealings included (threshold).
    decryptions: u64,
    floor_s: f64,
    /// The share of the wall time the decryptions take.
    rsa_share: f64,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    decrypt_ms: f64,
    rows: Vec<Row>,
}

fn config(contributors: u32, distributors: u32, threshold: Option<Threshold>) -> Config {
    Config {
        seed: 1,
        contributors,
        distributors,
        requesters: contributors,
        rounds: 1,
        requests: contributors,
        faults: Faults::default(),
        rsa_bits: 2048,
        sabotage: false,
        threshold: threshold.map(|t| t.0),
    }
}

fn run(config: Config, decrypt_ms: f64) -> anyhow::Result<Row> {
    let setup = config
        .threshold
        .map_or("single".to_string(), |p| format!("{}/{}", p.t, p.n));
    let (contributors, distributors) = (config.contributors, config.distributors);
    let decryptions = match config.threshold {
        None => contributors as u64,
        Some(p) => p.n as u64 * (contributors as u64 + p.n as u64),
    };
    let report = Sim::new(config)
        .map_err(|e| anyhow!("{setup}, {contributors} contributors: {e}"))?
        .run_to_end();
    if !report.violations.is_empty() {
        bail!(
            "{setup}, {contributors} contributors: {:?}",
            report.violations
        );
    }
    let wall_s = report.wall_ms as f64 / 1000.0;
    let floor_s = decryptions as f64 * decrypt_ms / 1000.0;
    Ok(Row {
        setup,
        contributors,
        distributors,
        messages: report.messages,
        otps_accepted: report.otps_accepted,
        wall_s,
        decryptions,
        floor_s,
        rsa_share: floor_s / wall_s.max(f64::EPSILON),
    })
}

pub fn sim(args: BenchSimArgs) -> Outcome {
    let bad = |error: anyhow::Error| Failure { code: 2, error };
    let most = MAX_LISTED_PEERS as u32;
    let sizes = counts(&args.contributors, "contributors", 1..=most).map_err(bad)?;
    let distributors = args.distributors;
    if !(1..=1000).contains(&distributors) {
        let error = anyhow!("--distributors {distributors}: between 1 and 1000");
        return Err(bad(error));
    }
    let thresholds: Vec<Threshold> = match args.thresholds.as_str() {
        "" => Vec::new(),
        list => list
            .split(',')
            .map(|t| {
                t.trim()
                    .parse()
                    .map_err(|e| anyhow!("--thresholds {t:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()
            .map_err(bad)?,
    };
    let decrypt_ms = decrypt_cost()?;
    println!("baseline: one RSA-2048 OAEP decryption = {decrypt_ms:.3} ms on one core");
    println!(
        "{:<7} {:>12} {:>12} {:>10} {:>9} {:>11} {:>9} {:>8}",
        "setup",
        "contributors",
        "distributors",
        "messages",
        "wall s",
        "decryptions",
        "floor s",
        "RSA"
    );
    let mut rows = Vec::new();
    let mut print = |row: Row| {
        println!(
            "{:<7} {:>12} {:>12} {:>10} {:>9.2} {:>11} {:>9.2} {:>7.0}%",
            row.setup,
            row.contributors,
            row.distributors,
            row.messages,
            row.wall_s,
            row.decryptions,
            row.floor_s,
            row.rsa_share * 100.0
        );
        rows.push(row);
    };
    for &c in &sizes {
        print(run(config(c, distributors, None), decrypt_ms)?);
    }
    for &t in &thresholds {
        let n = t.0.n;
        print(run(
            config(args.threshold_contributors, n, Some(t)),
            decrypt_ms,
        )?);
    }
    let line = |pick: &dyn Fn(&Row) -> bool, y: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| pick(r))
            .map(|r| (r.decryptions as f64, y(r)))
            .collect()
    };
    let series = vec![
        (
            format!("single mode, {distributors} distributors"),
            line(&|r| r.setup == "single", &|r| r.wall_s),
        ),
        (
            format!("threshold, {} contributors", args.threshold_contributors),
            line(&|r| r.setup != "single", &|r| r.wall_s),
        ),
        (
            "floor: decryptions × one decryption".to_string(),
            line(&|_| true, &|r| r.floor_s),
        ),
    ];
    args.out.plot(
        "simulator: one round, every OTP issued and verified",
        "RSA decryptions in the run",
        "seconds (wall, one core)",
        &series,
    )?;
    args.out.write_json(&Report {
        suite: "sim",
        decrypt_ms,
        rows,
    })?;
    Ok(())
}
