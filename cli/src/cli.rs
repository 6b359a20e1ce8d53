//! The command line, as clap sees it.

/// Every command's exit codes: one table, printed by `otpmesh --help` and copied in the README.
/// The failures a request can end in take theirs from `role::Failure::exit_code`; a test holds
/// the three to each other.
#[macro_export]
macro_rules! exit_codes {
    () => {
        "Exit codes (every command; its own --help says which it uses):
  0  done
  1  failed: refused, or an error the message names
  2  bad input: a flag, a file or a mesh config
  3  unreachable: no node answered in time
  4  not authorised, or does not verify
  5  no round sealed yet, or no such value
  6  quorum unavailable, or not a threshold mesh"
    };
}

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "otpmesh",
    version,
    about = "Peer-to-peer one-time passwords from many contributors, salted for each requester",
    after_help = concat!("Examples:\n  otpmesh mesh up --rounds 1\n  otpmesh request --distributor /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… --data-dir otpmesh-mesh/requester-1 --json\n  otpmesh node --role contributor --data-dir c1 --mesh mesh.toml --client-id 1 --peer /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…\n\n", exit_codes!())
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text or as JSON objects (one a line); RUST_LOG filters them.
    #[arg(long, global = true, value_enum, env = "OTPMESH_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Join a mesh as one role and run until Ctrl-C or SIGTERM.
    Node(NodeArgs),
    /// Local multi-node meshes of real processes on 127.0.0.1.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Ask a distributor for an OTP once, remove the salt, print it.
    Request(RequestArgs),
    /// Threshold mode: a password made by a quorum of distributors that only you see.
    Password(PasswordArgs),
    /// Threshold mode: your current login code and the seconds it has left, like an
    /// authenticator app (made by T distributors; no node holds its secret).
    Code(CodeArgs),
    /// Threshold mode: the public randomness beacon (read a node's chain, export it, verify it
    /// offline).
    #[command(subcommand)]
    Beacon(BeaconCommand),
    /// Present an OTP to the distributor that issued it: accepted once, before expiry.
    Verify(VerifyArgs),
    /// Enrol with a distributor by X25519 key exchange; later requests are salted under its
    /// recycled epoch keys. Enrolling again replaces the key.
    Enrol(EnrolArgs),
    /// Scripted scenario replays on real meshes.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Standard TOTP (RFC 6238), as authenticator apps and oathtool compute it.
    #[command(subcommand)]
    Totp(TotpCommand),
    /// Key distribution centre (a distributor): register a name, get a session key with another
    /// user, send them a file encrypted under it.
    #[command(subcommand)]
    Kdc(KdcCommand),
    /// Benchmarks, each against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the real role state machines over a simulated network in virtual time, from one seed,
    /// checking invariants as it goes (single mode).
    #[command(
        after_help = "Examples:\n  otpmesh sim --seed 7\n  otpmesh sim --seed 7 --threshold 3/5 --faults partition,crash\n  otpmesh sim --seed 7 --contributors 1000 --distributors 10 --requesters 1000 --faults loss=0.05,dup=0.01,partition,crash --json\n  otpmesh sim --swarm 100 --seconds 60\n\nThe same seed gives the same trace hash. Exit codes: 0 every invariant held, 1 a violation (the command that replays it is printed), 2 bad input."
    )]
    Sim(SimArgs),
    /// Ask running nodes how they are doing (over the control socket in their data dir).
    #[command(
        after_help = "Examples:\n  otpmesh status --data-dir otpmesh-mesh/distributor-1\n  otpmesh status --mesh otpmesh-mesh --json\n\nExit codes: 0 every node answered, 2 bad input, 3 a node did not answer (not running?)."
    )]
    Status(StatusArgs),
    /// Node configuration: check a config file, or show what a node would run with.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  otpmesh completions bash > ~/.local/share/bash-completion/completions/otpmesh\n  otpmesh completions zsh > ~/.zfunc/_otpmesh\n  otpmesh completions fish > ~/.config/fish/completions/otpmesh.fish"
    )]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    #[command(
        after_help = "Examples:\n  otpmesh man | man -l -\n  otpmesh man --dir /usr/local/share/man/man1"
    )]
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Every choice of the run follows from it (default: a random one, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value_t = 8)]
    pub contributors: u32,
    #[arg(long, default_value_t = 3)]
    pub distributors: u32,
    #[arg(long, default_value_t = 8)]
    pub requesters: u32,
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// OTP requests after each round (default: one per requester); each OTP is verified, then
    /// replayed.
    #[arg(long)]
    pub requests: Option<u32>,
    /// A comma list: loss=P, dup=P, partition, crash.
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Threshold mode, T/N: N generators and N distributors (--distributors is then N).
    #[arg(long, value_name = "T/N")]
    pub threshold: Option<otpmesh_protocol::mesh::Threshold>,
    #[arg(long, default_value_t = 2048)]
    pub rsa_bits: usize,
    /// Swarm testing: this many runs, each of a shape and faults drawn from its own seed (--seed,
    /// --seed + 1, …); every violation is printed with the command that replays it. The shape
    /// flags are then ignored.
    #[arg(long, value_name = "RUNS")]
    pub swarm: Option<u32>,
    /// With --swarm: stop starting runs after this many seconds of wall time.
    #[arg(long, default_value_t = 60, requires = "swarm")]
    pub seconds: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A node's data dir (repeatable).
    #[arg(long = "data-dir", required_unless_present = "mesh")]
    pub data_dirs: Vec<PathBuf>,
    /// Every node of a `mesh up` directory (its mesh.json).
    #[arg(long)]
    pub mesh: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a node config file: its keys and values, the addresses in it and the mesh config
    /// it names. Errors name the file, line and column.
    #[command(
        after_help = "Examples:\n  otpmesh config check node.toml\n  otpmesh config check node.toml --json\n\nExit codes: 0 valid, 2 not (the error says where)."
    )]
    Check(ConfigCheckArgs),
    /// Print the settings `otpmesh node` would run with, given these flags, the OTPMESH_*
    /// variables and the --config file, each with where it came from (a valid config file).
    #[command(
        after_help = "Examples:\n  otpmesh config show --config node.toml\n  OTPMESH_ROLE=distributor otpmesh config show --config node.toml --listen /ip4/0.0.0.0/tcp/4001"
    )]
    Show(Box<NodeArgs>),
}

