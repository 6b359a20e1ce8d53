//! Hostile peers on real sockets against a real mesh (`mesh up`: every node its own process).
//!
//! While one peer floods the gossip with junk, replays, impersonations and oversized messages,
//! another hammers the distributor's verify path with a listed requester's stolen key and a third
//! opens many request streams at once, the honest requester keeps getting and using OTPs, rounds
//! keep sealing, the nodes' memory stays bounded, and the misbehaving peers are penalised.

mod common;

use common::{json_field, metric, request, verify_json, Mesh};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, SwarmBuilder};
use otpmesh_node::rpc::{self, Endpoint};
use otpmesh_protocol::digest::Digest32;
use otpmesh_protocol::phrase::ClientId;
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::wire::{self, Gossip, PhraseSubmission, Request, Response, RoundOpen};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Bounds on every attack loop: it stops at whichever comes first.
const ATTACK_MESSAGES: usize = 3_000;
const ATTACK_CALLS: usize = 50_000;
const ATTACK_TIME: Duration = Duration::from_secs(30);
/// How much a node's peak memory may grow over its resident size before the attacks.
const MAX_GROWTH_KB: u64 = 128 * 1024;

fn proc_kb(pid: u64, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn addr(node: &Value) -> Multiaddr {
    node["listen"][0].as_str().unwrap().parse().unwrap()
}

/// Floods `targets` over gossipsub as an unlisted peer: junk, replays of the round-open a
/// generator sent, phrases claiming another contributor's client id, and oversized messages.
/// Returns how many messages it got out.
async fn flood_gossip(targets: Vec<Multiaddr>) -> usize {
    let key = Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(4 * wire::MAX_GOSSIP_BYTES)
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            gossipsub::Behaviour::<gossipsub::IdentityTransform>::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                config,
            )
            .unwrap()
        })
        .unwrap()
        .build();
    let topic = IdentTopic::new(wire::GOSSIP_TOPIC);
    let phrases = IdentTopic::new(wire::PHRASE_TOPIC);
    swarm.behaviour_mut().subscribe(&topic).unwrap();
    swarm.behaviour_mut().subscribe(&phrases).unwrap();
    let wanted = targets.len();
    for t in targets {
        swarm.dial(t).unwrap();
    }
    // Wait until every target has told us it is subscribed.
    let mut subscribed = std::collections::HashSet::new();
    timeout(Duration::from_secs(30), async {
        while subscribed.len() < wanted {
            if let libp2p::swarm::SwarmEvent::Behaviour(gossipsub::Event::Subscribed {
                peer_id,
                ..
            }) = swarm.select_next_some().await
            {
                subscribed.insert(peer_id);
            }
        }
    })
    .await
    .expect("the targets subscribe within 30 s");

    let open = wire::encode_gossip(&Gossip::Open(RoundOpen {
        round: RoundId(1),
        key_fingerprint: Digest32([1; 32]),
        quorum: 1,
        minimum: 1,
        deadline_ms: 1_000,
        prev_commitment: Digest32::ZERO,
    }));
    let impersonation = wire::encode_gossip(&Gossip::Phrase(PhraseSubmission {
        round: RoundId(2),
        client: ClientId(1),
        key_fingerprint: Digest32([1; 32]),
        ciphertext: vec![0x55; 256],
    }));
    let started = Instant::now();
    let mut sent = 0;
    for i in 0..ATTACK_MESSAGES {
        if started.elapsed() > ATTACK_TIME {
            break;
        }
        let (on, mut data) = match i % 4 {
            0 => (&topic, format!("junk {i}").into_bytes()),
            1 => (&topic, open.clone()),
            2 => (&phrases, impersonation.clone()),
            _ => (&topic, vec![0xEE; wire::MAX_GOSSIP_BYTES + 2048]),
        };
        data.extend_from_slice(&(i as u64).to_be_bytes());
        if swarm.behaviour_mut().publish(on.clone(), data).is_ok() {
            sent += 1;
        }
        // Let the swarm move the queued messages.
        while let Ok(Some(_)) = timeout(Duration::from_millis(1), swarm.next()).await {}
    }
    sent
}

