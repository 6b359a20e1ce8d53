//! `otpmesh verify`: present an OTP to the distributor that issued it.

use super::request::ask_once;
use super::{Failure, Outcome};
use crate::cli::VerifyArgs;
use anyhow::anyhow;
use otpmesh_node::{NodeEvent, RoleSpec};
use otpmesh_protocol::role::Event;
use otpmesh_protocol::wire::VerifyResult;

pub async fn run(args: VerifyArgs) -> Outcome {
    let code = args.otp.trim().to_string();
    let result = ask_once(
        &args.distributor,
        &args.data_dir,
        None,
        args.timeout_secs,
        |distributor| RoleSpec::OneShotVerify {
            distributor,
            code: code.clone(),
        },
        |event| match event {
            NodeEvent::Role(Event::VerifyAnswered { result, .. }) => Some(Ok(result)),
            _ => None,
        },
    )
    .await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "result": result.as_str(), "distributor": args.distributor })
        );
    } else {
        println!("{}", result.as_str());
    }
    match result {
        VerifyResult::Accepted => Ok(()),
        other => Err(Failure {
            code: 1,
            error: anyhow!("the OTP was not accepted: {}", other.as_str()),
        }),
    }
}
