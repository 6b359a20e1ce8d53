//! The mesh config: who may do what, and the settings every node of a mesh shares.
//!
//! Parsed by the node from TOML; checked here so every role applies the same rules.
//! ```toml
//! open = false                       # true: unlisted requesters and contributors are admitted
//! [settings]
//! quorum = 4                         # seal as soon as this many phrases are in
//! minimum = 2                        # at the deadline, seal if at least this many are in
//! [[generators]]
//! peer_id = "12D3KooW…"
//! addrs = ["/ip4/127.0.0.1/tcp/4001"]
//! [[contributors]]
//! client_id = 1
//! peer_id = "12D3KooW…"
//! ```

use crate::otp::Digits;
use crate::phrase::ClientId;
use crate::round::{MAX_HASH_ITERATIONS, MAX_ROUND_CONTRIBUTORS};
use crate::seal::{ALLOWED_KEY_BITS, DEFAULT_KEY_BITS, MAX_CIPHERTEXT_BYTES};
use crate::threshold::{Index, Params};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub mod verifiers;
pub use verifiers::{UserName, Verifier};

/// Most peers any one role list may name.
pub const MAX_LISTED_PEERS: usize = 16_384;
/// Most addresses one listed peer may carry.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// Settings every node of a mesh shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Phrases that seal a round at once. 0: the number of listed contributors.
    pub quorum: u32,
    /// Phrases that still seal a round at its deadline. 0: a majority of the quorum.
    pub minimum: u32,
    /// How long a round stays open.
    pub deadline_ms: u64,
    /// Pause between one round ending and the next opening.
    pub round_interval_ms: u64,
    /// Hash iterations in the round secret.
    pub hash_iterations: u32,
    pub digits: Digits,
    /// Lifetime of an issued OTP.
    pub otp_expiry_ms: u64,
    /// Generator RSA key size.
    pub rsa_bits: usize,
    /// Wrong verifications within `failure_window_ms` that lock a requester out.
    pub max_failures: u32,
    pub failure_window_ms: u64,
    /// How long a lockout lasts.
    pub lockout_ms: u64,
    /// Length of an enrolment key's epoch (key recycling).
    pub epoch_ms: u64,
    /// TOTP steps accepted on either side of the expected one.
    pub totp_window: u32,
    /// Requests a node serves per peer per second (bursts of twice that); more are refused, and a
    /// peer that keeps on is penalised.
    pub requests_per_peer_s: u32,
    /// Key distribution centre: how long a session ticket lasts.
    pub kdc_ticket_lifetime_ms: u64,
    /// Key distribution centre: clock skew allowed in a pre-authentication.
    pub kdc_max_skew_ms: u64,
    /// Key distribution centre: a session request must carry one of the client's OTPs.
    pub kdc_require_otp: bool,
    /// Threshold mode, "T/N": N generators deal key shares to N distributors (generator j to
    /// distributor j, both in list order) and any T distributors evaluate an OTP together. T must be
    /// more than N/2. Absent: single-generator mode.
    pub threshold: Option<Threshold>,
    /// Threshold mode: how long generators have to complain about a dealing, and contributors to
    /// answer, after the first generator proposes the round's dealings.
    pub complaint_ms: u64,
    /// Threshold mode: when each generator publishes its complaints, after the proposal reached
    /// it, whatever opened (a share still opening then is waited for, so the time shows CPU, not
    /// which ciphertext opened). Below `complaint_ms`.
    pub complaint_offset_ms: u64,
    /// Threshold mode: the digits of a time-step code a person types (`otpmesh code`), 6 to 8.
    pub code_digits: u32,
    /// Threshold mode: a code's time step, in seconds (15 to 300).
    pub code_period_s: u64,
}

/// A `T/N` threshold setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Threshold(pub Params);

impl TryFrom<String> for Threshold {
    type Error = String;

    fn try_from(text: String) -> Result<Threshold, String> {
        let parse = |s: &str| s.trim().parse::<u32>().ok();
        let (t, n) = text
            .split_once('/')
            .and_then(|(t, n)| Some((parse(t)?, parse(n)?)))
            .ok_or_else(|| format!("threshold {text:?} is not of the form T/N (e.g. 3/5)"))?;
        Params::new(t, n).map(Threshold).map_err(|e| e.to_string())
    }
}

