//! `otpmesh bench serve`: OTP issuances per second, and their latency, at one distributor process
//! (durability on: every issuance is committed before its reply), with C concurrent requesters in
//! this process, each with its own identity, swarm and stream, enrolled first and then asking one
//! OTP at a time and removing its salt.
//!
//! Baseline, in the same run: a plain tokio TCP request/response server in another process
//! (`otpmesh bench tcp-baseline`), answering frames of the same sizes as ours, with the same number
//! of connections, each one request at a time, for the same time.

use super::{counts, percentile, plan, runner, scenario};
use crate::cli::{BenchServeArgs, TcpBaselineArgs};
use crate::cmd::Outcome;
use crate::scenario::layout;
use anyhow::{anyhow, bail, Context};
use libp2p::PeerId;
use otpmesh_node::{keys, rpc};
use otpmesh_protocol::kx::{Ephemeral, EpochKey};
use otpmesh_protocol::wire::{self, EnrolRequest, OtpRequest, Request, Response};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Most concurrent requesters.
pub const MAX_CONCURRENCY: u32 = 256;
/// Calls one requester makes at most in one measurement (the time limit usually ends it first).
const MAX_CALLS: u64 = 1_000_000;
/// Connections the baseline server serves at once.
const MAX_BASELINE_CONNECTIONS: usize = 1024;
/// Largest frame the baseline server reads.
const MAX_BASELINE_FRAME: usize = wire::MAX_REQUEST_BYTES + 8;
/// Longest a whole serve benchmark may run.
const MAX_RUN: Duration = Duration::from_secs(3_600);
/// Unmeasured load before each measurement.
const WARM_UP: Duration = Duration::from_millis(300);

#[derive(Serialize)]
pub(crate) struct Row {
    pub concurrency: u32,
    pub otpmesh_per_s: f64,
    pub otpmesh_p50_ms: f64,
    pub otpmesh_p99_ms: f64,
    pub otpmesh_errors: u64,
    pub baseline_per_s: f64,
    pub baseline_p50_ms: f64,
    pub baseline_p99_ms: f64,
    pub ratio: f64,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    seconds: f64,
    request_frame_bytes: usize,
    response_frame_bytes: usize,
    rows: Vec<Row>,
}

/// What one load run measured.
#[derive(Default)]
struct Load {
    ok: u64,
    errors: u64,
    /// Milliseconds, sorted.
    latencies: Vec<f64>,
    elapsed: Duration,
}

impl Load {
    fn merge(parts: Vec<(u64, u64, Vec<f64>)>, elapsed: Duration) -> Load {
        let mut load = Load {
            elapsed,
            ..Default::default()
        };
        for (ok, errors, latencies) in parts {
            load.ok += ok;
            load.errors += errors;
            load.latencies.extend(latencies);
        }
        load.latencies.sort_by(f64::total_cmp);
        load
    }

