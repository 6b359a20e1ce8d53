//! A request as it arrives on rr or an rpc stream: decoding never panics, and whatever decodes re-encodes to
//! a message that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_protocol::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = wire::decode_request(data) {
        let again = wire::decode_request(&wire::encode_request(&message))
            .expect("re-encoded request decodes");
        assert_eq!(again, message);
    }
});
