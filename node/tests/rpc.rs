//! The stream path on real sockets: a distributor node in this process, requesters as bare
//! [`rpc::Endpoint`]s with their own swarms, over 127.0.0.1 TCP + Noise + Yamux.

use futures::io::{AsyncReadExt, AsyncWriteExt};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use otpmesh_node::{rpc, NodeConfig, RoleSpec};
use otpmesh_protocol::mesh::{Member, MeshConfig};
use otpmesh_protocol::wire::{self, EnrolRequest, OtpRequest, Refusal, Request, Response};
use tokio::time::timeout;

mod common;

use common::{Distributor, WAIT};

fn otp() -> Request {
    Request::Otp(OtpRequest {
        round: None,
        requester_key: [9; 32],
        enrolled: false,
    })
}

fn enrol() -> Request {
    Request::Enrol(EnrolRequest {
        requester_key: [9; 32],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_each_get_their_own_reply() {
    let dir = tempfile::tempdir().unwrap();
    let requester = Keypair::generate_ed25519();
    let distributor = Distributor::start(dir.path(), &[&requester]).await;
    let addr = distributor.addr.clone();
    let endpoint = timeout(WAIT, rpc::Endpoint::connect(requester, &addr))
        .await
        .expect("connects in time")
        .expect("connects");

    // Far more calls than may be in flight on one stream, of two kinds with different answers: a
    // reply matched to the wrong request would show as the other kind's answer.
    let calls = (0..500).map(|i| {
        let session = endpoint.session.clone();
        async move {
            let ask_otp = i % 2 == 0;
            let request = if ask_otp { otp() } else { enrol() };
            (ask_otp, session.call(&request).await)
        }
    });
    let results = timeout(WAIT, futures::future::join_all(calls))
        .await
        .expect("every call answered in time");
    for (ask_otp, result) in results {
        match (ask_otp, result.expect("a reply")) {
            (true, Response::Refused(Refusal::NoRound)) => {}
            (false, Response::Enrolled(_)) => {}
            (ask_otp, other) => panic!("asked otp={ask_otp}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_requesters_and_bad_frames_get_answers_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let listed = Keypair::generate_ed25519();
    let distributor = Distributor::start(dir.path(), &[&listed]).await;
    let addr = distributor.addr.clone();

    let stranger = rpc::Endpoint::connect(Keypair::generate_ed25519(), &addr)
        .await
        .expect("connects");
    match stranger.session.call(&otp()).await.expect("a reply") {
        Response::Refused(Refusal::Unauthorised(_)) => {}
        other => panic!("an unlisted requester got {other:?}"),
    }

    // Garbage in a well-formed frame: refused with a reason, on the same stream, which stays open.
    let endpoint = rpc::Endpoint::connect(listed, &addr)
        .await
        .expect("connects");
    let mut raw = raw_stream(&addr).await;
    let mut frame = Vec::new();
    frame.extend_from_slice(&(8u32 + 3).to_be_bytes());
    frame.extend_from_slice(&42u64.to_be_bytes());
    frame.extend_from_slice(b"\xff\x00\x13");
    raw.write_all(&frame).await.unwrap();
    raw.flush().await.unwrap();
    let (id, body) = read_reply(&mut raw).await;
    assert_eq!(id, 42);
    match wire::decode_response(&body).expect("a response") {
        Response::Refused(Refusal::Invalid(reason)) => assert!(!reason.is_empty()),
        other => panic!("garbage got {other:?}"),
    }

    // A frame over the limit closes that stream (there is no finding the next frame after it)…
    let mut huge = Vec::new();
    huge.extend_from_slice(&(u32::MAX).to_be_bytes());
    raw.write_all(&huge).await.unwrap();
    raw.flush().await.unwrap();
    let mut rest = Vec::new();
    let closed = timeout(WAIT, raw.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");

    // …and nothing else: the listed requester's own session still gets answers.
    match endpoint.session.call(&otp()).await.expect("a reply") {
        Response::Refused(Refusal::NoRound) => {}
        other => panic!("{other:?}"),
    }
}

/// A stream to the distributor's rpc protocol, written by hand.
async fn raw_stream(addr: &Multiaddr) -> libp2p::Stream {
    use futures::StreamExt;
    let (peer, _) = otpmesh_node::split_peer(addr);
    let mut swarm = rpc::bare_swarm(Keypair::generate_ed25519()).unwrap();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(addr.clone()).unwrap();
    // Connected first: a stream asked for during the dial can land on a connection then closed.
    timeout(WAIT, async {
        while !matches!(
            swarm.select_next_some().await,
            libp2p::swarm::SwarmEvent::ConnectionEstablished { .. }
        ) {}
    })
    .await
    .expect("connected in time");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    timeout(WAIT, control.open_stream(peer.unwrap(), rpc::PROTOCOL))
        .await
        .expect("stream in time")
        .expect("stream opens")
}

async fn read_reply(raw: &mut libp2p::Stream) -> (u64, Vec<u8>) {
    let mut len = [0u8; 4];
    timeout(WAIT, raw.read_exact(&mut len))
        .await
        .expect("reply in time")
        .unwrap();
    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
    raw.read_exact(&mut frame).await.unwrap();
    let id = u64::from_be_bytes(frame[..8].try_into().unwrap());
    (id, frame[8..].to_vec())
}

#[tokio::test]
async fn a_taken_port_is_an_error_not_a_shared_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshConfig {
        open: true,
        generators: vec![Member {
            peer_id: Keypair::generate_ed25519().public().to_peer_id(),
            addrs: vec![],
            name: None,
        }],
        settings: otpmesh_protocol::mesh::Settings {
            quorum: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let result = otpmesh_node::start(NodeConfig {
        role: RoleSpec::Distributor,
        data_dir: dir.path().to_path_buf(),
        listen: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
        peers: vec![],
        mesh,
        mdns: false,
        manual_rounds: false,
        seed: None,
        metrics: None,
    });
    match result {
        Err(e) => assert!(e.to_string().contains(&port.to_string()), "{e}"),
        Ok(_) => panic!("a second listener on port {port} was allowed"),
    }
}