impl From<Threshold> for String {
    fn from(t: Threshold) -> String {
        t.to_string()
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0.t, self.0.n)
    }
}

impl std::str::FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Threshold, String> {
        Threshold::try_from(s.to_string())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            quorum: 0,
            minimum: 0,
            deadline_ms: 30_000,
            round_interval_ms: 5_000,
            hash_iterations: 1_000,
            digits: Digits::default(),
            otp_expiry_ms: 120_000,
            rsa_bits: DEFAULT_KEY_BITS,
            max_failures: 5,
            failure_window_ms: 300_000,
            lockout_ms: 900_000,
            epoch_ms: 3_600_000,
            totp_window: 1,
            requests_per_peer_s: 1_000,
            kdc_ticket_lifetime_ms: crate::kdc::DEFAULT_TICKET_LIFETIME_MS,
            kdc_max_skew_ms: crate::kdc::DEFAULT_MAX_SKEW_MS,
            kdc_require_otp: false,
            threshold: None,
            complaint_ms: 3_000,
            complaint_offset_ms: 250,
            code_digits: 6,
            code_period_s: 30,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub peer_id: PeerId,
    /// Where the peer listens (optional; helps the others dial it).
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Requesters only: the user name services know this requester by (RADIUS User-Name, a web
    /// login), for verifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<UserName>,
}

impl Member {
    pub fn new(peer_id: PeerId, addrs: Vec<String>) -> Member {
        Member {
            peer_id,
            addrs,
            name: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contributor {
    pub client_id: ClientId,
    pub peer_id: PeerId,
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// Constant-time membership answers for a config that no longer changes: a role builds one when
/// it is made (the config's lists are scanned, which costs O(listed) a question; a distributor
/// asks on every request and use marker).
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    open: bool,
    requesters: std::collections::HashSet<PeerId>,
    contributors: std::collections::HashMap<ClientId, PeerId>,
}

impl Lookup {
    pub fn of(mesh: &MeshConfig) -> Lookup {
        Lookup {
            open: mesh.open,
            requesters: mesh.requesters.iter().map(|m| m.peer_id).collect(),
            contributors: mesh
                .contributors
                .iter()
                .map(|c| (c.client_id, c.peer_id))
                .collect(),
        }
    }

    /// As [`MeshConfig::is_requester`].
    pub fn is_requester(&self, peer: &PeerId) -> bool {
        self.open || self.requesters.contains(peer)
    }

    /// The contributor listed under `client`, if any.
    pub fn contributor_peer(&self, client: ClientId) -> Option<PeerId> {
        self.contributors.get(&client).copied()
    }
}

/// The whole mesh config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    #[serde(default)]
    pub open: bool,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub generators: Vec<Member>,
    #[serde(default)]
    pub distributors: Vec<Member>,
    #[serde(default)]
    pub contributors: Vec<Contributor>,
    #[serde(default)]
    pub requesters: Vec<Member>,
    /// The doors of the services where codes are typed (RADIUS, HTTP).
    #[serde(default)]
    pub verifiers: Vec<Verifier>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    #[error("client id {0} is listed twice under [[contributors]]")]
    DuplicateClient(ClientId),
    #[error("peer {0} is listed as a contributor twice (one client id per peer)")]
    DuplicatePeer(PeerId),
    #[error("client id 0 is not valid: client ids start at 1")]
    ZeroClient,
    #[error("client id {0} is reserved: generators deal under ids from {base} up", base = crate::threshold::GENERATOR_DEALER_BASE)]
    ReservedClient(ClientId),
    #[error("{list} lists {len} peers; at most {MAX_LISTED_PEERS} are allowed")]
    TooMany { list: &'static str, len: usize },
    #[error("peer {0} lists more than {MAX_ADDRS_PER_PEER} addresses")]
    TooManyAddrs(PeerId),
    #[error("settings.{field}: {problem}")]
    Setting {
        field: &'static str,
        problem: String,
    },
    #[error("a mesh needs at least one generator (none listed under [[generators]])")]
    NoGenerator,
    #[error("{0}")]
    Users(String),
    #[error("{0}")]
    Syntax(String),
}

impl MeshConfig {
    /// A config listing these peers without addresses (contributors get client ids 1, 2, … in
    /// order) and default settings: what simulations and tests build meshes from.
    pub fn listing(
        generators: &[PeerId],
        distributors: &[PeerId],
        requesters: &[PeerId],
        contributors: &[PeerId],
    ) -> MeshConfig {
        let member = |peer_id: &PeerId| Member {
            peer_id: *peer_id,
            addrs: vec![],
            name: None,
        };
        MeshConfig {
            generators: generators.iter().map(member).collect(),
            distributors: distributors.iter().map(member).collect(),
            requesters: requesters.iter().map(member).collect(),
            contributors: contributors
                .iter()
                .enumerate()
                .map(|(i, p)| Contributor {
                    client_id: ClientId(i as u32 + 1),
                    peer_id: *p,
                    addrs: vec![],
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Reads a mesh config from its TOML text and checks it.
    pub fn from_toml(text: &str) -> Result<MeshConfig, MeshError> {
        let mesh: MeshConfig =
            toml::from_str(text).map_err(|e| MeshError::Syntax(e.to_string()))?;
        mesh.validate()?;
        Ok(mesh)
    }

    /// Checks the config is consistent; every node runs this before it starts.
    /// What is valid but weaker than it looks. Threshold mode: two quorums share at least
    /// 2T − N distributors; below 2 (T < ⌊N/2⌋ + 2 for odd N, T < N/2 + 1 for even N) they may
    /// share a single one, so one distributor whose store is rolled back (a restored backup, a VM
    /// snapshot) lets an OTP be accepted twice.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(p) = self.threshold() {
            let safe = (p.n + 2).div_ceil(2);
            if 2 * p.t < p.n + 2 && p.t < p.n {
                warnings.push(format!(
                    "threshold {}/{}: two quorums may share only one distributor, so one \
                     distributor restored from a backup or snapshot could accept a used OTP again; \
                     t ≥ {safe} makes any two quorums share two",
                    p.t, p.n
                ));
            }
        }
        warnings
    }

    pub fn validate(&self) -> Result<(), MeshError> {
        let lists: [(&'static str, usize); 5] = [
            ("[[generators]]", self.generators.len()),
            ("[[distributors]]", self.distributors.len()),
            ("[[contributors]]", self.contributors.len()),
            ("[[requesters]]", self.requesters.len()),
            ("[[verifiers]]", self.verifiers.len()),
        ];
        for (list, len) in lists {
            if len > MAX_LISTED_PEERS {
                return Err(MeshError::TooMany { list, len });
            }
        }
        if self.generators.is_empty() {
            return Err(MeshError::NoGenerator);
        }
        let mut clients = BTreeSet::new();
        let mut peers = BTreeSet::new();
        for c in &self.contributors {
            if c.client_id.0 == 0 {
                return Err(MeshError::ZeroClient);
            }
            if c.client_id.0 >= crate::threshold::GENERATOR_DEALER_BASE {
                return Err(MeshError::ReservedClient(c.client_id));
            }
            if !clients.insert(c.client_id) {
                return Err(MeshError::DuplicateClient(c.client_id));
            }
            if !peers.insert(c.peer_id) {
                return Err(MeshError::DuplicatePeer(c.peer_id));
            }
        }
        let all_addrs = self
            .generators
            .iter()
            .chain(&self.distributors)
            .chain(&self.requesters)
            .map(|m| (m.peer_id, m.addrs.len()))
            .chain(self.contributors.iter().map(|c| (c.peer_id, c.addrs.len())))
            .chain(self.verifiers.iter().map(|v| (v.peer_id, v.addrs.len())));
        for (peer, n) in all_addrs {
            if n > MAX_ADDRS_PER_PEER {
                return Err(MeshError::TooManyAddrs(peer));
            }
        }
        self.check_users()?;
        self.check_settings()
    }

    /// Names on requesters only, each once; verifiers listed once, naming listed users or `*`.
    fn check_users(&self) -> Result<(), MeshError> {
        let bad = |problem: String| Err(MeshError::Users(problem));
        if let Some(m) = self
            .generators
            .iter()
            .chain(&self.distributors)
            .find(|m| m.name.is_some())
        {
            return bad(format!(
                "peer {} carries a name: names are for [[requesters]]",
                m.peer_id
            ));
        }
        let mut names = BTreeSet::new();
        for name in self.requesters.iter().filter_map(|m| m.name.as_ref()) {
            if !names.insert(name) {
                return bad(format!("user name {name:?} is given to two requesters"));
            }
        }
        let mut verifiers = BTreeSet::new();
        for v in &self.verifiers {
            if !verifiers.insert(v.peer_id) {
                return bad(format!("verifier {} is listed twice", v.peer_id));
            }
            if v.users.len() > verifiers::MAX_VERIFIER_USERS {
                return bad(format!(
                    "verifier {} names {} users; at most {}",
                    v.peer_id,
                    v.users.len(),
                    verifiers::MAX_VERIFIER_USERS
                ));
            }
            if let Some(u) = v
                .users
                .iter()
                .find(|u| *u != "*" && !names.iter().any(|n| n.as_str() == u.as_str()))
            {
                return bad(format!(
                    "verifier {} names user {u:?}, which no requester is called",
                    v.peer_id
                ));
            }
        }
        Ok(())
    }

    fn check_settings(&self) -> Result<(), MeshError> {
        let s = &self.settings;
        let bad = |field, problem: String| Err(MeshError::Setting { field, problem });
        let quorum = self.quorum();
        if quorum == 0 {
            return bad(
                "quorum",
                "must be at least 1 (or list contributors and leave it 0)".into(),
            );
        }
        if quorum as usize > MAX_ROUND_CONTRIBUTORS {
            return bad(
                "quorum",
                format!("{quorum} is more than the {MAX_ROUND_CONTRIBUTORS} a round can hold"),
            );
        }
        if !self.open && !self.contributors.is_empty() && quorum as usize > self.contributors.len()
        {
            return bad(
                "quorum",
                format!(
                    "{quorum} is more than the {} listed contributors",
                    self.contributors.len()
                ),
            );
        }
        if self.minimum() > quorum {
            return bad(
                "minimum",
                format!("{} is more than the quorum {quorum}", self.minimum()),
            );
        }
        const DAY: u64 = 86_400_000;
        let (iterations, ticket) = (
            MAX_HASH_ITERATIONS.into(),
            crate::kdc::MAX_TICKET_LIFETIME_MS,
        );
        // (setting, value, lowest, highest, the range in words)
        #[rustfmt::skip]
        let ranges: [(&'static str, u64, u64, u64, &str); 16] = [
            ("deadline_ms", s.deadline_ms, 100, DAY, "100 ms to 24 h"),
            ("round_interval_ms", s.round_interval_ms, 0, DAY, "0 to 24 h"),
            ("hash_iterations", s.hash_iterations.into(), 1, iterations, "1 to 1,000,000"),
            ("otp_expiry_ms", s.otp_expiry_ms, 1_000, DAY, "1 s to 24 h"),
            ("max_failures", s.max_failures.into(), 1, 1000, "1 to 1000"),
            ("failure_window_ms", s.failure_window_ms, 1, DAY, "1 ms to 24 h"),
            ("lockout_ms", s.lockout_ms, 1, 7 * DAY, "1 ms to 7 days"),
            ("code_digits", s.code_digits.into(), 6, 8, "6 to 8"),
            ("code_period_s", s.code_period_s, 15, 300, "15 to 300 s"),
            ("totp_window", s.totp_window.into(), 0, 10, "0 to 10 steps"),
            ("requests_per_peer_s", s.requests_per_peer_s.into(), 1, u64::MAX, "at least 1"),
            ("kdc_ticket_lifetime_ms", s.kdc_ticket_lifetime_ms, 1_000, ticket, "1 s to 24 h"),
            ("kdc_max_skew_ms", s.kdc_max_skew_ms, 0, 3_600_000, "0 to 1 h"),
            ("epoch_ms", s.epoch_ms, 1_000, 30 * DAY, "1 s to 30 days"),
            ("complaint_ms", s.complaint_ms, 100, 3_600_000, "100 ms to 1 h"),
            ("complaint_offset_ms", s.complaint_offset_ms, 0, 3_600_000, "0 to 1 h"),
        ];
        for (field, value, lowest, highest, range) in ranges {
            if !(lowest..=highest).contains(&value) {
                return bad(field, format!("{value} is outside {range}"));
            }
        }
        if s.complaint_offset_ms >= s.complaint_ms {
            return bad(
                "complaint_offset_ms",
                format!(
                    "{} is not below complaint_ms ({}): complaints would come after the window",
                    s.complaint_offset_ms, s.complaint_ms
                ),
            );
        }
        if !ALLOWED_KEY_BITS.contains(&s.rsa_bits) {
            return bad(
                "rsa_bits",
                format!("{} is not one of 2048, 3072, 4096", s.rsa_bits),
            );
        }
        if let Some(Threshold(params)) = s.threshold {
            self.check_threshold(params)?;
        }
        Ok(())
    }

    fn check_threshold(&self, Params { t, n }: Params) -> Result<(), MeshError> {
        let bad = |problem: String| {
            Err(MeshError::Setting {
                field: "threshold",
                problem,
            })
        };
        if self.open {
            return bad(
                "an open mesh admits unlisted contributors, so one peer could deal under many client \
                 ids and fix the round key: threshold mode needs listed contributors"
                    .into(),
            );
        }
        if self.minimum() < 2 {
            return bad(format!(
                "the minimum is {}: with one dealing, its contributor knows the round key; \
                 threshold mode needs settings.minimum (and quorum) of at least 2",
                self.minimum()
            ));
        }
        if 2 * t <= n {
            return bad(format!(
                "{t}/{n}: T must be more than N/2, so that any two quorums share a distributor \
                 (single use needs it)"
            ));
        }
        let (g, d) = (self.generators.len(), self.distributors.len());
        if g != n as usize || d != n as usize {
            return bad(format!(
                "{t}/{n} needs {n} generators and {n} distributors; the config lists {g} and {d}"
            ));
        }
        let peers: BTreeSet<PeerId> = self
            .generators
            .iter()
            .chain(&self.distributors)
            .map(|m| m.peer_id)
            .collect();
        if peers.len() != 2 * n as usize {
            return bad(
                "a peer is listed twice among generators and distributors: no node may hold two \
                 shares of a round"
                    .into(),
            );
        }
        let dealing = n as usize * (self.settings.rsa_bits / 8) + t as usize * 32 + 1024;
        if dealing > crate::wire::MAX_GOSSIP_BYTES
            || self.settings.rsa_bits / 8 > MAX_CIPHERTEXT_BYTES
        {
            return bad(format!(
                "a dealing to {n} generators with {}-bit keys would be {dealing} bytes, more than a \
                 gossip message's {} bytes",
                self.settings.rsa_bits,
                crate::wire::MAX_GOSSIP_BYTES
            ));
        }
        Ok(())
    }

    /// The threshold, in threshold mode.
    pub fn threshold(&self) -> Option<Params> {
        self.settings.threshold.map(|t| t.0)
    }

    /// Generator `peer`'s shareholder index (its place in the list, from 1).
    pub fn generator_index(&self, peer: &PeerId) -> Option<Index> {
        position(&self.generators, peer)
    }

    /// Distributor `peer`'s shareholder index.
    pub fn distributor_index(&self, peer: &PeerId) -> Option<Index> {
        position(&self.distributors, peer)
    }

    pub fn generator_at(&self, index: Index) -> Option<PeerId> {
        at(&self.generators, index)
    }

    pub fn distributor_at(&self, index: Index) -> Option<PeerId> {
        at(&self.distributors, index)
    }

    /// Threshold mode's coordinator: the first listed generator opens and closes rounds.
    pub fn coordinator(&self) -> Option<PeerId> {
        self.generators.first().map(|m| m.peer_id)
    }

    /// The effective quorum.
    pub fn quorum(&self) -> u32 {
        match self.settings.quorum {
            0 => self.contributors.len() as u32,
            q => q,
        }
    }

    /// The effective minimum to seal at the deadline.
    pub fn minimum(&self) -> u32 {
        match self.settings.minimum {
            0 => self.quorum() / 2 + 1,
            m => m,
        }
    }

    pub fn is_generator(&self, peer: &PeerId) -> bool {
        self.generators.iter().any(|m| &m.peer_id == peer)
    }

    pub fn is_distributor(&self, peer: &PeerId) -> bool {
        self.distributors.iter().any(|m| &m.peer_id == peer)
    }

    pub fn is_requester(&self, peer: &PeerId) -> bool {
        self.open || self.requesters.iter().any(|m| &m.peer_id == peer)
    }

    /// The requester called `user`.
    pub fn requester_named(&self, user: &UserName) -> Option<PeerId> {
        self.requesters
            .iter()
            .find(|m| m.name.as_ref() == Some(user))
            .map(|m| m.peer_id)
    }

    pub fn is_verifier(&self, peer: &PeerId) -> bool {
        self.verifiers.iter().any(|v| &v.peer_id == peer)
    }

    /// The requester whose codes verifier `peer` asks to check as `user`, if it may.
    pub fn may_verify(&self, peer: &PeerId, user: &UserName) -> Result<PeerId, Denied> {
        let verifier = self
            .verifiers
            .iter()
            .find(|v| &v.peer_id == peer)
            .ok_or(Denied::NotVerifier)?;
        let requester = self
            .requester_named(user)
            .ok_or_else(|| Denied::UnknownUser(user.to_string()))?;
        match verifier.covers(user) {
            true => Ok(requester),
            false => Err(Denied::NotVerifiersUser(user.to_string())),
        }
    }

    /// Whether `peer` may submit phrases as `client`.
    pub fn may_contribute(&self, peer: &PeerId, client: ClientId) -> Result<(), Denied> {
        if client.0 == 0 {
            return Err(Denied::ZeroClient);
        }
        if let Some(j) = crate::threshold::dealing_generator(client) {
            return match self.threshold().is_some() && self.generator_at(j) == Some(*peer) {
                true => Ok(()),
                false => Err(Denied::ClientOfAnotherPeer(client)),
            };
        }
        match self.contributors.iter().find(|c| c.client_id == client) {
            Some(c) if &c.peer_id == peer => Ok(()),
            Some(_) => Err(Denied::ClientOfAnotherPeer(client)),
            None if self.open && !self.contributors.iter().any(|c| &c.peer_id == peer) => Ok(()),
            None => Err(Denied::UnlistedContributor(client)),
        }
    }

    /// Every listed peer with its addresses (for dialing).
    pub fn known_addrs(&self) -> Vec<(PeerId, &[String])> {
        self.generators
            .iter()
            .chain(&self.distributors)
            .chain(&self.requesters)
            .map(|m| (m.peer_id, m.addrs.as_slice()))
            .chain(
                self.contributors
                    .iter()
                    .map(|c| (c.peer_id, c.addrs.as_slice())),
            )
            .chain(
                self.verifiers
                    .iter()
                    .map(|v| (v.peer_id, v.addrs.as_slice())),
            )
            .collect()
    }
}

fn position(list: &[Member], peer: &PeerId) -> Option<Index> {
    let i = list.iter().position(|m| &m.peer_id == peer)?;
    Some(Index(i as u32 + 1))
}

fn at(list: &[Member], index: Index) -> Option<PeerId> {
    let i = (index.0 as usize).checked_sub(1)?;
    list.get(i).map(|m| m.peer_id)
}

/// Why the mesh config refuses a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("client id 0 is not valid")]
    ZeroClient,
    #[error("client id {0} belongs to another peer")]
    ClientOfAnotherPeer(ClientId),
    #[error("client id {0} is not listed in the mesh config")]
    UnlistedContributor(ClientId),
    #[error("peer is not a listed generator")]
    NotGenerator,
    #[error("peer is not a listed distributor")]
    NotDistributor,
    #[error("peer is not a listed requester")]
    NotRequester,
    #[error("peer is not a listed verifier")]
    NotVerifier,
    #[error("no requester is called {0:?}")]
    UnknownUser(String),
    #[error("this verifier may not check {0:?}'s codes")]
    NotVerifiersUser(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n: u32) -> MeshConfig {
        MeshConfig {
            generators: vec![Member {
                peer_id: PeerId::random(),
                addrs: vec![],
                name: None,
            }],
            contributors: (1..=n)
                .map(|i| Contributor {
                    client_id: ClientId(i),
                    peer_id: PeerId::random(),
                    addrs: vec![],
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_threshold_whose_quorums_share_one_distributor_is_warned_of() {
        let mut c = config(4);
        c.settings.threshold = Some(Threshold(Params::new(3, 5).unwrap()));
        assert_eq!(
            c.warnings().len(),
            1,
            "3/5: quorums {{1,2,3}} and {{3,4,5}} share one"
        );
        c.settings.threshold = Some(Threshold(Params::new(4, 5).unwrap()));
        assert!(c.warnings().is_empty(), "4/5: any two quorums share two");
        c.settings.threshold = Some(Threshold(Params::new(3, 4).unwrap()));
        assert!(c.warnings().is_empty(), "3/4: any two quorums share two");
        c.settings.threshold = Some(Threshold(Params::new(4, 7).unwrap()));
        assert_eq!(c.warnings().len(), 1, "4/7: two quorums may share one");
    }

    #[test]
    fn defaults_follow_the_contributor_list() {
        let c = config(4);
        c.validate().unwrap();
        assert_eq!((c.quorum(), c.minimum()), (4, 3));
    }

    #[test]
    fn contributors_are_bound_to_their_peer() {
        let c = config(2);
        let p1 = c.contributors[0].peer_id;
        assert_eq!(c.may_contribute(&p1, ClientId(1)), Ok(()));
        assert_eq!(
            c.may_contribute(&p1, ClientId(2)),
            Err(Denied::ClientOfAnotherPeer(ClientId(2)))
        );
        assert_eq!(
            c.may_contribute(&PeerId::random(), ClientId(9)),
            Err(Denied::UnlistedContributor(ClientId(9)))
        );
        let open = MeshConfig {
            open: true,
            ..c.clone()
        };
        assert_eq!(open.may_contribute(&PeerId::random(), ClientId(9)), Ok(()));
        assert_eq!(
            open.may_contribute(&p1, ClientId(9)),
            Err(Denied::UnlistedContributor(ClientId(9)))
        );
        assert_eq!(
            open.may_contribute(&PeerId::random(), ClientId(1)),
            Err(Denied::ClientOfAnotherPeer(ClientId(1)))
        );
    }

    #[test]
    fn impossible_settings_are_named() {
        let mut c = config(2);
        c.settings.quorum = 3;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("settings.quorum"));
        c.settings.quorum = 2;
        c.settings.minimum = 3;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("settings.minimum"));
        c.settings.minimum = 0;
        c.settings.rsa_bits = 1024;
        assert!(c.validate().unwrap_err().to_string().contains("rsa_bits"));
        c.settings.rsa_bits = DEFAULT_KEY_BITS;
        c.settings.complaint_offset_ms = c.settings.complaint_ms;
        let offset = c.validate().unwrap_err().to_string();
        assert!(
            offset.contains("complaint_offset_ms") && offset.contains("not below complaint_ms"),
            "{offset}"
        );
        c.settings.complaint_offset_ms = c.settings.complaint_ms - 1;
        assert_eq!(c.validate(), Ok(()));
        let mut dup = config(2);
        dup.contributors[1].client_id = ClientId(1);
        assert_eq!(dup.validate(), Err(MeshError::DuplicateClient(ClientId(1))));
        assert_eq!(
            MeshConfig::default().validate(),
            Err(MeshError::NoGenerator)
        );
    }
}
