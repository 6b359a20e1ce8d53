//! The key distribution centre as a distributor runs it, and the exchange between two users: real
//! Argon2id, XChaCha20-Poly1305 and ChaCha20-Poly1305, time set by the test. Every failure the
//! issue names (wrong passphrase, unknown name, expired or replayed ticket, tampered box) and the
//! ones around them.

mod common;

use libp2p_identity::{Keypair, PeerId};
use otpmesh_protocol::kdc::client::{self, Credentials};
use otpmesh_protocol::kdc::exchange::{
    self, ExchangeError, Incoming, Receiver, ReplayCache, Sender,
};
use otpmesh_protocol::kdc::message::{
    decode_exchange, encode_exchange, CentreRequest, CentreResponse, Exchange, Hello,
    SessionRequest, CHUNK_BYTES,
};
use otpmesh_protocol::kdc::{KdcError, Key, Name, Sealed};
use otpmesh_protocol::mesh::{Member, MeshConfig, Settings};
use otpmesh_protocol::otp::{self, Digits};
use otpmesh_protocol::role::distributor::Restored;
use otpmesh_protocol::role::Inbound;
use otpmesh_protocol::role::{Action, Distributor, Event, InboundId, Record, Role};
use otpmesh_protocol::round::{RoundId, Secret};
use otpmesh_protocol::wire::{OtpRequest, Refusal, Request, Response, VerifyResult};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;
const LIFETIME: u64 = 3_600_000;
const SKEW: u64 = 300_000;

fn peer() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

struct World {
    centre: PeerId,
    distributor: Distributor,
    alice: PeerId,
    bob: PeerId,
    mallory: PeerId,
    /// Listed, unused: alice after a new data dir.
    spare: PeerId,
    secret: Secret,
    rng: ChaCha20Rng,
    records: Vec<Record>,
    events: Vec<Event>,
}

impl World {
    fn new(require_otp: bool) -> World {
        let (generator, centre, alice, bob, mallory) = (peer(), peer(), peer(), peer(), peer());
        let spare = peer();
        let member = |peer_id| Member {
            peer_id,
            addrs: vec![],
            name: None,
        };
        let mesh = Arc::new(MeshConfig {
            generators: vec![member(generator)],
            distributors: vec![member(centre)],
            requesters: vec![member(alice), member(bob), member(mallory), member(spare)],
            settings: Settings {
                quorum: 1,
                kdc_ticket_lifetime_ms: LIFETIME,
                kdc_max_skew_ms: SKEW,
                kdc_require_otp: require_otp,
                ..Default::default()
            },
            ..Default::default()
        });
        let secret = Secret::from_bytes([7; 32]);
        let transcript = common::round_one(generator, Default::default(), &secret);
        let restored = Restored {
            rounds: vec![(transcript, secret.clone())],
            ..Default::default()
        };
        World {
            centre,
            distributor: Distributor::new(centre, mesh, restored),
            alice,
            bob,
            mallory,
            spare,
            secret,
            rng: ChaCha20Rng::seed_from_u64(3),
            records: Vec::new(),
            events: Vec::new(),
        }
    }

    fn call(&mut self, from: PeerId, request: Request, now: u64) -> Response {
        let mut response = None;
        for a in self.distributor.request(
            now,
            Inbound::new(from, InboundId(1), request),
            &mut self.rng,
        ) {
            match a {
                Action::Reply { response: r, .. } => {
                    assert!(response.is_none(), "answered twice");
                    response = Some(r);
                }
                Action::Persist(r) => self.records.push(r),
                Action::Emit(e) => self.events.push(e),
                _ => {}
            }
        }
        response.expect("every request is answered")
    }

