//! Each subcommand: parse into a config, build, run, print.

pub mod beacon;
pub mod code;
pub mod config;
pub mod enrol;
pub mod kdc;
pub mod mesh;
pub mod node;
pub mod password;
pub mod request;
pub mod shell;
pub mod sim;
pub mod status;
pub mod totp;
pub mod verify;

pub use mesh::free_ports as mesh_ports;

use crate::cli::{
    BeaconCommand, BenchCommand, Cli, Command, ConfigCommand, KdcCommand, LogFormat, MeshCommand,
    ScenarioCommand, TotpCommand,
};
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use std::process::ExitCode;

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

pub type Outcome = Result<(), Failure>;

/// A node's log filter when RUST_LOG is unset: gossipsub's routine notices and yamux's "failure
/// while closing connection" (a peer that went first, as every peer does when a mesh stops) are
/// not warnings of this node's health.
pub const NODE_LOG: &str = "info,libp2p_gossipsub=warn,yamux=error";

fn init_logs(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

/// Parses the process's arguments and runs the command: what `main` does.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => run(cli, &matches),
        Err(e) => e.exit(),
    }
}

/// The matches of the node settings (`node`, `config show`), for where each value came from.
fn node_settings(matches: &ArgMatches) -> &ArgMatches {
    static NONE: std::sync::OnceLock<ArgMatches> = std::sync::OnceLock::new();
    let found = match matches.subcommand() {
        Some(("node", m)) => Some(m),
        Some(("config", m)) => m.subcommand_matches("show"),
        _ => None,
    };
    found.unwrap_or_else(|| NONE.get_or_init(ArgMatches::default))
}

fn fail(code: u8, error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(code)
}

pub fn run(cli: Cli, matches: &ArgMatches) -> ExitCode {
    let default_log = match &cli.command {
        Command::Node(_) => NODE_LOG,
        // A one-shot request says what went wrong in its error; logs would repeat it.
        Command::Request(_)
        | Command::Password(_)
        | Command::Code(_)
        | Command::Verify(_)
        | Command::Enrol(_)
        | Command::Totp(_)
        | Command::Kdc(_) => "error",
        _ => "warn",
    };
    // Node settings are resolved (flags, variables, config file) before logging starts: the
    // file may set the log format.
    let mut log_format = cli.log_format;
    let command = match cli.command {
        Command::Node(args) => match config::resolve(args, log_format, node_settings(matches)) {
            Ok(resolved) => {
                log_format = resolved.log_format;
                Command::Node(resolved.args)
            }
            Err(e) => return fail(2, e),
        },
        Command::Config(ConfigCommand::Show(args)) => {
            return match config::resolve(*args, log_format, node_settings(matches)) {
                Ok(resolved) => finish(config::show(resolved)),
                Err(e) => fail(2, e),
            };
        }
        other => other,
    };
    init_logs(default_log, log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Node(args) => node::run(args).await,
            Command::Mesh(MeshCommand::Up(args)) => mesh::up(args).await,
            Command::Mesh(steering) => mesh::steer(steering).await,
            Command::Request(args) => request::run(args).await,
            Command::Password(args) => password::run(args).await,
            Command::Code(args) => code::run(args).await,
            Command::Beacon(BeaconCommand::Get(args)) => beacon::get(args).await,
            Command::Beacon(BeaconCommand::Export(args)) => beacon::export(args).await,
            Command::Beacon(BeaconCommand::Verify(args)) => beacon::verify(args),
            Command::Verify(args) => verify::run(args).await,
            Command::Enrol(args) => enrol::run(args).await,
            Command::Totp(TotpCommand::Code(args)) => totp::code(args),
            Command::Totp(TotpCommand::Enrol(args)) => totp::enrol(args).await,
            Command::Totp(TotpCommand::Verify(args)) => totp::verify(args).await,
            Command::Kdc(KdcCommand::Register(args)) => kdc::register(args).await,
            Command::Kdc(KdcCommand::Send(args)) => kdc::send(args).await,
            Command::Kdc(KdcCommand::Receive(args)) => kdc::receive(args).await,
            Command::Bench(BenchCommand::Round(args)) => crate::bench::round(args).await,
            Command::Bench(BenchCommand::Mesh(args)) => crate::bench::mesh(args).await,
            Command::Bench(BenchCommand::Serve(args)) => crate::bench::serve(args).await,
            Command::Bench(BenchCommand::Ingest(args)) => crate::bench::ingest(args).await,
            Command::Bench(BenchCommand::Soak(args)) => crate::bench::soak(args).await,
            Command::Bench(BenchCommand::Threshold(args)) => crate::bench::threshold(args),
            Command::Bench(BenchCommand::Sim(args)) => crate::bench::sim(args),
            Command::Bench(BenchCommand::Rsa(args)) => crate::bench::rsa(args),
            Command::Bench(BenchCommand::Verify(args)) => crate::bench::verify(args).await,
            Command::Bench(BenchCommand::TcpBaseline(args)) => {
                crate::bench::tcp_baseline(args).await
            }
            Command::Scenario(ScenarioCommand::Run(args)) => crate::scenario::run(args).await,
            Command::Scenario(ScenarioCommand::Check { file }) => crate::scenario::check(&file),
            Command::Config(ConfigCommand::Check(args)) => config::check(args),
            Command::Sim(args) => sim::run(args),
            Command::Status(args) => status::run(args).await,
            Command::Config(ConfigCommand::Show(_)) => unreachable!("resolved above"),
            Command::Completions(args) => shell::completions(args),
            Command::Man(args) => shell::man(args),
        }
    });
    // Blocking readers (a terminal prompt) must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    finish(outcome)
}

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => fail(code, error),
    }
}
