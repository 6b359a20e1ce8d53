//! Interop with `oathtool` (Debian package `oathtool`; `.ci/run` installs it): the same secret, time,
//! digits and algorithm give the same TOTP code.

mod common;

use common::{json_field, tool, Mesh, BIN};
use rand::{Rng, SeedableRng};
use std::process::Command;

fn oathtool() -> Option<&'static str> {
    tool("oathtool", "oathtool")
}

fn run(cmd: &str, args: &[String]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn codes_match_oathtool_for_random_secrets_times_digits_and_algorithms() {
    let Some(oath) = oathtool() else { return };
    let mut rng = rand::rngs::StdRng::seed_from_u64(6238);
    for case in 0..60 {
        let secret: Vec<u8> = (0..rng.gen_range(10..=64)).map(|_| rng.gen()).collect();
        let b32 = data_encoding::BASE32_NOPAD.encode(&secret);
        let time: u64 = rng.gen_range(0..4_000_000_000);
        let digits: u8 = rng.gen_range(6..=8);
        let alg = ["sha1", "sha256", "sha512"][case % 3];
        let period: u64 = [30, 60, 15][rng.gen_range(0..3)];
        let ours = run(
            BIN,
            &[
                "totp",
                "code",
                "--secret",
                &b32,
                "--time",
                &time.to_string(),
                "--digits",
                &digits.to_string(),
                "--algorithm",
                alg,
                "--period",
                &period.to_string(),
            ]
            .map(String::from),
        );
        let theirs = run(
            oath,
            &[
                format!("--totp={alg}"),
                "--base32".into(),
                format!("--digits={digits}"),
                format!("--time-step-size={period}s"),
                "--now".into(),
                format!("@{time}"),
                b32.clone(),
            ],
        );
        assert_eq!(
            ours, theirs,
            "case {case}: {alg}, {digits} digits, period {period}, time {time}"
        );
    }
}

#[test]
fn a_mesh_token_scans_and_oathtool_codes_verify_once() {
    let (Some(oath), Some(zbar)) = (oathtool(), tool("zbarimg", "zbar-tools")) else {
        return;
    };
    let mesh = Mesh::up(&[]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();
    let distributor = Mesh::listen(&json, "distributor-1");
    let dir = Mesh::data_dir(&json, "requester-1");
    let png = mesh.dir.path().join("token.png");

    // The human form: a terminal QR code and the URI.
    let out = Command::new(BIN)
        .args([
            "totp",
            "enrol",
            "--distributor",
            &distributor,
            "--data-dir",
            &dir,
            "--account",
            "erin",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains('▀')
            && text.contains("otpauth://totp/otpmesh:erin?secret="),
        "{text}"
    );

    // The script form, with a PNG that decodes back to the URI.
    let out = Command::new(BIN)
        .args([
            "totp",
            "enrol",
            "--json",
            "--distributor",
            &distributor,
            "--data-dir",
            &dir,
            "--qr-png",
        ])
        .arg(&png)
        .output()
        .unwrap();
    let uri = json_field(&out, "uri");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&png).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the QR code carries the secret: private to its owner"
    );
    let decoded = run(
        zbar,
        &["-q".into(), "--raw".into(), png.display().to_string()],
    );
    assert_eq!(decoded, uri, "the QR code holds the URI");

    // A code from oathtool for that secret verifies once; the re-enrolment replaced the first token.
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let code = run(oath, &["--totp".into(), "--base32".into(), secret]);
    let verify = |code: &str| {
        common::verify_json(&[
            "totp",
            "verify",
            "--distributor",
            &distributor,
            "--data-dir",
            &dir,
            "--code",
            code,
        ])
    };
    assert_eq!(verify(&code), (Some(0), "accepted".to_string()));
    assert_eq!(verify(&code), (Some(1), "used".to_string()));
    assert!(mesh.stop().success());
}
