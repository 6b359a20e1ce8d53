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

/// Starts a one-shot node with the identity in `data_dir`, aimed at `distributor` (a multiaddr
/// ending in /p2p/…), and waits for the first event `pick` turns into an answer.
pub async fn ask_once<T>(
    distributor: &str,
    data_dir: &std::path::Path,
    seed: Option<u64>,
    timeout_secs: u64,
    role: impl FnOnce(libp2p::PeerId) -> RoleSpec,
    mut pick: impl FnMut(NodeEvent) -> Option<Result<T, Failure>>,
) -> Result<T, Failure> {
    let addr: Multiaddr = distributor
        .parse()
        .map_err(|e| anyhow!("--distributor {distributor:?} is not a multiaddr: {e}"))?;
    let (Some(peer), _) = split_peer(&addr) else {
        return Err(anyhow!(
            "--distributor {addr} must end with /p2p/<peer id> so the distributor can be authenticated (mesh.json lists such addresses)"
        )
        .into());
    };
    let config = NodeConfig {
        role: role(peer),
        data_dir: data_dir.to_path_buf(),
        listen: Vec::new(),
        peers: vec![addr],
        mesh: MeshConfig::default(),
        mdns: false,
        manual_rounds: false,
        seed,
        metrics: None,
    };
    let node = otpmesh_node::start(config).map_err(|e| anyhow!(e))?;
    let (client, mut events) = (node.client.clone(), node.events);
    tokio::spawn(node.event_loop.run());
    let outcome = tokio::time::timeout(Duration::from_secs(timeout_secs), async {
        while let Some(event) = events.recv().await {
            if let NodeEvent::Role(Event::RequestFailed { reason, .. }) = &event {
                return Err(classify(distributor, reason.clone()));
            }
            if let Some(answer) = pick(event) {
                return answer;
            }
        }
        Err(fail(1, anyhow!("the node stopped before an answer came")))
    })
    .await;
    let _ = client.shutdown().await;
    match outcome {
        Ok(result) => result,
        Err(_) => Err(fail(
            3,
            anyhow!("no answer from the distributor at {distributor} within {timeout_secs} s"),
        )),
    }
}

pub async fn run(args: RequestArgs) -> Outcome {
    let (otp, round, expires_at_ms, distributor) = ask_once(
        &args.distributor,
        &args.data_dir,
        args.seed,
        args.timeout_secs,
        |distributor| RoleSpec::OneShotRequester { distributor },
        |event| match event {
            NodeEvent::Role(Event::OtpReceived {
                otp,
                round,
                expires_at_ms,
                distributor,
            }) => Some(Ok((otp, round, expires_at_ms, distributor))),
            _ => None,
        },
    )
    .await?;
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
