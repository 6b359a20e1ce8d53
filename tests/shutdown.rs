//! Graceful shutdown on real processes: a distributor told to stop (SIGTERM) while a requester
//! keeps 64 OTP requests in flight on one stream answers every request sent before the signal (an
//! OTP, or "the node is stopping"), exits 0 within its bound, says it stopped, and starts again
//! on the same store.

use libp2p::Multiaddr;
use otpmesh_protocol::wire::{OtpRequest, Refusal, Request, Response};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{mesh_once, restart_argv, succeeded, Mesh, BIN};
/// Requests kept in flight.
const IN_FLIGHT: usize = 64;
/// OTPs answered before the signal.
const BUSY: usize = 256;
/// Requests sent at most (the load stops by itself).
const MAX_REQUESTS: usize = 20_000;

/// How the calls ended, by whether they were sent before the signal.
#[derive(Default, Debug)]
struct Outcomes {
    /// Sent before SIGTERM: each must end in an OTP or "stopping".
    before_otp: usize,
    before_stopping: usize,
    /// Sent before SIGTERM, ended after it: the calls in flight when the signal came.
    in_flight_answered: usize,
    before_cut: Vec<String>,
    /// Sent after: an OTP, "stopping", or a closed connection (it may have come too late).
    after_otp: usize,
    after_stopping: usize,
    after_closed: usize,
    other: Vec<String>,
}

/// A node started from its argv: the process, its events, and its log once it exits.
type Started = (
    std::process::Child,
    std::sync::mpsc::Receiver<Value>,
    std::thread::JoinHandle<String>,
);

