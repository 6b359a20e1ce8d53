//! The scenario file format, parsed and checked before anything starts.
//! Every error names the file, the line and, where it can, a hint. `scenarios/README.md` documents
//! the format with examples.

use otpmesh_protocol::mesh::Settings;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Most nodes and steps a scenario may declare.
pub const MAX_NODES: usize = 256;
pub const MAX_STEPS: usize = 1024;
/// Longest timeout a step may ask for.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// A problem in a scenario file.
#[derive(Debug)]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Contributor,
    Generator,
    Distributor,
    Requester,
    /// A peer that sends bad input on `inject` steps and never contributes honestly.
    Hostile,
    /// The door of a service: RADIUS and HTTP fronts that `login` steps knock on.
    Verifier,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub role: NodeRole,
    /// Contributors (required) and hostile peers (optional).
    pub client_id: Option<u32>,
    /// A contributor's integer for every round, unless a round step gives another.
    pub input: Option<Integer>,
    /// Whether the mesh config lists this node (default true; hostile peers: true with a
    /// client id, false without).
    pub listed: Option<bool>,
}

/// An integer written as a TOML integer or, beyond i64, as a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Integer(pub i128);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) => Ok(Integer(i as i128)),
            Raw::Text(t) => t
                .parse::<otpmesh_protocol::phrase::UserInput>()
                .map(|u| Integer(u.0))
                .map_err(serde::de::Error::custom),
        }
    }
}

