//! `otpmesh`: one binary, four roles. See `otpmesh --help`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    otpmesh_cli::cmd::run(otpmesh_cli::cli::Cli::parse())
}
