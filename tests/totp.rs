//! Interop with `oathtool` (Debian package `oathtool`; `.ci/run` installs it): the same secret, time,
//! digits and algorithm give the same TOTP code.

use rand::{Rng, SeedableRng};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_otpmesh");

/// oathtool, or why it is missing. CI installs it, so there its absence is a failure.
fn oathtool() -> Option<&'static str> {
    let found = Command::new("oathtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "oathtool is missing in CI: .ci/run must install it"
        );
        eprintln!("oathtool is not installed (apt-get install oathtool): interop not checked here");
        return None;
    }
    Some("oathtool")
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
