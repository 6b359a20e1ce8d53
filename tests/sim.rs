//! `otpmesh sim`, the real binary: one seed gives one trace hash, faults are simulated and
//! reported, and a bad fault spec is named with exit code 2.

use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_otpmesh");

fn sim(args: &[&str]) -> (std::process::Output, Value) {
    let out = Command::new(BIN)
        .arg("sim")
        .args(args)
        .arg("--json")
        .output()
        .expect("otpmesh runs");
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

#[test]
fn the_same_seed_gives_the_same_trace_with_faults_and_every_invariant_holds() {
    let args = [
        "--seed",
        "11",
        "--contributors",
        "12",
        "--distributors",
        "4",
        "--requesters",
        "6",
        "--rounds",
        "2",
        "--faults",
        "loss=0.05,dup=0.02,partition,crash",
    ];
    let (a, first) = sim(&args);
    let (_, second) = sim(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(first["trace"], second["trace"], "one seed, one trace");
    assert_eq!(first["messages"], second["messages"]);
    assert_eq!(first["violations"], Value::Array(vec![]));
    assert!(first["rounds_sealed"].as_u64().unwrap() >= 2, "{first}");
    assert!(first["crashes"].as_u64().unwrap() >= 1, "{first}");
    assert!(first["lost"].as_u64().unwrap() >= 1, "{first}");
    let (_, other) = sim(&[&args[..1], &["12"], &args[2..]].concat());
    assert_ne!(
        first["trace"], other["trace"],
        "another seed, another trace"
    );
}

#[test]
fn a_bad_fault_spec_is_named_and_exits_2() {
    let (out, _) = sim(&["--faults", "loss=0.05,flood"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown fault \"flood\""), "{stderr}");
}

#[test]
fn bench_sim_measures_both_modes_beside_the_rsa_floor_and_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("sim.json"), dir.path().join("sim.svg"));
    let out = Command::new(BIN)
        .args([
            "bench",
            "sim",
            "--contributors",
            "8,16",
            "--distributors",
            "3",
        ])
        .args(["--thresholds", "2/3", "--threshold-contributors", "4"])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .expect("otpmesh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().expect("rows");
    let setups: Vec<&str> = rows.iter().map(|r| r["setup"].as_str().unwrap()).collect();
    assert_eq!(setups, ["single", "single", "2/3"]);
    for row in rows {
        let wanted = row["contributors"].as_u64().unwrap();
        assert_eq!(row["otps_accepted"].as_u64(), Some(wanted), "{row}");
        let (wall, floor) = (
            row["wall_s"].as_f64().unwrap(),
            row["floor_s"].as_f64().unwrap(),
        );
        assert!(wall > 0.0 && floor > 0.0, "{row}");
    }
    // 16 contributors need twice the decryptions of 8; 2/3 needs 3 × (4 + 3).
    let decryptions: Vec<u64> = rows
        .iter()
        .map(|r| r["decryptions"].as_u64().unwrap())
        .collect();
    assert_eq!(decryptions, [8, 16, 21]);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let bad = Command::new(BIN)
        .args(["bench", "sim", "--thresholds", "5/3"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("5/3"));
}

/// Swarm testing: a minute of runs whose shapes (single or T/N, sizes, rounds) and faults (loss,
/// duplication, partitions, crashes) come from their seeds. The window of seeds moves once a day
/// (day number × 1000 on), so the suite keeps meeting new runs while any failure replays from the
/// seed it prints.
#[test]
fn a_swarm_of_seeded_shapes_and_faults_breaks_no_invariant() {
    let day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    let first = (day * 1000).to_string();
    let (out, report) = sim(&["--swarm", "200", "--seconds", "60", "--seed", &first]);
    assert!(
        out.status.success(),
        "swarm from seed {first}: {}\n{}",
        serde_json::to_string_pretty(&report["broken"]).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["first_seed"].as_u64(), first.parse().ok());
    assert!(report["runs"].as_u64().unwrap() >= 10, "{report}");
    assert!(report["threshold_runs"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["faulty_runs"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["rounds_sealed"].as_u64().unwrap() >= 10, "{report}");
    assert_eq!(report["broken"].as_array().map(Vec::len), Some(0));
}
