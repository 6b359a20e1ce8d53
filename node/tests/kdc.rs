//! The key distribution centre on real sockets: a distributor node in this process as the centre,
//! two users as [`kdc::User`] endpoints with their own swarms, over 127.0.0.1 TCP + Noise + Yamux,
//! real Argon2id keys, a real file on disk, the centre's store reopened.

use futures::io::AsyncWriteExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use otpmesh_node::kdc::{self, CentreFailure};
use otpmesh_node::rpc;
use otpmesh_protocol::kdc::client::{self, Credentials};
use otpmesh_protocol::kdc::exchange::{Receiver, Sender};
use otpmesh_protocol::kdc::message::{
    decode_exchange, encode_exchange, CentreRequest, CentreResponse, Exchange, MAX_EXCHANGE_BYTES,
};
use otpmesh_protocol::kdc::{Key, Name};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::time::timeout;

mod common;

use common::{Distributor, WAIT};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

struct Party {
    identity: Keypair,
    name: Name,
    key: Key,
}

impl Party {
    fn new(who: &str, passphrase: &[u8], centre: &PeerId) -> Party {
        Party {
            identity: Keypair::generate_ed25519(),
            name: name(who),
            key: Key::derive(passphrase, &name(who), centre).unwrap(),
        }
    }

    fn peer(&self) -> PeerId {
        self.identity.public().to_peer_id()
    }

