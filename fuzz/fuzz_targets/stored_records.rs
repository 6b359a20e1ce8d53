//! Every stored value as a corrupt or tampered database file would hand it back: each decoder
//! returns `None` or a value, never panics; sealed values open only where they were sealed, and a
//! decoded plaintext sealed again opens to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_node::store::record::{self, Sealer};

const REQUESTER: &[u8] = b"requester";

fuzz_target!(|data: &[u8]| {
    let sealer = Sealer::new(&[0x42; 32]);
    let round = data
        .get(..8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));

    // As stored bytes: opening fails unless sealed under this key, here or anywhere.
    assert!(sealer.open_round(round, data).is_none());
    assert!(sealer.open_enrolment(REQUESTER, data).is_none());
    assert!(sealer.open_token(REQUESTER, data).is_none());
    assert!(sealer.open_kdc_user("alice", data).is_none());
    let _ = record::attempts(data);
    let _ = record::peer(data);

    // As plaintexts that did open (a store key in the wrong hands, or a bug in the writer).
    let body = data.get(8..).unwrap_or_default();
    if let Some((transcript, secret)) = record::round_plain(round, body) {
        let sealed = sealer.seal_round(&transcript, &secret);
        let (t, s) = sealer
            .open_round(round, &sealed)
            .expect("a sealed round opens");
        assert_eq!((t, s), (transcript, secret));
        assert!(sealer.open_round(round.wrapping_add(1), &sealed).is_none());
    }
    if let Some((epoch, key)) = record::enrolment_plain(data) {
        let sealed = sealer.seal_enrolment(REQUESTER, epoch, &key);
        let (e, k) = sealer.open_enrolment(REQUESTER, &sealed).expect("opens");
        assert_eq!((e, k.as_bytes()), (epoch, key.as_bytes()));
        assert!(sealer.open_enrolment(b"someone else", &sealed).is_none());
    }
    if let Some(token) = record::token_plain(data) {
        let sealed = sealer.seal_token(REQUESTER, &token);
        assert!(sealer.open_token(REQUESTER, &sealed).is_some());
    }
    if let Some(user) = record::kdc_user_plain("alice", data) {
        let sealed = sealer.seal_kdc_user(&user);
        let opened = sealer.open_kdc_user("alice", &sealed).expect("opens");
        assert_eq!(opened, user);
        assert!(sealer.open_kdc_user("bob", &sealed).is_none());
    }
    if let Some((failures, locked_until)) = record::attempts(data) {
        let again = record::encode_attempts(&failures, locked_until);
        assert_eq!(record::attempts(&again), Some((failures, locked_until)));
    }
});
