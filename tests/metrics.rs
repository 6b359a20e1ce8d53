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

/// Every sample name a Prometheus text page can hold: each `# TYPE` family with the suffixes its
/// type gives samples (a family with no samples yet is still declared), and each sample's name.
fn served_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The metric names a PromQL expression reads (otpmesh's and libp2p's).
fn queried_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("otpmesh_") || w.starts_with("libp2p_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_nodes_serve() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/otpmesh.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = Vec::new();
    for panel in panels {
        assert!(
            panel["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{panel}"
        );
        let targets = panel["targets"].as_array().expect("a panel's targets");
        assert!(!targets.is_empty(), "{panel}");
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            let names = queried_names(expr);
            assert!(!names.is_empty(), "a query of no otpmesh metric: {expr}");
            queries.extend(names.into_iter().map(|n| (n, panel["title"].clone())));
        }
    }
    assert!(panels.len() >= 10, "{} panels", panels.len());

    // What a real mesh serves, with a verifier among its nodes.
    let mesh = Mesh::up(&["--metrics", "--verifiers", "1"]);
    mesh.wait_for("round 1 delivered", |v| {
        v["node"] == "generator-1" && v["event"] == "round_delivered_all"
    });
    let json = mesh.mesh_json();
    let mut served = std::collections::BTreeSet::new();
    for node in json["nodes"].as_array().unwrap() {
        let (status, text) = http("GET", node["metrics"].as_str().unwrap());
        assert_eq!(status, 200);
        served.extend(served_names(&text));
    }
    let missing: Vec<_> = queries
        .iter()
        .filter(|(name, _)| !served.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no node serves: {missing:?}\nserved: {served:?}"
    );
    // And the check itself can fail: a name no node serves is caught.
    assert!(!served.contains("otpmesh_no_such_metric_total"));
    assert!(mesh.stop().success());
}
