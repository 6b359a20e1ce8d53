//! `otpmesh bench soak`: a sustained mixed load on a mesh of real processes, for a fixed time,
//! that passes only with zero errors and memory flat after warm-up.
//!
//! ```text
//! mesh up (generator, distributor, 4 contributors; C enrolled requesters in this process)
//!   ─► warm up: C closed loops of (OTP, verify) for --calibrate-secs, unmeasured
//!   ─► calibrate: the same again, with one round in the middle ─► max ops/s
//!   ─► soak: open loop at --load × max, spread over the C requesters, for --duration;
//!            a round every --round-every-secs; RSS of generator and distributor every second
//!   ─► verdict: errors = 0, rounds all sealed, memory growth after warm-up within bounds
//! ```
//!
//! `--plot soak.svg` draws the memory, and `soak-latency.svg` beside it each second's p99 and
//! max latency (the timeline of [`timeline`]).
//!
//! One operation is a full requester cycle: ask for an OTP, remove its salt, present it
//! (`accepted`), and for one in ten present it again (`used`). Anything else is an error.

use super::{enrolled, memory, plan, runner, scenario, timeline, Requester, ENROLLED_OTP};
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
/// Cycles one requester has under way at once in the soak (each makes one call at a time, on a
/// stream that pipelines up to `rpc::MAX_IN_FLIGHT`).
const MAX_CYCLES_IN_FLIGHT: usize = 32;
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
    /// Cores each used since the sample before.
    generator_cores: f64,
    distributor_cores: f64,
    /// The machine's cores waiting on the disk, and taken by the hypervisor, since then.
    iowait_cores: f64,
    steal_cores: f64,
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
    /// Cycles under way while a round ran, and the others.
    during_rounds: timeline::Latency,
    outside_rounds: timeline::Latency,
    /// What the nodes logged as slow.
    slow: Slow,
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
    /// Second by second: cycles due, their p99 and max, whether a round ran.
    seconds: Vec<timeline::Second>,
}

