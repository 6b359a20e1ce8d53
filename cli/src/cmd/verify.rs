//! `otpmesh verify`: present an OTP to the distributor that issued it.

use super::request::{asker, failed, single_distributor};
use super::{Failure, Outcome};
use crate::cli::VerifyArgs;
use anyhow::anyhow;
use otpmesh_node::ask::Question;
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::wire::VerifyResult;
use std::path::Path;

/// Presents a code (`question` says how, to the one distributor it is given), prints the verdict,
/// exits 0 only for `accepted`.
pub async fn present(
    distributor: &str,
    data_dir: &Path,
    timeout_secs: u64,
    json: bool,
    question: impl FnOnce(libp2p::PeerId) -> Question,
) -> Outcome {
    let one = [distributor.to_string()];
    let (asker, peers) = asker(&one, MeshConfig::default(), data_dir, None, timeout_secs)?;
    let result: VerifyResult = asker
        .ask(question(peers[0]))
        .await
        .map_err(|f| failed(&one, f))?;
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
        |distributor| Question::Verify { distributor, code },
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
    let distributors = &args.distributor;
    let (asker, peers) = asker(distributors, mesh, &args.data_dir, None, args.timeout_secs)?;
    let result = asker
        .threshold_verify(peers, (round, counter), code)
        .await
        .map_err(|f| failed(distributors, f))?;
    let about = serde_json::json!({ "round": round.0, "counter": counter.to_string() });
    verdict(result, args.json, about)
}