#[derive(Args, Debug)]
pub struct ConfigCheckArgs {
    /// The node config file (TOML).
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write otpmesh.1 and one otpmesh-COMMAND.1 page per subcommand here instead of printing
    /// the top page.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum BeaconCommand {
    /// Print a beacon value (the newest, or --round R's) with what proves it.
    #[command(
        after_help = "Examples:\n  otpmesh beacon get --data-dir otpmesh-mesh/requester-1\n  otpmesh beacon get --data-dir otpmesh-mesh/distributor-2 --round 4 --json\n\nAsks the node running on DATA_DIR (its control socket), or reads its store if none runs.\nExit codes: 0 printed, 2 bad input, 3 no node or store there, 5 no such value (yet), 6 not a threshold mesh."
    )]
    Get(BeaconGetArgs),
    /// Write the node's newest run of linked beacon values, with their rounds' transcripts, as
    /// JSON: everything `otpmesh beacon verify` needs, and nothing secret.
    #[command(
        after_help = "Examples:\n  otpmesh beacon export --data-dir otpmesh-mesh/requester-1 --out chain.json\n\nExit codes: 0 written, 2 bad input, 3 no node or store there, 5 no values yet, 6 not a threshold mesh."
    )]
    Export(BeaconExportArgs),
    /// Check an exported chain (or one `beacon get --json` value) offline, from public data only:
    /// each transcript's commitment and link, each partial's proof against its round's key, each
    /// value, each value's link to the one before.
    #[command(
        after_help = "Examples:\n  otpmesh beacon verify chain.json\n  otpmesh beacon verify chain.json --head 5f3a…   (the newest round's transcript commitment, as any node reports it)\n\nExit codes: 0 valid, 2 unreadable or not a beacon file, 4 does not verify (the error names the round and what is wrong)."
    )]
    Verify(BeaconVerifyArgs),
}

#[derive(Args, Debug)]
pub struct BeaconGetArgs {
    /// The node's data dir.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This round's value instead of the newest.
    #[arg(long)]
    pub round: Option<u64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BeaconExportArgs {
    /// The node's data dir.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Write here (0644; the chain is public) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BeaconVerifyArgs {
    /// An exported chain, or one value from `beacon get --json`.
    pub file: PathBuf,
    /// The transcript commitment the newest entry must have (hex): ties the file to the mesh you
    /// trust, as a drand chain hash does.
    #[arg(long)]
    pub head: Option<String>,
    /// The mesh config: every entry's round key must then carry its coordinator's signature for
    /// that round and transcript (the coordinator's PeerId holds its public key), and be of the
    /// mesh's T/N. Ties the file to the mesh without trusting a node.
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum KdcCommand {
    /// Register NAME with the centre under a passphrase (Argon2id; the passphrase never leaves
    /// this machine). Registering a taken name again needs its current passphrase.
    #[command(
        after_help = "Examples:\n  otpmesh kdc register --distributor /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… --data-dir otpmesh-mesh/requester-1 --name alice\n  otpmesh kdc register … --name alice --passphrase-file new.txt --old-passphrase-file old.txt\n\nExit codes: 0 registered, 2 bad input, 3 centre unreachable, 4 refused (name taken, wrong passphrase, not a listed requester)."
    )]
    Register(KdcRegisterArgs),
    /// Send FILE to the registered user --to: asks the centre for a session key and a ticket, shows
    /// the ticket to the receiver, checks its answer, sends the file in sealed chunks and checks the
    /// receiver's receipt of the whole file.
    #[command(
        after_help = "Examples:\n  otpmesh kdc send --distributor /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… --data-dir otpmesh-mesh/requester-1 --name alice --to bob --file report.pdf\n\nThe receiver must be running `otpmesh kdc receive` first.\nExit codes: 0 delivered, 1 the exchange failed, 2 bad input, 3 unreachable, 4 refused by the centre."
    )]
    Send(KdcSendArgs),
    /// Receive one file as --name: tells the centre where this receiver listens, accepts the first
    /// exchange whose ticket and authenticator check out (refusing others), writes --out (0600).
    #[command(
        after_help = "Examples:\n  otpmesh kdc receive --distributor /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… --data-dir otpmesh-mesh/requester-2 --name bob --out report.pdf\n\nWith --json, one line per event: ready, refused, received.\nExit codes: 0 received, 1 stopped or failed (a signal, the disk), 2 bad input, 3 unreachable or timed out, 4 refused by the centre (e.g. wrong passphrase)."
    )]
    Receive(KdcReceiveArgs),
}

