//! `otpmesh mesh status|kill|restart|partition|heal|round --dir DIR`: one request to the running
//! `mesh up`'s control socket, its reply printed.

use super::control::{self, Reply, Request};
use crate::cli::{MeshCommand, MeshSteerArgs};
use crate::cmd::Outcome;
use anyhow::anyhow;

pub async fn steer(command: MeshCommand) -> Outcome {
    let (request, args): (Request, MeshSteerArgs) = match command {
        MeshCommand::Up(_) => return Err(anyhow!("mesh up is not a steering command").into()),
        MeshCommand::Status(a) => (Request::Status, a),
        MeshCommand::Round(a) => (Request::Round, a),
        MeshCommand::Kill(a) => (Request::Kill { node: a.node }, a.steer),
        MeshCommand::Restart(a) => (Request::Restart { node: a.node }, a.steer),
        MeshCommand::Partition(a) => (
            Request::Partition {
                nodes: a.nodes,
                from: a.from,
            },
            a.steer,
        ),
        MeshCommand::Heal(a) => (Request::Heal { nodes: a.nodes }, a.steer),
    };
    let reply = control::ask(&args.dir, &request).await?;
    if !reply.ok {
        return Err(anyhow!("{}", reply.message).into());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reply).unwrap_or_default()
        );
    } else {
        print_reply(&reply);
    }
    Ok(())
}

fn print_reply(reply: &Reply) {
    let Some(nodes) = &reply.nodes else {
        println!("{}", reply.message);
        return;
    };
    println!(
        "{:<16} {:<12} {:<11} {:>8} {:>8}  {:<14} note",
        "NAME", "ROLE", "STATE", "PID", "RESTARTS", "PEER"
    );
    for n in nodes {
        let mut note = n.exit.clone().unwrap_or_default();
        if !n.cut_off_from.is_empty() {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&format!("cut off from {}", n.cut_off_from.join(", ")));
        }
        let peer = &n.peer_id[n.peer_id.len().saturating_sub(12)..];
        println!(
            "{:<16} {:<12} {:<11} {:>8} {:>8}  …{:<13} {note}",
            n.name,
            n.role,
            n.state.to_string(),
            n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            n.restarts,
            peer,
        );
    }
}
