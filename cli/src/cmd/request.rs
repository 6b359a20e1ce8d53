//! `otpmesh request`: one OTP from one distributor, or in threshold mode (`--threshold`) from a
//! quorum of them.

use super::{Failure, Outcome};
use crate::cli::RequestArgs;
use crate::output;
use anyhow::anyhow;
use libp2p::Multiaddr;
use otpmesh_node::ask::{self, Asker, Failed};
use otpmesh_node::split_peer;
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::role::Failure as RoleFailure;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fail(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

/// Says what a failed request means, with the exit code its kind has (`--help` documents them:
/// 3 unreachable, 4 not authorised, 5 no round yet, 6 quorum unavailable, 1 anything else).
fn classify(address: &str, failure: RoleFailure, reason: String) -> Failure {
    let error = match failure {
        RoleFailure::Unauthorised => anyhow!("the distributor refused this requester: {reason}"),
        RoleFailure::NoRound => anyhow!("no round sealed yet: {reason}"),
        RoleFailure::Unreachable => {
            anyhow!("could not reach the distributor at {address}: {reason}")
        }
        RoleFailure::QuorumUnavailable => anyhow!("{reason}"),
        RoleFailure::Refused => anyhow!("the request failed: {reason}"),
    };
    fail(failure.exit_code(), error)
}

/// The asker a command runs: the identity in `data_dir`, aimed at `distributors` (multiaddrs
/// ending in /p2p/…), believing `mesh`; and the distributors' peer ids, in order.
pub fn asker(
    distributors: &[String],
    mesh: MeshConfig,
    data_dir: &Path,
    seed: Option<u64>,
    timeout_secs: u64,
) -> Result<(Asker, Vec<libp2p::PeerId>), Failure> {
    let targets = parse_distributors(distributors)?;
    if targets.is_empty() {
        return Err(anyhow!("name at least one --distributor").into());
    }
    let peers = targets.iter().map(|(_, p)| *p).collect();
    let asker = Asker {
        data_dir: data_dir.to_path_buf(),
        peers: targets.into_iter().map(|(a, _)| a).collect(),
        mesh,
        seed,
        timeout: Duration::from_secs(timeout_secs),
    };
    Ok((asker, peers))
}

/// What a failed question to `distributors` means, with the exit code of its kind.
pub fn failed(distributors: &[String], failed: Failed) -> Failure {
    classify(&distributors.join(", "), failed.failure, failed.reason)
}

/// The PeerIds of `distributors` (multiaddrs ending in /p2p/…).
fn parse_distributors(
    distributors: &[String],
) -> Result<Vec<(Multiaddr, libp2p::PeerId)>, Failure> {
    distributors
        .iter()
        .map(|d| {
            let addr: Multiaddr = d
                .parse()
                .map_err(|e| anyhow!("--distributor {d:?} is not a multiaddr: {e}"))?;
            match split_peer(&addr) {
                (Some(peer), _) => Ok((addr, peer)),
                _ => Err(anyhow!(
                    "--distributor {addr} must end with /p2p/<peer id> so the distributor can be authenticated (mesh.json lists such addresses)"
                )
                .into()),
            }
        })
        .collect()
}

/// The mesh config a threshold command believes: `--mesh FILE`, else the mesh.toml beside the
/// data dir (as `mesh up` and scenarios lay it out). Exit 2 if there is none or it is no
/// threshold mesh.
pub fn threshold_mesh(given: Option<&Path>, data_dir: &Path) -> Result<MeshConfig, Failure> {
    let (mesh, path) = mesh_for(given, data_dir, "threshold mode needs the mesh config (its T/N, coordinator and distributors decide which answers are believed)")?;
    if mesh.threshold().is_none() {
        return Err(fail(
            2,
            anyhow!(
                "{}: not a threshold mesh (no threshold = \"T/N\" in [settings])",
                path.display()
            ),
        ));
    }
    Ok(mesh)
}

/// The mesh config `--mesh FILE` names, else the mesh.toml beside the data dir; exit 2 (saying
/// `why` it is needed) if there is none.
pub fn mesh_for(
    given: Option<&Path>,
    data_dir: &Path,
    why: &str,
) -> Result<(MeshConfig, PathBuf), Failure> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => mesh_beside(data_dir).ok_or_else(|| {
            fail(
                2,
                anyhow!(
                    "{why}: give --mesh FILE (no mesh.toml beside {})",
                    data_dir.display()
                ),
            )
        })?,
    };
    let mesh = super::node::load_mesh(&path).map_err(|e| fail(2, e))?;
    Ok((mesh, path))
}