    fn kdc(
        &mut self,
        from: PeerId,
        ask: CentreRequest,
        now: u64,
    ) -> Result<CentreResponse, Refusal> {
        match self.call(from, Request::Kdc(ask), now) {
            Response::Kdc(r) => Ok(r),
            Response::Refused(r) => Err(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn register(
        &mut self,
        from: PeerId,
        who: &str,
        key: &Key,
        old: Option<&Key>,
    ) -> Result<CentreResponse, Refusal> {
        let r = client::register(&self.centre, &from, name(who), key.clone(), old);
        self.kdc(from, CentreRequest::Register(r), T0)
    }

    fn session(
        &mut self,
        from: PeerId,
        key: &Key,
        client_name: &str,
        server: &str,
        now: u64,
        otp: Option<String>,
    ) -> Result<Credentials, String> {
        let req = client::session_request(
            &self.centre,
            key,
            name(client_name),
            name(server),
            now,
            otp,
            &mut self.rng,
        );
        match self.kdc(from, CentreRequest::Session(req.clone()), now) {
            Ok(CentreResponse::Session(grant)) => {
                client::open_grant(&self.centre, key, &req, grant, now).map_err(|e| e.to_string())
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(refusal) => Err(refusal.to_string()),
        }
    }

    fn receiver(&self, key: &Key) -> Receiver {
        Receiver {
            centre: self.centre,
            name: name("bob"),
            key: key.clone(),
            max_skew_ms: SKEW,
        }
    }

    /// Alice's session request for bob at T0, made with `key`.
    fn alice_asks_for_bob(&mut self, key: &Key) -> SessionRequest {
        client::session_request(
            &self.centre,
            key,
            name("alice"),
            name("bob"),
            T0,
            None,
            &mut self.rng,
        )
    }

    /// Alice starts an exchange of a `len`-byte file with `creds`; bob (holding `kb`) accepts it.
    fn accept(&mut self, creds: &Credentials, kb: &Key, len: u64) -> (Sender, Incoming, Exchange) {
        let (sender, frame) = Sender::hello(creds, &self.centre, T0, len, &mut self.rng);
        let Exchange::Hello(hello) = frame else {
            unreachable!("Sender::hello makes a Hello")
        };
        let (incoming, welcome) = self
            .receiver(kb)
            .hello(
                T0,
                &self.alice,
                &hello,
                &mut ReplayCache::default(),
                &mut self.rng,
            )
            .unwrap();
        (sender, incoming, welcome)
    }

    /// Alice and bob registered; alice holds credentials for bob.
    fn registered() -> (World, Key, Key, Credentials) {
        let mut w = World::new(false);
        let (ka, kb) = (Key::random(&mut w.rng), Key::random(&mut w.rng));
        w.register(w.alice, "alice", &ka, None).unwrap();
        w.register(w.bob, "bob", &kb, None).unwrap();
        let creds = w.session(w.alice, &ka, "alice", "bob", T0, None).unwrap();
        (w, ka, kb, creds)
    }
}

/// Sends `file` from the sender's side through `incoming`, returning what arrived.
fn transfer(
    sender: &mut Sender,
    incoming: &mut Incoming,
    file: &[u8],
) -> Result<Vec<u8>, ExchangeError> {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if file.is_empty() {
        vec![&[][..]]
    } else {
        file.chunks(CHUNK_BYTES).collect()
    };
    for (i, c) in chunks.iter().enumerate() {
        let frame = sender.chunk(c, i + 1 == chunks.len());
        let Exchange::Chunk { index, last, data } =
            decode_exchange(&encode_exchange(&frame)).unwrap()
        else {
            unreachable!()
        };
        out.extend_from_slice(&incoming.chunk(index, last, &data)?);
    }
    Ok(out)
}

fn hello_parts(frame: &Exchange) -> (Name, Sealed, Sealed) {
    match frame {
        Exchange::Hello(h) => (h.server.clone(), h.ticket.clone(), h.authenticator.clone()),
        other => panic!("{other:?}"),
    }
}

fn h(server: &Name, ticket: &Sealed, authenticator: &Sealed) -> Hello {
    Hello {
        server: server.clone(),
        ticket: ticket.clone(),
        authenticator: authenticator.clone(),
    }
}

#[test]
fn two_users_exchange_a_file_with_mutual_authentication() {
    let (mut w, _ka, kb, creds) = World::registered();
    assert_eq!(creds.server_peer, w.bob);
    assert_eq!(creds.expires_at_ms, T0 + LIFETIME);
    assert!(w.events.iter().any(|e| matches!(e, Event::KdcSessionIssued { client, server, .. } if client == "alice" && server == "bob")));
    let file: Vec<u8> = (0..(2 * CHUNK_BYTES + 123))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let (mut sender, hello) =
        Sender::hello(&creds, &w.centre, T0 + 10, file.len() as u64, &mut w.rng);
    let (server, ticket, auth) = hello_parts(&hello);
    let mut cache = ReplayCache::default();
    let (mut incoming, welcome) = w
        .receiver(&kb)
        .hello(
            T0 + 20,
            &w.alice,
            &h(&server, &ticket, &auth),
            &mut cache,
            &mut w.rng,
        )
        .unwrap();
    assert_eq!(incoming.client, name("alice"));
    let Exchange::Welcome(proof) = welcome else {
        panic!()
    };
    sender.welcome(&proof).unwrap();
    assert_eq!(transfer(&mut sender, &mut incoming, &file).unwrap(), file);
    assert!(incoming.is_done());
    let Exchange::Received(receipt) = incoming.receipt(&mut w.rng) else {
        panic!()
    };
    let r = sender.receipt(&receipt).unwrap();
    assert_eq!(r.length, file.len() as u64);
    assert_eq!(r.blake3, *blake3::hash(&file).as_bytes());
}

#[test]
fn an_empty_file_is_one_empty_last_chunk() {
    let (mut w, _ka, kb, creds) = World::registered();
    let (mut sender, mut incoming, _) = w.accept(&creds, &kb, 0);
    assert_eq!(transfer(&mut sender, &mut incoming, &[]).unwrap(), b"");
    assert!(incoming.is_done());
}

#[test]
fn registration_is_unique_and_a_second_one_needs_the_old_passphrase() {
    let mut w = World::new(false);
    let k1 = Key::derive(b"first passphrase", &name("alice"), &w.centre).unwrap();
    let k2 = Key::derive(b"second passphrase", &name("alice"), &w.centre).unwrap();
    assert_eq!(
        w.register(w.alice, "alice", &k1, None),
        Ok(CentreResponse::Registered {
            name: name("alice"),
            replaced: false
        })
    );
    assert!(
        matches!(w.records.last(), Some(Record::KdcUser(u)) if u.peer == w.alice && u.key == k1)
    );
    // Taken: without a proof, with a proof under the wrong key.
    let err = w.register(w.mallory, "alice", &k2, None).unwrap_err();
    assert!(err.to_string().contains("taken"), "{err}");
    let err = w.register(w.mallory, "alice", &k2, Some(&k2)).unwrap_err();
    assert!(
        err.to_string()
            .contains("current passphrase given for alice is wrong"),
        "{err}"
    );
    // A proof made for another sender does not transfer.
    let stolen = client::register(&w.centre, &w.alice, name("alice"), k2.clone(), Some(&k1));
    let err = w
        .kdc(w.mallory, CentreRequest::Register(stolen), T0)
        .unwrap_err();
    assert!(err.to_string().contains("wrong"), "{err}");
    let records_before = w.records.len();
    // The old passphrase moves the name (here to a new peer, as after a new data dir).
    let newer = w.spare;
    let r = client::register(&w.centre, &newer, name("alice"), k2.clone(), Some(&k1));
    assert_eq!(
        w.kdc(newer, CentreRequest::Register(r), T0),
        Ok(CentreResponse::Registered {
            name: name("alice"),
            replaced: true
        })
    );
    assert_eq!(w.records.len(), records_before + 1);
    assert!(matches!(w.records.last(), Some(Record::KdcUser(u)) if u.peer == newer && u.key == k2));
    // Refusals changed nothing: the old key no longer opens anything for alice.
    let kb = Key::random(&mut w.rng);
    w.register(w.bob, "bob", &kb, None).unwrap();
    assert!(w
        .session(newer, &k1, "alice", "bob", T0, None)
        .unwrap_err()
        .contains("wrong passphrase"));
    assert!(w.session(newer, &k2, "alice", "bob", T0, None).is_ok());
}

#[test]
fn one_peer_holds_at_most_four_names() {
    let mut w = World::new(false);
    let key = Key::random(&mut w.rng);
    for n in ["m1", "m2", "m3", "m4"] {
        w.register(w.mallory, n, &key, None).unwrap();
    }
    let err = w.register(w.mallory, "m5", &key, None).unwrap_err();
    assert!(err.to_string().contains("holds 4 names already"), "{err}");
    // Re-registering one it holds is not a fifth.
    let r = client::register(&w.centre, &w.mallory, name("m1"), key.clone(), Some(&key));
    assert!(w.kdc(w.mallory, CentreRequest::Register(r), T0).is_ok());
}

#[test]
fn a_wrong_passphrase_is_named_and_gets_nothing() {
    let (mut w, _ka, _kb, _) = World::registered();
    let wrong = Key::derive(b"not alices passphrase", &name("alice"), &w.centre).unwrap();
    let err = w
        .session(w.alice, &wrong, "alice", "bob", T0, None)
        .unwrap_err();
    assert!(err.contains("wrong passphrase for alice"), "{err}");
    let issued = |w: &World| {
        w.events
            .iter()
            .filter(|e| matches!(e, Event::KdcSessionIssued { .. }))
            .count()
    };
    assert_eq!(issued(&w), 1, "only the session of World::registered");
}

#[test]
fn unknown_names_and_foreign_peers_are_refused() {
    let (mut w, ka, _kb, _) = World::registered();
    let err = w
        .session(w.alice, &ka, "alice", "carol", T0, None)
        .unwrap_err();
    assert!(err.contains("no user named carol"), "{err}");
    let err = w.session(w.alice, &ka, "zed", "bob", T0, None).unwrap_err();
    assert!(err.contains("no user named zed"), "{err}");
    // Mallory holds alice's key (say, a guessed passphrase) but not alice's identity.
    let err = w
        .session(w.mallory, &ka, "alice", "bob", T0, None)
        .unwrap_err();
    assert!(err.contains("registered to another peer"), "{err}");
    // A client whose clock is off by more than the skew.
    let req = w.alice_asks_for_bob(&ka);
    let err = w
        .kdc(w.alice, CentreRequest::Session(req), T0 + SKEW + 1)
        .unwrap_err();
    assert!(err.to_string().contains("ms off"), "{err}");
    // An unlisted peer is not served at all.
    let stranger = peer();
    let r = client::register(&w.centre, &stranger, name("eve"), ka.clone(), None);
    let err = w.kdc(stranger, CentreRequest::Register(r), T0).unwrap_err();
    assert!(matches!(err, Refusal::Unauthorised(_)), "{err}");
}

#[test]
fn a_tampered_box_or_an_answer_to_another_request_is_refused_by_the_client() {
    let (mut w, ka, _kb, _) = World::registered();
    let req = w.alice_asks_for_bob(&ka);
    let Ok(CentreResponse::Session(grant)) =
        w.kdc(w.alice, CentreRequest::Session(req.clone()), T0)
    else {
        panic!()
    };
    let mut tampered = grant.clone();
    tampered.for_client.ciphertext[5] ^= 0x40;
    assert_eq!(
        client::open_grant(&w.centre, &ka, &req, tampered, T0).unwrap_err(),
        KdcError::GrantUnreadable(name("alice"))
    );
    // The same answer presented for another request (another nonce) does not open.
    let other = w.alice_asks_for_bob(&ka);
    assert!(client::open_grant(&w.centre, &ka, &other, grant.clone(), T0).is_err());
    // An answer opened after its expiry.
    assert!(matches!(
        client::open_grant(&w.centre, &ka, &req, grant, T0 + LIFETIME),
        Err(KdcError::GrantExpired(_))
    ));
}

#[test]
fn the_receiver_refuses_tampered_foreign_expired_and_replayed_tickets() {
    let (mut w, _ka, kb, creds) = World::registered();
    let rx = w.receiver(&kb);
    let hello_at = |w: &mut World, now: u64| {
        let (_, h) = Sender::hello(&creds, &w.centre, now, 10, &mut w.rng);
        hello_parts(&h)
    };
    let mut cache = ReplayCache::default();
    // Tampered ticket.
    let (s, mut t, a) = hello_at(&mut w, T0);
    t.ciphertext[0] ^= 1;
    assert_eq!(
        rx.hello(T0, &w.alice, &h(&s, &t, &a), &mut cache, &mut w.rng)
            .unwrap_err(),
        ExchangeError::TicketUnreadable
    );
    // The ticket presented by someone else (mallory replays alice's Hello over its own connection).
    let (s, t, a) = hello_at(&mut w, T0);
    assert!(matches!(
        rx.hello(T0, &w.mallory, &h(&s, &t, &a), &mut cache, &mut w.rng),
        Err(ExchangeError::WrongPeer { .. })
    ));
    // Tampered authenticator.
    let (s, t, mut a) = hello_at(&mut w, T0);
    a.ciphertext[3] ^= 1;
    assert_eq!(
        rx.hello(T0, &w.alice, &h(&s, &t, &a), &mut cache, &mut w.rng)
            .unwrap_err(),
        ExchangeError::AuthenticatorUnreadable
    );
    // Expired ticket (past its end plus the skew).
    let late = T0 + LIFETIME + SKEW + 1;
    let (s, t, a) = hello_at(&mut w, late);
    assert!(matches!(
        rx.hello(late, &w.alice, &h(&s, &t, &a), &mut cache, &mut w.rng),
        Err(ExchangeError::Expired { .. })
    ));
    // An authenticator too old (or a sender clock too far off).
    let (s, t, a) = hello_at(&mut w, T0);
    assert!(matches!(
        rx.hello(
            T0 + SKEW + 1,
            &w.alice,
            &h(&s, &t, &a),
            &mut cache,
            &mut w.rng
        ),
        Err(ExchangeError::Skew { .. })
    ));
    // Replay: the first use is accepted, the same Hello again is not, even much later within the
    // skew, and a cache written to disk and read back remembers it.
    let (s, t, a) = hello_at(&mut w, T0);
    assert!(rx
        .hello(T0, &w.alice, &h(&s, &t, &a), &mut cache, &mut w.rng)
        .is_ok());
    assert_eq!(
        rx.hello(T0 + 1, &w.alice, &h(&s, &t, &a), &mut cache, &mut w.rng)
            .unwrap_err(),
        ExchangeError::Replayed
    );
    let mut reloaded = ReplayCache::from_bytes(&cache.to_bytes(T0)).unwrap();
    assert_eq!(
        rx.hello(
            T0 + SKEW,
            &w.alice,
            &h(&s, &t, &a),
            &mut reloaded,
            &mut w.rng
        )
        .unwrap_err(),
        ExchangeError::Replayed
    );
    // A ticket for bob shown to a receiver that is not bob.
    let carol = Receiver {
        name: name("carol"),
        ..w.receiver(&kb)
    };
    assert_eq!(
        carol
            .hello(T0, &w.alice, &h(&s, &t, &a), &mut cache, &mut w.rng)
            .unwrap_err(),
        ExchangeError::WrongServer(name("bob"))
    );
    // A receiver with the wrong key (bob's old passphrase).
    let other_key = Key::random(&mut w.rng);
    let old = w.receiver(&other_key);
    let (s, t, a) = hello_at(&mut w, T0);
    assert_eq!(
        old.hello(T0, &w.alice, &h(&s, &t, &a), &mut cache, &mut w.rng)
            .unwrap_err(),
        ExchangeError::TicketUnreadable
    );
    assert!(ReplayCache::from_bytes(&[0; 41]).is_none());
}

#[test]
fn tampered_reordered_or_truncated_chunks_fail_and_a_fake_receiver_cannot_prove_itself() {
    let (mut w, _ka, kb, creds) = World::registered();
    let file = vec![5u8; CHUNK_BYTES + 10];
    let start = |w: &mut World| w.accept(&creds, &kb, file.len() as u64);
    let chunk = |frame: Exchange| match frame {
        Exchange::Chunk { index, last, data } => (index, last, data),
        _ => unreachable!(),
    };
    // A flipped bit.
    let (mut s, mut i, _) = start(&mut w);
    let (idx, last, mut data) = chunk(s.chunk(&file[..CHUNK_BYTES], false));
    data[100] ^= 1;
    assert_eq!(
        i.chunk(idx, last, &data).unwrap_err(),
        ExchangeError::BadChunk(0)
    );
    // The second chunk first.
    let (mut s, mut i, _) = start(&mut w);
    let _first = s.chunk(&file[..CHUNK_BYTES], false);
    let (idx, last, data) = chunk(s.chunk(&file[CHUNK_BYTES..], true));
    assert!(matches!(
        i.chunk(idx, last, &data),
        Err(ExchangeError::OutOfOrder {
            expected: 0,
            got: 1
        })
    ));
    // A middle chunk relabelled as the last one (truncation): the nonce binds the flag.
    let (mut s, mut i, _) = start(&mut w);
    let (idx, _, data) = chunk(s.chunk(&file[..CHUNK_BYTES], false));
    assert_eq!(
        i.chunk(idx, true, &data).unwrap_err(),
        ExchangeError::BadChunk(0)
    );
    // A chunk that is neither full nor the last (a sender dribbling the file to hold the receiver).
    let (mut s, mut i, _) = start(&mut w);
    let (idx, last, data) = chunk(s.chunk(&file[..10], false));
    assert_eq!(
        i.chunk(idx, last, &data).unwrap_err(),
        ExchangeError::ShortChunk(0)
    );
    // A last chunk that leaves the file short of its announced length.
    let (mut s, mut i, _) = start(&mut w);
    let (idx, last, data) = chunk(s.chunk(&file[..10], true));
    assert!(matches!(
        i.chunk(idx, last, &data),
        Err(ExchangeError::LengthMismatch { .. })
    ));
    // A receiver without bob's key cannot produce the welcome; a receipt for other bytes fails.
    let (s, i, welcome) = start(&mut w);
    let Exchange::Welcome(mut proof) = welcome else {
        panic!()
    };
    proof.ciphertext[0] ^= 1;
    assert_eq!(s.welcome(&proof).unwrap_err(), ExchangeError::BadWelcome);
    let Exchange::Received(receipt) = i.receipt(&mut w.rng) else {
        panic!()
    };
    let mut s2 = s;
    let _ = s2.chunk(b"something else", true);
    assert!(matches!(
        s2.receipt(&receipt),
        Err(ExchangeError::BadReceipt(_))
    ));
}

#[test]
fn an_otp_can_be_required_and_is_used_up_by_the_session_request() {
    let mut w = World::new(true);
    let (ka, kb) = (Key::random(&mut w.rng), Key::random(&mut w.rng));
    w.register(w.alice, "alice", &ka, None).unwrap();
    w.register(w.bob, "bob", &kb, None).unwrap();
    let err = w
        .session(w.alice, &ka, "alice", "bob", T0, None)
        .unwrap_err();
    assert!(err.contains("requires one of your OTPs"), "{err}");
    let ask = Request::Otp(OtpRequest {
        round: None,
        requester_key: x25519_public(&mut w.rng),
        enrolled: false,
    });
    let Response::Otp(grant) = w.call(w.alice, ask, T0) else {
        panic!()
    };
    let digits = Digits::default();
    let value = otp::issue(
        &w.secret,
        RoundId(grant.round.0),
        &w.alice,
        &w.centre,
        grant.counter,
        digits,
    )
    .value();
    let code = format!("{value:0width$}", width = digits.get() as usize);
    let wrong = format!(
        "{:0width$}",
        (value + 1) % 10u64.pow(digits.get() as u32),
        width = digits.get() as usize
    );
    let err = w
        .session(w.alice, &ka, "alice", "bob", T0, Some(wrong))
        .unwrap_err();
    assert!(err.contains("pre-authentication is wrong"), "{err}");
    assert!(w
        .records
        .iter()
        .any(|r| matches!(r, Record::Attempts { failures, .. } if failures.len() == 1)));
    let creds = w
        .session(w.alice, &ka, "alice", "bob", T0, Some(code.clone()))
        .unwrap();
    assert_eq!(creds.server, name("bob"));
    assert!(w.records.iter().any(|r| matches!(r, Record::Used { .. })));
    // Used up: the same OTP neither opens a second session nor verifies.
    let err = w
        .session(w.alice, &ka, "alice", "bob", T0, Some(code.clone()))
        .unwrap_err();
    assert!(err.contains("pre-authentication is used"), "{err}");
    let Response::Verified(r) = w.call(
        w.alice,
        Request::Verify(otpmesh_protocol::wire::VerifyRequest { code }),
        T0,
    ) else {
        panic!()
    };
    assert_eq!(r, VerifyResult::Used);
}

#[test]
fn presence_tells_senders_where_the_receiver_listens() {
    let (mut w, ka, kb, creds) = World::registered();
    assert!(creds.server_addrs.is_empty());
    let addrs = vec!["/ip4/127.0.0.1/tcp/4001".to_string()];
    let present = |w: &mut World, key: &Key, addrs: Vec<String>| {
        CentreRequest::Present(client::present(
            &w.centre,
            key,
            name("bob"),
            addrs,
            T0,
            &mut w.rng,
        ))
    };
    // Only bob's peer, with bob's key, may say where bob is.
    let ask = present(&mut w, &kb, addrs.clone());
    let err = w.kdc(w.mallory, ask, T0).unwrap_err();
    assert!(
        err.to_string().contains("registered to another peer"),
        "{err}"
    );
    let ask = present(&mut w, &ka, addrs.clone());
    let err = w.kdc(w.bob, ask, T0).unwrap_err();
    assert!(
        err.to_string().contains("wrong passphrase for bob"),
        "{err}"
    );
    let ask = present(&mut w, &kb, addrs.clone());
    let err = w.kdc(w.bob, ask, T0 + SKEW + 1).unwrap_err();
    assert!(err.to_string().contains("ms off"), "{err}");
    let ask = present(&mut w, &kb, addrs.clone());
    assert!(w.kdc(w.bob, ask, T0).is_ok());
    let creds = w.session(w.alice, &ka, "alice", "bob", T0, None).unwrap();
    assert_eq!(creds.server_addrs, addrs);
    let too_many = present(&mut w, &kb, vec![addrs[0].clone(); 5]);
    assert!(
        otpmesh_protocol::wire::decode_request(&otpmesh_protocol::wire::encode_request(
            &Request::Kdc(too_many)
        ))
        .is_err()
    );
}

#[test]
fn names_are_checked() {
    for bad in ["", "Alice", "-x", "a b", "é", &"a".repeat(65)] {
        assert!(Name::new(bad).is_err(), "{bad:?}");
    }
    for good in ["alice", "bob-2", "x.y_z", "0day"] {
        assert!(Name::new(good).is_ok(), "{good:?}");
    }
}

fn x25519_public(rng: &mut ChaCha20Rng) -> [u8; 32] {
    otpmesh_protocol::kx::Ephemeral::new(rng).public()
}

#[test]
fn an_exchange_runs_in_memory_as_on_a_stream_and_stops_where_a_side_refuses() {
    let (mut w, _ka, kb, creds) = World::registered();
    let mut file = vec![0u8; 3 * CHUNK_BYTES + 17];
    rand::RngCore::fill_bytes(&mut w.rng, &mut file);
    let mut cache = ReplayCache::default();
    let (receiver, alice) = (w.receiver(&kb), w.alice);
    let (got, receipt) =
        exchange::in_memory(&creds, &alice, &receiver, &mut cache, T0, &file, &mut w.rng).unwrap();
    assert_eq!(got, file);
    assert_eq!(receipt.length, file.len() as u64);
    assert_eq!(receipt.blake3, *blake3::hash(&file).as_bytes());
    assert_eq!(cache.len(), 1, "the authenticator is remembered");
    // An empty file is one empty last chunk.
    let (got, _) =
        exchange::in_memory(&creds, &alice, &receiver, &mut cache, T0, &[], &mut w.rng).unwrap();
    assert!(got.is_empty());
    // The ticket names alice: from mallory's peer the receiver refuses it.
    let mallory = w.mallory;
    let refused = exchange::in_memory(
        &creds, &mallory, &receiver, &mut cache, T0, &file, &mut w.rng,
    );
    assert!(matches!(
        refused,
        Err(exchange::Stopped::Receiver(ExchangeError::WrongPeer { .. }))
    ));
    // A receiver without bob's key cannot open the ticket.
    let other = Key::random(&mut w.rng);
    let stranger = w.receiver(&other);
    let refused = exchange::in_memory(&creds, &alice, &stranger, &mut cache, T0, &file, &mut w.rng);
    assert!(matches!(
        refused,
        Err(exchange::Stopped::Receiver(ExchangeError::TicketUnreadable))
    ));
}
