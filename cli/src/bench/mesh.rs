//! `otpmesh bench mesh`: forming, memory and gossip propagation of meshes of real processes.

use super::{counts, percentile, run_mesh, MAX_K};
use crate::cmd::Outcome;
use crate::line::Line;
use anyhow::Context;
use otpmesh_node::NodeEvent;
use otpmesh_protocol::role::Event;
use serde::Serialize;

#[derive(Serialize)]
struct MeshRow {
    nodes: usize,
    form_ms: f64,
    rss_avg_mb: f64,
    rss_max_mb: f64,
    private_avg_mb: f64,
    pss_avg_mb: f64,
    gossip_p50_ms: f64,
    gossip_p99_ms: f64,
    samples: usize,
}

/// `otpmesh bench mesh`: meshes of N processes (1 generator, 1 distributor, N − 2 contributors):
/// time to form (every node listening and seeing the generator subscribe), RSS per node, and gossip
/// propagation (the generator's round announcement to each contributor's request for its input, both
/// as their events reach this process).
pub async fn mesh(args: crate::cli::BenchMeshArgs) -> Outcome {
    let sizes = counts(&args.nodes, "nodes", 3..=MAX_K + 2)?;
    println!("memory per node: VmRSS counts the executable's pages every node shares; private = RssAnon; PSS divides shared pages among their sharers");
    println!(
        "{:>6} {:>10} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "nodes",
        "form ms",
        "RSS avg MB",
        "RSS max MB",
        "private MB",
        "PSS MB",
        "gossip p50",
        "gossip p99",
        "samples"
    );
    let mut rows = Vec::new();
    for &n in &sizes {
        let k = n - 2;
        let run = run_mesh(k, args.rounds, &super::Placement::Processes, None)
            .await
            .with_context(|| format!("{n} nodes"))?;
        let (form_ms, memory, arrivals) = (run.form_ms, run.memory, run.arrivals);
        let avg = |f: fn(&super::Memory) -> f64| {
            memory.iter().map(f).sum::<f64>() / memory.len().max(1) as f64
        };
        let mut delays = Vec::new();
        let opened = arrivals
            .iter()
            .filter_map(|(who, line, at)| match line.role() {
                Some(Event::RoundOpened { round, .. }) if who == "gen" => Some((*round, *at)),
                _ => None,
            });
        for (round, opened) in opened {
            for (_, _, at) in arrivals.iter().filter(|(_, line, _)| {
                matches!(line, Line::Node(NodeEvent::InputNeeded { round: r }) if *r == round)
            }) {
                delays.push(at.saturating_duration_since(opened).as_secs_f64() * 1000.0);
            }
        }
        delays.sort_by(f64::total_cmp);
        let row = MeshRow {
            nodes: n as usize,
            form_ms,
            rss_avg_mb: avg(|m| m.rss),
            rss_max_mb: memory.iter().map(|m| m.rss).fold(0.0, f64::max),
            private_avg_mb: avg(|m| m.private),
            pss_avg_mb: avg(|m| m.proportional),
            gossip_p50_ms: percentile(&delays, 0.5),
            gossip_p99_ms: percentile(&delays, 0.99),
            samples: delays.len(),
        };
        println!(
            "{:>6} {:>10.0} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>8}",
            row.nodes,
            row.form_ms,
            row.rss_avg_mb,
            row.rss_max_mb,
            row.private_avg_mb,
            row.pss_avg_mb,
            row.gossip_p50_ms,
            row.gossip_p99_ms,
            row.samples
        );
        rows.push(row);
    }
    let line = |f: fn(&MeshRow) -> f64| rows.iter().map(|r| (r.nodes as f64, f(r))).collect();
    args.out.plot(
        "mesh: forming and gossip propagation",
        "processes",
        "milliseconds",
        &[
            ("time to form".to_string(), line(|r| r.form_ms)),
            ("gossip p99".to_string(), line(|r| r.gossip_p99_ms)),
            ("gossip p50".to_string(), line(|r| r.gossip_p50_ms)),
        ],
    )?;

    args.out.write_json(&rows)?;

    Ok(())
}
