//! `otpmesh`: one binary, four roles. See `otpmesh --help`.

fn main() -> std::process::ExitCode {
    otpmesh_cli::cmd::main()
}