#[derive(Args, Debug)]
pub struct KdcUserArgs {
    /// The centre (a distributor), ending in /p2p/<peer id>.
    #[arg(long)]
    pub distributor: String,
    /// This user's data dir (its identity must be a listed requester).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This user's registered name.
    #[arg(long)]
    pub name: String,
    /// Read the passphrase from this file (first line) instead of the terminal.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
pub struct KdcRegisterArgs {
    #[command(flatten)]
    pub user: KdcUserArgs,
    /// The name's current passphrase, to register it again (from the terminal if not given and
    /// the name is taken).
    #[arg(long)]
    pub old_passphrase_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct KdcSendArgs {
    #[command(flatten)]
    pub user: KdcUserArgs,
    /// The registered name to send to.
    #[arg(long)]
    pub to: String,
    /// The file to send (at most 1 GiB).
    #[arg(long)]
    pub file: PathBuf,
    /// One of your otpmesh OTPs from this distributor, as pre-authentication (required when the
    /// mesh sets kdc_require_otp).
    #[arg(long)]
    pub otp: Option<String>,
}

#[derive(Args, Debug)]
pub struct KdcReceiveArgs {
    #[command(flatten)]
    pub user: KdcUserArgs,
    /// Where to write the file (written beside it first, moved into place once whole and checked).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to listen for the sender.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    pub listen: String,
    /// Clock skew allowed between sender and receiver (and ticket expiry grace); at most 1h.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_skew: std::time::Duration,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Round latency (open → sealed and delivered) for k contributors vs the RSA decryption floor.
    #[command(
        after_help = "Examples:\n  otpmesh bench round\n  otpmesh bench round --k 4,16 --mode in-process --json round.json"
    )]
    Round(BenchRoundArgs),
    /// Meshes of N processes: time to form, RSS per node, gossip propagation.
    #[command(
        after_help = "Examples:\n  otpmesh bench mesh\n  otpmesh bench mesh --nodes 10 --rounds 3 --json mesh.json"
    )]
    Mesh(BenchMeshArgs),
    /// OTPs per second and latency at one distributor vs a plain TCP server, same run.
    #[command(
        after_help = "Examples:\n  otpmesh bench serve\n  otpmesh bench serve --concurrency 64 --seconds 5 --json serve.json --plot serve.svg"
    )]
    Serve(BenchServeArgs),
    /// Phrases per second a generator accepts with every core busy vs the decryption ceiling.
    #[command(
        after_help = "Examples:\n  otpmesh bench ingest\n  otpmesh bench ingest --phrases 512 --json ingest.json --plot ingest.svg"
    )]
    Ingest(BenchIngestArgs),
    /// Sustained rounds, OTPs and verifications at a fraction of the measured maximum: passes
    /// only with zero errors and memory flat after warm-up.
    #[command(
        after_help = "Examples:\n  otpmesh bench soak --duration 10m\n  otpmesh bench soak --duration 45s --json soak.json --plot soak.svg"
    )]
    Soak(BenchSoakArgs),
    /// Checks per second and p50/p99 through a verifier's RADIUS front at several concurrencies,
    /// single and threshold mode, beside a plain UDP request/response of the same sizes, same run.
    #[command(
        after_help = "Examples:\n  otpmesh bench verify\n  otpmesh bench verify --clients 1,8,64 --requests 512 --json verify.json"
    )]
    Verify(BenchVerifyArgs),
    /// Threshold mode's cryptography (partial evaluation, the requester's combination for
    /// several t, round setup) beside single mode's work for the same jobs, same run.
    #[command(
        after_help = "Examples:\n  otpmesh bench threshold\n  otpmesh bench threshold --t 3,9,33 --contributors 64 --generators 16 --json threshold.json"
    )]
    Threshold(BenchThresholdArgs),
    /// The simulator at scale: single mode for several contributor counts, threshold mode for
    /// several N, beside the RSA decryptions each run needs (measured now).
    #[command(
        after_help = "Examples:\n  otpmesh bench sim\n  otpmesh bench sim --contributors 1000,3000,10000 --thresholds 3/4,5/8,9/16 --plot docs/bench/sim.svg --json sim.json"
    )]
    Sim(BenchSimArgs),
    /// The generator's private-key operation (RSA OAEP-SHA256 decryption) in each backend, on
    /// the same key and ciphertexts: rsa 0.9.10, AWS-LC (in use) and, built with
    /// `--features bench-rsa-0-10`, rsa 0.10.0.
    #[command(
        after_help = "Examples:\n  otpmesh bench rsa\n  otpmesh bench rsa --decryptions 500 --json rsa.json"
    )]
    Rsa(BenchRsaArgs),
    /// The serve suite's baseline server (started by `bench serve`).
    #[command(hide = true)]
    TcpBaseline(TcpBaselineArgs),
}

