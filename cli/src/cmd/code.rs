//! `otpmesh code`: the requester's current time-step code, like an authenticator app.

use super::request::{asker, distributors_of, failed, threshold_mesh};
use super::Outcome;
use crate::cli::CodeArgs;
use otpmesh_protocol::threshold::code;

pub async fn run(args: CodeArgs) -> Outcome {
    let mesh = threshold_mesh(args.mesh.as_deref(), &args.data_dir)?;
    let distributors = distributors_of(&mesh, &args.distributor)?;
    let period = mesh.settings.code_period_s;
    let (asker, _) = asker(&distributors, mesh, &args.data_dir, None, args.timeout_secs)?;
    let mut shown = 0u32;
    loop {
        let now = asker.code().await.map_err(|f| failed(&distributors, f))?;
        let (code, step, left, round) = (now.code, now.step, now.seconds_left, now.round);
        if args.json {
            let value = serde_json::json!({
                "code": code.as_str(),
                "step": step,
                "seconds_left": left,
                "round": round.0,
            });
            println!("{value}");
        } else {
            println!("{}  {left:>3} s left", code.as_str());
        }
        shown += 1;
        if !args.watch || args.count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        // Until the next step begins (by this machine's clock).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        tokio::time::sleep(std::time::Duration::from_millis(
            code::ms_to_next_step(now, period) + 50,
        ))
        .await;
    }
}
