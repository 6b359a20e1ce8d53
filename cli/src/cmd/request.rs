//! `otpmesh request`: one OTP from one distributor.

use super::{Failure, Outcome};
use crate::cli::RequestArgs;
use crate::output;
use anyhow::anyhow;
use libp2p::Multiaddr;
use otpmesh_node::{split_peer, NodeConfig, NodeEvent, RoleSpec};
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::role::Event;
use std::time::Duration;

fn fail(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

/// The exit code `--help` documents for a failure reason: 4 not authorised, 5 no round yet,
/// 3 unreachable, 1 anything else.
pub fn exit_code_for(reason: &str) -> u8 {
    if reason.starts_with("not authorised") {
        4
    } else if reason.contains("no round has been sealed") {
        5
    } else if reason.to_lowercase().contains("dial") || reason.contains("onnection") {
        3
    } else {
        1
    }
}

/// Says what a failed request means, with the exit code for it.
fn classify(address: &str, reason: String) -> Failure {
    let code = exit_code_for(&reason);
    let error = match code {
        4 => anyhow!("the distributor refused this requester: {reason}"),
        5 => anyhow!("no round sealed yet: {reason}"),
        3 => anyhow!("could not reach the distributor at {address}: {reason}"),
        _ => anyhow!("the request failed: {reason}"),
    };
    fail(code, error)
}

pub async fn run(args: RequestArgs) -> Outcome {
    let addr: Multiaddr = args.distributor.parse().map_err(|e| {
        anyhow!(
            "--distributor {:?} is not a multiaddr: {e}",
            args.distributor
        )
    })?;
    let (Some(distributor), _) = split_peer(&addr) else {
        return Err(anyhow!(
            "--distributor {addr} must end with /p2p/<peer id> so the distributor can be authenticated (mesh.json lists such addresses)"
        )
        .into());
    };
    let config = NodeConfig {
        role: RoleSpec::OneShotRequester { distributor },
        data_dir: args.data_dir.clone(),
        listen: Vec::new(),
        peers: vec![addr],
        mesh: MeshConfig::default(),
        mdns: false,
        manual_rounds: false,
        seed: args.seed,
    };
    let node = otpmesh_node::start(config).map_err(|e| anyhow!(e))?;
    let (client, mut events) = (node.client.clone(), node.events);
    tokio::spawn(node.event_loop.run());
    let outcome = tokio::time::timeout(Duration::from_secs(args.timeout_secs), async {
        while let Some(event) = events.recv().await {
            match event {
                NodeEvent::Role(Event::OtpReceived {
                    otp,
                    round,
                    expires_at_ms,
                    distributor,
                }) => return Ok((otp, round, expires_at_ms, distributor)),
                NodeEvent::Role(Event::RequestFailed { reason, .. }) => {
                    return Err(classify(&args.distributor, reason))
                }
                _ => {}
            }
        }
        Err(fail(1, anyhow!("the node stopped before an answer came")))
    })
    .await;
    let _ = client.shutdown().await;
    let (otp, round, expires_at_ms, distributor) = match outcome {
        Ok(result) => result?,
        Err(_) => {
            return Err(fail(
                3,
                anyhow!(
                    "no answer from the distributor at {} within {} s",
                    args.distributor,
                    args.timeout_secs
                ),
            ))
        }
    };
    if args.json {
        let value = serde_json::json!({
            "otp": otp,
            "round": round.0,
            "expires_at": output::rfc3339(expires_at_ms),
            "expires_at_unix_ms": expires_at_ms,
            "distributor": distributor.to_string(),
        });
        println!("{value}");
    } else {
        println!(
            "OTP {otp}  (round {round}, expires {})",
            output::rfc3339(expires_at_ms)
        );
    }
    Ok(())
}