#[derive(Serialize)]
struct Slow {
    generator: timeline::Slow,
    distributor: timeline::Slow,
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

/// Runs cycles on every requester from `origin` until `until`: back to back (`period` None,
/// calibration) or one due every `period` each (the soak). Returns every cycle: when it was due
/// and its latency from then.
///
/// In the soak a cycle starts when it is due, whether or not the requester's earlier ones have
/// finished (up to [`MAX_CYCLES_IN_FLIGHT`] each; its calls share the requester's pipelined
/// stream). A requester that waited for each cycle before the next could not catch up after a
/// slow commit faster than its own one-at-a-time pace (at 80 % it had 25 % to spare): the
/// benchmark's clients, not the distributor, set how long the backlog lasted.
async fn drive(
    requesters: &Arc<Vec<Requester>>,
    origin: Instant,
    until: Instant,
    period: Option<Duration>,
    tally: &Arc<Tally>,
) -> Vec<timeline::Op> {
    let tasks: Vec<_> = (0..requesters.len())
        .map(|i| {
            let (requesters, tally) = (requesters.clone(), tally.clone());
            tokio::spawn(async move {
                let mut ops = Vec::new();
                let mut cycles = tokio::task::JoinSet::new();
                let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_CYCLES_IN_FLIGHT));
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
                    let due = match &mut tick {
                        Some(t) => t.tick().await.into_std(),
                        None => Instant::now(),
                    };
                    if due >= until {
                        break;
                    }
                    n += 1;
                    let Ok(permit) = in_flight.clone().acquire_owned().await else {
                        break;
                    };
                    let (requesters, tally) = (requesters.clone(), tally.clone());
                    let run = async move {
                        let _permit = permit;
                        match cycle(&requesters[i], n.is_multiple_of(10), &tally).await {
                            Ok(()) => {
                                tally.ops.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => tally.error(e),
                        }
                        timeline::Op {
                            due_s: due.saturating_duration_since(origin).as_secs_f64(),
                            ms: due.elapsed().as_secs_f64() * 1000.0,
                        }
                    };
                    if tick.is_some() {
                        cycles.spawn(run);
                        while let Some(done) = cycles.try_join_next() {
                            ops.extend(done.ok());
                        }
                    } else {
                        ops.push(run.await);
                    }
                }
                while let Some(done) = cycles.join_next().await {
                    ops.extend(done.ok());
                }
                ops
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
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
    // Beside it (`soak.svg` → `soak-latency.svg`): where the tail came from, second by second.
    if let Some(path) = &args.out.plot {
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let latency = path.with_file_name(format!("{stem}-latency.svg"));
        let per_second = |pick: fn(&timeline::Second) -> f64| {
            report
                .seconds
                .iter()
                .filter(|s| s.ops > 0)
                .map(|s| (s.t_s as f64, pick(s)))
                .collect()
        };
        super::plot::lines(
            &latency,
            "soak: latency of the cycles due in each second",
            "seconds",
            "ms",
            &[
                ("max".into(), per_second(|s| s.max_ms)),
                ("p99".into(), per_second(|s| s.p99_ms)),
            ],
        )?;
    }
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

    // Calibrate: the most the mesh does with these requesters back to back, in the state the
    // soak keeps it in. First as long again unmeasured, so each requester's OTPs at the
    // distributor (what a verification looks through) and the OTP table reach their size under
    // load; then measured, with a round in its middle as the soak has one every few seconds.
    // Calibrated from an empty distributor, the maximum came out above what the mesh then
    // sustained, and 80 % of it was more than the mesh could keep up with.
    let calibrate = Duration::from_secs_f64(args.calibrate_secs);
    let warm = Arc::new(Tally::default());
    let started = Instant::now();
    drive(&requesters, started, started + calibrate, None, &warm).await;
    let calibration = Arc::new(Tally::default());
    let started = Instant::now();
    let load = tokio::spawn({
        let (requesters, tally) = (requesters.clone(), calibration.clone());
        async move { drive(&requesters, started, started + calibrate, None, &tally).await }
    });
    runner.pump_for(calibrate / 2).await?;
    let judged = runner.run_step(0, round).await?;
    if !judged.passed {
        bail!("the round during calibration: {}", judged.outcome);
    }
    load.await
        .map_err(|e| anyhow!("calibration load task: {e}"))?;
    let max = calibration.ops.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let errors = warm.errors.load(Ordering::Relaxed) + calibration.errors.load(Ordering::Relaxed);
    if max < 1.0 || errors > 0 {
        let first = [&warm, &calibration]
            .iter()
            .find_map(|t| t.first_error.lock().expect("never poisoned").clone());
        bail!(
            "calibration: {errors} errors, {max:.0} ops/s (first error: {})",
            first.unwrap_or_default()
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
        async move { drive(&requesters, start, until, Some(period), &tally).await }
    });
    let mut samples = Vec::new();
    let mut rounds = Vec::new();
    let (mut sealed, mut failed) = (0u64, 0u64);
    let mut next_round = start + Duration::from_secs_f64(args.round_every_secs);
    let mut next_sample = start;
    let cpu = || {
        (
            Instant::now(),
            timeline::process_cpu_s(gen_pid).unwrap_or(f64::NAN),
            timeline::process_cpu_s(dist_pid).unwrap_or(f64::NAN),
            timeline::MachineCpu::now().unwrap_or_default(),
        )
    };
    let mut last_cpu = cpu();
    while Instant::now() < until {
        let now = Instant::now();
        if now >= next_sample {
            let (g, d) = (memory(gen_pid), memory(dist_pid));
            let (Some(g), Some(d)) = (g, d) else {
                bail!("the generator or the distributor has exited");
            };
            let (at, gen_s, dist_s, machine) = cpu();
            let (was, gen_was, dist_was, machine_was) = last_cpu;
            let secs = at.saturating_duration_since(was).as_secs_f64().max(1e-3);
            last_cpu = (at, gen_s, dist_s, machine);
            samples.push(Sample {
                t_s: start.elapsed().as_secs_f64(),
                generator_mb: g.rss,
                distributor_mb: d.rss,
                generator_cores: (gen_s - gen_was) / secs,
                distributor_cores: (dist_s - dist_was) / secs,
                iowait_cores: (machine.iowait_s - machine_was.iowait_s) / secs,
                steal_cores: (machine.steal_s - machine_was.steal_s) / secs,
            });
            next_sample = (next_sample + Duration::from_secs(1)).max(Instant::now());
        }
        if now >= next_round {
            let began = start.elapsed().as_secs_f64();
            let judged = runner.run_step(0, round).await?;
            rounds.push((began, start.elapsed().as_secs_f64()));
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
    let ops = load.await.map_err(|e| anyhow!("load task: {e}"))?;
    let elapsed = start.elapsed().as_secs_f64();
    let overall = timeline::Latency::of(ops.iter().map(|op| op.ms).collect());
    let seconds = timeline::seconds(&ops, &rounds);
    let (during_rounds, outside_rounds) = timeline::by_round(&ops, &rounds);
    let slow = Slow {
        generator: timeline::slow(&layout.node("gen").data_dir.join("node.log")),
        distributor: timeline::slow(&dist.data_dir.join("node.log")),
    };

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
        p50_ms: overall.p50_ms,
        p99_ms: overall.p99_ms,
        max_ms: overall.max_ms,
        during_rounds,
        outside_rounds,
        slow,
        first_error: tally.first_error.lock().expect("never poisoned").clone(),
        counts,
        rounds_sealed: sealed,
        rounds_failed: failed,
        generator_growth_mb,
        distributor_growth_mb,
        memory_flat,
        passed,
        samples,
        seconds,
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
    for (what, l) in [
        ("during rounds", &report.during_rounds),
        ("outside rounds", &report.outside_rounds),
    ] {
        println!(
            "  {what}: {} ops, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            l.ops, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    let worst: Vec<String> = timeline::worst(&report.seconds)
        .iter()
        .map(|s| {
            let round = if s.round { ", round" } else { "" };
            // The sample taken at the end of that second says what the machine did in it.
            let cpu = report
                .samples
                .iter()
                .find(|c| c.t_s >= (s.t_s + 1) as f64)
                .map(|c| {
                    format!(
                        "; distributor {:.2} cores, steal {:.2}, iowait {:.2}",
                        c.distributor_cores, c.steal_cores, c.iowait_cores
                    )
                })
                .unwrap_or_default();
            format!("{} s ({:.0} ms{round}{cpu})", s.t_s, s.max_ms)
        })
        .collect();
    println!("  slowest seconds: {}", worst.join("\n                   "));
    for (name, slow) in [
        ("generator", &report.slow.generator),
        ("distributor", &report.slow.distributor),
    ] {
        println!(
            "  {name} logged {} slow commits (longest {} ms), {} slow event-loop turns (longest {} ms)",
            slow.commits, slow.longest_commit_ms, slow.turns, slow.longest_turn_ms
        );
    }
    println!(
        "memory after {:.0} s warm-up: generator {:+.1} MB, distributor {:+.1} MB ({})",
        warm_up_s,
        generator_growth_mb,
        distributor_growth_mb,
        if memory_flat { "flat" } else { "GROWING" }
    );
    Ok(report)
}
