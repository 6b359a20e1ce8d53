//! `otpmesh bench soak`: a sustained mixed load on a mesh of real processes, for a fixed time,
//! that passes only with zero errors and memory flat after warm-up.
//!
//! ```text
//! mesh up (generator, distributor, 4 contributors; C enrolled requesters in this process)
//!   ─► calibrate: C closed loops of (OTP, verify) for --calibrate-secs ─► max ops/s
//!   ─► soak: open loop at --load × max, spread over the C requesters, for --duration;
//!            a round every --round-every-secs; RSS of generator and distributor every second
//!   ─► verdict: errors = 0, rounds all sealed, memory growth after warm-up within bounds
//! ```
//!
//! One operation is a full requester cycle: ask for an OTP, remove its salt, present it
//! (`accepted`), and for one in ten present it again (`used`). Anything else is an error.

use super::{enrolled, memory, percentile, plan, runner, scenario, Requester, ENROLLED_OTP};
use crate::cli::BenchSoakArgs;
use crate::cmd::{Failure, Outcome};
use crate::scenario::layout;
use crate::scenario::runner::Runner;
use anyhow::{anyhow, bail};
use otpmesh_protocol::otp::Otp;
use otpmesh_protocol::role::distributor::COMPACT_EVERY_MS;
use otpmesh_protocol::wire::{Request, Response, VerifyRequest, VerifyResult};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requesters driving the load (each stays well under the per-peer request limit).
const REQUESTERS: u32 = 16;
/// Longest soak.
const MAX_DURATION: Duration = Duration::from_secs(3_600);
/// OTP lifetime in the soak mesh: short, so expiry and compaction happen within the run.
const OTP_EXPIRY_MS: u64 = 10_000;
/// Warm-up at least: two compactions of expired OTPs, so the database, its cache and the
/// allocator have reached their steady size (the 10-minute run levels off by then).
const MIN_WARM_UP: Duration = Duration::from_millis(2 * COMPACT_EVERY_MS + OTP_EXPIRY_MS);
/// Shortest soak: warm-up plus as long again to judge the memory.
const MIN_DURATION: Duration = Duration::from_millis(2 * (2 * COMPACT_EVERY_MS + OTP_EXPIRY_MS));
/// Memory may grow this much after warm-up (MB), or this fraction, whichever is larger.
const FLAT_MB: f64 = 4.0;
const FLAT_FRACTION: f64 = 0.10;
/// The soak passes only if it achieved this fraction of its target rate.
const MIN_ACHIEVED: f64 = 0.90;

#[derive(Serialize, Default)]
struct Counts {
    ops: u64,
    errors: u64,
    accepted: u64,
    replays_used: u64,
}

#[derive(Serialize)]
struct Sample {
    t_s: f64,
    generator_mb: f64,
    distributor_mb: f64,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    duration_s: f64,
    warm_up_s: f64,
    requesters: u32,
    calibrated_max_ops_per_s: f64,
    load_fraction: f64,
    target_ops_per_s: f64,
    achieved_ops_per_s: f64,
    /// Whether the mesh kept up with the target (at least [`MIN_ACHIEVED`] of it).
    kept_up: bool,
    p50_ms: f64,
    p99_ms: f64,
    /// The slowest cycle (a stall shows here first).
    max_ms: f64,
    counts: Counts,
    first_error: Option<String>,
    rounds_sealed: u64,
    rounds_failed: u64,
    /// RSS growth after warm-up (MB): the last third's mean over the first third's.
    generator_growth_mb: f64,
    distributor_growth_mb: f64,
    memory_flat: bool,
    passed: bool,
    samples: Vec<Sample>,
}

/// Shared tallies of the load tasks.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    errors: AtomicU64,
    accepted: AtomicU64,
    replays_used: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("never poisoned");
        if first.is_none() {
            *first = Some(what);
        }
    }
}

/// One requester cycle; `Err` says what went wrong.
async fn cycle(r: &Requester, replay: bool, tally: &Tally) -> Result<(), String> {
    let session = &r.endpoint.session;
    let grant = match session.call(&ENROLLED_OTP).await? {
        Response::Otp(grant) => grant,
        other => return Err(format!("otp: {other:?}")),
    };
    let epoch = grant
        .epoch
        .ok_or("the grant is not salted for the enrolment")?;
    let otp: Otp = r
        .key
        .at(epoch)
        .map_err(|e| e.to_string())?
        .salt_key()
        .unsalt(grant.salted, &grant.salt, grant.digits)
        .map_err(|e| e.to_string())?;
    let verify = Request::Verify(VerifyRequest {
        code: otp.to_string(),
    });
    match session.call(&verify).await? {
        Response::Verified(VerifyResult::Accepted) => {
            tally.accepted.fetch_add(1, Ordering::Relaxed);
        }
        other => return Err(format!("verify: {other:?}")),
    }
    if replay {
        match session.call(&verify).await? {
            Response::Verified(VerifyResult::Used) => {
                tally.replays_used.fetch_add(1, Ordering::Relaxed);
            }
            other => return Err(format!("replayed verify: {other:?}")),
        }
    }
    Ok(())
}

