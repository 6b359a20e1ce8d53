//! `otpmesh`: one binary, four roles. See `otpmesh --help`.

mod bench;
mod cli;
mod cmd;
mod output;
mod scenario;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    cmd::run(cli::Cli::parse())
}
