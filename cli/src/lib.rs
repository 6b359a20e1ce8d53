//! The `otpmesh` command line as a library: `main` parses the arguments and hands them to
//! [`cmd::run`]. A library so that fuzz targets and benches can reach the file parsers
//! ([`scenario::spec`], the node config) without a process.

mod bench;
pub mod cli;
pub mod cmd;
pub mod line;
mod output;
mod printer;
pub mod scenario;
pub mod steer;