/// Where a benchmark writes its results, besides its table.
#[derive(Args, Debug)]
pub struct BenchOutput {
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the results as an SVG plot.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// Concurrent requesters, comma-separated.
    #[arg(long, default_value = "1,8,64")]
    pub concurrency: String,
    /// Seconds of load per level, for otpmesh and for the baseline each.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Debug)]
pub struct BenchRsaArgs {
    /// Ciphertexts opened per backend and pass (and as many that must fail).
    #[arg(long, default_value_t = 200)]
    pub decryptions: usize,
    /// RSA key size.
    #[arg(long, default_value_t = 2048)]
    pub bits: usize,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Debug)]
pub struct BenchIngestArgs {
    /// Phrases per round (one contributor each).
    #[arg(long, default_value_t = 256)]
    pub phrases: u32,
    /// Rounds measured.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Debug)]
pub struct BenchSoakArgs {
    /// How long the load runs (e.g. 45s, 10m).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// The load as a fraction of the calibrated maximum.
    #[arg(long, default_value_t = 0.8)]
    pub load: f64,
    /// Seconds of back-to-back load that measure the maximum (after as many unmeasured).
    #[arg(long, default_value_t = 5.0)]
    pub calibrate_secs: f64,
    /// Seconds between rounds during the soak.
    #[arg(long, default_value_t = 5.0)]
    pub round_every_secs: f64,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Debug)]
pub struct BenchThresholdArgs {
    /// Thresholds for the requester's combination (n = 2t − 1 each), comma-separated.
    #[arg(long, default_value = "3,9,33")]
    pub t: String,
    /// Contributors in the round-setup measurement.
    #[arg(long, default_value_t = 64)]
    pub contributors: u32,
    /// Generators (n) in the round-setup measurement; t = n/2 + 1.
    #[arg(long, default_value_t = 16)]
    pub generators: u32,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Debug)]
pub struct BenchVerifyArgs {
    /// Concurrent RADIUS clients, comma-separated.
    #[arg(long, default_value = "1,8,64")]
    pub clients: String,
    /// Checks per concurrency level and mode (bounded: at most 10 000).
    #[arg(long, default_value_t = 256)]
    pub requests: u32,
    /// Users (requesters) the checks rotate over.
    #[arg(long, default_value_t = 8)]
    pub users: u32,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Debug)]
pub struct TcpBaselineArgs {
    /// Body bytes of every answer.
    #[arg(long)]
    pub response_bytes: usize,
}

#[derive(Args, Debug)]
pub struct BenchMeshArgs {
    /// Mesh sizes (processes), comma-separated.
    #[arg(long, default_value = "10,25,50")]
    pub nodes: String,
    /// Rounds per mesh (each gives one propagation sample per contributor).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Debug)]
pub struct BenchSimArgs {
    /// Single mode: contributor counts (as many requesters), comma-separated.
    #[arg(long, default_value = "100,300,1000")]
    pub contributors: String,
    /// Single mode: distributors.
    #[arg(long, default_value_t = 100)]
    pub distributors: u32,
    /// Threshold mode: T/N settings, comma-separated (empty: none).
    #[arg(long, default_value = "3/4,5/8")]
    pub thresholds: String,
    /// Threshold mode: contributors (as many requesters).
    #[arg(long, default_value_t = 100)]
    pub threshold_contributors: u32,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Debug)]
pub struct BenchRoundArgs {
    /// Contributor counts, comma-separated.
    #[arg(long, default_value = "4,16,64,256")]
    pub k: String,
    /// Rounds per mesh.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// both, in-process or processes.
    #[arg(long, default_value = "both")]
    pub mode: String,
    /// Also measure a threshold mesh of N generators and N distributors (T/N), beside single mode.
    #[arg(long, value_name = "T/N")]
    pub threshold: Option<otpmesh_protocol::mesh::Threshold>,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Subcommand, Debug)]
pub enum TotpCommand {
    /// Print the TOTP code of a Base32 secret (a local calculator: offline use and testing).
    #[command(
        after_help = "Examples:\n  otpmesh totp code --secret JBSWY3DPEHPK3PXP\n  otpmesh totp code --secret GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ --time 59 --digits 8 --algorithm sha1"
    )]
    Code(TotpCodeArgs),
    /// Get a TOTP token from a distributor: prints an otpauth:// URI and a QR code to scan.
    #[command(
        after_help = "Examples:\n  otpmesh totp enrol --distributor /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… --data-dir otpmesh-mesh/requester-1 --qr-png token.png"
    )]
    Enrol(TotpEnrolArgs),
    /// Present a TOTP code to the distributor that issued the token (once per time step).
    Verify(TotpVerifyArgs),
}

