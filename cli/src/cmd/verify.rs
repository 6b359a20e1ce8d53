//! `otpmesh verify`: present an OTP to the distributor that issued it.

use super::request::{ask, ask_once, single_distributor};
use super::{Failure, Outcome};
use crate::cli::VerifyArgs;
use anyhow::anyhow;
use libp2p::PeerId;
use otpmesh_node::{NodeEvent, RoleSpec};
use otpmesh_protocol::role::Event;
use otpmesh_protocol::wire::VerifyResult;
use std::path::Path;

/// Presents a code (the role says how), prints the verdict, exits 0 only for `accepted`.
pub async fn present(
    distributor: &str,
    data_dir: &Path,
    timeout_secs: u64,
    json: bool,
    role: impl FnOnce(PeerId) -> RoleSpec,
) -> Outcome {
    let result = ask_once(
        distributor,
        data_dir,
        None,
        timeout_secs,
        role,
        |event| match event {
            NodeEvent::Role(Event::VerifyAnswered { result, .. }) => Some(Ok(result)),
            _ => None,
        },
    )
    .await?;
    let about = serde_json::json!({ "distributor": distributor });
    verdict(result, json, about)
}

/// Prints a verdict (with `about` in JSON) and exits 0 only for `accepted`.
fn verdict(result: VerifyResult, json: bool, mut about: serde_json::Value) -> Outcome {
    if json {
        about["result"] = result.as_str().into();
        println!("{about}");
    } else {
        println!("{}", result.as_str());
    }
    match result {
        VerifyResult::Accepted => Ok(()),
        other => Err(Failure {
            code: 1,
            error: anyhow!("the code was not accepted: {}", other.as_str()),
        }),
    }
}

pub async fn run(args: VerifyArgs) -> Outcome {
    let code = args.otp.trim().to_string();
    if args.threshold {
        return run_threshold(args, code).await;
    }
    let distributor = single_distributor(&args.distributor)?;
    present(
        distributor,
        &args.data_dir,
        args.timeout_secs,
        args.json,
        |distributor| RoleSpec::OneShotVerify { distributor, code },
    )
    .await
}

/// Threshold mode: a quorum of verification partials, combined and compared here.
async fn run_threshold(args: VerifyArgs, code: String) -> Outcome {
    let (Some(round), Some(counter)) = (args.round, args.counter) else {
        return Err(anyhow!("--threshold needs --round and --counter").into());
    };
    let round = otpmesh_protocol::round::RoundId(round);
    let mesh = super::request::threshold_mesh(args.mesh.as_deref(), &args.data_dir)?;
    let result = ask(
        &args.distributor,
        mesh,
        &args.data_dir,
        None,
        args.timeout_secs,
        |distributors| RoleSpec::OneShotThresholdVerify {
            distributors,
            round,
            counter,
            code,
        },
        |event| match event {
            NodeEvent::Role(Event::ThresholdVerified { result, .. }) => Some(Ok(result)),
            _ => None,
        },
    )
    .await?;
    let about = serde_json::json!({ "round": round.0, "counter": counter.to_string() });
    verdict(result, args.json, about)
}