    fn per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// An enrolled requester with its stream to the distributor.
pub(super) struct Requester {
    pub endpoint: rpc::Endpoint,
    pub key: EpochKey,
}

/// Requesters `r1`…`rN` of `layout`, each connected to `dist` on its own stream and enrolled.
pub(super) async fn enrolled(
    layout: &layout::Layout,
    dist: &layout::Planned,
    n: u32,
) -> anyhow::Result<Vec<Requester>> {
    let mut requesters = Vec::new();
    for i in 1..=n {
        let planned = layout.node(&format!("r{i}"));
        let identity = keys::load_or_create_identity(&planned.data_dir)?;
        let endpoint = rpc::Endpoint::connect(identity, &dist.addr)
            .await
            .map_err(|e| anyhow!("requester r{i}: {e}"))?;
        let key = enrol(&endpoint, planned.peer_id, dist.peer_id).await?;
        requesters.push(Requester { endpoint, key });
    }
    Ok(requesters)
}

pub(super) const ENROLLED_OTP: Request = Request::Otp(OtpRequest {
    round: None,
    requester_key: [0; 32],
    enrolled: true,
});

pub(super) async fn enrol(
    endpoint: &rpc::Endpoint,
    me: PeerId,
    distributor: PeerId,
) -> anyhow::Result<EpochKey> {
    let ephemeral = Ephemeral::new(&mut rand::rngs::OsRng);
    let request = Request::Enrol(EnrolRequest {
        requester_key: ephemeral.public(),
    });
    match endpoint.session.call(&request).await {
        Ok(Response::Enrolled(grant)) => {
            Ok(ephemeral.enrol(&grant.distributor_key, &me, &distributor, grant.epoch)?)
        }
        Ok(other) => bail!("enrolment answered with {other:?}"),
        Err(e) => bail!("enrolment failed: {e}"),
    }
}

/// One OTP, unsalted as a requester does; `Err` says why not.
async fn one_otp(session: &rpc::Session, key: &EpochKey) -> Result<u64, String> {
    match session.call(&ENROLLED_OTP).await? {
        Response::Otp(grant) => {
            let epoch = grant
                .epoch
                .ok_or("the grant is not salted for the enrolment")?;
            let otp = key
                .at(epoch)
                .map_err(|e| e.to_string())?
                .salt_key()
                .unsalt(grant.salted, &grant.salt, grant.digits)
                .map_err(|e| e.to_string())?;
            Ok(otp.value())
        }
        other => Err(format!("{other:?}")),
    }
}

/// What one call of a load loop came to.
enum Call {
    Answered,
    Failed,
    /// The connection is gone: the loop stops.
    Broken,
}

/// Calls `call` one at a time until `until` (or [`MAX_CALLS`]), timing each answered or failed call.
async fn timed(until: Instant, mut call: impl AsyncFnMut() -> Call) -> (u64, u64, Vec<f64>) {
    let (mut ok, mut errors, mut latencies) = (0, 0, Vec::new());
    while Instant::now() < until && ok + errors < MAX_CALLS {
        let t = Instant::now();
        match call().await {
            Call::Answered => ok += 1,
            Call::Failed => errors += 1,
            Call::Broken => {
                errors += 1;
                break;
            }
        }
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (ok, errors, latencies)
}

/// Runs the loops concurrently, each on its own task, and merges what they measured.
async fn gather<F>(start: Instant, loops: Vec<F>) -> Load
where
    F: std::future::Future<Output = (u64, u64, Vec<f64>)> + Send + 'static,
{
    let tasks: Vec<_> = loops.into_iter().map(tokio::spawn).collect();
    let mut parts = Vec::new();
    for task in tasks {
        parts.push(task.await.unwrap_or_default());
    }
    Load::merge(parts, start.elapsed())
}

/// Each requester asks one OTP at a time until `duration` is over.
async fn load_otpmesh(requesters: &[Requester], duration: Duration) -> Load {
    let start = Instant::now();
    let until = start + duration;
    // The first failure's reason, said once: a count of errors alone does not tell what broke.
    let first_error = std::sync::Arc::new(std::sync::OnceLock::new());
    let loops = requesters
        .iter()
        .map(|r| {
            let (session, key) = (r.endpoint.session.clone(), r.key.clone());
            let first_error = first_error.clone();
            timed(until, async move || match one_otp(&session, &key).await {
                Ok(_) => Call::Answered,
                Err(e) => {
                    let _ = first_error.set(e);
                    Call::Failed
                }
            })
        })
        .collect();
    let load = gather(start, loops).await;
    if let Some(e) = first_error.get() {
        eprintln!(
            "otpmesh: {} failed OTP requests; the first: {e}",
            load.errors
        );
    }
    load
}

/// Each of `connections` plain TCP connections sends `request` and reads one frame back, one at a
/// time, until `duration` is over.
async fn load_tcp(
    port: u16,
    connections: u32,
    request: &[u8],
    duration: Duration,
) -> anyhow::Result<Load> {
    let mut sockets = Vec::new();
    for _ in 0..connections {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        sockets.push(s);
    }
    let start = Instant::now();
    let until = start + duration;
    let loops = sockets
        .into_iter()
        .map(|mut socket| {
            let (request, mut reply) = (request.to_vec(), Vec::new());
            timed(until, async move || {
                let answered = async {
                    socket.write_all(&request).await?;
                    read_frame(&mut socket, &mut reply).await
                };
                match answered.await {
                    Ok(()) => Call::Answered,
                    Err(_) => Call::Broken,
                }
            })
        })
        .collect();
    Ok(gather(start, loops).await)
}

/// Reads one `[len u32][len bytes]` frame into `buf`.
async fn read_frame(socket: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let len = socket.read_u32().await? as usize;
    if len > MAX_BASELINE_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes (at most {MAX_BASELINE_FRAME})"),
        ));
    }
    buf.resize(len, 0);
    socket.read_exact(buf).await?;
    Ok(())
}

/// A frame as the stream path sends it.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    rpc::push_frame(&mut f, 1, body);
    f
}