#[derive(Args, Debug)]
pub struct TotpEnrolArgs {
    /// The distributor, ending in /p2p/<peer id>.
    #[arg(long)]
    pub distributor: String,
    /// The requester's data dir.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Issuer shown in the authenticator.
    #[arg(long, default_value = "otpmesh")]
    pub issuer: String,
    /// Account shown in the authenticator (default: the requester's PeerId).
    #[arg(long)]
    pub account: Option<String>,
    /// Also write the QR code as a PNG.
    #[arg(long)]
    pub qr_png: Option<PathBuf>,
    /// Print {"uri": …} instead of the QR code.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
pub struct TotpVerifyArgs {
    #[arg(long)]
    pub distributor: String,
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The code from the authenticator.
    #[arg(long)]
    pub code: String,
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
pub struct TotpCodeArgs {
    /// The shared secret, Base32 (RFC 4648; padding, case and spaces do not matter).
    #[arg(long)]
    pub secret: String,
    /// Unix time to compute the code for (default: now).
    #[arg(long)]
    pub time: Option<u64>,
    /// Code length, 6 to 10.
    #[arg(long, default_value_t = 6)]
    pub digits: u8,
    /// sha1, sha256 or sha512.
    #[arg(long, default_value = "sha1")]
    pub algorithm: String,
    /// Seconds per step.
    #[arg(long, default_value_t = 30)]
    pub period: u64,
    /// Unix time the steps count from.
    #[arg(long, default_value_t = 0)]
    pub t0: u64,
}

#[derive(Subcommand, Debug)]
pub enum ScenarioCommand {
    /// Replay a scenario: start its mesh, run its steps, judge every expectation.
    Run(ScenarioRunArgs),
    /// Check a scenario file without starting anything.
    Check { file: PathBuf },
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  otpmesh scenario run scenarios/quickstart.toml\n  otpmesh scenario run scenarios/faults.toml --seed 7 --json --report report.json\n\nExit code 0 if and only if every step's expectation held; 2 for a malformed file."
)]
pub struct ScenarioRunArgs {
    /// The scenario file (TOML; see scenarios/README.md).
    pub file: PathBuf,
    /// Seed for every random choice (keys, phrases, salts, inputs not given): same seed, same
    /// commitments and OTPs. Default: the file's `seed`, else a random one (printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the JSON report instead of the story.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Run every node inside this process instead of as child processes.
    #[arg(long, conflicts_with = "sim")]
    pub in_process: bool,
    /// Run every node's state machine on the simulator, in virtual time: the real roles, keys
    /// and stores over a simulated network (no sockets; a kdc step needs them and fails).
    #[arg(long)]
    pub sim: bool,
    /// Where the nodes' data and logs go (default: a temporary dir, removed after a clean run).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Contributor,
    Generator,
    Distributor,
    Requester,
    /// The door of the services where codes are typed: RADIUS and HTTP fronts.
    Verifier,
}

#[derive(Args, Debug, Default)]
#[command(
    after_help = "Examples:\n  otpmesh node --role generator --data-dir gen --mesh mesh.toml --listen /ip4/0.0.0.0/tcp/4001\n  otpmesh node --role contributor --data-dir c1 --mesh mesh.toml --client-id 1 --peer /ip4/10.0.0.5/tcp/4001/p2p/12D3KooW…\n  otpmesh node --config node.toml\n\nEvery setting can come from a flag, an OTPMESH_* variable (named beside each flag; lists\ncomma-separated) or the --config file (the key is the variable's name without OTPMESH_, in\nlower case); in that order of precedence, then the default. `otpmesh config show` prints the\nresult and where each value came from.\n\nA contributor without --input or --input-file asks for an integer on the terminal each round."
)]
pub struct NodeArgs {
    /// The role this node plays.
    #[arg(long, value_enum, env = "OTPMESH_ROLE")]
    pub role: Option<Role>,
    /// Keys, database and state of this node (created 0700 if missing).
    #[arg(long, env = "OTPMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (repeatable). Default: /ip4/127.0.0.1/tcp/0.
    #[arg(long = "listen", env = "OTPMESH_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Peer to dial and stay connected to, e.g. /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… (repeatable).
    #[arg(long = "peer", env = "OTPMESH_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// The mesh config: who may do what, shared settings (TOML).
    #[arg(long, env = "OTPMESH_MESH")]
    pub mesh: Option<PathBuf>,
    /// A node config file (TOML) with any of these settings as keys; flags and variables win
    /// over it.
    #[arg(long, env = "OTPMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Contributor: this node's client id.
    #[arg(long, env = "OTPMESH_CLIENT_ID")]
    pub client_id: Option<u32>,
    /// Contributor: the integer to contribute every round.
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "OTPMESH_INPUT",
        hide_env_values = true
    )]
    pub input: Option<String>,
    /// Contributor: read the integer from this file (keeps it out of the process list).
    #[arg(long, env = "OTPMESH_INPUT_FILE")]
    pub input_file: Option<PathBuf>,
    /// Requester: distributor PeerIds to ask (default: every listed distributor).
    #[arg(
        long = "distributor",
        env = "OTPMESH_DISTRIBUTORS",
        value_delimiter = ','
    )]
    pub distributors: Vec<String>,
    /// Admit unlisted requesters and contributors (open membership).
    #[arg(long, env = "OTPMESH_OPEN", value_parser = BoolishValueParser::new())]
    pub open: bool,
    /// Discover peers on the local network with mDNS.
    #[arg(long, env = "OTPMESH_MDNS", value_parser = BoolishValueParser::new())]
    pub mdns: bool,
    /// Print events as JSON lines.
    #[arg(long, env = "OTPMESH_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Read control instructions as JSON lines on stdin (how `scenario run` steers its nodes).
    #[arg(long, env = "OTPMESH_CONTROL_STDIN", value_parser = BoolishValueParser::new())]
    pub control_stdin: bool,
    /// Generator: open rounds only when told to on the control channel.
    #[arg(long, env = "OTPMESH_MANUAL_ROUNDS", value_parser = BoolishValueParser::new())]
    pub manual_rounds: bool,
    /// Draw every random choice from this seed (reproducible replays; never for real secrets).
    #[arg(long, env = "OTPMESH_SEED")]
    pub seed: Option<u64>,
    /// Serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9464 (port 0: any).
    #[arg(long, env = "OTPMESH_METRICS", value_name = "IP:PORT")]
    pub metrics: Option<String>,
    /// Verifier: answer RADIUS Access-Requests (PAP) on this UDP address, e.g. 127.0.0.1:1812.
    #[arg(long, env = "OTPMESH_RADIUS", value_name = "IP:PORT")]
    pub radius: Option<String>,
    /// Verifier: the RADIUS clients and their shared secrets, a 0600 TOML file of
    /// `[[clients]] address, secret, require_message_authenticator (default true), rate_per_s`.
    /// Default: radius-clients.toml in the data dir.
    #[arg(long, env = "OTPMESH_RADIUS_CLIENTS", value_name = "FILE")]
    pub radius_clients: Option<PathBuf>,
    /// Verifier: serve POST /validate/check on this TCP address (loopback unless
    /// --http-allow-remote), e.g. 127.0.0.1:8080.
    #[arg(long, env = "OTPMESH_HTTP", value_name = "IP:PORT")]
    pub http: Option<String>,
    /// Verifier: the relying parties' bearer tokens, a 0600 TOML file of `[[parties]] name, token`.
    /// Default: http-tokens.toml in the data dir.
    #[arg(long, env = "OTPMESH_HTTP_TOKENS", value_name = "FILE")]
    pub http_tokens: Option<PathBuf>,
    /// Verifier: let --http listen on an address other than loopback.
    #[arg(long, env = "OTPMESH_HTTP_ALLOW_REMOTE", value_parser = BoolishValueParser::new())]
    pub http_allow_remote: bool,
}

