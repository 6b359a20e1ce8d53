//! A body posted to the verifier's /validate/check, as form or JSON: parsing never panics, and
//! whatever parses came from the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_node::verifier::validate::credentials;

fuzz_target!(|data: &[u8]| {
    for json in [false, true] {
        if let Some((user, pass)) = credentials(json, data) {
            assert!(user.len() <= data.len() * 3 && pass.len() <= data.len() * 3);
        }
    }
});
