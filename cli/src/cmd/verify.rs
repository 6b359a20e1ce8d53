//! `otpmesh verify`: present an OTP to the distributor that issued it.

use super::request::ask_once;
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
    if json {
        println!(
            "{}",
            serde_json::json!({ "result": result.as_str(), "distributor": distributor })
        );
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
    present(
        &args.distributor,
        &args.data_dir,
        args.timeout_secs,
        args.json,
        |distributor| RoleSpec::OneShotVerify { distributor, code },
    )
    .await
}
