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
