//! The verifier's fronts under hostile input, in process on 127.0.0.1. RADIUS: garbage datagrams,
//! oversized and overrunning attributes, requests without the Message-Authenticator its client
//! must send, a flood past the client's rate, an unknown client. All are dropped (counted by
//! reason in /metrics), and an honest request is still answered. HTTP: a relying party past its
//! rate is answered 429 and counted, and neither it (once it slows down) nor another is shut out.

use libp2p::identity::Keypair;
use otpmesh_node::verifier::{radius, Fronts, RadiusClient};
use otpmesh_node::{NodeConfig, RoleSpec};
use otpmesh_protocol::mesh::{Member, MeshConfig, UserName, Verifier};
use rand::{Rng, RngCore};
use std::net::UdpSocket;
use std::time::Duration;

const SECRET: &str = "a-shared-secret";

fn metric(text: &str, outcome: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("otpmesh_verifier_dropped_total"))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Sends `packet` from `socket` until the verifier counts one more drop as `reason` (UDP may lose
/// a datagram while the garbage fills the socket buffer; a RADIUS client retransmits too), and
/// asserts that no authentic answer ever came. Bounded: 20 tries of 300 ms.
fn dropped_as(
    socket: &UdpSocket,
    to: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    packet: &[u8],
    reason: &str,
) {
    let before = metric(&scrape(metrics), reason);
    for _ in 0..20 {
        assert!(
            exchange(socket, to, packet).is_none(),
            "answered a request that should be dropped as {reason}"
        );
        if metric(&scrape(metrics), reason) > before {
            return;
        }
    }
    panic!("no drop counted as {reason}:\n{}", scrape(metrics));
}

/// Sends `packet` and waits (bounded) for a reply that is authentic for it.
fn exchange(socket: &UdpSocket, to: std::net::SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let authenticator: [u8; 16] = packet[4..20].try_into().unwrap();
    socket.send_to(packet, to).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        if radius::response_is_authentic(&buf[..n], &authenticator, SECRET.as_bytes()) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// A verifier for user alice whose one distributor nobody runs (checks come to "unavailable",
/// which is still an answer), with `fronts`, on 127.0.0.1.
fn start_verifier(dir: &std::path::Path, fronts: Fronts) -> otpmesh_node::Node {
    let me = otpmesh_node::keys::load_or_create_identity(dir).unwrap();
    let member = |peer_id, addrs: Vec<String>, name: Option<&str>| Member {
        peer_id,
        addrs,
        name: name.map(|n| UserName::new(n).unwrap()),
    };
    let other = || Keypair::generate_ed25519().public().to_peer_id();
    let mesh = MeshConfig {
        generators: vec![member(other(), vec![], None)],
        distributors: vec![member(other(), vec!["/ip4/127.0.0.1/tcp/1".into()], None)],
        requesters: vec![member(other(), vec![], Some("alice"))],
        verifiers: vec![Verifier {
            peer_id: me.public().to_peer_id(),
            addrs: vec![],
            users: vec!["*".into()],
        }],
        settings: otpmesh_protocol::mesh::Settings {
            quorum: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    otpmesh_node::start(NodeConfig {
        role: RoleSpec::Verifier { fronts },
        data_dir: dir.to_path_buf(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        peers: vec![],
        mesh,
        mdns: false,
        manual_rounds: false,
        seed: None,
        metrics: Some("127.0.0.1:0".parse().unwrap()),
    })
    .expect("the verifier starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_are_dropped_and_counted_and_honest_requests_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    let fronts = Fronts {
        radius: Some((
            "127.0.0.1:0".parse().unwrap(),
            vec![RadiusClient {
                address: "127.0.0.1".parse().unwrap(),
                secret: SECRET.into(),
                require_message_authenticator: true,
                rate_per_s: 20,
            }],
        )),
        http: None,
    };
    let node = start_verifier(dir.path(), fronts);
    let (radius_at, metrics_at) = (node.radius_addr.unwrap(), node.metrics_addr.unwrap());
    tokio::spawn(node.event_loop.run());

    let result = tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut rng = rand::thread_rng();
        let honest = |id: u8| {
            let mut auth = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut auth);
            radius::access_request(id, auth, "alice", b"12345678", SECRET.as_bytes(), true)
        };
        // An attribute that overruns the packet, and one that claims 255 octets in a short one.
        let mut overrun = honest(1);
        overrun[21] = 250;
        dropped_as(&socket, radius_at, metrics_at, &overrun, "malformed");
        let mut long = honest(2);
        long.extend(std::iter::repeat_n(0xAB, 4000));
        let len = (long.len() as u16).to_be_bytes();
        long[2..4].copy_from_slice(&len);
        dropped_as(&socket, radius_at, metrics_at, &long, "malformed");
        // No Message-Authenticator, from a client that must send one; a wrong one.
        let bare = radius::access_request(3, [3; 16], "alice", b"1", SECRET.as_bytes(), false);
        dropped_as(
            &socket,
            radius_at,
            metrics_at,
            &bare,
            "no_message_authenticator",
        );
        let forged = radius::access_request(4, [4; 16], "alice", b"1", b"not-the-secret", true);
        dropped_as(&socket, radius_at, metrics_at, &forged, "bad_authenticator");
        // An unknown client (another loopback address).
        let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
        stranger
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        dropped_as(
            &stranger,
            radius_at,
            metrics_at,
            &honest(5),
            "unknown_client",
        );
        // Garbage, of every length up to past the largest datagram (after the checks above, so
        // their counts are theirs).
        for _ in 0..500 {
            let mut g = vec![0u8; rng.gen_range(0..5000)];
            rng.fill_bytes(&mut g);
            socket.send_to(&g, radius_at).unwrap();
        }
        // A flood past the rate.
        for i in 0..300u32 {
            socket
                .send_to(&honest((i % 200) as u8 + 10), radius_at)
                .unwrap();
        }
        // Drain what the flood got answered, then an honest request is answered (the client
        // retransmits, as RADIUS clients do; bounded).
        let mut buf = [0u8; 4096];
        while socket.recv_from(&mut buf).is_ok() {}
        let request = honest(250);
        let reply = (0..20).find_map(|_| exchange(&socket, radius_at, &request));
        reply.map(|r| r[0])
    })
    .await
    .unwrap();
    assert_eq!(
        result,
        Some(radius::ACCESS_REJECT),
        "the honest request is answered"
    );
    let text = tokio::task::spawn_blocking(move || scrape(metrics_at))
        .await
        .unwrap();
    for reason in ["malformed", "rate_limited"] {
        assert!(
            metric(&text, reason) >= 1.0,
            "no drop counted as {reason}:\n{text}"
        );
    }
}

/// One `POST /validate/check` as alice with `token`: (status code, headers and body).
fn validate(at: std::net::SocketAddr, token: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = "user=alice&pass=12345678";
    write!(
        s,
        "POST /validate/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// A relying party past its rate (the default, 50 checks a second in bursts of 100) gets 429 with
/// Retry-After, counted as rate_limited; once it slows down it is answered again, and another
/// party is never held up by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_party_past_its_rate_is_told_to_wait_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (greedy, polite) = ("a-token-of-the-greedy-party", "a-token-of-the-polite-party");
    let file = dir.path().join("http-tokens.toml");
    otpmesh_node::keys::write_file(
        &file,
        format!(
            "[[parties]]\nname = \"greedy\"\ntoken = \"{greedy}\"\n\
             [[parties]]\nname = \"polite\"\ntoken = \"{polite}\"\n"
        )
        .as_bytes(),
        0o600,
    )
    .unwrap();
    let parties = otpmesh_node::verifier::load_parties(&file).unwrap();
    let fronts = Fronts {
        radius: None,
        http: Some(("127.0.0.1:0".parse().unwrap(), parties)),
    };
    let node = start_verifier(dir.path(), fronts);
    let (http_at, metrics_at) = (node.http_addr.unwrap(), node.metrics_addr.unwrap());
    tokio::spawn(node.event_loop.run());
    let (statuses, polite_status, later, text) = tokio::task::spawn_blocking(move || {
        // 8 connections at a time, 400 checks: far past 100 + 50 a second.
        let statuses: Vec<(u16, String)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(move || {
                        (0..50)
                            .map(|_| validate(http_at, greedy))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let polite_status = validate(http_at, polite).0;
        // Once its bucket refills (a 429 takes no token), it is answered again: each try is
        // a full exchange, bounded by a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let later = std::iter::repeat_with(|| validate(http_at, greedy).0)
            .take_while(|_| std::time::Instant::now() < deadline)
            .find(|status| *status == 200);
        (statuses, polite_status, later, scrape(metrics_at))
    })
    .await
    .unwrap();
    let limited: Vec<&String> = statuses
        .iter()
        .filter(|(code, _)| *code == 429)
        .map(|(_, text)| text)
        .collect();
    assert!(!limited.is_empty(), "400 checks at once were all served");
    assert!(
        limited
            .iter()
            .all(|t| t.to_lowercase().contains("retry-after: 1")),
        "a 429 without Retry-After: {}",
        limited[0]
    );
    assert!(
        statuses.iter().all(|(code, _)| matches!(code, 200 | 429)),
        "an answer other than 200 or 429: {:?}",
        statuses.iter().find(|(c, _)| !matches!(c, 200 | 429))
    );
    assert_eq!(polite_status, 200, "the other party is served");
    assert_eq!(
        later,
        Some(200),
        "the greedy party is served once it slows down"
    );
    assert!(
        metric(&text, "rate_limited") >= limited.len() as f64,
        "{text}"
    );
}
