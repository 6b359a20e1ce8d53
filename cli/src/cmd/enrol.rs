//! `otpmesh enrol`: a key exchange with one distributor, kept for later requests.

use super::request::{asker, failed};
use super::Outcome;
use crate::cli::EnrolArgs;
use otpmesh_protocol::mesh::MeshConfig;

pub async fn run(args: EnrolArgs) -> Outcome {
    let one = [args.distributor.clone()];
    let (asker, peers) = asker(
        &one,
        MeshConfig::default(),
        &args.data_dir,
        None,
        args.timeout_secs,
    )?;
    let enrolled = asker.enrol(peers[0]).await.map_err(|f| failed(&one, f))?;
    let (peer, epoch) = (enrolled.peer, enrolled.epoch);
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
