//! `otpmesh password`: a password from a threshold mesh that only this requester ever sees.

use super::request::{asker, failed};
use super::Outcome;
use crate::cli::PasswordArgs;
use anyhow::anyhow;
use otpmesh_protocol::threshold::password::{Alphabet, MAX_LENGTH};

pub async fn run(args: PasswordArgs) -> Outcome {
    let alphabet = match &args.chars {
        Some(chars) => Alphabet::chars(chars),
        None => Alphabet::classes(&args.alphabet),
    }
    .map_err(|e| anyhow!("{e}"))?;
    if !(1..=MAX_LENGTH).contains(&args.length) {
        return Err(anyhow!("--length {}: between 1 and {MAX_LENGTH}", args.length).into());
    }
    let length = args.length;
    let mesh = super::request::threshold_mesh(args.mesh.as_deref(), &args.data_dir)?;
    let distributors = super::request::distributors_of(&mesh, &args.distributor)?;
    let (asker, peers) = asker(&distributors, mesh, &args.data_dir, None, args.timeout_secs)?;
    let got = asker
        .password(peers, alphabet, length)
        .await
        .map_err(|f| failed(&distributors, f))?;
    let (password, round, bits, size) = (got.password, got.round, got.bits, got.alphabet_size);
    if args.json {
        let value = serde_json::json!({
            "password": password.as_str(),
            "length": length,
            "alphabet_size": size,
            "bits": bits,
            "round": round.0,
        });
        println!("{value}");
    } else {
        println!("{}", password.as_str());
        eprintln!("{length} characters from {size}: about {bits} bits (round {round})");
    }
    Ok(())
}
