//! `otpmesh scenario run` on the bundled scenarios, with real child processes on 127.0.0.1.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_otpmesh");

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.toml"))
}

fn run(file: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["scenario", "run"])
        .arg(file)
        .args(extra)
        .output()
        .expect("otpmesh runs")
}

/// Runs a scenario with `--json` and returns its report.
fn report(file: &Path, extra: &[&str]) -> (Output, Value) {
    let out = run(file, &[&["--json"], extra].concat());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn assert_passes(name: &str) -> Value {
    assert_passes_with(name, &[])
}

/// [`assert_passes`] with more flags (`--sim`).
fn assert_passes_with(name: &str, extra: &[&str]) -> Value {
    let (out, report) = report(&scenario(name), extra);
    let failed: Vec<&Value> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["passed"] != true)
        .collect();
    assert!(
        out.status.success() && report["passed"] == true,
        "{name} {extra:?} failed: {failed:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in report["steps"].as_array().unwrap() {
        for key in [
            "name",
            "kind",
            "outcome",
            "expected",
            "passed",
            "duration_ms",
        ] {
            assert!(!step[key].is_null(), "step lacks {key}: {step}");
        }
    }
    report
}

#[test]
fn quickstart_passes_and_tells_the_story() {
    let out = run(&scenario("quickstart"), &[]);
    let story = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{story}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for words in [
        "Step 1, key exchange",
        "Step 8, salt removal",
        "PASSED: 9 of 9 steps passed",
    ] {
        assert!(story.contains(words), "story lacks {words:?}:\n{story}");
    }
}

#[test]
fn faults_pass() {
    let report = assert_passes("faults");
    let ids: Vec<u64> = report["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![1, 2, 4, 5, 6],
        "round 3 died with the generator and its id is not reused"
    );
}

#[test]
fn hostile_passes() {
    let report = assert_passes("hostile");
    let injected = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "inject")
        .count();
    assert_eq!(injected, 8, "every kind of bad input is tried");
}

/// The outcome the report gives for the step called `name`.
fn outcome_of(steps: &[Value], name: &str) -> String {
    steps
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("step {name}"))["outcome"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn kdc_passes_with_every_failure_named() {
    let report = assert_passes("kdc");
    let steps = report["steps"].as_array().unwrap();
    let outcome = |name: &str| outcome_of(steps, name);
    assert!(outcome("alice sends bob a file").contains("byte-identical"));
    let refused = steps
        .iter()
        .filter(|s| s["outcome"].as_str().unwrap_or("").starts_with("refused"))
        .count();
    assert_eq!(refused, 6, "every failure case ran and was refused");
}

#[test]
fn threshold_passes_and_a_quorum_decides() {
    let report = assert_passes("threshold");
    let steps = report["steps"].as_array().unwrap();
    let outcome = |name: &str| outcome_of(steps, name);
    assert!(outcome("erin logs in through d3, d4, d5").ends_with("accepted"));
    assert!(outcome("the same OTP through d1, d2, d3").ends_with("used"));
    let unavailable = outcome("frank asks with three down");
    assert!(
        unavailable.starts_with("quorum_unavailable: quorum unavailable: 2 of 5"),
        "{unavailable}"
    );
    assert_eq!(
        report["rounds"][1]["included"].as_array().unwrap().len(),
        4,
        "round 2 sealed with two distributors down"
    );
}

#[test]
fn login_passes_through_both_fronts_and_the_lockout_holds_at_either_verifier() {
    let report = assert_passes("login");
    let steps = report["steps"].as_array().unwrap();
    let outcome = |name: &str| outcome_of(steps, name);
    assert!(
        outcome("alice logs in at door-1").ends_with("(RADIUS): accepted (accepted)"),
        "{}",
        outcome("alice logs in at door-1")
    );
    let replay = outcome("the replay at door-2, over HTTP");
    assert!(replay.ends_with("(HTTP): rejected (used)"), "{replay}");
    let locked = outcome("bob's right code at door-2 is locked out too");
    assert!(locked.ends_with("rejected (locked)"), "{locked}");
}

#[test]
fn login_threshold_passes_a_code_is_spent_everywhere_and_three_down_is_unavailable() {
    let report = assert_passes("login-threshold");
    let steps = report["steps"].as_array().unwrap();
    let outcome = |name: &str| outcome_of(steps, name);
    assert!(outcome("erin logs in at door-1").ends_with("accepted (accepted)"));
    assert!(outcome("the replay at door-2, over HTTP").ends_with("rejected (used)"));
    assert!(outcome("frank's own code, after the guess").ends_with("rejected (used)"));
    assert!(outcome("grace logs in with two distributors down").ends_with("accepted (accepted)"));
    assert!(outcome("grace tries again with three down").ends_with("rejected (used)"));
    let three = outcome("heidi, whose step nobody looked at, with three down");
    assert!(three.ends_with("rejected (quorum unavailable)"), "{three}");
}

#[test]
fn beacon_passes_every_node_agrees_and_passwords_keep_their_shape() {
    let report = assert_passes("beacon");
    let steps = report["steps"].as_array().unwrap();
    let outcome = |name: &str| outcome_of(steps, name);
    let agreed = outcome("every node agrees, d3 included, and its chain verifies offline");
    assert!(agreed.starts_with("9 nodes agree: 1: "), "{agreed}");
    assert!(
        agreed.contains("d3's export of 3 values verifies offline"),
        "{agreed}"
    );
    assert!(agreed.contains("a tampered copy fails"), "{agreed}");
    let before = outcome("d1 and d2 make round 2's value");
    assert!(before.starts_with("8 nodes agree"), "d3 was down: {before}");
    let erin = outcome("erin's password");
    assert!(
        erin.starts_with("24 characters, all from the alphabet"),
        "{erin}"
    );
    let frank = outcome("frank's password");
    assert!(frank.starts_with("20 characters, all"), "{frank}");
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("\"password\":"), "no password in the report");
}