/// A node from its argv, logging at INFO, its stdout and stderr piped to this process.
fn launch(argv: &[String]) -> std::process::Child {
    Command::new(&argv[0])
        .args(&argv[1..])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts a node from its argv; returns once it listens.
fn start(argv: &[String]) -> Started {
    let mut child = launch(argv);
    let (tx, events) = std::sync::mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let end = Instant::now() + Duration::from_secs(60);
    while events
        .recv_timeout(end.saturating_duration_since(Instant::now()))
        .expect("the node listens")["event"]
        != "listening"
    {}
    (child, events, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_what_is_in_flight_and_exits_zero_in_time() {
    let (_dir, json) = mesh_once(&["--contributors", "2"]);
    let node = |name: &str| Mesh::node(&json, name).clone();
    let distributor = node("distributor-1");
    let argv = restart_argv(&distributor);
    let addr: Multiaddr = distributor["listen"][0].as_str().unwrap().parse().unwrap();
    let requester_dir = std::path::PathBuf::from(node("requester-1")["data_dir"].as_str().unwrap());

    // The distributor alone.
    let (mut child, events, log) = start(&argv);

    // 64 requests in flight on one stream, each answered one replaced by the next.
    let identity = otpmesh_node::keys::load_or_create_identity(&requester_dir).unwrap();
    let endpoint = otpmesh_node::rpc::Endpoint::connect(identity, &addr)
        .await
        .unwrap();
    let session = endpoint.session.clone();
    let signalled = Arc::new(AtomicBool::new(false));
    let (busy_tx, mut busy) = tokio::sync::mpsc::channel::<()>(1);
    let load = {
        let signalled = signalled.clone();
        tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut calls = futures::stream::FuturesUnordered::new();
            let request = Request::Otp(OtpRequest {
                round: None,
                requester_key: [9; 32],
                enrolled: false,
            });
            let mut sent = 0;
            let mut open = true;
            loop {
                while open && calls.len() < IN_FLIGHT && sent < MAX_REQUESTS {
                    let (session, request) = (session.clone(), request.clone());
                    let before = !signalled.load(Ordering::SeqCst);
                    calls.push(async move { (before, session.call(&request).await) });
                    sent += 1;
                }
                let Some((before, result)) = futures::StreamExt::next(&mut calls).await else {
                    return outcomes;
                };
                let after_signal = signalled.load(Ordering::SeqCst);
                let stopping = matches!(
                    &result,
                    Ok(Response::Refused(Refusal::Unavailable(r))) if r.contains("stopping")
                );
                let closed = matches!(
                    &result,
                    Err(e) if e.contains("connection closed") || e.contains("connection failed")
                );
                let otp = matches!(result, Ok(Response::Otp(_)));
                open &= otp;
                match (before, otp, stopping, closed) {
                    (true, true, _, _) => {
                        outcomes.before_otp += 1;
                        if outcomes.before_otp == BUSY {
                            let _ = busy_tx.try_send(());
                        }
                    }
                    (true, _, true, _) => outcomes.before_stopping += 1,
                    (true, _, _, _) => outcomes.before_cut.push(format!("{result:?}")),
                    (false, true, _, _) => outcomes.after_otp += 1,
                    (false, _, true, _) => outcomes.after_stopping += 1,
                    (false, _, _, true) => outcomes.after_closed += 1,
                    (false, _, _, _) => outcomes.other.push(format!("{result:?}")),
                }
                if before && after_signal && (otp || stopping) {
                    outcomes.in_flight_answered += 1;
                }
            }
        })
    };

    // Once the load runs at full tilt, SIGTERM.
    tokio::time::timeout(Duration::from_secs(60), busy.recv())
        .await
        .expect("OTPs are issued")
        .expect("the load runs");
    signalled.store(true, Ordering::SeqCst);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopping = Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let took = stopping.elapsed();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), load)
        .await
        .expect("every call ends")
        .unwrap();
    let log = log.join().unwrap();
    eprintln!("stopped in {took:?}: {outcomes:?}");

    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(took < Duration::from_secs(8), "took {took:?} to stop");
    // Every event it printed (its stdout is closed: the reader ends).
    let mut last = Value::Null;
    while let Ok(v) = events.recv_timeout(Duration::from_secs(10)) {
        last = v;
    }
    assert_eq!(last["event"], "stopped", "{last}");
    assert!(
        log.contains("stopping: answering the requests in flight"),
        "{log}"
    );
    assert!(!log.contains("grace period over"), "{log}");
    // Every call sent before the signal was answered, an OTP or "stopping", none cut off; many
    // were in flight when it came. After it: nothing but OTPs, "stopping" and closed
    // connections (no timeout, no storage failure).
    assert!(outcomes.before_cut.is_empty(), "{outcomes:?}");
    assert!(outcomes.before_otp >= BUSY);
    assert!(outcomes.in_flight_answered > 0, "{outcomes:?}");
    assert!(outcomes.other.is_empty(), "{outcomes:?}");
    drop(endpoint);

    // The store closed cleanly: the distributor starts again and serves.
    let (mut child, _events, _log) = start(&argv);
    succeeded(
        Command::new(BIN)
            .args(["request", "--json", "--timeout-secs", "30", "--distributor"])
            .arg(distributor["listen"][0].as_str().unwrap())
            .arg("--data-dir")
            .arg(&requester_dir),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A node whose standard output nobody reads (a supervisor that stopped reading its pipe, or a
/// benchmark that never took the distributor's events) still stops on SIGTERM, within its bound:
/// its lines are dropped, not waited on. Before, the task that prints the node's lines also
/// waited for the signal; with the pipe full it blocked in `write` and `mesh up` had to kill the
/// distributor after its grace period ("did not stop after SIGTERM").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_output_nobody_reads_still_stops_on_sigterm() {
    /// More OTP lines than the node's event queue, its output queue and a pipe hold together.
    const REQUESTS: usize = 12_000;
    // One requester asks for them back to back: the per-peer rate is lifted.
    let (_dir, json) = mesh_once(&["--contributors", "2", "--requests-per-peer-s", "1000000"]);
    let node = |name: &str| Mesh::node(&json, name).clone();
    let distributor = node("distributor-1");
    let argv = restart_argv(&distributor);
    let addr: Multiaddr = distributor["listen"][0].as_str().unwrap().parse().unwrap();
    let requester_dir = std::path::PathBuf::from(node("requester-1")["data_dir"].as_str().unwrap());

    // Its stdout is a pipe nobody reads (held open, so writes block once it is full).
    let mut child = launch(&argv);
    let _unread = child.stdout.take().unwrap();
    let (log_tx, log_lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let end = Instant::now() + Duration::from_secs(60);
    while !log_lines
        .recv_timeout(end.saturating_duration_since(Instant::now()))
        .expect("the distributor listens")
        .contains("listening")
    {}

    // Far more OTPs than its output can hold: each is one line it prints.
    let identity = otpmesh_node::keys::load_or_create_identity(&requester_dir).unwrap();
    let endpoint = otpmesh_node::rpc::Endpoint::connect(identity, &addr)
        .await
        .unwrap();
    let request = Request::Otp(OtpRequest {
        round: None,
        requester_key: [9; 32],
        enrolled: false,
    });
    let mut calls = futures::stream::FuturesUnordered::new();
    let (mut sent, mut issued) = (0, 0);
    let load = async {
        loop {
            while calls.len() < IN_FLIGHT && sent < REQUESTS {
                let (session, request) = (endpoint.session.clone(), request.clone());
                calls.push(async move { session.call(&request).await });
                sent += 1;
            }
            match futures::StreamExt::next(&mut calls).await {
                Some(Ok(Response::Otp(_))) => issued += 1,
                Some(other) => return Err(format!("OTP {issued}: {other:?}")),
                None => return Ok(()),
            }
        }
    };
    let loaded = tokio::time::timeout(Duration::from_secs(300), load).await;
    drop(endpoint);
    if !matches!(loaded, Ok(Ok(()))) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the OTPs were not all issued: {loaded:?}");
    }

    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopping = Instant::now();
    let (done_tx, done) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = done_tx.send(child.wait().unwrap());
    });
    let status = done.recv_timeout(Duration::from_secs(20));
    if status.is_err() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = waiter.join();
    let took = stopping.elapsed();
    let log = log.join().unwrap();
    let status = status.unwrap_or_else(|_| {
        panic!("did not stop within 20 s of SIGTERM with its output unread\n{log}")
    });
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(took < Duration::from_secs(8), "took {took:?} to stop");
    assert!(log.contains("standard output is not being read"), "{log}");
}
