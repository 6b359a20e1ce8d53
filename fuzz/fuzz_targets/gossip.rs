//! Gossip as it arrives from any peer: decoding never panics, and whatever decodes re-encodes to
//! a message that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_protocol::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = wire::decode_gossip(data) {
        let again =
            wire::decode_gossip(&wire::encode_gossip(&message)).expect("re-encoded gossip decodes");
        assert_eq!(again, message);
    }
});
