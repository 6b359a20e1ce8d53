//! The verifier on real processes, with clients nobody here wrote: `radclient` (freeradius-utils),
//! `pamtester` with `pam_radius_auth` (libpam-radius-auth), `curl`. `.ci/run` installs them.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

struct Door {
    radius: String,
    secret_file: String,
    http: String,
    token: String,
}

fn door(json: &Value, name: &str) -> Door {
    let v = Mesh::node(json, name);
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{name} has no {k}"))
            .to_string()
    };
    Door {
        radius: s("radius"),
        secret_file: s("radius_secret_file"),
        http: s("http"),
        token: std::fs::read_to_string(s("http_token_file")).unwrap(),
    }
}

/// A fresh OTP for requester-1 from `distributor`.
fn fresh_otp(json: &Value, distributor: &str) -> String {
    let addr = Mesh::node(json, distributor)["listen"][0].as_str().unwrap();
    let dir = Mesh::node(json, "requester-1")["data_dir"]
        .as_str()
        .unwrap();
    json_field(&request(addr, Path::new(dir)), "otp")
}

fn piped(program: &str, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// radclient's verdict: "accept", "reject" or "none" (no answer), and what it printed.
fn radclient(door: &Door, user: &str, code: &str, secret_file: Option<&str>) -> (String, String) {
    let out = piped(
        "radclient",
        &[
            "-x",
            "-t",
            "3",
            "-r",
            "1",
            "-S",
            secret_file.unwrap_or(&door.secret_file),
            &door.radius,
            "auth",
        ],
        &format!(
            "User-Name = \"{user}\", User-Password = \"{code}\", Message-Authenticator = 0x00\n"
        ),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = if text.contains("Received Access-Accept") {
        assert!(out.status.success(), "{text}");
        "accept"
    } else if text.contains("Received Access-Reject") {
        assert!(!out.status.success(), "{text}");
        "reject"
    } else {
        "none"
    };
    (verdict.to_string(), text)
}

/// curl's POST /validate/check: (HTTP status, body).
fn curl(door: &Door, token: Option<&str>, user: &str, code: &str) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {}", token.unwrap_or(&door.token));
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}", "-H", &auth])
        .args(["--data-urlencode", &format!("user={user}")])
        .args(["--data-urlencode", &format!("pass={code}")])
        .arg(&door.http)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap())
}

fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