#[test]
fn scale_passes() {
    let report = assert_passes("scale");
    assert_eq!(report["otps"].as_array().unwrap().len(), 16);
    assert_eq!(
        report["rounds"][0]["included"].as_array().unwrap().len(),
        32
    );
}

fn fingerprint(report: &Value) -> (Vec<Value>, Vec<Value>) {
    let rounds = report["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["commitment"].clone())
        .collect();
    let otps = report["otps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["otp"].clone())
        .collect();
    (rounds, otps)
}

#[test]
fn the_same_seed_replays_the_same_commitments_and_otps() {
    let file = scenario("quickstart");
    let (_, a) = report(&file, &["--seed", "7"]);
    let (_, b) = report(&file, &["--seed", "7"]);
    let (_, c) = report(&file, &["--seed", "8"]);
    let (_, d) = report(&file, &["--seed", "7", "--in-process"]);
    assert_eq!(a["passed"], true);
    let (fa, fb, fc, fd) = (
        fingerprint(&a),
        fingerprint(&b),
        fingerprint(&c),
        fingerprint(&d),
    );
    assert_eq!(fa.0.len(), 2);
    assert_eq!(fa.1.len(), 4);
    assert_eq!(fa, fb, "same seed, same commitments and OTPs");
    assert_eq!(fa, fd, "in-process replays the same as processes");
    assert_ne!(fa.0, fc.0, "another seed, other commitments");
    assert_ne!(fa.1, fc.1, "another seed, other OTPs");
}

/// Every bundled scenario on the simulator (`--sim`): the real roles, keys and stores in virtual
/// time, under a fixed seed (a random one made this test flaky; the seeds that found bugs have
/// their own tests below). kdc.toml too: its centre messages go over the simulated net and the
/// file exchange runs frame by frame in memory.
#[test]
fn every_bundled_scenario_passes_on_the_simulator() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut ran = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        assert_passes_with(&name, &["--sim", "--seed", "7"]);
        ran.push(name);
    }
    assert!(ran.len() >= 9, "every scenario ran: {ran:?}");
}