#[derive(Subcommand, Debug)]
pub enum MeshCommand {
    /// Start a local mesh of real child processes, each with its own data dir and log.
    Up(MeshUpArgs),
    /// Every node of a running `mesh up`: role, state (running, exited, restarting), pid, peer id.
    Status(MeshSteerArgs),
    /// SIGKILL one node of a running mesh (as a scenario's kill step); the others keep running.
    Kill(MeshNodeArgs),
    /// Start a node of a running mesh again, with its own identity and data (killing it first if
    /// it runs); returns once it listens.
    Restart(MeshNodeArgs),
    /// Cut nodes off from others, both ways (as a scenario's partition step).
    #[command(
        after_help = "Examples:\n  otpmesh mesh partition distributor-1 --dir otpmesh-mesh\n  otpmesh mesh partition distributor-2 --from requester-1 --from contributor-1 --dir otpmesh-mesh"
    )]
    Partition(MeshPartitionArgs),
    /// Undo partitions: of the nodes named, or all of them.
    Heal(MeshHealArgs),
    /// Ask the generator to open a round now; prints the round that opened.
    Round(MeshSteerArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Talks to the mesh up running in DIR over DIR/control.sock (0600).\n\nExit codes: 0 done; 1 refused (the reason is printed) or no mesh up answers in DIR."
)]
pub struct MeshSteerArgs {
    /// The directory of the running mesh (mesh up --dir).
    #[arg(long, default_value = "otpmesh-mesh")]
    pub dir: PathBuf,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MeshNodeArgs {
    /// The node's name, as mesh.json and mesh status give it (distributor-1, …).
    pub node: String,
    #[command(flatten)]
    pub steer: MeshSteerArgs,
}

#[derive(Args, Debug)]
pub struct MeshPartitionArgs {
    /// The nodes to cut off.
    #[arg(required = true)]
    pub nodes: Vec<String>,
    /// Whom from (repeat the flag; default: every other node).
    #[arg(long)]
    pub from: Vec<String>,
    #[command(flatten)]
    pub steer: MeshSteerArgs,
}

#[derive(Args, Debug)]
pub struct MeshHealArgs {
    /// The nodes whose partitions end (default: all).
    pub nodes: Vec<String>,
    #[command(flatten)]
    pub steer: MeshSteerArgs,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  otpmesh mesh up --rounds 1\n  otpmesh mesh up --contributors 8 --distributors 2 --dir /tmp/mesh\n\nWrites DIR/mesh.json (every node's name, role, peer_id, listen, pid, state, data_dir, log, restart argv)\nand DIR/mesh.toml (the mesh config every node uses). A node that dies is reported and marked exited;\nthe rest keep running. Steer the running mesh from another terminal:\n  otpmesh mesh status|kill NAME|restart NAME|partition NAME… [--from NAME…]|heal [NAME…]|round --dir DIR"
)]
pub struct MeshUpArgs {
    /// Threshold mode, T/N: N generators deal key shares to N distributors and any T of the
    /// distributors make an OTP together (T > N/2). Sets --generators and --distributors to N.
    #[arg(long, value_name = "T/N")]
    pub threshold: Option<otpmesh_protocol::mesh::Threshold>,
    #[arg(long, default_value_t = 4)]
    pub contributors: u32,
    #[arg(long, default_value_t = 1)]
    pub generators: u32,
    #[arg(long, default_value_t = 1)]
    pub distributors: u32,
    #[arg(long, default_value_t = 1)]
    pub requesters: u32,
    /// Verifier nodes: each answers RADIUS (PAP) and POST /validate/check on 127.0.0.1 for every
    /// requester, by its node name (requester-1, …); mesh.json names their ports and secret files.
    #[arg(long, default_value_t = 0)]
    pub verifiers: u32,
    /// Verifiers: RADIUS requests per second accepted from 127.0.0.1 (bursts of twice that).
    #[arg(long, default_value_t = otpmesh_node::verifier::DEFAULT_RATE_PER_S)]
    pub radius_rate_per_s: u32,
    /// Threshold mode: the time step of login codes (`otpmesh code`), in seconds (15 to 300).
    #[arg(long, default_value_t = 30)]
    pub code_period_s: u64,
    /// Exit 0 after this many rounds are sealed and delivered (default: run until Ctrl-C).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Where the mesh lives.
    #[arg(long, default_value = "otpmesh-mesh")]
    pub dir: PathBuf,
    /// Phrases that seal a round (default: all contributors).
    #[arg(long)]
    pub quorum: Option<u32>,
    /// How long a round stays open, in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    pub deadline_ms: u64,
    /// Pause between rounds, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub interval_ms: u64,
    /// Requests a node serves per peer per second (bursts of twice that); a peer that keeps on
    /// past the limit is penalised.
    #[arg(long, default_value_t = otpmesh_protocol::mesh::Settings::default().requests_per_peer_s)]
    pub requests_per_peer_s: u32,
    /// Generator RSA key size.
    #[arg(long, default_value_t = 2048)]
    pub rsa_bits: usize,
    /// Give up if the rounds asked for are not delivered within this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Print mesh events as JSON lines instead of progress.
    #[arg(long)]
    pub json: bool,
    /// Every node serves Prometheus metrics on a port of its own (mesh.json lists the URLs).
    #[arg(long)]
    pub metrics: bool,
    /// Start a node that dies again, with its own identity and data, after a backoff that
    /// doubles from 1 s up to 30 s (a node killed with `mesh kill` stays down).
    #[arg(long)]
    pub restart_on_exit: bool,
    /// Serve a live, read-only page of the mesh on ADDR (loopback only; without ADDR,
    /// 127.0.0.1 on a port the kernel picks). mesh.json names its URL as `ui`.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::cmd::mesh::ui::DEFAULT_ADDR)]
    pub ui: Option<std::net::SocketAddr>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  otpmesh password --distributor A --distributor B --distributor C --data-dir otpmesh-mesh/requester-1\n  otpmesh password … --length 32 --alphabet lower,digits --json\n  otpmesh password … --chars 'abcdef0123456789'\n\nYou blind a 256-bit random input; every distributor evaluates it under its share of the round's\npassword key with an RFC 9497 proof, seeing one random point; T of them combine, you unblind, and\nthe output only you hold is mapped to the alphabet without modulo bias. A\nsingle-generator mesh refuses: there one distributor holds the whole round secret.\n\nExit codes: 0 password printed; 6 quorum unavailable (or not a threshold mesh); 3 unreachable; 1 other errors."
)]
pub struct PasswordArgs {
    /// Every distributor of the threshold mesh, each ending in /p2p/<peer id> (repeat the flag;
    /// default: the mesh config's).
    #[arg(long)]
    pub distributor: Vec<String>,
    /// Threshold mode: the mesh config, whose T/N, coordinator and distributor order decide what
    /// is believed (default: mesh.toml beside the data dir, as `mesh up` lays it out).
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// The requester's data dir (its identity.key is used).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Characters in the password.
    #[arg(long, default_value_t = otpmesh_protocol::threshold::password::DEFAULT_LENGTH)]
    pub length: usize,
    /// Character classes, comma-separated: lower, upper, digits, symbols.
    #[arg(
        long,
        default_value = "lower,upper,digits,symbols",
        conflicts_with = "chars"
    )]
    pub alphabet: String,
    /// Exactly these characters instead of classes.
    #[arg(long)]
    pub chars: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  otpmesh code --data-dir otpmesh-mesh/requester-1\n  otpmesh code --data-dir otpmesh-mesh/requester-1 --watch\n\nThe code of the current time step (the mesh's code_period_s, 30 s by default; code_digits, 6):\nT distributors each answer a partial with a proof, masked for you, under the round key a published\nrule picks; you combine them. Type it where a verifier checks it (RADIUS, /validate/check): it is\naccepted once. The distributors come from the mesh config (default: mesh.toml beside the data dir).\n\nExit codes: 0 code printed; 6 quorum unavailable; 2 no threshold mesh config; 3 unreachable; 1 other errors."
)]
pub struct CodeArgs {
    /// The requester's data dir (its identity.key is used).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The mesh config (default: mesh.toml beside the data dir, as `mesh up` lays it out).
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// A distributor to ask instead of the mesh config's (repeatable; each ending in /p2p/<peer id>).
    #[arg(long)]
    pub distributor: Vec<String>,
    /// Show a new code every step until Ctrl-C (or --count codes).
    #[arg(long)]
    pub watch: bool,
    /// With --watch: stop after this many codes.
    #[arg(long)]
    pub count: Option<u32>,
    #[arg(long)]
    pub json: bool,
    /// Give up on one code after this many seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  otpmesh enrol --distributor /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… --data-dir otpmesh-mesh/requester-1\n\nThe key is kept in DATA_DIR/enrolments/<distributor>.key (0600) and moves to a new epoch key as\ntime passes (the mesh's epoch_ms, 1 hour by default); older epochs' keys are forgotten."
)]
pub struct EnrolArgs {
    /// The distributor, ending in /p2p/<peer id>.
    #[arg(long)]
    pub distributor: String,
    /// The requester's data dir.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  otpmesh verify --distributor /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… --data-dir otpmesh-mesh/requester-1 --otp 48213377\n  otpmesh verify … --json   # {\"result\":\"accepted\",…}\n\nResults: accepted (exit 0), used, expired, wrong, locked (exit 1); 3 unreachable, 4 not authorised."
)]
pub struct VerifyArgs {
    /// The distributor that issued the OTP, ending in /p2p/<peer id>. With --threshold, every
    /// distributor of the mesh (repeat the flag).
    #[arg(long, required = true)]
    pub distributor: Vec<String>,
    /// Threshold mode: gather a quorum of partials for (--round, --counter) and compare. Each
    /// distributor marks the OTP used before it answers, so an OTP is accepted at most once.
    #[arg(long, requires_all = ["round", "counter"])]
    pub threshold: bool,
    /// Threshold mode: the OTP's round, as `otpmesh request --threshold` printed it.
    #[arg(long)]
    pub round: Option<u64>,
    /// Threshold mode: the OTP's counter, as `otpmesh request --threshold` printed it.
    #[arg(long)]
    pub counter: Option<u64>,
    /// Threshold mode: the mesh config, whose T/N, coordinator and distributor order decide what
    /// is believed (default: mesh.toml beside the data dir, as `mesh up` lays it out).
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// The requester's data dir (the OTP is checked for this identity).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The OTP, as printed by `otpmesh request`.
    #[arg(long)]
    pub otp: String,
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  otpmesh request --data-dir otpmesh-mesh/requester-1   # the distributors from otpmesh-mesh/mesh.toml\n  otpmesh request --distributor /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… --data-dir otpmesh-mesh/requester-1\n  otpmesh request --distributor … --data-dir … --json   # {\"otp\":\"…\",\"round\":3,\"expires_at\":\"…\",…}\n\nThreshold mode:\n  otpmesh request --threshold --distributor A --distributor B --distributor C … --data-dir …\n\nExit codes: 0 OTP printed; 3 distributor unreachable; 4 not authorised; 5 no round sealed yet; 6 quorum unavailable (threshold mode); 1 other errors."
)]
pub struct RequestArgs {
    /// A distributor's address, ending in /p2p/<peer id>, for a one-off (default: the mesh
    /// config's distributors). With --threshold, name every distributor (repeat the flag).
    #[arg(long)]
    pub distributor: Vec<String>,
    /// Threshold mode: ask every --distributor for a partial and combine a quorum of them.
    #[arg(long)]
    pub threshold: bool,
    /// The mesh config: where the distributors are, and in threshold mode whose T/N,
    /// coordinator and distributor order decide what is believed (default: mesh.toml beside the
    /// data dir, as `mesh up` lays it out).
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// The requester's data dir (its identity.key is used; created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 20)]
    pub timeout_secs: u64,
    /// Draw the exchange's randomness from this seed (reproducible replays only).
    #[arg(long)]
    pub seed: Option<u64>,
}

