//! A key distribution centre exchange frame as a receiver reads it off the stream: decoding never
//! panics, what decodes re-encodes to itself, a replay cache file never panics its reader, and a
//! Hello goes through every check of a receiver holding bob's key (the seed corpus holds Hellos
//! that pass, so the fuzzer starts deep inside) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_protocol::kdc::exchange::{Receiver, ReplayCache};
use otpmesh_protocol::kdc::message::{decode_exchange, encode_exchange, Exchange};
use otpmesh_protocol::kdc::{Key, Name};
use otpmesh_protocol::Keypair;
use rand_chacha::rand_core::SeedableRng;

/// Must match `node/examples/fuzz_seeds.rs`.
const NOW: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let _ = ReplayCache::from_bytes(data);
    let Ok(message) = decode_exchange(data) else {
        return;
    };
    let again = decode_exchange(&encode_exchange(&message)).expect("re-encoded frame decodes");
    assert_eq!(again, message);
    if let Exchange::Hello(hello) = &message {
        let peer = |seed: u8| {
            Keypair::ed25519_from_bytes([seed; 32])
                .expect("32 bytes")
                .public()
                .to_peer_id()
        };
        let receiver = Receiver {
            centre: peer(7),
            name: Name::new("bob").expect("a valid name"),
            key: Key::from_bytes([0x11; 32]),
            max_skew_ms: 300_000,
        };
        let mut cache = ReplayCache::default();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        if let Ok((mut incoming, _)) = receiver.hello(NOW, &peer(8), hello, &mut cache, &mut rng) {
            let _ = incoming.chunk(0, true, data);
            assert!(receiver
                .hello(NOW, &peer(8), hello, &mut cache, &mut rng)
                .is_err(), "a second sighting is a replay");
        }
    }
});