/// The kdc steps on the simulator carry the file for real: it arrives byte for byte, and the
/// refusals are the centre's and the receiver's own words.
#[test]
fn kdc_on_the_simulator_moves_the_file_and_names_every_refusal() {
    let (out, report) = report(&scenario("kdc"), &["--sim", "--seed", "3"]);
    assert!(out.status.success(), "{report}");
    let outcomes: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "kdc_send")
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert!(outcomes[0].starts_with("300000 bytes from alice to bob, byte-identical"));
    assert!(outcomes[1].contains("wrong passphrase for alice"));
    assert!(outcomes[4].contains("the receiver did not start"));
}

#[test]
fn the_simulator_replays_a_seed_exactly() {
    let file = scenario("quickstart");
    let (_, a) = report(&file, &["--seed", "7", "--sim"]);
    let (_, b) = report(&file, &["--seed", "7", "--sim"]);
    let (_, c) = report(&file, &["--seed", "8", "--sim"]);
    assert_eq!(a["passed"], true);
    let (fa, fb, fc) = (fingerprint(&a), fingerprint(&b), fingerprint(&c));
    assert_eq!((fa.0.len(), fa.1.len()), (2, 4));
    assert_eq!(fa, fb, "same seed, same commitments and OTPs");
    assert_ne!(fa, fc, "another seed, other commitments and OTPs");
}

#[test]
fn a_wrong_expectation_fails_and_names_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(scenario("quickstart")).unwrap();
    let wrong = text.replace(
        "expect = { outcome = \"otp\", round = 2 }",
        "expect = { outcome = \"otp\", round = 9 }",
    );
    assert_ne!(wrong, text);
    let file = dir.path().join("wrong.toml");
    std::fs::write(&file, wrong).unwrap();
    let report_file = dir.path().join("report.json");
    let out = run(&file, &["--report", report_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("erin asks for round 2") && err.contains("line"),
        "{err}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report_file).unwrap()).unwrap();
    assert_eq!(report["passed"], false);
    let failed: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["passed"] == false)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["erin asks for round 2"]);
}

#[test]
fn a_malformed_file_is_reported_before_any_node_starts() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(scenario("quickstart")).unwrap();
    let bad = text.replacen(
        "distributor = \"distributor\"",
        "distributor = \"distributr\"",
        1,
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, &bad).unwrap();
    let data = dir.path().join("data");
    let out = run(&file, &["--dir", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = bad.lines().position(|l| l.contains("distributr")).unwrap() + 1;
    assert!(
        err.contains(&format!("bad.toml:{line}: ")),
        "the error points at line {line}: {err}"
    );
    assert!(
        err.contains("`distributr` is not a node") && err.contains("did you mean `distributor`?"),
        "{err}"
    );
    assert!(!data.exists(), "nothing may start for a malformed file");

    std::fs::write(&file, "[[steps]\nkind = \"round\"\n").unwrap();
    let out = run(&file, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("bad.toml:1:"),
        "{err}"
    );
}

/// Seed 1 on the simulator: restarted d3 got round 3's handover before its seal, kept the round as
/// "held only" and so trusted nothing that named round 2; it never caught up. Failed before the
/// fix in `beacon::Keeper::sealed` (the protocol test is
/// `beacon_a_seal_after_the_handover_still_anchors_catch_up`).
#[test]
fn sim_seed_1_beacon_a_restarted_distributor_catches_up() {
    assert_passes_with("beacon", &["--sim", "--seed", "1"]);
}

/// Seed 6 on the simulator: the request after "round 2 seals" reached the distributor before
/// round 2's delivery and got round 1's OTP. The scenario now waits for the delivery, as a user
/// asking for round 2 must; failed before.
#[test]
fn sim_seed_6_hostile_asks_once_round_2_is_delivered() {
    assert_passes_with("hostile", &["--sim", "--seed", "6"]);
}

/// Seed 35 on the simulator: erin's OTP came at the third of five partials, and the verify through
/// d3, d4, d5 overtook the issue request to one of them ("holds no record of issuing that OTP").
/// The requester now waits briefly for the distributors still asked; failed before (the protocol
/// test is `an_otp_waits_briefly_for_the_last_distributors_to_record_it`).
#[test]
fn sim_seed_35_threshold_an_otp_verifies_through_any_quorum_of_its_issuers() {
    assert_passes_with("threshold", &["--sim", "--seed", "35"]);
}
