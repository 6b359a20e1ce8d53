//! A scenario file: parsed and checked, or refused with an error naming the line; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_cli::scenario::spec;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = spec::parse(Path::new("fuzz.toml"), text) {
            assert!(!e.to_string().is_empty());
        }
    }
});