/// Calls verify with wrong codes as fast as a pipelined session goes, as `identity`.
/// Returns (answers by kind, whether the distributor cut us off).
async fn hammer_verify(identity: Keypair, at: Multiaddr) -> (Vec<(String, usize)>, bool) {
    let endpoint = Endpoint::connect(identity, &at).await.expect("connects");
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let started = Instant::now();
    let mut calls = futures::stream::FuturesUnordered::new();
    let mut issued = 0;
    let mut cut_off = false;
    while issued < ATTACK_CALLS && started.elapsed() < ATTACK_TIME {
        while calls.len() < rpc::MAX_IN_FLIGHT && issued < ATTACK_CALLS {
            let session = endpoint.session.clone();
            issued += 1;
            let code = format!("{:08}", issued % 100_000_000);
            calls.push(async move {
                session
                    .call(&Request::Verify(wire::VerifyRequest { code }))
                    .await
            });
        }
        match calls.next().await {
            Some(Ok(Response::Verified(r))) => *kinds.entry(r.as_str().into()).or_default() += 1,
            Some(Ok(Response::Refused(r))) => *kinds.entry(r.to_string()).or_default() += 1,
            Some(Ok(other)) => panic!("verify answered with {other:?}"),
            Some(Err(e)) => {
                *kinds.entry(format!("cut off: {e}")).or_default() += 1;
                cut_off = true;
                break;
            }
            None => break,
        }
    }
    (kinds.into_iter().collect(), cut_off)
}

/// Opens `n` rpc streams at once as an unlisted peer and counts those that answer a request.
async fn many_streams(at: &Multiaddr, n: usize) -> usize {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let (peer, _) = otpmesh_node::split_peer(at);
    let mut swarm = rpc::bare_swarm(Keypair::generate_ed25519()).unwrap();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(at.clone()).unwrap();
    timeout(Duration::from_secs(10), async {
        while !matches!(
            swarm.select_next_some().await,
            libp2p::swarm::SwarmEvent::ConnectionEstablished { .. }
        ) {}
    })
    .await
    .expect("connected within 10 s");
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut answered = 0;
    let mut streams = Vec::new();
    for _ in 0..n {
        match timeout(
            Duration::from_secs(5),
            control.open_stream(peer.unwrap(), rpc::PROTOCOL),
        )
        .await
        {
            Ok(Ok(s)) => streams.push(s),
            _ => break,
        }
    }
    let mut frame = Vec::new();
    rpc::push_frame(&mut frame, 1, &wire::encode_request(&Request::PublicKey));
    for s in &mut streams {
        let mut len = [0u8; 4];
        let reply = timeout(Duration::from_secs(5), async {
            s.write_all(&frame).await?;
            s.flush().await?;
            s.read_exact(&mut len).await
        })
        .await;
        if matches!(reply, Ok(Ok(()))) {
            answered += 1;
        }
    }
    driver.abort();
    answered
}

