//! `otpmesh enrol`: a key exchange with one distributor, kept for later requests.

use super::request::ask_once;
use super::Outcome;
use crate::cli::EnrolArgs;
use otpmesh_node::{NodeEvent, RoleSpec};
use otpmesh_protocol::role::Event;

pub async fn run(args: EnrolArgs) -> Outcome {
    let (peer, epoch) = ask_once(
        &args.distributor,
        &args.data_dir,
        None,
        args.timeout_secs,
        |distributor| RoleSpec::OneShotEnrol { distributor },
        |event| match event {
            NodeEvent::Role(Event::Enrolled { peer, epoch }) => Some(Ok((peer, epoch))),
            _ => None,
        },
    )
    .await?;
    let path = otpmesh_node::keys::enrolment_path(&args.data_dir, &peer);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "enrolled": peer.to_string(), "epoch": epoch, "key_file": path })
        );
    } else {
        println!(
            "enrolled with {peer} at epoch {epoch}; key in {}",
            path.display()
        );
    }
    Ok(())
}
