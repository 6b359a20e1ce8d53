//! The verifier's fronts: where services hand in (user, code) and get a verdict.
//!
//! ```text
//! RADIUS (UDP, RFC 2865 PAP) ──┐
//!                              ├─► Client::check(user, code) ─► event loop ─► role::Verifier
//! HTTP POST /validate/check ───┘        (one judgement path)        ─► distributors ─► verdict
//! ```
//! Both read their secrets from 0600 files (`radius` clients' shared secrets, `http` bearer
//! tokens), bound every input, and log and count what they drop, never a code or a secret.

pub mod radius;
pub mod rate;
pub mod server;
pub mod validate;

use crate::keys;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Most RADIUS clients or HTTP relying parties one file may list.
pub const MAX_PARTIES: usize = 1024;
/// Default per-client RADIUS rate: requests per second (bursts of twice that).
pub const DEFAULT_RATE_PER_S: u32 = 50;

#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error(transparent)]
    File(#[from] keys::KeyFileError),
    #[error("{path}: missing")]
    Missing { path: PathBuf },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// One RADIUS client (a NAS: sshd's PAM, a VPN concentrator), as its file lists it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusClient {
    /// The source address its requests come from.
    pub address: IpAddr,
    pub secret: String,
    /// Refuse requests without a Message-Authenticator (RFC 3579; the BlastRADIUS fix,
    /// CVE-2024-3596). Default true; false only for legacy clients that cannot send one (Debian
    /// 12's pam_radius_auth 2.0).
    #[serde(default = "yes")]
    pub require_message_authenticator: bool,
    #[serde(default = "default_rate")]
    pub rate_per_s: u32,
}

fn yes() -> bool {
    true
}

fn default_rate() -> u32 {
    DEFAULT_RATE_PER_S
}

impl std::fmt::Debug for RadiusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RadiusClient({}, <secret>, require_message_authenticator {})",
            self.address, self.require_message_authenticator
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RadiusFile {
    #[serde(default)]
    clients: Vec<RadiusClient>,
}

/// One HTTP relying party and its bearer token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    pub name: String,
    pub token: String,
    /// Checks a second this party may ask (bursts of two seconds' worth); more are answered 429.
    #[serde(default = "default_rate")]
    pub rate_per_s: u32,
}

impl std::fmt::Debug for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Party({}, <token>)", self.name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyFile {
    #[serde(default)]
    parties: Vec<Party>,
}

fn read_toml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, FrontError> {
    let bytes = keys::read_secret(path)?.ok_or_else(|| FrontError::Missing {
        path: path.to_path_buf(),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| FrontError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    toml::from_str(text).map_err(|e| FrontError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads a RADIUS clients file (0600): `[[clients]] address, secret, …`.
pub fn load_radius_clients(path: &Path) -> Result<Vec<RadiusClient>, FrontError> {
    let file: RadiusFile = read_toml(path)?;
    let bad = |reason: String| FrontError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if file.clients.is_empty() || file.clients.len() > MAX_PARTIES {
        return Err(bad(format!(
            "lists {} clients; 1 to {MAX_PARTIES}",
            file.clients.len()
        )));
    }
    for (i, c) in file.clients.iter().enumerate() {
        if c.secret.is_empty() || c.secret.len() > 128 {
            return Err(bad(format!(
                "client {}: a shared secret is 1 to 128 bytes",
                c.address
            )));
        }
        if c.rate_per_s == 0 {
            return Err(bad(format!(
                "client {}: rate_per_s must be at least 1",
                c.address
            )));
        }
        if file.clients[..i].iter().any(|o| o.address == c.address) {
            return Err(bad(format!("client {} is listed twice", c.address)));
        }
    }
    Ok(file.clients)
}

/// Reads an HTTP tokens file (0600): `[[parties]] name, token`.
pub fn load_parties(path: &Path) -> Result<Vec<Party>, FrontError> {
    let file: PartyFile = read_toml(path)?;
    let bad = |reason: String| FrontError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if file.parties.is_empty() || file.parties.len() > MAX_PARTIES {
        return Err(bad(format!(
            "lists {} parties; 1 to {MAX_PARTIES}",
            file.parties.len()
        )));
    }
    if let Some(p) = file
        .parties
        .iter()
        .find(|p| p.token.len() < 16 || p.token.len() > 256)
    {
        return Err(bad(format!("party {}: a token is 16 to 256 bytes", p.name)));
    }
    if let Some(p) = file.parties.iter().find(|p| p.rate_per_s == 0) {
        return Err(bad(format!(
            "party {}: rate_per_s must be at least 1",
            p.name
        )));
    }
    Ok(file.parties)
}

/// A fresh random secret for a generated file: 32 hex digits.
pub fn fresh_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 16]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
    Zeroizing::new(hex::encode(bytes.as_ref()))
}

/// One client's entry of a RADIUS clients file, as [`load_radius_clients`] reads it.
pub fn radius_client_entry(
    address: IpAddr,
    secret: &str,
    require_message_authenticator: bool,
    rate_per_s: u32,
) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "[[clients]]\naddress = \"{address}\"\nsecret = \"{secret}\"\n\
         require_message_authenticator = {require_message_authenticator}\nrate_per_s = {rate_per_s}\n"
    ))
}