#[cfg(test)]
mod exit_code_tests {
    use clap::CommandFactory;
    use otpmesh_protocol::role::Failure;

    /// The words a failure's row says (a new failure must be given a row).
    fn words(failure: Failure) -> &'static str {
        match failure {
            Failure::Unreachable => "unreachable",
            Failure::Unauthorised => "not authorised",
            Failure::NoRound => "no round",
            Failure::QuorumUnavailable => "quorum unavailable",
            Failure::Refused => "refused",
        }
    }

    #[test]
    fn one_exit_code_table_for_the_failures_the_help_and_the_readme() {
        let table = exit_codes!();
        for failure in [
            Failure::Unreachable,
            Failure::Unauthorised,
            Failure::NoRound,
            Failure::QuorumUnavailable,
            Failure::Refused,
        ] {
            let start = format!("  {}  ", failure.exit_code());
            let row = table
                .lines()
                .find(|l| l.starts_with(&start))
                .unwrap_or_else(|| panic!("no row for {failure:?} ({start:?})"));
            assert!(row.contains(words(failure)), "{failure:?}: {row}");
        }
        let help = super::Cli::command().render_long_help().to_string();
        assert!(help.contains(table), "{help}");
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(table),
            "README.md copies the table as --help prints it"
        );
    }
}
