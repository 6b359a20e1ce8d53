//! A response as a requester receives it: decoding never panics, and whatever decodes re-encodes to
//! a message that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_protocol::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = wire::decode_response(data) {
        let again = wire::decode_response(&wire::encode_response(&message))
            .expect("re-encoded response decodes");
        assert_eq!(again, message);
    }
});
