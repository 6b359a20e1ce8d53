//! The RADIUS front: one UDP socket, Access-Request in, Access-Accept or Access-Reject out.
//!
//! ```text
//! datagram ─► a listed client (by source address)? ─► decodes? ─► Access-Request?
//!     ─► Message-Authenticator right (required unless the client is marked legacy)?
//!     ─► a duplicate (RFC 5080: same source, identifier, authenticator)? ─► the cached answer
//!     ─► within the client's rate? ─► User-Name, PAP User-Password ─► Client::check
//!     ─► Accept / Reject (Message-Authenticator first, Reply-Message: the outcome) ─► cached
//! anything that fails a step ─► dropped silently (RFC 2865), counted and logged with the reason
//! ```

use super::radius::{self, Drop, Packet, ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_REQUEST, USER_NAME};
use super::{Label, Metrics, RadiusClient};
use otpmesh_protocol::role::verifier::Outcome;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tracing::{info, warn};
use zeroize::Zeroizing;

/// Requests judged at once; more are dropped (the client retransmits).
pub const MAX_IN_FLIGHT: usize = 256;
/// Answers kept for duplicates.
pub const MAX_CACHED: usize = 4096;
/// How long an answer is kept for duplicates (RFC 5080 suggests a few seconds; clients retry
/// within their timeout).
pub const CACHE_TTL: Duration = Duration::from_secs(30);

type Key = (SocketAddr, u8, [u8; 16]);

#[derive(Default)]
struct State {
    /// None while being judged.
    cache: HashMap<Key, (Instant, Option<Vec<u8>>)>,
    order: VecDeque<Key>,
    buckets: super::rate::Buckets<std::net::IpAddr>,
    /// Per drop reason: when last logged, and how many since.
    logged: HashMap<&'static str, (Instant, u64)>,
}

impl State {
    fn cached(&mut self, key: &Key) -> Option<Option<Vec<u8>>> {
        let now = Instant::now();
        while let Some(old) = self.order.front() {
            match self.cache.get(old) {
                Some((at, _)) if now.duration_since(*at) < CACHE_TTL => break,
                _ => {
                    let old = self.order.pop_front().expect("front exists");
                    self.cache.remove(&old);
                }
            }
        }
        self.cache.get(key).map(|(_, r)| r.clone())
    }

    fn remember(&mut self, key: Key, answer: Option<Vec<u8>>) {
        if !self.cache.contains_key(&key) {
            if self.order.len() >= MAX_CACHED {
                if let Some(old) = self.order.pop_front() {
                    self.cache.remove(&old);
                }
            }
            self.order.push_back(key);
        }
        self.cache.insert(key, (Instant::now(), answer));
    }

    fn take_token(&mut self, client: &RadiusClient) -> bool {
        self.buckets
            .take(client.address, client.rate_per_s, Instant::now())
    }

    /// Logs a drop at most once a second per reason, saying how many went unlogged.
    fn log_drop(&mut self, from: SocketAddr, why: Drop) {
        let now = Instant::now();
        let entry = self.logged.entry(why.label()).or_insert((now, 0));
        if entry.1 == 0 || now.duration_since(entry.0) >= Duration::from_secs(1) {
            warn!(%from, reason = %why, unlogged_since = entry.1.saturating_sub(1), "radius: request dropped");
            *entry = (now, 1);
        } else {
            entry.1 += 1;
        }
    }
}

/// What a datagram comes to before it is judged.
enum Step {
    Drop(Drop),
    Resend(Vec<u8>),
    /// A duplicate of one being judged: its answer will come.
    Pending,
    Judge {
        key: Key,
        user: String,
        code: Zeroizing<String>,
        client: RadiusClient,
    },
}

fn prepare(state: &mut State, clients: &[RadiusClient], from: SocketAddr, datagram: &[u8]) -> Step {
    let Some(client) = clients.iter().find(|c| c.address == from.ip()) else {
        return Step::Drop(Drop::UnknownClient);
    };
    let packet = match Packet::decode(datagram) {
        Ok(p) => p,
        Err(d) => return Step::Drop(d),
    };
    if packet.code != ACCESS_REQUEST {
        return Step::Drop(Drop::Code);
    }
    let secret = client.secret.as_bytes();
    match packet.check_message_authenticator(secret) {
        Ok(true) => {}
        Ok(false) if client.require_message_authenticator => {
            return Step::Drop(Drop::NoAuthenticator)
        }
        Ok(false) => {}
        Err(d) => return Step::Drop(d),
    }
    let key = (from, packet.id, packet.authenticator);
    match state.cached(&key) {
        Some(Some(answer)) => return Step::Resend(answer),
        Some(None) => return Step::Pending,
        None => {}
    }
    if !state.take_token(client) {
        return Step::Drop(Drop::RateLimited);
    }
    let user = match packet.attribute(USER_NAME).map(std::str::from_utf8) {
        Some(Ok(u)) if !u.is_empty() => u.to_string(),
        _ => return Step::Drop(Drop::UserName),
    };
    let password = match packet.user_password(secret) {
        Ok(p) => p,
        Err(d) => return Step::Drop(d),
    };
    // A password that is not text cannot be a code: judged (and counted) as a wrong one.
    let code = Zeroizing::new(String::from_utf8_lossy(&password).into_owned());
    Step::Judge {
        key,
        user,
        code,
        client: client.clone(),
    }
}

/// Serves RADIUS on `socket` until the node stops.
pub async fn serve(
    socket: UdpSocket,
    clients: Vec<RadiusClient>,
    node: crate::Client,
    metrics: Metrics,
) {
    let socket = Arc::new(socket);
    let state = Arc::new(Mutex::new(State::default()));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "radius: receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let datagram = &buf[..n];
        let dropped = |state: &mut State, why: Drop| {
            metrics
                .dropped
                .get_or_create(&Label {
                    front: "radius",
                    outcome: why.label(),
                })
                .inc();
            state.log_drop(from, why);
        };
        let step = {
            let mut s = state.lock().expect("radius state lock");
            let step = prepare(&mut s, &clients, from, datagram);
            if let Step::Drop(why) = step {
                dropped(&mut s, why);
            }
            step
        };
        let (key, user, code, client) = match step {
            Step::Drop(_) | Step::Pending => continue,
            Step::Resend(answer) => {
                let _ = socket.send_to(&answer, from).await;
                continue;
            }
            Step::Judge {
                key,
                user,
                code,
                client,
            } => (key, user, code, client),
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            dropped(&mut state.lock().expect("radius state lock"), Drop::Busy);
            continue;
        };
        // The request again, for the reply (it decoded above).
        let request = datagram.to_vec();
        state.lock().expect("radius state lock").remember(key, None);
        let (socket, state, node, metrics) =
            (socket.clone(), state.clone(), node.clone(), metrics.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let (outcome, detail) = node
                .check(user.clone(), code)
                .await
                .unwrap_or((Outcome::Unavailable, "the node is stopping".into()));
            let Ok(packet) = Packet::decode(&request) else {
                return;
            };
            let code = match outcome.accepted() {
                true => ACCESS_ACCEPT,
                false => ACCESS_REJECT,
            };
            let answer = radius::reply(&packet, code, outcome.as_str(), client.secret.as_bytes());
            let _ = socket.send_to(&answer, from).await;
            state
                .lock()
                .expect("radius state lock")
                .remember(key, Some(answer));
            metrics
                .answered
                .get_or_create(&Label {
                    front: "radius",
                    outcome: outcome.as_str(),
                })
                .inc();
            info!(?user, client = %from, outcome = outcome.as_str(), %detail, "radius: checked");
        });
    }
}
