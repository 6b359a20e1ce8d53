//! Prometheus metrics from a real `mesh up --metrics`: every node serves them, and the counters
//! move with what the mesh does (rounds, phrases, OTPs, verifications, lockouts, commits).

mod common;

use common::{http, json_field, metric, request, verify_json, Mesh};
use std::io::Read;
use std::time::{Duration, Instant};

fn url<'a>(json: &'a serde_json::Value, name: &str) -> &'a str {
    Mesh::node(json, name)["metrics"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has a metrics URL in mesh.json"))
}

#[test]
fn counters_move_when_a_mesh_runs() {
    let mesh = Mesh::up(&["--metrics"]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();

    // The generator counted the round before it said so.
    let (status, generator) = http("GET", url(&json, "generator-1"));
    assert_eq!(status, 200);
    assert!(
        metric(&generator, "otpmesh_rounds_total{event=\"opened\"}") >= 1.0,
        "{generator}"
    );
    assert!(metric(&generator, "otpmesh_rounds_total{event=\"sealed\"}") >= 1.0);
    assert!(metric(&generator, "otpmesh_round_latency_seconds_count") >= 1.0);
    assert!(metric(&generator, "otpmesh_round_latency_seconds_sum") > 0.0);
    assert!(metric(&generator, "otpmesh_phrases_total{result=\"accepted\"}") >= 4.0);
    assert!(
        metric(
            &generator,
            "otpmesh_gossip_messages_total{topic=\"otpmesh/1/phrases\",result=\"accept\"}"
        ) >= 4.0,
        "{generator}"
    );
    assert!(metric(&generator, "otpmesh_peers") >= 5.0, "{generator}");
    assert!(metric(&generator, "otpmesh_storage_commit_seconds_count") >= 1.0);
    // libp2p's and gossipsub's own metrics are there too.
    assert!(
        generator.contains("libp2p_swarm_connections_established_total"),
        "{generator}"
    );
    assert!(
        generator.contains("libp2p_bandwidth_bytes_total"),
        "{generator}"
    );
    assert!(
        generator.contains("gossipsub_topic_subscription_status"),
        "{generator}"
    );
    assert!(generator.ends_with("# EOF\n"));

    // Every role serves.
    for name in ["distributor-1", "contributor-1", "requester-1"] {
        let (status, body) = http("GET", url(&json, name));
        assert_eq!(status, 200, "{name}: {body}");
        assert!(body.contains("otpmesh_peers"), "{name}");
    }
    let distributor_url = url(&json, "distributor-1");
    // A node counts before it tells: once its event is out, the counter has moved.
    mesh.wait_for("the round stored", |v| {
        v["node"] == "distributor-1" && v["event"] == "round_stored"
    });
    let (_, stored) = http("GET", distributor_url);
    assert!(metric(&stored, "otpmesh_rounds_total{event=\"stored\"}") >= 1.0);
    let issued = metric(&stored, "otpmesh_otps_issued_total");

    // An OTP: issued moves; used once: accepted moves; wrong codes: a lockout.
    let distributor = Mesh::listen(&json, "distributor-1");
    let requester = Mesh::data_dir(&json, "requester-1");
    let otp = json_field(&request(&distributor, requester.as_ref()), "otp");
    // Counted before the reply left (and likewise every verification below).
    let (_, counted) = http("GET", distributor_url);
    assert!(metric(&counted, "otpmesh_otps_issued_total") > issued);
    let verify = |code: &str| {
        verify_json(&[
            "verify",
            "--distributor",
            &distributor,
            "--data-dir",
            &requester,
            "--otp",
            code,
        ])
    };
    assert_eq!(verify(&otp).1, "accepted");
    assert_eq!(verify(&otp).1, "used");
    let wrong = if otp == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for _ in 0..5 {
        assert_eq!(verify(wrong).1, "wrong");
    }
    assert_eq!(verify(wrong).1, "locked");
    let (_, after) = http("GET", distributor_url);
    for (result, count) in [
        ("locked", 1.0),
        ("accepted", 1.0),
        ("used", 1.0),
        ("wrong", 5.0),
    ] {
        let name = format!("otpmesh_verifications_total{{result=\"{result}\"}}");
        assert_eq!(metric(&after, &name), count, "{name}");
    }
    assert_eq!(metric(&after, "otpmesh_lockouts_total"), 1.0);
    assert!(metric(&after, "otpmesh_storage_commit_seconds_count") >= 3.0);
    // No peer id or code is ever a label or a value.
    assert!(!after.contains(&otp));
    assert!(!after.contains(
        Mesh::node(&json, "requester-1")["peer_id"]
            .as_str()
            .unwrap()
    ));

    // Only GET /metrics.
    let (status, _) = http("GET", &distributor_url.replace("/metrics", "/"));
    assert_eq!(status, 404);
    let (status, _) = http("POST", distributor_url);
    assert_eq!(status, 405);
    // A connection that never sends a request is closed by the server.
    let addr = distributor_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = idle.read(&mut buf);
    assert!(
        matches!(read, Ok(0)),
        "an idle metrics connection stays open: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(mesh.stop().success());
}