/// One party's entry of an HTTP tokens file, as [`load_parties`] reads it.
pub fn party_entry(name: &str, token: &str) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "[[parties]]\nname = \"{name}\"\ntoken = \"{token}\"\n"
    ))
}

/// What the fronts count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    pub front: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    /// Requests answered, by front and verdict.
    pub answered: Family<Label, Counter>,
    /// Requests dropped or refused unjudged, by front and reason.
    pub dropped: Family<Label, Counter>,
}

impl Metrics {
    pub fn new(registry: &mut libp2p::metrics::Registry) -> Metrics {
        let m = Metrics::default();
        // Every known label set starts at zero: a dashboard reads 0, not "no data", and a rate
        // has a starting point.
        for front in ["radius", "http"] {
            for outcome in otpmesh_protocol::role::verifier::Outcome::ALL {
                let _ = m.answered.get_or_create(&Label {
                    front,
                    outcome: outcome.as_str(),
                });
            }
        }
        for outcome in radius::Drop::LABELS {
            let _ = m.dropped.get_or_create(&Label {
                front: "radius",
                outcome,
            });
        }
        for outcome in validate::DROP_LABELS {
            let _ = m.dropped.get_or_create(&Label {
                front: "http",
                outcome,
            });
        }
        let r = registry.sub_registry_with_prefix("otpmesh_verifier");
        r.register(
            "answered",
            "Checks answered by the verifier's fronts, by front and outcome",
            m.answered.clone(),
        );
        r.register(
            "dropped",
            "Requests the verifier's fronts dropped or refused unjudged, by front and reason",
            m.dropped.clone(),
        );
        m
    }
}

/// The fronts a verifier serves.
#[derive(Clone, Debug, Default)]
pub struct Fronts {
    /// UDP address and clients.
    pub radius: Option<(SocketAddr, Vec<RadiusClient>)>,
    /// TCP address and relying parties.
    pub http: Option<(SocketAddr, Vec<Party>)>,
}

/// The fronts, bound (so a taken port is an error at start) and ready to serve.
pub struct Bound {
    radius: Option<(tokio::net::UdpSocket, Vec<RadiusClient>)>,
    http: Option<(tokio::net::TcpListener, Vec<Party>)>,
    pub radius_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
}

impl Fronts {
    pub fn bind(&self) -> Result<Bound, FrontError> {
        let fail = |addr: SocketAddr| {
            move |e: std::io::Error| FrontError::Listen {
                addr,
                reason: e.to_string(),
            }
        };
        let radius = match &self.radius {
            Some((addr, clients)) => {
                let socket = std::net::UdpSocket::bind(addr).map_err(fail(*addr))?;
                socket.set_nonblocking(true).map_err(fail(*addr))?;
                let socket = tokio::net::UdpSocket::from_std(socket).map_err(fail(*addr))?;
                Some((socket, clients.clone()))
            }
            None => None,
        };
        let http = match &self.http {
            Some((addr, parties)) => {
                let listener = std::net::TcpListener::bind(addr).map_err(fail(*addr))?;
                listener.set_nonblocking(true).map_err(fail(*addr))?;
                let listener = tokio::net::TcpListener::from_std(listener).map_err(fail(*addr))?;
                Some((listener, parties.clone()))
            }
            None => None,
        };
        Ok(Bound {
            radius_addr: radius.as_ref().and_then(|(s, _)| s.local_addr().ok()),
            http_addr: http.as_ref().and_then(|(l, _)| l.local_addr().ok()),
            radius,
            http,
        })
    }
}

impl Bound {
    /// Starts serving; the tasks end when the node's client stops answering (the node stopped).
    pub fn spawn(self, client: crate::Client, metrics: Metrics) {
        if let Some((socket, clients)) = self.radius {
            tokio::spawn(server::serve(
                socket,
                clients,
                client.clone(),
                metrics.clone(),
            ));
        }
        if let Some((listener, parties)) = self.http {
            tokio::spawn(validate::serve(listener, parties, client, metrics));
        }
    }
}
