//! `otpmesh bench verify`: checks per second and latency through a verifier's RADIUS front, single
//! and threshold mode, beside a plain UDP request/response of the same packet sizes, same run.
//!
//! Each mode is a real `mesh up` (child processes on 127.0.0.1) with one verifier. The checks are
//! well-formed wrong codes rotating over `--users` users: each is judged in full (single mode: every
//! distributor asked; threshold: a gathering per looked-at step, or the early `used` once a step is
//! spent), and the outcomes are reported beside the timings.

use crate::cli::BenchVerifyArgs;
use crate::cmd::Outcome;
use anyhow::{anyhow, bail, Context};
use otpmesh_node::verifier::radius;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;

/// A check not answered in this long counts as lost.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(serde::Serialize)]
struct Row {
    mode: &'static str,
    clients: u32,
    requests: u32,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: u32,
    outcomes: BTreeMap<String, u32>,
}

/// One exchange at a time per client: (latency, outcome or None if lost).
async fn client(
    to: std::net::SocketAddr,
    jobs: Arc<std::sync::Mutex<std::vec::IntoIter<Vec<u8>>>>,
    secret: Option<Vec<u8>>,
) -> anyhow::Result<Vec<(Duration, Option<String>)>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let Some(packet) = jobs.lock().expect("jobs lock").next() else {
            return Ok(out);
        };
        let start = Instant::now();
        socket.send_to(&packet, to).await?;
        let got = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf)).await;
        let outcome = match (got, &secret) {
            (Ok(Ok((n, _))), Some(secret)) => {
                let auth: [u8; 16] = packet[4..20].try_into().expect("a header");
                radius::response_is_authentic(&buf[..n], &auth, secret).then(|| {
                    radius::Packet::decode(&buf[..n])
                        .ok()
                        .and_then(|p| p.attribute(radius::REPLY_MESSAGE).map(|m| m.to_vec()))
                        .map(|m| String::from_utf8_lossy(&m).into_owned())
                        .unwrap_or_default()
                })
            }
            (Ok(Ok(_)), None) => Some("echo".into()),
            _ => None,
        };
        out.push((start.elapsed(), outcome));
    }
}

async fn measure(
    mode: &'static str,
    to: std::net::SocketAddr,
    clients: u32,
    packets: Vec<Vec<u8>>,
    secret: Option<Vec<u8>>,
) -> anyhow::Result<Row> {
    let requests = packets.len() as u32;
    let jobs = Arc::new(std::sync::Mutex::new(packets.into_iter()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(to, jobs.clone(), secret.clone())))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = all.iter().map(|(d, _)| d.as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let mut outcomes = BTreeMap::new();
    let mut lost = 0;
    for (_, o) in &all {
        match o {
            Some(o) => *outcomes.entry(o.clone()).or_insert(0) += 1,
            None => lost += 1,
        }
    }
    Ok(Row {
        mode,
        clients,
        requests,
        per_second: requests as f64 / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        lost,
        outcomes,
    })
}

/// A plain UDP responder answering every datagram with `reply_bytes` bytes.
async fn echo(reply_bytes: usize) -> anyhow::Result<std::net::SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let reply = vec![7u8; reply_bytes];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&reply, from).await;
        }
    });
    Ok(addr)
}

/// A running `mesh up`: its child and its dir.
struct Mesh {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    json: Value,
}

async fn mesh_up(extra: &[&str], users: u32, threshold: bool) -> anyhow::Result<Mesh> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "mesh",
            "up",
            "--json",
            "--verifiers",
            "1",
            "--radius-rate-per-s",
            "1000000",
        ])
        .arg("--requesters")
        .arg(users.to_string())
        .args(extra)
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting mesh up")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["node"] == "generator-1" && v["event"] == "round_delivered_all" {
                return Ok::<_, anyhow::Error>(());
            }
        }
        bail!("mesh up stopped before a round was delivered")
    })
    .await
    .map_err(|_| anyhow!("no round delivered within 120 s"))?;
    ready?;
    // Keep reading its output, so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("mesh.json"))?)?;
    if threshold {
        // Codes are served once a round is ROUND_MARGIN_MS old at a step's start.
        tokio::time::sleep(Duration::from_millis(
            otpmesh_protocol::threshold::code::ROUND_MARGIN_MS + 15_000,
        ))
        .await;
    }
    Ok(Mesh {
        child,
        _dir: dir,
        json,
    })
}

fn verifier(json: &Value) -> anyhow::Result<(std::net::SocketAddr, Vec<u8>)> {
    let v = json["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["role"] == "verifier"))
        .ok_or_else(|| anyhow!("mesh.json lists no verifier"))?;
    let addr = v["radius"]
        .as_str()
        .ok_or_else(|| anyhow!("no radius"))?
        .parse()?;
    let secret = std::fs::read(
        v["radius_secret_file"]
            .as_str()
            .map(Path::new)
            .ok_or_else(|| anyhow!("no secret file"))?,
    )?;
    Ok((addr, secret))
}

fn checks(n: u32, users: u32, digits: usize, secret: &[u8], authenticate: bool) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut auth = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut auth);
            let user = format!("requester-{}", i % users + 1);
            let code = "0".repeat(digits);
            radius::access_request(
                (i % 256) as u8,
                auth,
                &user,
                code.as_bytes(),
                secret,
                authenticate,
            )
        })
        .collect()
}

pub async fn verify(args: BenchVerifyArgs) -> Outcome {
    let levels = super::counts(&args.clients, "clients", 1..=256)?;
    if !(1..=10_000).contains(&args.requests) || !(1..=64).contains(&args.users) {
        return Err(anyhow!("--requests 1 to 10000, --users 1 to 64").into());
    }
    let mut rows = Vec::new();
    let modes: [(&'static str, Vec<&str>, usize); 2] = [
        (
            "single",
            vec!["--distributors", "2", "--contributors", "2"],
            8,
        ),
        (
            "threshold",
            vec![
                "--threshold",
                "3/5",
                "--contributors",
                "2",
                "--code-period-s",
                "15",
            ],
            6,
        ),
    ];
    for (mode, extra, digits) in modes {
        let mut mesh = mesh_up(&extra, args.users, mode == "threshold").await?;
        let (addr, secret) = verifier(&mesh.json)?;
        let sample = checks(1, 1, digits, &secret, true);
        let baseline = echo(48).await?;
        for &c in &levels {
            let packets = checks(args.requests, args.users, digits, &secret, true);
            let base = vec![sample[0].clone(); args.requests as usize];
            rows.push(measure("udp baseline", baseline, c, base, None).await?);
            rows.push(measure(mode, addr, c, packets, Some(secret.clone())).await?);
        }
        let _ = mesh.child.start_kill();
        let _ = mesh.child.wait().await;
    }
    println!(
        "{:<14} {:>7} {:>8} {:>10} {:>9} {:>9} {:>5}  outcomes",
        "mode", "clients", "requests", "checks/s", "p50 ms", "p99 ms", "lost"
    );
    for r in &rows {
        println!(
            "{:<14} {:>7} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>5}  {:?}",
            r.mode, r.clients, r.requests, r.per_second, r.p50_ms, r.p99_ms, r.lost, r.outcomes
        );
    }
    args.out
        .write_json(&serde_json::json!({ "suite": "verify", "rows": rows }))?;
    Ok(())
}
