//! Crash safety on real processes: SIGKILL the distributor at random moments while eight requesters
//! request and verify in a loop. After every restart, each OTP whose issuance was acknowledged
//! verifies exactly once, each OTP already accepted answers `used`, and a lockout persists.

use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{mesh_once, restart_argv, Mesh, BIN};
const KILLS: usize = 20;
const WORKERS: usize = 8;

#[derive(Clone, Debug, PartialEq)]
enum State {
    /// Issuance acknowledged; not yet accepted as far as we know.
    Issued,
    /// A verify was in flight when the distributor died: accepted or not, unknown.
    Unsure,
    Accepted,
}

#[derive(Default)]
struct Ledger {
    otps: HashMap<(usize, String), State>,
    issued: usize,
    accepted: usize,
    used_answers: usize,
    failed_calls: usize,
}

fn verify(addr: &str, dir: &Path, code: &str) -> Option<String> {
    let out = Command::new(BIN)
        .args([
            "verify",
            "--json",
            "--timeout-secs",
            "5",
            "--distributor",
            addr,
            "--otp",
            code,
            "--data-dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["result"].as_str().map(str::to_string)
}

fn request(addr: &str, dir: &Path) -> Option<String> {
    let out = Command::new(BIN)
        .args([
            "request",
            "--json",
            "--timeout-secs",
            "5",
            "--distributor",
            addr,
            "--data-dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["otp"].as_str().map(str::to_string)
}

/// Starts the distributor with its restart argv; returns once it listens.
fn start(argv: &[String]) -> Child {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the distributor listens again");
    child
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let (root, json) = mesh_once(&["--contributors", "2", "--requesters", "9"]);
    let dir = root.path();
    // Long-lived OTPs, so that nothing expires during the test on a slow machine.
    let mesh_toml = dir.join("mesh.toml");
    let text = std::fs::read_to_string(&mesh_toml)
        .unwrap()
        .replace("otp_expiry_ms = 120000", "otp_expiry_ms = 3600000");
    std::fs::write(&mesh_toml, text).unwrap();
    let node = |name: &str| Mesh::node(&json, name).clone();
    let distributor = node("distributor-1");
    let argv = restart_argv(&distributor);
    let addr = distributor["listen"][0].as_str().unwrap().to_string();
    let dirs: Vec<PathBuf> = (1..=9)
        .map(|i| {
            PathBuf::from(
                node(&format!("requester-{i}"))["data_dir"]
                    .as_str()
                    .unwrap(),
            )
        })
        .collect();

    let mut child = start(&argv);
    // Requester 9 locks itself out with five wrong codes; the lock must survive every kill.
    for _ in 0..5 {
        assert_eq!(
            verify(&addr, &dirs[8], "00000000").as_deref(),
            Some("wrong")
        );
    }
    assert_eq!(
        verify(&addr, &dirs[8], "00000000").as_deref(),
        Some("locked")
    );

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let started = Instant::now();
    for kill in 0..KILLS {
        // Load: eight requesters request, verify and verify again, until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (stop, done, ledger, addr, dir) = (
                    stop.clone(),
                    done_tx.clone(),
                    ledger.clone(),
                    addr.clone(),
                    dirs[w].clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Some(otp) = request(&addr, &dir) else {
                            ledger.lock().unwrap().failed_calls += 1;
                            continue;
                        };
                        {
                            let mut l = ledger.lock().unwrap();
                            l.issued += 1;
                            assert!(
                                l.otps.insert((w, otp.clone()), State::Issued).is_none(),
                                "an OTP was handed out twice"
                            );
                        }
                        let _ = done.send(());
                        let first = verify(&addr, &dir, &otp);
                        let mut l = ledger.lock().unwrap();
                        match first.as_deref() {
                            Some("accepted") => {
                                l.accepted += 1;
                                l.otps.insert((w, otp.clone()), State::Accepted);
                            }
                            None => {
                                l.otps.insert((w, otp.clone()), State::Unsure);
                                l.failed_calls += 1;
                                continue;
                            }
                            Some(other) => panic!("a fresh acknowledged OTP answered {other}"),
                        }
                        drop(l);
                        match verify(&addr, &dir, &otp).as_deref() {
                            Some("used") => ledger.lock().unwrap().used_answers += 1,
                            None => ledger.lock().unwrap().failed_calls += 1,
                            Some(other) => {
                                panic!("an accepted OTP answered {other} on its second use")
                            }
                        }
                    }
                })
            })
            .collect();
        // Kill after a random number of acknowledged issuances: each worker reports every one.
        let target = rng.gen_range(2..=24);
        for _ in 0..target {
            done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the load makes progress");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().expect("a worker found a broken guarantee");
        }

        // Restart and check everything acknowledged so far.
        child = start(&argv);
        let snapshot: Vec<((usize, String), State)> = ledger
            .lock()
            .unwrap()
            .otps
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((w, otp), state) in snapshot {
            let answer = verify(&addr, &dirs[w], &otp)
                .unwrap_or_else(|| panic!("no answer after restart {kill}"));
            let ok = match state {
                State::Issued => answer == "accepted",
                State::Unsure => answer == "accepted" || answer == "used",
                State::Accepted => answer == "used",
            };
            assert!(
                ok,
                "after kill {kill}: OTP in state {state:?} answered {answer}"
            );
            ledger
                .lock()
                .unwrap()
                .otps
                .insert((w, otp), State::Accepted);
        }
        assert_eq!(
            verify(&addr, &dirs[8], "00000000").as_deref(),
            Some("locked"),
            "the lockout survives kill {kill}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let l = ledger.lock().unwrap();
    eprintln!(
        "{KILLS} SIGKILLs in {:.1} s: {} OTPs issued and acknowledged, {} accepted during load, {} `used` answers, {} calls cut by a kill; every acknowledged OTP verified exactly once",
        started.elapsed().as_secs_f64(),
        l.issued,
        l.accepted,
        l.used_answers,
        l.failed_calls
    );
    assert!(l.issued >= KILLS, "the load issued OTPs");
}
