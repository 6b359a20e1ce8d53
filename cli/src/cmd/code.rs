//! `otpmesh code`: the requester's current time-step code, like an authenticator app.

use super::request::{ask, distributors_of, threshold_mesh};
use super::Outcome;
use crate::cli::CodeArgs;
use otpmesh_node::{NodeEvent, RoleSpec};
use otpmesh_protocol::role::Event;
use otpmesh_protocol::threshold::code;

pub async fn run(args: CodeArgs) -> Outcome {
    let mesh = threshold_mesh(args.mesh.as_deref(), &args.data_dir)?;
    let distributors = distributors_of(&mesh, &args.distributor)?;
    let period = mesh.settings.code_period_s;
    let mut shown = 0u32;
    loop {
        let (code, step, left, round) = ask(
            &distributors,
            mesh.clone(),
            &args.data_dir,
            None,
            args.timeout_secs,
            |_| RoleSpec::OneShotCode,
            |event| match event {
                NodeEvent::Role(Event::CodeReceived {
                    code,
                    step,
                    seconds_left,
                    round,
                    ..
                }) => Some(Ok((code, step, seconds_left, round))),
                _ => None,
            },
        )
        .await?;
        if args.json {
            let value = serde_json::json!({
                "code": code,
                "step": step,
                "seconds_left": left,
                "round": round.0,
            });
            println!("{value}");
        } else {
            println!("{code}  {left:>3} s left");
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
