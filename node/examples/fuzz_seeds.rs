//! Writes the fuzz targets' seed corpus: one real encoding of every wire message, rpc frame,
//! stored value and config file kind, so the fuzzers start from valid inputs and mutate outward.
//!
//! `cargo run -p otpmesh-node --example fuzz_seeds -- fuzz/corpus`

use libp2p::PeerId;
use otpmesh_node::control::ControlLine;
use otpmesh_node::rpc;
use otpmesh_node::store::record;
use otpmesh_protocol::digest::Digest32;
use otpmesh_protocol::otp::Digits;
use otpmesh_protocol::phrase::ClientId;
use otpmesh_protocol::round::{Inclusion, RoundId, Secret, Transcript};
use otpmesh_protocol::totp;
use otpmesh_protocol::wire::*;
use std::path::Path;

fn transcript(round: u64, contributors: u32) -> Transcript {
    let secret = Secret::from_bytes([round as u8; 32]);
    Transcript {
        round: RoundId(round),
        generator: PeerId::random(),
        key_fingerprint: Digest32([1; 32]),
        included: (1..=contributors)
            .map(|c| Inclusion {
                client: ClientId(c),
                ciphertext_hash: Digest32([c as u8; 32]),
            })
            .collect(),
        prev_commitment: Digest32::ZERO,
        commitment: secret.commitment(RoundId(round)),
        sealed_at_ms: 1_700_000_000_000,
        threshold: None,
    }
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    let digits = Digits::new(8).expect("8 digits");

    let gossip = [
        (
            "open",
            Gossip::Open(RoundOpen {
                round: RoundId(3),
                key_fingerprint: Digest32([1; 32]),
                quorum: 4,
                minimum: 3,
                deadline_ms: 20_000,
                prev_commitment: Digest32([2; 32]),
            }),
        ),
        (
            "phrase",
            Gossip::Phrase(PhraseSubmission {
                round: RoundId(3),
                client: ClientId(2),
                key_fingerprint: Digest32([1; 32]),
                ciphertext: vec![0xAB; 256],
            }),
        ),
        ("sealed", Gossip::Sealed(transcript(3, 4))),
        (
            "failed",
            Gossip::Failed(RoundFailure {
                round: RoundId(4),
                reason: "2 of 3 phrases by the deadline".into(),
            }),
        ),
        (
            "used",
            Gossip::Used(UseMarker {
                requester: PeerId::random(),
                round: RoundId(3),
                counter: 7,
                expires_at_ms: 1_700_000_120_000,
            }),
        ),
    ];
    for (name, m) in &gossip {
        write(out, "gossip", name, &encode_gossip(m))?;
    }

    let requests = [
        ("public_key", Request::PublicKey),
        (
            "deliver",
            Request::Deliver(Box::new(Delivery {
                transcript: transcript(3, 2),
                secret: Secret::from_bytes([3; 32]),
            })),
        ),
        (
            "otp",
            Request::Otp(OtpRequest {
                round: Some(RoundId(3)),
                requester_key: [5; 32],
                enrolled: true,
            }),
        ),
        (
            "verify",
            Request::Verify(VerifyRequest {
                code: "12345678".into(),
            }),
        ),
        (
            "enrol",
            Request::Enrol(EnrolRequest {
                requester_key: [6; 32],
            }),
        ),
        (
            "totp_enrol",
            Request::TotpEnrol(TotpEnrolRequest {
                requester_key: [7; 32],
            }),
        ),
        (
            "totp_verify",
            Request::TotpVerify(VerifyRequest {
                code: "123456".into(),
            }),
        ),
    ];
    let mut stream = Vec::new();
    for (id, (name, m)) in requests.iter().enumerate() {
        let bytes = encode_request(m);
        write(out, "request", name, &bytes)?;
        let mut frame = Vec::new();
        rpc::push_frame(&mut frame, id as u64, &bytes);
        write(out, "rpc_frames", name, &frame)?;
        stream.extend_from_slice(&frame);
    }
    write(out, "rpc_frames", "pipelined", &stream)?;

    let responses = [
        ("public_key", Response::PublicKey(vec![0x30; 294])),
        ("delivered", Response::Delivered(RoundId(3))),
        (
            "otp",
            Response::Otp(OtpGrant {
                round: RoundId(3),
                counter: 7,
                digits,
                salted: 12_345_678,
                salt: [8; 16],
                distributor_key: [9; 32],
                expires_at_ms: 1_700_000_120_000,
                epoch: Some(2),
            }),
        ),
        ("verified", Response::Verified(VerifyResult::Used)),
        (
            "enrolled",
            Response::Enrolled(EnrolGrant {
                distributor_key: [9; 32],
                epoch: 2,
                epoch_ms: 3_600_000,
            }),
        ),
        (
            "totp_enrolled",
            Response::TotpEnrolled(TotpGrant {
                params: totp::Params::default(),
                round: RoundId(3),
                masked_secret: vec![0x11; 20],
                salt: [8; 16],
                distributor_key: [9; 32],
            }),
        ),
        (
            "refused",
            Response::Refused(Refusal::Unauthorised("not a listed requester".into())),
        ),
    ];
    for (name, m) in &responses {
        write(out, "response", name, &encode_response(m))?;
    }

    // Stored values as the decoders see them once opened (round: 8-byte round number first).
    let t = transcript(5, 3);
    let mut round = 5u64.to_be_bytes().to_vec();
    ciborium::into_writer(&(&t, &Secret::from_bytes([5; 32])), &mut round).expect("cbor");
    write(out, "stored_records", "round", &round)?;
    let mut enrolment = 9u64.to_be_bytes().to_vec();
    enrolment.extend_from_slice(&[0x5A; 32]);
    write(out, "stored_records", "enrolment", &enrolment)?;
    let token = totp::Token {
        secret: totp::Secret(zeroize::Zeroizing::new(vec![0xA5; 20])),
        params: totp::Params::default(),
        last_step: Some(55_000_000),
        drift: -1,
    };
    let mut token_bytes = Vec::new();
    ciborium::into_writer(&token, &mut token_bytes).expect("cbor");
    write(out, "stored_records", "token", &token_bytes)?;
    write(
        out,
        "stored_records",
        "attempts",
        &record::encode_attempts(&[1_700_000_000_000, 1_700_000_001_000], 0),
    )?;
    write(out, "stored_records", "peer", &PeerId::random().to_bytes())?;

    let lines = [
        ControlLine::OpenRound,
        ControlLine::Block {
            peer: PeerId::random(),
        },
    ];
    for (i, line) in lines.iter().enumerate() {
        write(
            out,
            "control_line",
            &format!("line{i}"),
            line.to_line().as_bytes(),
        )?;
    }
    write(
        out,
        "control_line",
        "input",
        br#"{"cmd":"input","round":3,"value":"-170141183460469231731687303715884105728"}"#,
    )?;
    kdc(out)
}

