//! A mesh config file: parsed and validated, or refused with a message; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_protocol::mesh::MeshConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match MeshConfig::from_toml(text) {
            Ok(mesh) => assert!(mesh.validate().is_ok()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