    async fn user(&self, listen: bool) -> kdc::User {
        let addrs: Vec<Multiaddr> = if listen {
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]
        } else {
            vec![]
        };
        kdc::User::start(self.identity.clone(), &addrs)
            .await
            .unwrap()
    }

    async fn register(
        &self,
        centre_addr: &Multiaddr,
        centre: &PeerId,
    ) -> Result<CentreResponse, CentreFailure> {
        let user = self.user(false).await;
        let r = client::register(
            centre,
            &self.peer(),
            self.name.clone(),
            self.key.clone(),
            None,
        );
        user.call_centre(centre_addr, CentreRequest::Register(r))
            .await
    }

    async fn session(
        &self,
        user: &kdc::User,
        centre_addr: &Multiaddr,
        centre: &PeerId,
        server: &str,
    ) -> Result<Credentials, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let req = client::session_request(
            centre,
            &self.key,
            self.name.clone(),
            name(server),
            now,
            None,
            &mut rand_core::OsRng,
        );
        match user
            .call_centre(centre_addr, CentreRequest::Session(req.clone()))
            .await
        {
            Ok(CentreResponse::Session(grant)) => {
                client::open_grant(centre, &self.key, &req, grant, now).map_err(|e| e.to_string())
            }
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Starts bob's receiver: announces it to the centre, then serves until a file arrives. Refused
/// attempts come out of the returned channel.
async fn receive(
    bob: &Party,
    centre_addr: &Multiaddr,
    centre: PeerId,
    dir: &Path,
    out: &Path,
) -> (
    tokio::task::JoinHandle<Result<kdc::ReceivedFile, String>>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let user = bob.user(true).await;
    let addrs = user.listen_addrs().await.unwrap();
    let present = client::present(
        &centre,
        &bob.key,
        bob.name.clone(),
        addrs.iter().map(|a| a.to_string()).collect(),
        now_ms(),
        &mut rand_core::OsRng,
    );
    assert!(matches!(
        user.call_centre(centre_addr, CentreRequest::Present(present))
            .await,
        Ok(CentreResponse::Present { .. })
    ));
    let mut incoming = user.accept().unwrap();
    let receiver = Receiver {
        centre,
        name: bob.name.clone(),
        key: bob.key.clone(),
        max_skew_ms: otpmesh_protocol::kdc::DEFAULT_MAX_SKEW_MS,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (dir, out) = (dir.to_path_buf(), out.to_path_buf());
    let task = tokio::spawn(async move {
        let _user = user;
        kdc::receive_file(&mut incoming, &receiver, &dir, &out, |_, reason| {
            let _ = tx.send(reason);
        })
        .await
    });
    (task, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_registered_users_exchange_a_file_byte_for_byte() {
    let (centre_dir, bob_dir, files) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let centre_identity = otpmesh_node::keys::load_or_create_identity(centre_dir.path()).unwrap();
    let centre_peer = centre_identity.public().to_peer_id();
    let alice = Party::new("alice", b"alice's passphrase", &centre_peer);
    let bob = Party::new("bob", b"bob's passphrase!", &centre_peer);
    let centre = Distributor::start(centre_dir.path(), &[&alice.identity, &bob.identity]).await;
    let (addr, centre_peer) = (centre.addr.clone(), centre.peer);
    assert!(alice.register(&addr, &centre_peer).await.is_ok());
    assert!(bob.register(&addr, &centre_peer).await.is_ok());
    // The name is taken now: a second registration without the old passphrase is refused.
    let err = Party {
        identity: bob.identity.clone(),
        name: name("alice"),
        key: bob.key.clone(),
    }
    .register(&addr, &centre_peer)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("taken"), "{err}");

    // The centre restarts: registrations are durable.
    centre.stop().await;
    let centre = Distributor::start(centre_dir.path(), &[&alice.identity, &bob.identity]).await;
    let addr = centre.addr.clone();

    let file: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let input = files.path().join("input.bin");
    std::fs::write(&input, &file).unwrap();
    let out = files.path().join("received.bin");
    let (receiving, mut refusals) = receive(&bob, &addr, centre_peer, bob_dir.path(), &out).await;

    let sender = alice.user(false).await;
    let creds = alice
        .session(&sender, &addr, &centre_peer, "bob")
        .await
        .unwrap();
    assert_eq!(creds.server_peer, bob.peer());
    let sent = timeout(WAIT, sender.send_file(&centre_peer, &creds, &input))
        .await
        .unwrap()
        .unwrap();
    let received = timeout(WAIT, receiving).await.unwrap().unwrap().unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), file, "byte-identical");
    assert_eq!(sent.bytes, file.len() as u64);
    assert_eq!(received.blake3, *blake3::hash(&file).as_bytes());
    assert_eq!(sent.blake3, received.blake3);
    assert_eq!(received.from, "alice");
    assert_eq!(received.from_peer, alice.peer());
    assert!(refusals.try_recv().is_err(), "nothing was refused");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o600);
    assert_eq!(mode(&bob_dir.path().join(kdc::REPLAY_CACHE_FILE)), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(files.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A wrong passphrase and an unknown name, each named by the centre.
    let wrong = Party {
        key: Key::derive(b"not alice's passphrase", &name("alice"), &centre_peer).unwrap(),
        identity: alice.identity.clone(),
        name: name("alice"),
    };
    let err = wrong
        .session(&sender, &addr, &centre_peer, "bob")
        .await
        .unwrap_err();
    assert!(err.contains("wrong passphrase for alice"), "{err}");
    let err = alice
        .session(&sender, &addr, &centre_peer, "carol")
        .await
        .unwrap_err();
    assert!(err.contains("no user named carol"), "{err}");
}

/// The receiver's next refusal, skipping the idle streams' (which time out on their own clock).
async fn next_refusal(refusals: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    loop {
        let reason = timeout(WAIT, refusals.recv()).await.unwrap().unwrap();
        if !reason.contains("no hello") {
            return reason;
        }
    }
}

/// Sends `hello` on a new stream to `bob`: both the answer and the receiver's report must be a
/// refusal naming `why`.
async fn hello_is_refused(
    control: &mut libp2p_stream::Control,
    bob: PeerId,
    hello: &Exchange,
    refusals: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    why: &str,
) {
    let mut stream = timeout(WAIT, control.open_stream(bob, kdc::PROTOCOL))
        .await
        .unwrap()
        .unwrap();
    write_frame(&mut stream, 0, hello).await;
    match read_frame(&mut stream).await {
        Exchange::Refused(reason) => assert!(reason.contains(why), "{reason}"),
        other => panic!("{other:?}"),
    }
    let reason = next_refusal(refusals).await;
    assert!(reason.contains(why), "{reason}");
}

/// A bare peer as `identity`, connected to `addr`: its stream control, and the task driving its
/// swarm. It waits for the connection: a stream asked for while the dial is under way can land on
/// a second connection that is then closed (seen once: "connection is closed" on the first write).
async fn raw_peer(
    identity: Keypair,
    addr: &Multiaddr,
) -> (libp2p_stream::Control, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    let mut swarm = rpc::bare_swarm(identity).unwrap();
    let control = swarm.behaviour().new_control();
    swarm.dial(addr.clone()).unwrap();
    timeout(WAIT, async {
        loop {
            match swarm.select_next_some().await {
                libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } => return,
                libp2p::swarm::SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("dialling {addr}: {error}")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("connected in time");
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (control, task)
}

async fn write_frame(stream: &mut libp2p::Stream, seq: u64, frame: &Exchange) {
    let mut buf = Vec::new();
    rpc::push_frame(&mut buf, seq, &encode_exchange(frame));
    stream.write_all(&buf).await.unwrap();
    stream.flush().await.unwrap();
}

async fn read_frame(stream: &mut libp2p::Stream) -> Exchange {
    let (_, body) = timeout(WAIT, rpc::read_frame(stream, MAX_EXCHANGE_BYTES))
        .await
        .unwrap()
        .unwrap()
        .expect("a frame");
    decode_exchange(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_hello_is_refused_and_the_receiver_keeps_serving() {
    let (centre_dir, bob_dir, files) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let centre_peer = otpmesh_node::keys::load_or_create_identity(centre_dir.path())
        .unwrap()
        .public()
        .to_peer_id();
    let alice = Party::new("alice", b"alice's passphrase", &centre_peer);
    let bob = Party::new("bob", b"bob's passphrase!", &centre_peer);
    let centre = Distributor::start(centre_dir.path(), &[&alice.identity, &bob.identity]).await;
    let (addr, centre_peer) = (centre.addr.clone(), centre.peer);
    alice.register(&addr, &centre_peer).await.unwrap();
    bob.register(&addr, &centre_peer).await.unwrap();
    let out = files.path().join("out.bin");
    let (receiving, mut refusals) = receive(&bob, &addr, centre_peer, bob_dir.path(), &out).await;
    let sender = alice.user(false).await;
    let creds = alice
        .session(&sender, &addr, &centre_peer, "bob")
        .await
        .unwrap();

    // A peer that opens streams and sends nothing holds up nobody.
    let bob_addr = creds.server_addrs[0]
        .parse::<Multiaddr>()
        .unwrap()
        .with(Protocol::P2p(bob.peer()));
    let (mut idle_control, _idle_swarm) = raw_peer(Keypair::generate_ed25519(), &bob_addr).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(
            timeout(WAIT, idle_control.open_stream(bob.peer(), kdc::PROTOCOL))
                .await
                .unwrap()
                .unwrap(),
        );
    }

    // Alice's first Hello, sent by hand on a raw stream: welcomed. The stream then ends early.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (_, hello) = Sender::hello(&creds, &centre_peer, now, 5, &mut rand_core::OsRng);
    let (mut control, _swarm) = raw_peer(alice.identity.clone(), &bob_addr).await;
    let mut first = timeout(WAIT, control.open_stream(bob.peer(), kdc::PROTOCOL))
        .await
        .unwrap()
        .unwrap();
    write_frame(&mut first, 0, &hello).await;
    assert!(matches!(read_frame(&mut first).await, Exchange::Welcome(_)));
    first.close().await.unwrap();
    let reason = next_refusal(&mut refusals).await;
    assert!(reason.contains("closed"), "{reason}");

    // The same Hello again: a replay.
    hello_is_refused(&mut control, bob.peer(), &hello, &mut refusals, "replay").await;

    // Mallory (another peer) presenting alice's Hello: the ticket names alice's PeerId.
    let (mut control, _mallory) = raw_peer(Keypair::generate_ed25519(), &bob_addr).await;
    let why = "connection comes from";
    hello_is_refused(&mut control, bob.peer(), &hello, &mut refusals, why).await;

    // The receiver still serves an honest sender.
    let input = files.path().join("in.bin");
    std::fs::write(&input, b"after the replay").unwrap();
    let sent = timeout(WAIT, sender.send_file(&centre_peer, &creds, &input)).await;
    if !matches!(sent, Ok(Ok(_))) {
        let receiver_end = timeout(WAIT, receiving).await;
        panic!(
            "{sent:?}; the receiver said {:?}, ended {receiver_end:?}",
            refusals.try_recv()
        );
    }
    timeout(WAIT, receiving).await.unwrap().unwrap().unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"after the replay");
    drop(idle);
    // The exchange cut short after its Welcome left no partial file behind.
    let names: Vec<String> = std::fs::read_dir(files.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("partial")), "{names:?}");
}
