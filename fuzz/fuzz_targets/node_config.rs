//! A node config file (`otpmesh node --config`): parsed or refused; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_cli::cmd::config::FileConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = FileConfig::from_toml(text);
    }
});