impl NodeSpec {
    pub fn is_listed(&self) -> bool {
        self.listed
            .unwrap_or(self.role != NodeRole::Hostile || self.client_id.is_some())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundUntil {
    Opened,
    Sealed,
    Delivered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundOutcome {
    Sealed,
    Failed,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundExpect {
    pub outcome: Option<RoundOutcome>,
    /// Client ids the transcript must include.
    #[serde(default)]
    pub includes: Vec<u32>,
    /// Client ids it must not include.
    #[serde(default)]
    pub excludes: Vec<u32>,
    /// For a failed round: text the reason must contain.
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    Otp,
    Unauthorised,
    NoRound,
    Unreachable,
    Refused,
    /// Threshold mode: too few distributors answered with a valid partial.
    QuorumUnavailable,
}

impl RequestOutcome {
    /// As a scenario file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Otp => "otp",
            RequestOutcome::Unauthorised => "unauthorised",
            RequestOutcome::NoRound => "no_round",
            RequestOutcome::Unreachable => "unreachable",
            RequestOutcome::Refused => "refused",
            RequestOutcome::QuorumUnavailable => "quorum_unavailable",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestExpect {
    pub outcome: Option<RequestOutcome>,
    pub round: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeChoice {
    #[default]
    Last,
    Wrong,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyExpect {
    /// accepted (default), used, expired, wrong or locked.
    pub result: Option<otpmesh_protocol::wire::VerifyResult>,
}

/// Which of a verifier's fronts a `login` step uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Front {
    /// RFC 2865 Access-Request with PAP User-Password (and a Message-Authenticator).
    #[default]
    Radius,
    /// `POST /validate/check` with the bearer token.
    Http,
}

/// Which code a `login` step types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginCode {
    /// The user's newest code: its last OTP (single mode), or its current time-step code from
    /// `otpmesh code` run as the user (threshold mode).
    #[default]
    Fresh,
    /// The code this user typed at its previous login step (a replay).
    Again,
    /// A code of the right length that is not the user's newest.
    Wrong,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginExpect {
    /// accepted (default), wrong, used, expired, locked, unknown_user, unavailable,
    /// quorum_unavailable or busy: what the front answered.
    pub result: Option<otpmesh_protocol::role::verifier::Outcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    Malformed,
    WrongSize,
    OtherKey,
    Replay,
    Unlisted,
    Duplicate,
    Oversized,
    UnlistedRequest,
}

impl Attack {
    /// What the rejection must say.
    pub fn reason(self) -> &'static str {
        match self {
            Attack::Malformed => "undecodable gossip",
            Attack::WrongSize => "fits no allowed RSA key size",
            Attack::OtherKey | Attack::Replay => "phrase did not open",
            Attack::Unlisted => "not listed in the mesh config",
            Attack::Duplicate => "second phrase",
            Attack::Oversized => "more than the",
            Attack::UnlistedRequest => "not a listed requester",
        }
    }

    /// Attacks that put a phrase into the open round.
    pub fn needs_open_round(self) -> bool {
        !matches!(
            self,
            Attack::Malformed | Attack::Oversized | Attack::UnlistedRequest
        )
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectExpect {
    /// Text the rejection must contain (default: the attack's standard reason).
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    RoundOpened,
    RoundSealed,
    RoundFailed,
    RoundDelivered,
    Listening,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub rounds_sealed: Option<u32>,
    pub rounds_failed: Option<u32>,
    pub otps: Option<u32>,
    /// The sealed rounds' commitments link into one chain.
    pub chain: Option<bool>,
    /// With includes/excludes: a sealed round to look at (default: the newest).
    pub round: Option<u64>,
    #[serde(default)]
    pub includes: Vec<u32>,
    #[serde(default)]
    pub excludes: Vec<u32>,
}

/// One step, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Round {
        /// Contributor name → integer for this round.
        #[serde(default)]
        inputs: BTreeMap<String, Integer>,
        until: Option<RoundUntil>,
        timeout_ms: Option<u64>,
        #[serde(default)]
        expect: RoundExpect,
    },
    Request {
        requester: String,
        /// Single mode: the distributor asked. Threshold mode: left out (every distributor is asked).
        #[serde(default)]
        distributor: Option<String>,
        #[serde(default)]
        expect: RequestExpect,
    },
    Verify {
        requester: String,
        /// As for `request`.
        #[serde(default)]
        distributor: Option<String>,
        /// Which code: the requester's last OTP from that distributor (default), or a wrong one.
        #[serde(default)]
        otp: CodeChoice,
        #[serde(default)]
        expect: VerifyExpect,
    },
    /// `user` (a requester) types a code at `verifier`'s RADIUS or HTTP front.
    Login {
        user: String,
        verifier: String,
        #[serde(default)]
        via: Front,
        #[serde(default)]
        code: LoginCode,
        timeout_ms: Option<u64>,
        #[serde(default)]
        expect: LoginExpect,
    },
    Kill {
        node: String,
    },
    Restart {
        node: String,
        timeout_ms: Option<u64>,
    },
    Partition {
        node: String,
        /// Peers to cut it off from (default: every other node).
        from: Option<Vec<String>>,
    },
    Heal {
        node: String,
    },
    Inject {
        from: String,
        attack: Attack,
        timeout_ms: Option<u64>,
        #[serde(default)]
        expect: InjectExpect,
    },
    Wait {
        event: WaitFor,
        round: Option<u64>,
        node: Option<String>,
        timeout_ms: Option<u64>,
        #[serde(default)]
        expect: RoundExpect,
    },
    Expect(Totals),
    /// `otpmesh kdc register` as `user` (a requester).
    KdcRegister {
        user: String,
        distributor: String,
        /// The name to register (default: the node's name).
        kdc_name: Option<String>,
        passphrase: String,
        old_passphrase: Option<String>,
        #[serde(default)]
        expect: KdcExpect,
    },
    /// Threshold mode: `otpmesh password` as `requester` (from every distributor); passes when a
    /// password of `length` characters, all from the alphabet, comes back. It is never printed.
    Password {
        requester: String,
        #[serde(default = "default_password_length")]
        length: usize,
        /// Classes, as `otpmesh password --alphabet` (default: all four).
        alphabet: Option<String>,
        /// Exactly these characters instead.
        chars: Option<String>,
    },
    /// Threshold mode: waits until every running node holds a beacon value for each of `rounds`,
    /// and passes if they all hold the same ones. With `export`, that node's chain is exported and
    /// verified offline, and a copy with one value changed must fail.
    Beacon {
        rounds: Vec<u64>,
        export: Option<String>,
        timeout_ms: Option<u64>,
    },
    /// `otpmesh kdc receive` as `to`, then `otpmesh kdc send` from `from`: a file of `bytes`
    /// bytes drawn from the seed, compared byte for byte on arrival.
    KdcSend {
        from: String,
        to: String,
        distributor: String,
        /// The name the sender asks for (default: `to`'s node name).
        to_name: Option<String>,
        #[serde(default = "default_kdc_bytes")]
        bytes: u64,
        passphrase: String,
        receiver_passphrase: String,
        /// Send the sender's last OTP from `distributor` as pre-authentication.
        #[serde(default)]
        otp: bool,
        #[serde(default)]
        expect: KdcExpect,
    },
}

fn default_password_length() -> usize {
    otpmesh_protocol::threshold::password::DEFAULT_LENGTH
}

fn default_kdc_bytes() -> u64 {
    100_000
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KdcOutcome {
    /// Registered, or the file arrived byte for byte (the default).
    #[default]
    Ok,
    /// The command failed.
    Refused,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdcExpect {
    #[serde(default)]
    pub outcome: KdcOutcome,
    /// Text the failure's message contains.
    pub reason: Option<String>,
}

/// Every step kind, as a scenario names it (`kind = "…"`); a test keeps it equal to [`Step`]'s.
pub const KINDS: [&str; 15] = [
    "round",
    "request",
    "verify",
    "login",
    "kill",
    "restart",
    "partition",
    "heal",
    "inject",
    "wait",
    "expect",
    "password",
    "beacon",
    "kdc_register",
    "kdc_send",
];

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Round { .. } => "round",
            Step::Request { .. } => "request",
            Step::Verify { .. } => "verify",
            Step::Login { .. } => "login",
            Step::Kill { .. } => "kill",
            Step::Restart { .. } => "restart",
            Step::Partition { .. } => "partition",
            Step::Heal { .. } => "heal",
            Step::Inject { .. } => "inject",
            Step::Wait { .. } => "wait",
            Step::Expect(_) => "expect",
            Step::KdcRegister { .. } => "kdc_register",
            Step::KdcSend { .. } => "kdc_send",
            Step::Password { .. } => "password",
            Step::Beacon { .. } => "beacon",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StepSpec {
    pub line: usize,
    pub name: String,
    pub narrate: Option<String>,
    pub step: Step,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub seed: Option<u64>,
    pub settings: Settings,
    pub nodes: Vec<NodeSpec>,
    pub steps: Vec<StepSpec>,
}

impl Scenario {
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn nodes_with(&self, role: NodeRole) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    pub fn generator(&self) -> &NodeSpec {
        self.nodes_with(NodeRole::Generator)
            .next()
            .expect("validated: one generator")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Option<String>,
    description: Option<String>,
    seed: Option<u64>,
    settings: Option<toml::Spanned<toml::Table>>,
    #[serde(default)]
    nodes: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    steps: Vec<toml::Spanned<toml::Table>>,
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// An error in the table starting at `offset`: pointed at the key the message names
    /// (`unknown field `x``, `missing field`…) when that key is written in the table.
    fn err(&self, offset: usize, message: impl Into<String>, hint: Option<String>) -> SpecError {
        let message = message.into();
        let table_end = self.text[offset.min(self.text.len())..]
            .find("\n[")
            .map_or(self.text.len(), |i| offset + i);
        let key = message.split('`').nth(1).filter(|k| !k.is_empty());
        let table = &self.text[offset.min(table_end)..table_end];
        // The named key (`k =`), else the named value (`"k"`), else the table itself.
        let at = key
            .and_then(|k| {
                let as_key = table
                    .match_indices(k)
                    .find(|(i, _)| table[i + k.len()..].trim_start().starts_with('='))
                    .map(|(i, _)| i);
                as_key.or_else(|| table.find(&format!("\"{k}\"")))
            })
            .map_or(offset, |i| offset + i);
        SpecError {
            file: self.file.to_path_buf(),
            line: self.line(at),
            message,
            hint,
        }
    }
}

fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    known
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

/// The hint beside an error in a table's shape (a key unknown or missing, a value of the wrong
/// type): toml's message says which; this says where the keys are listed.
fn shape_hint() -> Option<String> {
    Some(
        "scenarios/README.md lists the keys each table takes: numbers unquoted, names quoted, lists in [ ]"
            .into(),
    )
}

/// Reads and checks a scenario file.
pub fn load(file: &Path) -> Result<Scenario, SpecError> {
    let text = std::fs::read_to_string(file).map_err(|e| SpecError {
        file: file.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
        hint: None,
    })?;
    parse(file, &text)
}

/// Parses and checks scenario text (`file` names it in errors).
pub fn parse(file: &Path, text: &str) -> Result<Scenario, SpecError> {
    let c = Checker { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        c.err(offset, e.message().to_string(), shape_hint())
    })?;
    let convert = |table: &toml::Spanned<toml::Table>| toml::Value::Table(table.get_ref().clone());

    let mut settings = Settings::default();
    if let Some(s) = &raw.settings {
        settings = convert(s).try_into().map_err(|e: toml::de::Error| {
            c.err(
                s.span().start,
                format!("[settings]: {}", e.message()),
                shape_hint(),
            )
        })?;
    }

    if raw.nodes.len() > MAX_NODES || raw.steps.len() > MAX_STEPS {
        return Err(c.err(
            0,
            format!("at most {MAX_NODES} nodes and {MAX_STEPS} steps"),
            None,
        ));
    }
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut node_lines = Vec::new();
    for t in &raw.nodes {
        let node: NodeSpec = convert(t).try_into().map_err(|e: toml::de::Error| {
            c.err(
                t.span().start,
                format!("[[nodes]]: {}", e.message()),
                shape_hint(),
            )
        })?;
        if nodes.iter().any(|n| n.name == node.name) {
            return Err(c.err(
                t.span().start,
                format!("node name `{}` is used twice", node.name),
                None,
            ));
        }
        if node.name.is_empty()
            || !node
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err(c.err(
                t.span().start,
                format!("node name {:?} must be letters, digits, - or _", node.name),
                None,
            ));
        }
        node_lines.push(t.span().start);
        nodes.push(node);
    }
    check_nodes(&c, &nodes, &node_lines, &settings)?;

    let names: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut steps = Vec::new();
    for (i, t) in raw.steps.iter().enumerate() {
        let at = t.span().start;
        let mut table = t.get_ref().clone();
        let name = match table.remove("name") {
            Some(toml::Value::String(s)) => s,
            Some(_) => return Err(c.err(at, "step `name` must be a string", None)),
            None => format!("step {}", i + 1),
        };
        let narrate = match table.remove("narrate") {
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => return Err(c.err(at, "step `narrate` must be a string", None)),
            None => None,
        };
        let kind = table
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let shown = if kind.is_empty() { "no kind" } else { &kind };
        if !KINDS.contains(&kind.as_str()) {
            let mut hint = format!("kinds: {}", KINDS.join(", "));
            if let Some(near) = closest(&kind, KINDS.iter().copied()) {
                hint = format!("{near} ({hint})");
            }
            let problem = format!("step {}: `kind` {kind:?} is not a step kind", i + 1);
            return Err(c.err(at, problem, Some(hint)));
        }
        let step: Step = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                c.err(
                    at,
                    format!("step {} ({shown}): {}", i + 1, e.message()),
                    shape_hint(),
                )
            })?;
        check_step(&c, at, &step, &nodes, &names, settings.threshold.is_some())?;
        steps.push(StepSpec {
            line: c.line(at),
            name,
            narrate,
            step,
        });
    }

    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        description: raw.description,
        seed: raw.seed,
        settings,
        nodes,
        steps,
    })
}

fn check_nodes(
    c: &Checker,
    nodes: &[NodeSpec],
    lines: &[usize],
    settings: &Settings,
) -> Result<(), SpecError> {
    let count = |role| nodes.iter().filter(|n| n.role == role).count();
    if settings.threshold.is_none() && count(NodeRole::Generator) != 1 {
        let hint = Some("add a [[nodes]] table with role = \"generator\"".to_string());
        return Err(c.err(
            0,
            format!(
                "a scenario needs exactly one generator, found {}",
                count(NodeRole::Generator)
            ),
            hint,
        ));
    }
    if count(NodeRole::Distributor) == 0 {
        return Err(c.err(0, "a scenario needs at least one distributor", None));
    }
    let mut ids = BTreeSet::new();
    for (n, &at) in nodes.iter().zip(lines) {
        match (n.role, n.client_id) {
            (NodeRole::Contributor, None) => {
                return Err(c.err(
                    at,
                    format!("contributor `{}` has no client_id", n.name),
                    Some("add client_id = N (N ≥ 1)".into()),
                ))
            }
            (NodeRole::Contributor | NodeRole::Hostile, Some(0)) => {
                return Err(c.err(
                    at,
                    format!("`{}`: client id 0 is not valid", n.name),
                    Some("client ids start at 1".into()),
                ))
            }
            (NodeRole::Contributor | NodeRole::Hostile, Some(id))
                if n.is_listed() && !ids.insert(id) =>
            {
                return Err(c.err(at, format!("client id {id} is used twice"), None));
            }
            (
                NodeRole::Generator
                | NodeRole::Distributor
                | NodeRole::Requester
                | NodeRole::Verifier,
                Some(_),
            ) => {
                return Err(c.err(
                    at,
                    format!(
                        "`{}`: only contributors and hostile peers have a client_id",
                        n.name
                    ),
                    None,
                ));
            }
            _ => {}
        }
        if n.input.is_some() && n.role != NodeRole::Contributor {
            return Err(c.err(
                at,
                format!("`{}`: only contributors take an input", n.name),
                None,
            ));
        }
        if n.listed == Some(false) && n.role != NodeRole::Hostile {
            return Err(c.err(
                at,
                format!("`{}`: only hostile peers can be unlisted", n.name),
                None,
            ));
        }
    }
    let listed_contributors = nodes
        .iter()
        .filter(|n| {
            matches!(n.role, NodeRole::Contributor | NodeRole::Hostile)
                && n.is_listed()
                && n.client_id.is_some()
        })
        .count();
    if listed_contributors == 0 {
        return Err(c.err(0, "a scenario needs at least one contributor", None));
    }
    // The same checks every node runs on its mesh config.
    let mut mesh = otpmesh_protocol::mesh::MeshConfig {
        settings: settings.clone(),
        ..Default::default()
    };
    let member = || otpmesh_protocol::mesh::Member {
        peer_id: libp2p::PeerId::random(),
        addrs: vec![],
        name: None,
    };
    mesh.generators = (0..count(NodeRole::Generator)).map(|_| member()).collect();
    mesh.distributors = (0..count(NodeRole::Distributor))
        .map(|_| member())
        .collect();
    for n in nodes.iter().filter(|n| n.is_listed()) {
        if let (Some(id), NodeRole::Contributor | NodeRole::Hostile) = (n.client_id, n.role) {
            mesh.contributors.push(otpmesh_protocol::mesh::Contributor {
                client_id: otpmesh_protocol::phrase::ClientId(id),
                peer_id: libp2p::PeerId::random(),
                addrs: vec![],
            });
        }
    }
    mesh.validate()
        .map_err(|e| c.err(c.text.find("[settings]").unwrap_or(0), e.to_string(), None))
}

fn check_step(
    c: &Checker,
    at: usize,
    step: &Step,
    nodes: &[NodeSpec],
    names: &BTreeSet<&str>,
    threshold: bool,
) -> Result<(), SpecError> {
    let need = |name: &str, roles: &[NodeRole], what: &str| -> Result<(), SpecError> {
        match nodes.iter().find(|n| n.name == name) {
            None => Err(c.err(
                at,
                format!("{what} `{name}` is not a node of this scenario"),
                closest(name, names.iter().copied()),
            )),
            Some(n) if !roles.is_empty() && !roles.contains(&n.role) => Err(c.err(
                at,
                format!("{what} `{name}` is a {:?}, not a {}", n.role, what),
                None,
            )),
            Some(_) => Ok(()),
        }
    };
    let timeout = |t: &Option<u64>| match t {
        Some(ms) if *ms == 0 || *ms > MAX_TIMEOUT_MS => Err(c.err(
            at,
            format!("timeout_ms {ms} is outside 1 to {MAX_TIMEOUT_MS}"),
            None,
        )),
        _ => Ok(()),
    };
    match step {
        Step::Round {
            inputs, timeout_ms, ..
        } => {
            timeout(timeout_ms)?;
            for name in inputs.keys() {
                need(name, &[NodeRole::Contributor], "contributor")?;
            }
        }
        Step::Request {
            requester,
            distributor,
            ..
        }
        | Step::Verify {
            requester,
            distributor,
            ..
        } => {
            need(
                requester,
                &[NodeRole::Requester, NodeRole::Hostile],
                "requester",
            )?;
            match (threshold, distributor) {
                (false, Some(d)) => need(d, &[NodeRole::Distributor], "distributor")?,
                (false, None) => {
                    return Err(c.err(
                        at,
                        "this step needs the distributor to ask",
                        Some("add distributor = \"NAME\"".into()),
                    ))
                }
                (true, Some(_)) => {
                    return Err(c.err(
                        at,
                        "in threshold mode every distributor is asked: leave `distributor` out",
                        None,
                    ))
                }
                (true, None) => {}
            }
        }
        Step::Login {
            user,
            verifier,
            timeout_ms,
            ..
        } => {
            timeout(timeout_ms)?;
            need(user, &[NodeRole::Requester], "requester")?;
            need(verifier, &[NodeRole::Verifier], "verifier")?;
            if let Err(e) = otpmesh_protocol::mesh::UserName::new(user) {
                return Err(c.err(
                    at,
                    format!("`{user}` cannot be a user name: {e}"),
                    Some("user names are letters, digits and . _ @ + -".into()),
                ));
            }
        }
        Step::Kill { node } | Step::Heal { node } => need(node, &[], "node")?,
        Step::Restart { node, timeout_ms } => {
            need(node, &[], "node")?;
            timeout(timeout_ms)?;
        }
        Step::Partition { node, from } => {
            need(node, &[], "node")?;
            for peer in from.iter().flatten() {
                need(peer, &[], "peer")?;
                if peer == node {
                    return Err(c.err(
                        at,
                        format!("`{node}` cannot be partitioned from itself"),
                        None,
                    ));
                }
            }
        }
        Step::Inject {
            from,
            attack,
            timeout_ms,
            ..
        } => {
            timeout(timeout_ms)?;
            need(from, &[NodeRole::Hostile], "hostile peer")?;
            let n = nodes
                .iter()
                .find(|n| &n.name == from)
                .expect("checked above");
            if *attack == Attack::Unlisted && n.is_listed() {
                let hint = Some("declare the hostile node with listed = false".to_string());
                return Err(c.err(
                    at,
                    format!("attack `unlisted` needs an unlisted peer; `{from}` is listed"),
                    hint,
                ));
            }
            if matches!(
                attack,
                Attack::OtherKey | Attack::Replay | Attack::Duplicate
            ) && (!n.is_listed() || n.client_id.is_none())
            {
                let hint =
                    Some("give the hostile node a client_id and leave it listed".to_string());
                return Err(c.err(
                    at,
                    format!("attack `{attack:?}` needs a listed hostile contributor"),
                    hint,
                ));
            }
        }
        Step::Wait {
            node,
            timeout_ms,
            event,
            ..
        } => {
            timeout(timeout_ms)?;
            if let Some(node) = node {
                need(node, &[], "node")?;
            } else if *event == WaitFor::Listening {
                return Err(c.err(at, "wait for `listening` needs a node", None));
            }
        }
        Step::Expect(_) => {}
        Step::Password { .. } | Step::Beacon { .. } if !threshold => {
            return Err(c.err(
                at,
                format!(
                    "a `{}` step needs a threshold key, and this mesh has none: in \
                     single-generator mode the generator knows every round secret",
                    step.kind()
                ),
                Some("add threshold = \"T/N\" to [settings]".into()),
            ))
        }
        Step::Password {
            requester,
            length,
            alphabet,
            chars,
        } => {
            need(requester, &[NodeRole::Requester], "requester")?;
            let parsed = match (alphabet, chars) {
                (Some(_), Some(_)) => {
                    return Err(c.err(at, "give `alphabet` or `chars`, not both", None))
                }
                (_, Some(text)) => otpmesh_protocol::threshold::password::Alphabet::chars(text),
                (a, None) => otpmesh_protocol::threshold::password::Alphabet::classes(
                    a.as_deref().unwrap_or("lower,upper,digits,symbols"),
                ),
            };
            if let Err(e) = parsed {
                return Err(c.err(at, format!("{e}"), None));
            }
            let max = otpmesh_protocol::threshold::password::MAX_LENGTH;
            if !(1..=max).contains(length) {
                return Err(c.err(at, format!("length = {length}: between 1 and {max}"), None));
            }
        }
        Step::Beacon {
            rounds,
            export,
            timeout_ms,
        } => {
            timeout(timeout_ms)?;
            if rounds.is_empty() || rounds.len() > 1000 || rounds.contains(&0) {
                return Err(c.err(at, "`rounds` lists 1 to 1000 round numbers, from 1", None));
            }
            if let Some(node) = export {
                need(
                    node,
                    &[
                        NodeRole::Generator,
                        NodeRole::Distributor,
                        NodeRole::Contributor,
                    ],
                    "running node",
                )?;
            }
        }
        Step::KdcRegister {
            user,
            distributor,
            kdc_name,
            ..
        } => {
            need(user, &[NodeRole::Requester], "requester")?;
            need(distributor, &[NodeRole::Distributor], "distributor")?;
            let name = kdc_name.as_deref().unwrap_or(user);
            if let Err(e) = otpmesh_protocol::kdc::Name::new(name) {
                return Err(c.err(
                    at,
                    format!("{e}"),
                    Some("set `kdc_name` to a lowercase name".into()),
                ));
            }
        }
        Step::KdcSend {
            from,
            to,
            distributor,
            to_name,
            bytes,
            ..
        } => {
            need(from, &[NodeRole::Requester], "requester")?;
            need(to, &[NodeRole::Requester], "requester")?;
            need(distributor, &[NodeRole::Distributor], "distributor")?;
            for name in [from.as_str(), to.as_str(), to_name.as_deref().unwrap_or(to)] {
                if let Err(e) = otpmesh_protocol::kdc::Name::new(name) {
                    return Err(c.err(at, format!("{e}"), Some("use lowercase names".into())));
                }
            }
            if *bytes > 64 << 20 {
                return Err(c.err(
                    at,
                    format!("bytes = {bytes}: a scenario sends at most 64 MiB"),
                    None,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[settings]
quorum = 2
[[nodes]]
name = "gen"
role = "generator"
[[nodes]]
name = "dist"
role = "distributor"
[[nodes]]
name = "alice"
role = "contributor"
client_id = 1
input = 42
[[nodes]]
name = "bob"
role = "contributor"
client_id = 2
[[nodes]]
name = "req"
role = "requester"
[[steps]]
kind = "round"
inputs = { bob = "170141183460469231731687303715884105727" }
expect = { outcome = "sealed", includes = [1, 2] }
[[steps]]
kind = "request"
requester = "req"
distributor = "dist"
"#;

    fn parse_str(text: &str) -> Result<Scenario, SpecError> {
        parse(Path::new("t.toml"), text)
    }

    #[test]
    fn a_good_file_parses() {
        let s = parse_str(GOOD).unwrap();
        assert_eq!(s.nodes.len(), 5);
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[1].line, 27, "a step's line is its [[steps]] header");
        match &s.steps[0].step {
            Step::Round { inputs, .. } => assert_eq!(inputs["bob"], Integer(i128::MAX)),
            other => panic!("{other:?}"),
        }
    }

    fn error_of(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    #[test]
    fn login_steps_need_a_requester_a_verifier_and_known_choices() {
        let mesh = format!("{GOOD}[[nodes]]\nname = \"door\"\nrole = \"verifier\"\n");
        let login = |body: &str| format!("{mesh}[[steps]]\nkind = \"login\"\n{body}");
        let ok = parse_str(&login(
            "user = \"req\"\nverifier = \"door\"\nvia = \"http\"\ncode = \"again\"\n",
        ))
        .expect("a good login step");
        assert!(matches!(
            ok.steps.last().unwrap().step,
            Step::Login {
                via: Front::Http,
                code: LoginCode::Again,
                ..
            }
        ));
        let e = error_of(&login("user = \"req\"\nverifier = \"dist\"\n"));
        assert!(e.contains("verifier `dist` is a Distributor"), "{e}");
        let e = error_of(&login("user = \"alice\"\nverifier = \"door\"\n"));
        assert!(e.contains("requester `alice` is a Contributor"), "{e}");
        let e = error_of(&login(
            "user = \"req\"\nverifier = \"door\"\nvia = \"telnet\"\n",
        ));
        assert!(e.contains("telnet") && e.contains("radius"), "{e}");
        let e = error_of(&login(
            "user = \"req\"\nverifier = \"door\"\nexpect = { result = \"maybe\" }\n",
        ));
        assert!(
            e.contains("maybe") && e.contains("quorum_unavailable"),
            "{e}"
        );
    }

    /// `KINDS` names every kind `Step` takes, and nothing else: each one deserialises as far as its
    /// own keys (a missing field, never an unknown variant), and a kind not in it does not.
    #[test]
    fn the_kinds_listed_are_the_step_kinds() {
        let as_step = |kind: &str| {
            let mut table = toml::Table::new();
            table.insert("kind".into(), toml::Value::String(kind.into()));
            toml::Value::Table(table).try_into::<Step>()
        };
        for kind in KINDS {
            if let Err(e) = as_step(kind) {
                assert!(!e.message().contains("unknown variant"), "{kind}: {e}");
            }
        }
        let e = as_step("teleport").unwrap_err();
        assert!(e.message().contains("unknown variant"), "{e}");
        for kind in KINDS {
            let variants = e.message().matches(&format!("`{kind}`")).count();
            assert_eq!(variants, 1, "{kind} is a variant: {e}");
        }
        assert_eq!(
            e.message().matches('`').count(),
            2 * (KINDS.len() + 1),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_line_and_hint() {
        let e = error_of(&GOOD.replace("requester = \"req\"", "requester = \"reg\""));
        assert!(
            e.starts_with("t.toml:29:")
                && e.contains("`reg` is not a node")
                && e.contains("did you mean `req`?"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("kind = \"request\"", "kind = \"requets\""));
        assert!(
            e.contains("t.toml:28:")
                && e.contains("kinds: round")
                && e.contains("did you mean `request`?"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("input = 42", "input = 42\ncolour = \"red\""));
        assert!(e.contains("t.toml:16:") && e.contains("colour"), "{e}");
        let e = error_of(&GOOD.replace("quorum = 2", "quorum = \"two\""));
        assert!(e.contains("t.toml:3:") && e.contains("settings"), "{e}");
        let e = error_of(&GOOD.replace("quorum = 2", "quorum = 3"));
        assert!(
            e.contains("settings.quorum") && e.contains("3 is more than the 2"),
            "{e}"
        );
        let e = error_of(&GOOD.replace("client_id = 2", "client_id = 1"));
        assert!(e.contains("client id 1 is used twice"), "{e}");
        let e = error_of(&format!(
            "{GOOD}[[steps]]\nkind = \"kill\"\nnode = \"gen\"\ntimeout = 5\n"
        ));
        assert!(
            e.contains("t.toml:34:") && e.contains("unknown field `timeout`"),
            "{e}"
        );
        let e = error_of("[[nodes]\nname=");
        assert!(e.starts_with("t.toml:1:"), "{e}");
        let e = error_of(&format!(
            "{GOOD}[[steps]]\nkind = \"inject\"\nfrom = \"alice\"\nattack = \"replay\"\n"
        ));
        assert!(e.contains("hostile peer `alice` is a Contributor"), "{e}");
    }
}
