//! `otpmesh status`: asks running nodes over their control sockets and prints what they say.

use super::node::read_bounded;
use super::{Failure, Outcome};
use crate::cli::StatusArgs;
use anyhow::{anyhow, Context};
use otpmesh_node::status::{self, Status};
use std::path::PathBuf;

/// The nodes to ask: (name, data dir).
fn targets(args: &StatusArgs) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = args
        .data_dirs
        .iter()
        .map(|d| (d.display().to_string(), d.clone()))
        .collect();
    if let Some(dir) = &args.mesh {
        let path = dir.join("mesh.json");
        let json: serde_json::Value = serde_json::from_str(&read_bounded(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let nodes = json["nodes"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: no nodes", path.display()))?;
        for node in nodes {
            let (Some(name), Some(data_dir)) = (node["name"].as_str(), node["data_dir"].as_str())
            else {
                return Err(anyhow!(
                    "{}: a node without name or data_dir",
                    path.display()
                ));
            };
            out.push((name.to_string(), PathBuf::from(data_dir)));
        }
    }
    Ok(out)
}

fn human(name: &str, s: &Status) -> String {
    let sealed = match &s.last_sealed {
        Some(sealed) => format!("round {}, commitment {}", sealed.round, sealed.commitment),
        None => "none yet".into(),
    };
    let mut lines = vec![
        format!("{name}: {} {}", s.role, s.peer_id),
        format!("  peers        {} ({} connections)", s.peers, s.connections),
        format!(
            "  round        {}",
            s.current_round.map_or("none yet".into(), |r| r.to_string())
        ),
        format!("  last sealed  {sealed}"),
    ];
    if let Some(bytes) = s.storage_bytes {
        lines.push(format!("  storage      {bytes} bytes"));
    }
    lines.push(format!("  listening    {}", s.listen.join(" ")));
    lines.push(format!(
        "  up           {} s (otpmesh {})",
        s.uptime_s, s.version
    ));
    if let Some(url) = &s.metrics {
        lines.push(format!("  metrics      {url}"));
    }
    lines.join("\n")
}

pub async fn run(args: StatusArgs) -> Outcome {
    let targets = targets(&args).map_err(|error| Failure { code: 2, error })?;
    let mut answers = Vec::new();
    for (name, dir) in &targets {
        answers.push((name, status::ask(dir).await));
    }
    let silent = answers.iter().filter(|(_, a)| a.is_err()).count();
    if args.json {
        let nodes: Vec<serde_json::Value> = answers
            .iter()
            .map(|(name, answer)| match answer {
                Ok(s) => {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["name"] = serde_json::Value::from(name.as_str());
                    v
                }
                Err(e) => serde_json::json!({"name": name, "error": e}),
            })
            .collect();
        let out = match (args.mesh.is_none() && nodes.len() == 1, nodes) {
            (true, mut nodes) => nodes.remove(0),
            (false, nodes) => serde_json::json!({ "nodes": nodes }),
        };
        println!("{out}");
    } else {
        for (name, answer) in &answers {
            match answer {
                Ok(s) => println!("{}", human(name, s)),
                Err(e) => println!("{name}: {e}"),
            }
        }
    }
    match silent {
        0 => Ok(()),
        n => Err(Failure {
            code: 3,
            error: anyhow!("{n} of {} node(s) did not answer", targets.len()),
        }),
    }
}