fn honest_request_and_verify(distributor: &str, dir: &Path) {
    let out = request(distributor, dir);
    let otp = json_field(&out, "otp");
    let dir = dir.to_str().unwrap();
    let (code, result) = verify_json(&[
        "verify",
        "--distributor",
        distributor,
        "--data-dir",
        dir,
        "--otp",
        &otp,
    ]);
    assert_eq!(
        (code, result.as_str()),
        (Some(0), "accepted"),
        "the honest requester's OTP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_penalised_and_honest_work_goes_on() {
    // A low request limit, so that the hammer crosses it however slow the machine is.
    let mesh = Mesh::up(&[
        "--requesters",
        "2",
        "--interval-ms",
        "500",
        "--requests-per-peer-s",
        "100",
        "--metrics",
    ]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();
    let generator = Mesh::node(&json, "generator-1").clone();
    let distributor = Mesh::node(&json, "distributor-1").clone();
    let distributor_addr = distributor["listen"][0].as_str().unwrap().to_string();
    let honest_dir = Mesh::data_dir(&json, "requester-1");
    let stolen = otpmesh_node::keys::load_or_create_identity(Path::new(
        Mesh::node(&json, "requester-2")["data_dir"]
            .as_str()
            .unwrap(),
    ))
    .unwrap();
    let stolen_peer = PeerId::from(stolen.public());
    let pids: Vec<(String, u64)> = [&generator, &distributor]
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    let before: Vec<u64> = pids.iter().map(|(_, p)| proc_kb(*p, "VmRSS:")).collect();

    // The attacks, all at once.
    let flood = tokio::spawn(flood_gossip(vec![addr(&generator), addr(&distributor)]));
    let hammer = tokio::spawn(hammer_verify(stolen.clone(), addr(&distributor)));
    let streams = many_streams(&addr(&distributor), 64).await;
    assert!(
        (1..=rpc::MAX_STREAMS_PER_PEER).contains(&streams),
        "{streams} of 64 streams from one peer were served"
    );

    // Meanwhile the honest requester gets and uses OTPs, and rounds go on sealing.
    let dir = honest_dir.clone();
    let addr_text = distributor_addr.clone();
    let honest = tokio::task::spawn_blocking(move || {
        for _ in 0..3 {
            honest_request_and_verify(&addr_text, Path::new(&dir));
        }
    });
    let (kinds, cut_off) = hammer.await.unwrap();
    // A penalised peer is refused when it comes back (checked at once: the penalty lasts 60 s).
    match Endpoint::connect(stolen, &addr(&distributor)).await {
        Err(_) => {}
        Ok(endpoint) => match endpoint.session.call(&Request::PublicKey).await {
            Ok(Response::Refused(r)) => assert!(r.to_string().contains("penalised"), "{r}"),
            Err(_) => {}
            Ok(other) => panic!("a penalised peer was served: {other:?}"),
        },
    }
    let sent = flood.await.unwrap();
    honest.await.unwrap();

    // The verify hammer was locked out by the lockout rule, refused by the rate limit, and then
    // cut off as a penalised peer.
    let count = |what: &str| {
        kinds
            .iter()
            .filter(|(k, _)| k.contains(what))
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    assert!(count("locked") > 0, "no lockout: {kinds:?}");
    assert!(count("rate limit") > 0, "no rate limit: {kinds:?}");
    assert!(cut_off, "the hammering peer was never cut off: {kinds:?}");
    assert_eq!(count("accepted"), 0, "{kinds:?}");
    // The hammering requester was penalised, and the flood graylisted by both nodes it reached.
    assert!(sent > 0);
    let stolen_peer = stolen_peer.to_string();
    let hammerer = |v: &Value| {
        v["node"] == "distributor-1" && v["event"] == "peer_penalised" && v["peer"] == stolen_peer
    };
    let graylisted = |node: &'static str| {
        move |v: &Value| {
            v["node"] == node
                && v["event"] == "peer_penalised"
                && v["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("gossip score"))
        }
    };
    let during = mesh.wait_for_all(&[
        ("the hammering requester penalised", &hammerer),
        (
            "the flooder graylisted by the generator",
            &graylisted("generator-1"),
        ),
        (
            "the flooder graylisted by the distributor",
            &graylisted("distributor-1"),
        ),
    ]);

    // Rounds kept sealing: none failed during the attacks, and two more sealed after them.
    let failed: Vec<&Value> = during
        .iter()
        .filter(|v| v["node"] == "generator-1" && v["event"] == "round_failed")
        .collect();
    assert!(failed.is_empty(), "rounds failed under attack: {failed:?}");
    let mut sealed = 0;
    while sealed < 2 {
        let v = mesh.wait_for("rounds after the attacks", |v| {
            v["node"] == "generator-1"
                && (v["event"] == "round_sealed" || v["event"] == "round_failed")
        });
        assert_eq!(v["event"], "round_sealed", "{v}");
        sealed += 1;
    }
    honest_request_and_verify(&distributor_addr, Path::new(&honest_dir));

    // The metrics counted it, and every rejection was logged with its reason and the peer.
    let (_, metrics) = common::http("GET", distributor["metrics"].as_str().unwrap());
    assert!(
        metric(&metrics, "otpmesh_penalties_total") >= 2.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "otpmesh_requests_refused_total{reason=\"rate_limit\"}"
        ) > 0.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "otpmesh_lockouts_total") >= 1.0,
        "{metrics}"
    );
    let (_, metrics) = common::http("GET", generator["metrics"].as_str().unwrap());
    let rejected: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("otpmesh_gossip_messages_total{") && l.contains("result=\"reject\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(rejected > 0.0, "{metrics}");
    for node in [&generator, &distributor] {
        let log = std::fs::read_to_string(node["log"].as_str().unwrap()).unwrap();
        let rejections: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains(" WARN ")
                    && ["rejected", "penalised", "undecodable"]
                        .iter()
                        .any(|w| l.contains(w))
            })
            .collect();
        assert!(
            !rejections.is_empty(),
            "{}: no rejection logged",
            node["name"]
        );
        for line in &rejections {
            assert!(
                line.contains("peer=") && (line.contains("reason=") || line.contains("error=")),
                "a rejection without its peer or reason: {line}"
            );
        }
    }
    let log = std::fs::read_to_string(distributor["log"].as_str().unwrap()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("peer penalised") && l.contains(&stolen_peer)),
        "the hammering requester's penalty is not logged with its peer id"
    );

    for ((name, pid), rss) in pids.iter().zip(before) {
        let peak = proc_kb(*pid, "VmHWM:");
        assert!(
            peak < rss + MAX_GROWTH_KB,
            "{name}: peak {peak} kB against {rss} kB before the attacks"
        );
    }
    assert!(mesh.stop().success());
}