/// Every distributor the mesh config lists, as a dialable address ending in /p2p/<peer id>, or
/// `given` if any were named (a one-off).
pub fn distributors_of(mesh: &MeshConfig, given: &[String]) -> Result<Vec<String>, Failure> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    mesh.distributors
        .iter()
        .map(|m| match m.addrs.first() {
            Some(addr) => Ok(format!("{addr}/p2p/{}", m.peer_id)),
            None => Err(fail(
                2,
                anyhow!(
                    "the mesh config gives distributor {} no address: name it with --distributor",
                    m.peer_id
                ),
            )),
        })
        .collect()
}

/// The mesh.toml beside a data dir, if there is one.
pub fn mesh_beside(data_dir: &Path) -> Option<PathBuf> {
    let path = data_dir.parent()?.join("mesh.toml");
    path.is_file().then_some(path)
}

pub async fn run(args: RequestArgs) -> Outcome {
    if args.threshold {
        return run_threshold(args).await;
    }
    let named = match args.distributor.is_empty() {
        false => args.distributor.clone(),
        true => {
            let why = "name a --distributor, or give the mesh config that lists them";
            let (mesh, _) = mesh_for(args.mesh.as_deref(), &args.data_dir, why)?;
            // Any one: in single mode each distributor issues OTPs of its own.
            distributors_of(&mesh, &[])?.into_iter().take(1).collect()
        }
    };
    let one = [single_distributor(&named)?.to_string()];
    let (asker, peers) = asker(
        &one,
        MeshConfig::default(),
        &args.data_dir,
        args.seed,
        args.timeout_secs,
    )?;
    let ask::Issued {
        otp,
        round,
        expires_at_ms,
        distributor,
    } = asker.otp(peers[0]).await.map_err(|f| failed(&one, f))?;
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

/// The one `--distributor` of a single-mode command (several belong to `--threshold`).
pub fn single_distributor(distributors: &[String]) -> Result<&str, Failure> {
    match distributors {
        [one] => Ok(one),
        many => Err(anyhow!(
            "{} --distributor given: several need --threshold (a threshold mesh)",
            many.len()
        )
        .into()),
    }
}

/// Threshold mode: every distributor is asked for its partial; t valid ones make the OTP.
async fn run_threshold(args: RequestArgs) -> Outcome {
    let mesh = threshold_mesh(args.mesh.as_deref(), &args.data_dir)?;
    let distributors = distributors_of(&mesh, &args.distributor)?;
    let (asker, peers) = asker(
        &distributors,
        mesh,
        &args.data_dir,
        args.seed,
        args.timeout_secs,
    )?;
    let c = asker
        .threshold_otp(peers)
        .await
        .map_err(|f| failed(&distributors, f))?;
    let (otp, round, counter, expires_at_ms) = (c.otp, c.round, c.counter, c.expires_at_ms);
    let (from, bad) = (c.from, c.bad);
    let bad: Vec<String> = bad.iter().map(|p| p.to_string()).collect();
    if args.json {
        let value = serde_json::json!({
            "otp": otp,
            "round": round.0,
            "counter": counter.to_string(),
            "expires_at": output::rfc3339(expires_at_ms),
            "expires_at_unix_ms": expires_at_ms,
            "shareholders": from,
            "bad_partials_from": bad,
        });
        println!("{value}");
    } else {
        println!(
            "OTP {otp}  (round {round}, counter {counter}, expires {}; from distributors {:?})",
            output::rfc3339(expires_at_ms),
            from
        );
        for peer in bad {
            println!("warning: distributor {peer} sent a partial whose proof failed");
        }
    }
    Ok(())
}