/// `otpmesh bench tcp-baseline`: answers every `[len][id][body]` frame with a frame of the same id
/// and `--response-bytes` of body. Prints `listening ADDR` first; stops when its stdin closes.
pub async fn tcp_baseline(args: TcpBaselineArgs) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let body = vec![0x5a; args.response_bytes];
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_BASELINE_CONNECTIONS));
    let serving = async {
        loop {
            let (mut socket, _) = listener.accept().await?;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            socket.set_nodelay(true)?;
            let body = body.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let (mut request, mut reply) = (Vec::new(), Vec::new());
                while read_frame(&mut socket, &mut request).await.is_ok() && request.len() >= 8 {
                    reply.clear();
                    let id = u64::from_be_bytes(request[..8].try_into().expect("8 bytes"));
                    rpc::push_frame(&mut reply, id, &body);
                    if socket.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    tokio::select! {
        r = serving => r?,
        _ = async { while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {} } => {}
    }
    Ok(())
}

/// Starts the baseline server process; returns it and its port.
async fn start_baseline(response_bytes: usize) -> anyhow::Result<(tokio::process::Child, u16)> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench", "tcp-baseline", "--response-bytes"])
        .arg(response_bytes.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the baseline server")?;
    let stdout = child.stdout.take().context("baseline stdout")?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .context("the baseline server did not say where it listens")??;
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("baseline server said {line:?}"))?;
    Ok((child, port))
}

pub async fn serve(args: BenchServeArgs) -> Outcome {
    let levels = counts(&args.concurrency, "concurrency", 1..=MAX_CONCURRENCY)?;
    if !(0.5..=60.0).contains(&args.seconds) {
        return Err(anyhow!("--seconds {}: between 0.5 and 60", args.seconds).into());
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let most = levels.iter().copied().max().unwrap_or(1);

    let mut s = scenario(1, 1, most);
    // Capacity, not policy: each requester here asks back to back, far above the default
    // per-peer rate a real requester needs (refusals would be counted as served).
    s.settings.requests_per_peer_s = u32::MAX;
    let (_dir, layout) = plan(&s, 7)?;
    let mut runner = runner(&s, &layout, &super::Placement::Processes, 7);
    runner.backend.leave_unread(super::LOAD_LINES);
    let result = async {
        runner.start_mesh(Duration::from_secs(60)).await?;
        let judged = runner.run_step(0, &s.steps[0]).await?;
        if !judged.passed {
            bail!("the round before the load: {}", judged.outcome);
        }
        // The distributor prints a line per OTP: they are taken while the load runs.
        tokio::select! {
            measured = measure(&layout, &levels, duration) => measured,
            pumped = runner.pump_for(MAX_RUN) => match pumped {
                Ok(()) => bail!("the measurement took longer than {MAX_RUN:?}"),
                Err(e) => Err(e),
            },
        }
    }
    .await;
    runner.stop_all().await;
    let report = result?;
    args.out.write_json(&report)?;

    let series = |name: &str, f: fn(&Row) -> f64| {
        (
            name.to_string(),
            report
                .rows
                .iter()
                .map(|r| (r.concurrency as f64, f(r)))
                .collect::<Vec<_>>(),
        )
    };
    args.out.plot(
        "serve: OTPs per second at one distributor",
        "concurrent requesters",
        "requests per second",
        &[
            series("otpmesh (durable)", |r| r.otpmesh_per_s),
            series("plain TCP baseline", |r| r.baseline_per_s),
        ],
    )?;

    Ok(())
}

async fn measure(
    layout: &layout::Layout,
    levels: &[u32],
    duration: Duration,
) -> anyhow::Result<Report> {
    let dist = layout.node("dist");
    let most = levels.iter().copied().max().unwrap_or(1);
    let requesters = enrolled(layout, dist, most).await?;
    // The frames the baseline copies: a real enrolled OTP request and a real grant.
    let request_frame = frame(&wire::encode_request(&ENROLLED_OTP));
    let response_bytes = match requesters[0].endpoint.session.call(&ENROLLED_OTP).await {
        Ok(response @ Response::Otp(_)) => wire::encode_response(&response).len(),
        other => bail!("the first OTP request was answered with {other:?}"),
    };
    let (mut baseline, port) = start_baseline(response_bytes).await?;

    println!(
        "baseline: plain tokio TCP request/response in another process, frames of {} and {} bytes, same connections and time",
        request_frame.len(),
        response_bytes + rpc::FRAME_HEADER_BYTES
    );
    println!(
        "{:>6} {:>11} {:>8} {:>8} {:>7} {:>11} {:>8} {:>8} {:>7}",
        "conc", "otpmesh/s", "p50 ms", "p99 ms", "errors", "tcp/s", "p50 ms", "p99 ms", "ratio"
    );
    let mut rows = Vec::new();
    for &c in levels {
        let group = &requesters[..c as usize];
        load_otpmesh(group, WARM_UP).await;
        let ours = load_otpmesh(group, duration).await;
        load_tcp(port, c, &request_frame, WARM_UP).await?;
        let theirs = load_tcp(port, c, &request_frame, duration).await?;
        let row = Row {
            concurrency: c,
            otpmesh_per_s: ours.per_s(),
            otpmesh_p50_ms: percentile(&ours.latencies, 0.5),
            otpmesh_p99_ms: percentile(&ours.latencies, 0.99),
            otpmesh_errors: ours.errors,
            baseline_per_s: theirs.per_s(),
            baseline_p50_ms: percentile(&theirs.latencies, 0.5),
            baseline_p99_ms: percentile(&theirs.latencies, 0.99),
            ratio: ours.per_s() / theirs.per_s(),
        };
        println!(
            "{:>6} {:>11.0} {:>8.2} {:>8.2} {:>7} {:>11.0} {:>8.2} {:>8.2} {:>7.3}",
            row.concurrency,
            row.otpmesh_per_s,
            row.otpmesh_p50_ms,
            row.otpmesh_p99_ms,
            row.otpmesh_errors,
            row.baseline_per_s,
            row.baseline_p50_ms,
            row.baseline_p99_ms,
            row.ratio
        );
        rows.push(row);
    }
    drop(baseline.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), baseline.wait()).await;
    Ok(Report {
        suite: "serve",
        seconds: duration.as_secs_f64(),
        request_frame_bytes: request_frame.len(),
        response_frame_bytes: response_bytes + rpc::FRAME_HEADER_BYTES,
        rows,
    })
}
