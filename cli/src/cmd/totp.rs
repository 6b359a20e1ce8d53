//! `otpmesh totp …`: standard TOTP codes.

use super::Outcome;
use crate::cli::TotpCodeArgs;
use anyhow::{anyhow, Context};
use otpmesh_protocol::otp::Digits;
use otpmesh_protocol::totp::{self, Params};
use std::time::{SystemTime, UNIX_EPOCH};

fn unix_now() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs())
}

/// `otpmesh totp code`: prints the code alone on one line.
pub fn code(args: TotpCodeArgs) -> Outcome {
    let secret = totp::base32_decode(&args.secret).map_err(|e| anyhow!("--secret: {e}"))?;
    let params = Params {
        algorithm: args
            .algorithm
            .parse()
            .map_err(|e| anyhow!("--algorithm: {e}"))?,
        digits: Digits::new(args.digits).map_err(|e| anyhow!("--digits: {e}"))?,
        period: args.period,
        t0: args.t0,
    };
    let time = match args.time {
        Some(t) => t,
        None => unix_now()?,
    };
    let code = params.code(&secret, time).map_err(|e| anyhow!("{e}"))?;
    println!("{code}");
    Ok(())
}
