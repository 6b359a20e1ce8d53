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
    Ok(())
}