#[test]
fn a_user_logs_in_through_radius_pam_and_http_once_and_every_other_try_is_refused() {
    let (Some(_), Some(_)) = (tool("radclient", "freeradius-utils"), tool("curl", "curl")) else {
        return;
    };
    let mesh = Mesh::up(&[
        "--verifiers",
        "2",
        "--distributors",
        "2",
        "--contributors",
        "2",
    ]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();
    let (v1, v2) = (door(&json, "verifier-1"), door(&json, "verifier-2"));
    let mut secrets = Vec::new();

    // RADIUS: a fresh code once, through either verifier; never twice.
    let otp = fresh_otp(&json, "distributor-1");
    secrets.push(otp.clone());
    assert_eq!(radclient(&v1, "requester-1", &otp, None).0, "accept");
    let (verdict, text) = radclient(&v1, "requester-1", &otp, None);
    assert_eq!(verdict, "reject", "a replay");
    assert!(text.contains("used"), "{text}");
    assert_eq!(
        radclient(&v2, "requester-1", &otp, None).0,
        "reject",
        "another verifier"
    );
    let otp = fresh_otp(&json, "distributor-2");
    secrets.push(otp.clone());
    assert_eq!(
        radclient(&v2, "requester-1", &wrong(&otp), None).0,
        "reject",
        "a wrong code"
    );
    assert_eq!(
        radclient(&v2, "nobody", &otp, None).0,
        "reject",
        "an unknown user"
    );
    let bad_secret = mesh.dir.path().join("bad-secret");
    std::fs::write(&bad_secret, "not-the-secret").unwrap();
    let (verdict, text) = radclient(&v2, "requester-1", &otp, bad_secret.to_str());
    assert_eq!(
        verdict, "none",
        "a wrong shared secret gets no answer: {text}"
    );
    // None of those spent the code.
    assert_eq!(radclient(&v2, "requester-1", &otp, None).0, "accept");

    // HTTP, privacyIDEA's shape.
    let otp = fresh_otp(&json, "distributor-1");
    secrets.push(otp.clone());
    let (status, body) = curl(&v2, None, "requester-1", &otp);
    assert_eq!(
        (status, &body["result"]["value"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    assert_eq!(body["result"]["status"], true);
    let (status, body) = curl(&v1, None, "requester-1", &otp);
    assert_eq!(
        (status, &body["result"]["value"]),
        (200, &Value::Bool(false)),
        "{body}"
    );
    assert_eq!(body["detail"]["message"], "used");
    let (status, body) = curl(&v1, Some("not-a-token-of-anyone"), "requester-1", &otp);
    assert_eq!(
        (status, &body["result"]["status"]),
        (401, &Value::Bool(false)),
        "{body}"
    );
    let (_, body) = curl(&v1, None, "requester-1", &wrong(&otp));
    assert_eq!(body["result"]["value"], false);

    // A right code costs nothing at the distributors that did not issue it: more logins with
    // distributor-1's codes than the lockout allows misses, then distributor-2's code still works.
    for _ in 0..5 {
        let otp = fresh_otp(&json, "distributor-1");
        secrets.push(otp.clone());
        assert_eq!(radclient(&v1, "requester-1", &otp, None).0, "accept");
    }
    let otp = fresh_otp(&json, "distributor-2");
    secrets.push(otp.clone());
    assert_eq!(
        radclient(&v2, "requester-1", &otp, None).0,
        "accept",
        "no lockout from right codes"
    );

    // PAM: sshd's path, Debian's pam_radius_auth (no Message-Authenticator: mesh up's verifiers
    // take that from 127.0.0.1), through pamtester. Needs root to write /etc/pam.d.
    if let Some(pamtester) = tool("pamtester", "pamtester") {
        let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if is_root && Path::new("/etc/pam.d").is_dir() {
            let conf = mesh.dir.path().join("pam_radius_auth.conf");
            let secret = std::fs::read_to_string(&v1.secret_file).unwrap();
            std::fs::write(&conf, format!("{} {secret} 3\n", v1.radius)).unwrap();
            let service = format!("otpmesh-test-{}", std::process::id());
            let pam_file = Path::new("/etc/pam.d").join(&service);
            std::fs::write(
                &pam_file,
                format!(
                    "auth required pam_radius_auth.so conf={}\naccount required pam_permit.so\n",
                    conf.display()
                ),
            )
            .unwrap();
            let otp = fresh_otp(&json, "distributor-1");
            secrets.push(otp.clone());
            let pam = |code: &str| {
                piped(
                    pamtester,
                    &[&service, "requester-1", "authenticate"],
                    &format!("{code}\n"),
                )
            };
            let first = pam(&otp);
            let again = pam(&otp);
            let _ = std::fs::remove_file(&pam_file);
            assert!(
                first.status.success(),
                "{}",
                String::from_utf8_lossy(&first.stderr)
            );
            assert!(!again.status.success(), "a replay through PAM");
        } else {
            eprintln!("not root: the pamtester check does not run here");
        }
    }

    // Wrong codes lock the user out at every distributor, whichever verifier is asked next.
    for _ in 0..5 {
        assert_eq!(radclient(&v1, "requester-1", "00000000", None).0, "reject");
    }
    let otp = fresh_otp(&json, "distributor-2");
    secrets.push(otp.clone());
    let (verdict, text) = radclient(&v2, "requester-1", &otp, None);
    assert_eq!(verdict, "reject", "locked out");
    assert!(text.contains("locked"), "{text}");

    let (status, keep) = mesh.stop_keeping();
    assert!(status.success());
    // No node logged a code.
    for entry in std::fs::read_dir(keep.path()).unwrap() {
        let Ok(log) = std::fs::read_to_string(entry.unwrap().path().join("node.log")) else {
            continue;
        };
        for secret in &secrets {
            assert!(!log.contains(secret.as_str()), "a log holds a code");
        }
    }
}

/// `otpmesh code` for requester-1, with the distributors from the mesh.toml beside its data dir:
/// (code, step), or the error.
fn code_now(json: &Value) -> Result<(String, u64), String> {
    let dir = Mesh::node(json, "requester-1")["data_dir"]
        .as_str()
        .unwrap();
    let out = Command::new(BIN)
        .args(["code", "--json", "--data-dir", dir])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok((
        v["code"].as_str().unwrap().to_string(),
        v["step"].as_u64().unwrap(),
    ))
}

/// The first code whose step is after `after`. Codes change with the clock: a fresh mesh serves
/// them once its first round is ROUND_MARGIN_MS old at a step's start, and a new step begins on
/// the period. Between tries it reads the mesh's events (rounds, beacon values) until the next step
/// has begun, each wait bounded by that boundary; bounded in count.
fn code_after(mesh: &Mesh, json: &Value, after: u64, period_s: u64) -> (String, u64) {
    let mut last = String::new();
    for _ in 0..12 {
        match code_now(json) {
            Ok((code, step)) if step > after => return (code, step),
            Ok(_) => {}
            Err(e) => last = e,
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let next = std::time::Instant::now()
            + std::time::Duration::from_millis(
                (now / 1000 / period_s + 1) * period_s * 1000 - now + 100,
            );
        while let Some(left) = next.checked_duration_since(std::time::Instant::now()) {
            if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) =
                mesh.events.recv_timeout(left)
            {
                panic!("mesh up stopped");
            }
        }
    }
    panic!("no code after step {after}: {last}");
}

#[test]
fn threshold_codes_log_in_through_radius_and_http_once() {
    let (Some(_), Some(_)) = (tool("radclient", "freeradius-utils"), tool("curl", "curl")) else {
        return;
    };
    let mesh = Mesh::up(&[
        "--threshold",
        "3/5",
        "--verifiers",
        "2",
        "--contributors",
        "2",
        "--code-period-s",
        "15",
    ]);
    mesh.wait_for("round 1 handed over", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();
    let (v1, v2) = (door(&json, "verifier-1"), door(&json, "verifier-2"));
    let (code, step) = code_after(&mesh, &json, 0, 15);
    assert_eq!(code.len(), 6, "{code}");
    assert_eq!(radclient(&v1, "requester-1", &code, None).0, "accept");
    let (verdict, text) = radclient(&v2, "requester-1", &code, None);
    assert_eq!(verdict, "reject", "the same code at another verifier");
    assert!(text.contains("used"), "{text}");
    let (_, body) = curl(&v1, None, "requester-1", &code);
    assert_eq!(body["result"]["value"], false, "{body}");
    assert_eq!(body["detail"]["message"], "used");
    // The next step's code, through HTTP.
    let (code, _) = code_after(&mesh, &json, step, 15);
    let (status, body) = curl(&v2, None, "requester-1", &code);
    assert_eq!(
        (status, &body["result"]["value"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    assert_eq!(
        radclient(&v1, "nobody", &code, None).0,
        "reject",
        "an unknown user"
    );
    let (status, stopped) = mesh.stop_keeping();
    assert!(status.success());
    for entry in std::fs::read_dir(stopped.path()).unwrap() {
        let Ok(log) = std::fs::read_to_string(entry.unwrap().path().join("node.log")) else {
            continue;
        };
        assert!(!log.contains(&format!("\"{code}\"")), "a log holds a code");
    }
}
