//! A datagram at the verifier's RADIUS port: decoding, the Message-Authenticator check and the
//! User-Password unhiding never panic, and a reply to whatever decodes is itself a packet whose
//! authenticator checks under the secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_node::verifier::radius::{self, Packet};

const SECRET: &[u8] = b"fuzzing-secret";

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    let _ = packet.check_message_authenticator(SECRET);
    if let Ok(password) = packet.user_password(SECRET) {
        assert!(password.len() <= radius::MAX_PASSWORD);
    }
    let reply = radius::reply(&packet, radius::ACCESS_REJECT, "wrong", SECRET);
    assert!(radius::response_is_authentic(&reply, &packet.authenticator, SECRET));
});
