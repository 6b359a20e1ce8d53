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

/// Writes `text` as a QR code PNG (4 pixels a module, a 4-module quiet zone).
fn write_qr_png(code: &qrcode::QrCode, path: &std::path::Path) -> anyhow::Result<()> {
    const SCALE: usize = 4;
    const QUIET: usize = 4;
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, c) in colors.iter().enumerate() {
        if *c == qrcode::Color::Dark {
            let (x, y) = (i % width + QUIET, i / width + QUIET);
            for dy in 0..SCALE {
                let row = (y * SCALE + dy) * side;
                pixels[row + x * SCALE..row + x * SCALE + SCALE].fill(0);
            }
        }
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels)?;
    // The code carries the token's secret: private to its owner, like a key file.
    otpmesh_node::keys::write_file(path, &png_bytes, 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `otpmesh totp enrol`: a TOTP token from a distributor, as an otpauth:// URI and a QR code.
pub async fn enrol(args: crate::cli::TotpEnrolArgs) -> Outcome {
    use super::request::{asker, failed};
    let one = [args.distributor.clone()];
    let mesh = otpmesh_protocol::mesh::MeshConfig::default();
    let (asker, peers) = asker(&one, mesh, &args.data_dir, None, args.timeout_secs)?;
    let token = asker
        .totp_enrol(peers[0])
        .await
        .map_err(|f| failed(&one, f))?;
    let (secret, params, distributor) = (token.secret_base32, token.params, token.distributor);
    let account = match args.account {
        Some(a) => a,
        None => otpmesh_node::keys::load_or_create_identity(&args.data_dir)?
            .public()
            .to_peer_id()
            .to_string(),
    };
    let bytes = totp::base32_decode(&secret).map_err(|e| anyhow!("{e}"))?;
    let uri = totp::otpauth_uri(&args.issuer, &account, &bytes, &params);
    let qr = qrcode::QrCode::new(uri.as_bytes()).context("encoding the URI as a QR code")?;
    if let Some(path) = &args.qr_png {
        write_qr_png(&qr, path)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "uri": uri, "distributor": distributor.to_string(), "qr_png": args.qr_png })
        );
    } else {
        let art = qr
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build();
        println!("{art}\n{uri}");
        if let Some(path) = &args.qr_png {
            println!("QR code written to {}", path.display());
        }
    }
    Ok(())
}

/// `otpmesh totp verify`: a TOTP code at the distributor that issued the token.
pub async fn verify(args: crate::cli::TotpVerifyArgs) -> Outcome {
    let code = args.code.trim().to_string();
    super::verify::present(
        &args.distributor,
        &args.data_dir,
        args.timeout_secs,
        args.json,
        |distributor| otpmesh_node::ask::Question::TotpVerify { distributor, code },
    )
    .await
}
