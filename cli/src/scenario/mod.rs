//! `otpmesh scenario run`: replay a scripted scenario on a real mesh and judge every step.
//!
//! ```text
//! load + check (file:line, hint) ─► plan (seeded keys, ports, mesh.toml) ─► start nodes ─► mesh formed
//!   ─► for each step: narrate · run · judge ─► summary table / JSON report ─► exit 0 iff all passed
//! ```

pub mod backend;
pub mod kdc;
pub mod layout;
pub mod login;
pub mod runner;
pub mod simulated;
pub mod spec;

use crate::cli::ScenarioRunArgs;
use crate::cmd::{Failure, Outcome};
use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressStyle};
use runner::{IssuedOtp, Runner};
use serde::Serialize;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How long the mesh may take to form.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct StepReport {
    name: String,
    kind: &'static str,
    line: usize,
    outcome: String,
    expected: String,
    passed: bool,
    duration_ms: u64,
}

#[derive(Serialize)]
struct RoundReport {
    id: u64,
    commitment: String,
    included: Vec<u32>,
}

#[derive(Serialize)]
struct Report {
    scenario: String,
    seed: u64,
    passed: bool,
    steps: Vec<StepReport>,
    rounds: Vec<RoundReport>,
    otps: Vec<IssuedOtp>,
}

/// `otpmesh scenario check FILE`: validate only.
pub fn check(file: &std::path::Path) -> Outcome {
    let s = spec::load(file).map_err(|e| Failure {
        code: 2,
        error: anyhow!(e),
    })?;
    println!(
        "{}: ok ({} nodes, {} steps)",
        file.display(),
        s.nodes.len(),
        s.steps.len()
    );
    Ok(())
}

pub async fn run(args: ScenarioRunArgs) -> Outcome {
    let scenario = spec::load(&args.file).map_err(|e| Failure {
        code: 2,
        error: anyhow!(e),
    })?;
    let seed = args.seed.or(scenario.seed).unwrap_or_else(rand::random);
    let mut temp = None;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("otpmesh-scenario-")
                .tempdir()?;
            let path = t.path().to_path_buf();
            temp = Some(t);
            path
        }
    };
    let story = !args.json;
    let say = |line: String| {
        if story {
            println!("{line}");
        }
    };
    say(format!(
        "scenario {} ({}), seed {seed}",
        scenario.name,
        args.file.display()
    ));
    if let Some(d) = &scenario.description {
        say(format!("  {}", d.trim()));
    }
    let layout = layout::plan(&scenario, &dir, seed)?;
    let (backend, events) = match args.sim {
        true => backend::Backend::simulated(seed),
        false => backend::Backend::new(args.in_process),
    };
    let mut runner = Runner {
        scenario: &scenario,
        layout: &layout,
        backend,
        events,
        state: Default::default(),
        seed,
    };
    let bar = if story && std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));

    let started = Instant::now();
    bar.set_message(format!(
        "starting {} nodes",
        layout.nodes.iter().filter(|n| n.config.is_some()).count()
    ));
    let formed = runner.start_mesh(FORM_TIMEOUT).await;
    let mut reports = Vec::new();
    let mut fatal = None;
    match formed {
        Ok(()) => say(format!(
            "[{:>6.1}s] mesh formed: {} nodes, data in {}",
            started.elapsed().as_secs_f64(),
            layout.nodes.len(),
            dir.display()
        )),
        Err(e) => fatal = Some(e),
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        if fatal.is_some() {
            break;
        }
        let kind = step.step.kind();
        if let Some(text) = &step.narrate {
            bar.suspend(|| say(format!("\n  {}", text.trim())));
        }
        bar.set_message(format!(
            "step {} ({kind}, line {}): {}",
            i + 1,
            step.line,
            step.name
        ));
        let t = Instant::now();
        match runner.run_step(i, step).await {
            Ok(judged) => {
                let mark = if judged.passed { "ok  " } else { "FAIL" };
                bar.suspend(|| {
                    say(format!(
                        "[{:>6.1}s] {mark} {:<8} {}: {}{}",
                        started.elapsed().as_secs_f64(),
                        kind,
                        step.name,
                        judged.outcome,
                        if judged.passed || judged.expected == "-" {
                            String::new()
                        } else {
                            format!(" (expected {})", judged.expected)
                        }
                    ))
                });
                reports.push(StepReport {
                    name: step.name.clone(),
                    kind,
                    line: step.line,
                    outcome: judged.outcome,
                    expected: judged.expected,
                    passed: judged.passed,
                    duration_ms: t.elapsed().as_millis() as u64,
                });
            }
            Err(e) => {
                reports.push(StepReport {
                    name: step.name.clone(),
                    kind,
                    line: step.line,
                    outcome: format!("error: {e:#}"),
                    expected: "-".into(),
                    passed: false,
                    duration_ms: t.elapsed().as_millis() as u64,
                });
                fatal = Some(e.context(format!(
                    "step {} ({kind}) at {}:{}",
                    i + 1,
                    args.file.display(),
                    step.line
                )));
            }
        }
    }
    bar.finish_and_clear();
    runner.stop_all().await;

    let passed = fatal.is_none()
        && reports.len() == scenario.steps.len()
        && reports.iter().all(|r| r.passed);
    let report = Report {
        scenario: scenario.name.clone(),
        seed,
        passed,
        rounds: runner
            .state
            .sealed
            .values()
            .map(|r| RoundReport {
                id: r.id,
                commitment: r.commitment.clone(),
                included: r.included.clone(),
            })
            .collect(),
        otps: runner.state.otps.clone(),
        steps: reports,
    };
    let json = serde_json::to_string_pretty(&report).context("writing the report")?;
    if let Some(path) = &args.report {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print_summary(&report);
    }
    if let Some(e) = fatal {
        // Keep the nodes' logs of a run that broke.
        if let Some(t) = temp {
            eprintln!("node data and logs kept in {}", t.keep().display());
        }
        return Err(Failure { code: 1, error: e });
    }
    if !passed {
        let failed: Vec<String> = report
            .steps
            .iter()
            .filter(|s| !s.passed)
            .map(|s| format!("{} (line {})", s.name, s.line))
            .collect();
        return Err(Failure {
            code: 1,
            error: anyhow!("expectations failed: {}", failed.join(", ")),
        });
    }
    Ok(())
}

fn print_summary(report: &Report) {
    println!(
        "\n{:<4} {:<26} {:<9} {:<6} {:>8}  outcome",
        "#", "step", "kind", "result", "ms"
    );
    for (i, s) in report.steps.iter().enumerate() {
        let mut outcome = s.outcome.clone();
        if outcome.len() > 90 {
            outcome.truncate(
                outcome
                    .char_indices()
                    .nth(87)
                    .map_or(outcome.len(), |(i, _)| i),
            );
            outcome.push('…');
        }
        let name: String = s.name.chars().take(26).collect();
        println!(
            "{:<4} {:<26} {:<9} {:<6} {:>8}  {outcome}",
            i + 1,
            name,
            s.kind,
            if s.passed { "ok" } else { "FAIL" },
            s.duration_ms
        );
    }
    let passed = report.steps.iter().filter(|s| s.passed).count();
    println!(
        "\n{}: {passed} of {} steps passed, {} rounds sealed, {} OTPs, seed {}",
        if report.passed { "PASSED" } else { "FAILED" },
        report.steps.len(),
        report.rounds.len(),
        report.otps.len(),
        report.seed
    );
}
