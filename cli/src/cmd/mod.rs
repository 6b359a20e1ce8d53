//! Each subcommand: parse into a config, build, run, print.

pub mod enrol;
pub mod kdc;
pub mod mesh;
pub mod node;
pub mod request;
pub mod shell;
pub mod totp;
pub mod verify;

pub use mesh::free_ports as mesh_ports;

use crate::cli::{
    BenchCommand, Cli, Command, KdcCommand, MeshCommand, ScenarioCommand, TotpCommand,
};
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

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> ExitCode {
    let default_log = match &cli.command {
        Command::Node(_) => "info,libp2p_gossipsub=warn",
        // A one-shot request says what went wrong in its error; logs would repeat it.
        Command::Request(_)
        | Command::Verify(_)
        | Command::Enrol(_)
        | Command::Totp(_)
        | Command::Kdc(_) => "error",
        _ => "warn",
    };
    init_logs(default_log);
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
        match cli.command {
            Command::Node(args) => node::run(args).await,
            Command::Mesh(MeshCommand::Up(args)) => mesh::up(args).await,
            Command::Request(args) => request::run(args).await,
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
            Command::Bench(BenchCommand::TcpBaseline(args)) => {
                crate::bench::tcp_baseline(args).await
            }
            Command::Scenario(ScenarioCommand::Run(args)) => crate::scenario::run(args).await,
            Command::Scenario(ScenarioCommand::Check { file }) => crate::scenario::check(&file),
            Command::Completions(args) => shell::completions(args),
            Command::Man(args) => shell::man(args),
        }
    });
    // Blocking readers (a terminal prompt) must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