/// Key distribution centre: requests to the centre, a stored user, and exchange frames made with
/// the keys the `kdc_exchange` target's receiver holds (so its Hellos pass every check).
fn kdc(out: &Path) -> std::io::Result<()> {
    use otpmesh_protocol::kdc::client;
    use otpmesh_protocol::kdc::exchange::Sender;
    use otpmesh_protocol::kdc::message::{CentreRequest, Exchange};
    use otpmesh_protocol::kdc::{Key, Name};
    use otpmesh_protocol::role::distributor::kdc::{Centre, Policy, User};
    use rand::SeedableRng;
    const NOW: u64 = 1_700_000_000_000;
    let peer = |seed: u8| {
        libp2p::identity::Keypair::ed25519_from_bytes([seed; 32])
            .expect("32 bytes")
            .public()
            .to_peer_id()
    };
    let (centre, alice, bob) = (peer(7), peer(8), peer(9));
    let name = |s: &str| Name::new(s).expect("a valid name");
    let (ka, kb) = (Key::from_bytes([0x22; 32]), Key::from_bytes([0x11; 32]));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let session = client::session_request(
        &centre,
        &ka,
        name("alice"),
        name("bob"),
        NOW,
        Some("12345678".into()),
        &mut rng,
    );
    let requests = [
        (
            "kdc_register",
            CentreRequest::Register(client::register(
                &centre,
                &alice,
                name("alice"),
                ka.clone(),
                Some(&kb),
            )),
        ),
        (
            "kdc_present",
            CentreRequest::Present(client::present(
                &centre,
                &kb,
                name("bob"),
                vec!["/ip4/127.0.0.1/tcp/4001".into()],
                NOW,
                &mut rng,
            )),
        ),
        ("kdc_session", CentreRequest::Session(session.clone())),
    ];
    for (label, ask) in requests {
        write(out, "request", label, &encode_request(&Request::Kdc(ask)))?;
    }
    let user = |n: &str, peer, key: &Key| User {
        name: name(n),
        peer,
        key: key.clone(),
        registered_at_ms: NOW,
    };
    let centre_state = Centre::new(vec![user("alice", alice, &ka), user("bob", bob, &kb)]);
    let policy = Policy {
        ticket_lifetime_ms: 3_600_000,
        max_skew_ms: 300_000,
        require_otp: false,
    };
    let approved = centre_state
        .check_session(NOW, &centre, alice, &session, &policy)
        .expect("a valid session request");
    let grant = centre_state.grant(NOW, &centre, approved, &policy, &mut rng);
    write(
        out,
        "response",
        "kdc_session",
        &encode_response(&Response::Kdc(
            otpmesh_protocol::kdc::message::CentreResponse::Session(grant.clone()),
        )),
    )?;
    let creds = client::open_grant(&centre, &ka, &session, grant, NOW).expect("opens");
    let (mut sender, hello) = Sender::hello(&creds, &centre, NOW, 5, &mut rng);
    let frames = [
        ("hello", hello),
        ("chunk", sender.chunk(b"hello", true)),
        ("refused", Exchange::Refused("busy".into())),
        (
            "welcome",
            Exchange::Welcome(ka.seal(
                otpmesh_protocol::kdc::Purpose::ApReply,
                b"",
                b"x",
                &mut rng,
            )),
        ),
    ];
    for (label, frame) in frames {
        write(
            out,
            "kdc_exchange",
            label,
            &otpmesh_protocol::kdc::message::encode_exchange(&frame),
        )?;
    }
    let mut plain = Vec::new();
    ciborium::into_writer(&user("alice", alice, &ka), &mut plain).expect("CBOR into a Vec");
    write(out, "stored_records", "kdc_user", &plain)
}