/// Runs cycles on every requester until `until`: back to back (`period` None, calibration) or one
/// every `period` each (the soak). Returns every cycle's latency in ms, sorted.
async fn drive(
    requesters: &Arc<Vec<Requester>>,
    until: Instant,
    period: Option<Duration>,
    tally: &Arc<Tally>,
) -> Vec<f64> {
    let tasks: Vec<_> = (0..requesters.len())
        .map(|i| {
            let (requesters, tally) = (requesters.clone(), tally.clone());
            tokio::spawn(async move {
                let r = &requesters[i];
                let mut latencies = Vec::new();
                // Staggered, so the requesters do not all fire at once; a late tick fires at once
                // (Burst) and its latency counts from when it was due.
                let mut tick = period.map(|p| {
                    let offset = p.mul_f64(i as f64 / requesters.len() as f64);
                    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    t
                });
                let mut n = 0u64;
                while Instant::now() < until {
                    let start = match &mut tick {
                        Some(t) => t.tick().await.into_std(),
                        None => Instant::now(),
                    };
                    if start >= until {
                        break;
                    }
                    n += 1;
                    match cycle(r, n.is_multiple_of(10), &tally).await {
                        Ok(()) => {
                            tally.ops.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tally.error(e),
                    }
                    latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    all.sort_by(f64::total_cmp);
    all
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// Growth of one series after warm-up: mean of the last third minus mean of the first third.
fn growth(samples: &[Sample], warm_up_s: f64, pick: fn(&Sample) -> f64) -> f64 {
    let after: Vec<f64> = samples
        .iter()
        .filter(|s| s.t_s >= warm_up_s)
        .map(pick)
        .collect();
    let third = (after.len() / 3).max(1);
    if after.len() < 3 {
        return f64::NAN;
    }
    mean(after[after.len() - third..].iter().copied()) - mean(after[..third].iter().copied())
}

fn flat(growth_mb: f64, samples: &[Sample], pick: fn(&Sample) -> f64) -> bool {
    let base = samples.first().map_or(0.0, pick);
    growth_mb.is_finite() && growth_mb <= FLAT_MB.max(FLAT_FRACTION * base)
}

pub async fn soak(args: BenchSoakArgs) -> Outcome {
    let duration = Duration::from_secs_f64(args.duration.as_secs_f64());
    if !(MIN_DURATION..=MAX_DURATION).contains(&duration) {
        return Err(anyhow!("--duration: between {MIN_DURATION:?} and {MAX_DURATION:?}").into());
    }
    if !(0.05..=1.0).contains(&args.load) {
        return Err(anyhow!("--load {}: between 0.05 and 1", args.load).into());
    }
    if !(1.0..=60.0).contains(&args.calibrate_secs)
        || !(1.0..=600.0).contains(&args.round_every_secs)
    {
        return Err(anyhow!("--calibrate-secs 1–60, --round-every-secs 1–600").into());
    }
    let mut s = scenario(4, 1, REQUESTERS);
    s.settings.otp_expiry_ms = OTP_EXPIRY_MS;
    let (_dir, layout) = plan(&s, 11)?;
    let mut runner = runner(&s, &layout, &super::Placement::Processes, 11);
    runner.backend.leave_unread(super::LOAD_LINES);
    let result = run(&args, duration, &mut runner, &layout, &s.steps[0]).await;
    runner.stop_all().await;
    let report = result?;
    args.out.write_json(&report)?;
    args.out.plot(
        "soak: resident memory under sustained load",
        "seconds",
        "MB",
        &[
            (
                "generator".into(),
                report
                    .samples
                    .iter()
                    .map(|s| (s.t_s, s.generator_mb))
                    .collect(),
            ),
            (
                "distributor".into(),
                report
                    .samples
                    .iter()
                    .map(|s| (s.t_s, s.distributor_mb))
                    .collect(),
            ),
        ],
    )?;
    if report.passed {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            error: anyhow!(
                "soak failed: {} errors (first: {}), {} rounds failed, memory flat: {}, kept up: {}",
                report.counts.errors,
                report.first_error.as_deref().unwrap_or("none"),
                report.rounds_failed,
                report.memory_flat,
                report.kept_up
            ),
        })
    }
}

async fn run(
    args: &BenchSoakArgs,
    duration: Duration,
    runner: &mut Runner<'_>,
    layout: &layout::Layout,
    round: &crate::scenario::spec::StepSpec,
) -> anyhow::Result<Report> {
    runner.start_mesh(Duration::from_secs(60)).await?;
    let judged = runner.run_step(0, round).await?;
    if !judged.passed {
        bail!("the round before the load: {}", judged.outcome);
    }
    let dist = layout.node("dist");
    let pid = |name: &str| {
        runner
            .backend
            .pid(name)
            .ok_or_else(|| anyhow!("{name} runs as no process"))
    };
    let (gen_pid, dist_pid) = (pid("gen")?, pid("dist")?);
    let requesters = Arc::new(enrolled(layout, dist, REQUESTERS).await?);

    // Calibrate: the most the mesh does with these requesters back to back.
    let calibration = Arc::new(Tally::default());
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.calibrate_secs);
    drive(&requesters, until, None, &calibration).await;
    let max = calibration.ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    if max < 1.0 {
        bail!(
            "calibration completed no operation: {}",
            calibration
                .first_error
                .lock()
                .expect("never poisoned")
                .clone()
                .unwrap_or_default()
        );
    }
    let target = max * args.load;
    let period = Duration::from_secs_f64(REQUESTERS as f64 / target);
    println!(
        "calibrated: {max:.0} ops/s with {REQUESTERS} requesters back to back; soaking at {target:.0} ops/s ({:.0} %) for {:.0} s",
        args.load * 100.0,
        duration.as_secs_f64()
    );

    // Soak: the load, rounds, and memory samples, all at once.
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let until = start + duration;
    let load = tokio::spawn({
        let (requesters, tally) = (requesters.clone(), tally.clone());
        async move { drive(&requesters, until, Some(period), &tally).await }
    });
    let mut samples = Vec::new();
    let (mut sealed, mut failed) = (0u64, 0u64);
    let mut next_round = start + Duration::from_secs_f64(args.round_every_secs);
    let mut next_sample = start;
    while Instant::now() < until {
        let now = Instant::now();
        if now >= next_sample {
            let (g, d) = (memory(gen_pid), memory(dist_pid));
            let (Some(g), Some(d)) = (g, d) else {
                bail!("the generator or the distributor has exited");
            };
            samples.push(Sample {
                t_s: start.elapsed().as_secs_f64(),
                generator_mb: g.rss,
                distributor_mb: d.rss,
            });
            next_sample = (next_sample + Duration::from_secs(1)).max(Instant::now());
        }
        if now >= next_round {
            let judged = runner.run_step(0, round).await?;
            if judged.passed {
                sealed += 1;
            } else {
                failed += 1;
                tally.error(format!("round: {}", judged.outcome));
            }
            next_round = Instant::now() + Duration::from_secs_f64(args.round_every_secs);
        }
        // Meanwhile the nodes' events are taken (a distributor prints one line per OTP).
        let wake = next_sample.min(next_round).min(until);
        runner
            .pump_for(wake.saturating_duration_since(Instant::now()))
            .await?;
    }
    let latencies = load.await.map_err(|e| anyhow!("load task: {e}"))?;
    let elapsed = start.elapsed().as_secs_f64();

    let warm_up_s = (duration.as_secs_f64() * 0.2).max(MIN_WARM_UP.as_secs_f64());
    let generator_growth_mb = growth(&samples, warm_up_s, |s| s.generator_mb);
    let distributor_growth_mb = growth(&samples, warm_up_s, |s| s.distributor_mb);
    let memory_flat = flat(generator_growth_mb, &samples, |s| s.generator_mb)
        && flat(distributor_growth_mb, &samples, |s| s.distributor_mb);
    let counts = Counts {
        ops: tally.ops.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        accepted: tally.accepted.load(Ordering::Relaxed),
        replays_used: tally.replays_used.load(Ordering::Relaxed),
    };
    let achieved = counts.ops as f64 / elapsed;
    let kept_up = achieved >= MIN_ACHIEVED * target;
    let passed = counts.errors == 0 && failed == 0 && memory_flat && kept_up;
    let report = Report {
        suite: "soak",
        duration_s: elapsed,
        warm_up_s,
        requesters: REQUESTERS,
        calibrated_max_ops_per_s: max,
        load_fraction: args.load,
        target_ops_per_s: target,
        achieved_ops_per_s: achieved,
        kept_up,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: percentile(&latencies, 1.0),
        first_error: tally.first_error.lock().expect("never poisoned").clone(),
        counts,
        rounds_sealed: sealed,
        rounds_failed: failed,
        generator_growth_mb,
        distributor_growth_mb,
        memory_flat,
        passed,
        samples,
    };
    println!(
        "{} ops in {:.0} s ({:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms), {} errors; {} rounds sealed, {} failed",
        report.counts.ops,
        elapsed,
        report.achieved_ops_per_s,
        report.p50_ms,
        report.p99_ms,
        report.max_ms,
        report.counts.errors,
        sealed,
        failed
    );
    println!(
        "memory after {:.0} s warm-up: generator {:+.1} MB, distributor {:+.1} MB ({})",
        warm_up_s,
        generator_growth_mb,
        distributor_growth_mb,
        if memory_flat { "flat" } else { "GROWING" }
    );
    Ok(report)
}
