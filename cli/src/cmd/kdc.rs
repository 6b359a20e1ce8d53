//! `otpmesh kdc register | send | receive`: the key distribution centre's users.

use super::{Failure, Outcome};
use crate::cli::{KdcReceiveArgs, KdcRegisterArgs, KdcSendArgs, KdcUserArgs};
use anyhow::anyhow;
use libp2p::{Multiaddr, PeerId};
use otpmesh_node::kdc::{self, CentreFailure, User};
use otpmesh_protocol::kdc::client;
use otpmesh_protocol::kdc::exchange::{Receiver, MAX_SKEW_MS};
use otpmesh_protocol::kdc::message::{CentreRequest, CentreResponse, MAX_PRESENCE_ADDRS};
use otpmesh_protocol::kdc::{Key, Name, MAX_PASSPHRASE_BYTES};
use otpmesh_protocol::role;
use otpmesh_protocol::wire::Refusal;
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

fn failure(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

fn bad_input(error: anyhow::Error) -> Failure {
    failure(2, error)
}

/// Unreachable (3), or refused by the centre (4: every refusal of the centre's is one of who asks).
fn centre_failure(e: CentreFailure) -> Failure {
    let kind = match e {
        CentreFailure::Unreachable(_) => role::Failure::Unreachable,
        CentreFailure::Refused(_) | CentreFailure::Unexpected(_) => role::Failure::Unauthorised,
    };
    failure(kind.exit_code(), anyhow!("{e}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What every kdc command starts from: the user's name, identity, endpoint and the centre.
struct Context {
    name: Name,
    centre_addr: Multiaddr,
    centre: PeerId,
    identity: libp2p::identity::Keypair,
}

impl Context {
    fn new(args: &KdcUserArgs) -> Result<Context, Failure> {
        let name = Name::new(&args.name).map_err(|e| bad_input(anyhow!("--name: {e}")))?;
        let centre_addr: Multiaddr = args.distributor.parse().map_err(|e| {
            bad_input(anyhow!(
                "--distributor {:?} is not a multiaddr: {e}",
                args.distributor
            ))
        })?;
        let (Some(centre), _) = otpmesh_node::split_peer(&centre_addr) else {
            return Err(bad_input(anyhow!(
                "--distributor {centre_addr} must end with /p2p/<peer id>: the centre's identity is part of every key"
            )));
        };
        let identity = otpmesh_node::keys::load_or_create_identity(&args.data_dir)
            .map_err(|e| anyhow!("{}: {e}", args.data_dir.display()))?;
        Ok(Context {
            name,
            centre_addr,
            centre,
            identity,
        })
    }

    /// The user's key (from its passphrase) and a started endpoint listening on `listen`.
    async fn start(
        &self,
        args: &KdcUserArgs,
        prompt: &str,
        confirm: bool,
        listen: &[Multiaddr],
    ) -> Result<(Key, User), Failure> {
        let key = self
            .key(passphrase(
                args.passphrase_file.as_deref(),
                prompt,
                confirm,
            )?)
            .await?;
        let user = User::start(self.identity.clone(), listen)
            .await
            .map_err(|e| anyhow!(e))?;
        Ok((key, user))
    }

    fn me(&self) -> PeerId {
        self.identity.public().to_peer_id()
    }

    /// The long-term key for this name at this centre (Argon2id, off the async threads).
    async fn key(&self, passphrase: Zeroizing<Vec<u8>>) -> Result<Key, Failure> {
        let (name, centre) = (self.name.clone(), self.centre);
        tokio::task::spawn_blocking(move || Key::derive(&passphrase, &name, &centre))
            .await
            .map_err(|e| anyhow!("deriving the key: {e}"))?
            .map_err(|e| bad_input(anyhow!("{e}")))
    }
}

/// A passphrase from `file` (its first line), or from the terminal without echo.
fn passphrase(
    file: Option<&Path>,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(path) = file {
        let mut bytes = Zeroizing::new(Vec::new());
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(MAX_PASSPHRASE_BYTES as u64 + 3)
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| bad_input(anyhow!("cannot read {}: {e}", path.display())))?;
        let line_end = bytes
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(bytes.len());
        bytes.truncate(line_end);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        return Ok(bytes);
    }
    if !std::io::stdin().is_terminal() {
        return Err(bad_input(anyhow!(
            "no passphrase: give --passphrase-file, or run in a terminal to type it"
        )));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(prompt).map_err(|e| anyhow!("reading the passphrase: {e}"))?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("again: ")
                .map_err(|e| anyhow!("reading the passphrase: {e}"))?,
        );
        if *again != *first {
            return Err(bad_input(anyhow!("the two passphrases differ")));
        }
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

async fn within<T>(
    secs: u64,
    what: &str,
    f: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| failure(3, anyhow!("{what}: no answer within {secs} s")))?
}

/// Resolves on Ctrl-C or SIGTERM, naming which.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

pub async fn register(args: KdcRegisterArgs) -> Outcome {
    let ctx = Context::new(&args.user)?;
    let prompt = format!("new passphrase for {}: ", ctx.name);
    let (key, user) = ctx.start(&args.user, &prompt, true, &[]).await?;
    let ask = |old: Option<&Key>| {
        CentreRequest::Register(client::register(
            &ctx.centre,
            &ctx.me(),
            ctx.name.clone(),
            key.clone(),
            old,
        ))
    };
    let secs = args.user.timeout_secs;
    let mut answer = within(secs, "registering", async {
        Ok(user.call_centre(&ctx.centre_addr, ask(None)).await)
    })
    .await?;
    let taken = matches!(&answer, Err(CentreFailure::Refused(Refusal::NameTaken(_))));
    if taken && (args.old_passphrase_file.is_some() || std::io::stdin().is_terminal()) {
        let prompt = format!("current passphrase for {}: ", ctx.name);
        let old = ctx
            .key(passphrase(
                args.old_passphrase_file.as_deref(),
                &prompt,
                false,
            )?)
            .await?;
        answer = within(secs, "registering", async {
            Ok(user.call_centre(&ctx.centre_addr, ask(Some(&old))).await)
        })
        .await?;
    }
    let replaced = match answer.map_err(centre_failure)? {
        CentreResponse::Registered { replaced, .. } => replaced,
        other => return Err(anyhow!("unexpected answer from the centre: {other:?}").into()),
    };
    if args.user.json {
        println!(
            "{}",
            serde_json::json!({ "registered": ctx.name.as_str(), "peer": ctx.me().to_string(), "replaced": replaced, "centre": ctx.centre.to_string() })
        );
    } else {
        let again = if replaced {
            " again (new passphrase)"
        } else {
            ""
        };
        println!(
            "registered {} at {}{again} as peer {}",
            ctx.name,
            ctx.centre,
            ctx.me()
        );
    }
    Ok(())
}

pub async fn send(args: KdcSendArgs) -> Outcome {
    let ctx = Context::new(&args.user)?;
    let to = Name::new(&args.to).map_err(|e| bad_input(anyhow!("--to: {e}")))?;
    if !args.file.is_file() {
        return Err(bad_input(anyhow!(
            "--file {}: not a readable file",
            args.file.display()
        )));
    }
    let prompt = format!("passphrase for {}: ", ctx.name);
    let (key, user) = ctx.start(&args.user, &prompt, false, &[]).await?;
    within(args.user.timeout_secs, "sending", async {
        let now = now_ms();
        let request = client::session_request(
            &ctx.centre,
            &key,
            ctx.name.clone(),
            to.clone(),
            now,
            args.otp.clone(),
            &mut rand_core::OsRng,
        );
        let grant = match user
            .call_centre(&ctx.centre_addr, CentreRequest::Session(request.clone()))
            .await
            .map_err(centre_failure)?
        {
            CentreResponse::Session(grant) => grant,
            other => return Err(anyhow!("unexpected answer from the centre: {other:?}").into()),
        };
        let creds = client::open_grant(&ctx.centre, &key, &request, grant, now_ms())
            .map_err(|e| failure(4, anyhow!("{e}")))?;
        let sent = user
            .send_file(&ctx.centre, &creds, &args.file)
            .await
            .map_err(|e| anyhow!("sending {} to {to}: {e}", args.file.display()))?;
        if args.user.json {
            println!(
                "{}",
                serde_json::json!({
                    "sent": args.file.display().to_string(),
                    "to": to.as_str(),
                    "to_peer": creds.server_peer.to_string(),
                    "bytes": sent.bytes,
                    "blake3": hex::encode(sent.blake3),
                    "ticket_expires_at": crate::output::rfc3339(creds.expires_at_ms),
                })
            );
        } else {
            println!(
                "sent {} ({} bytes) to {to}; receipt checked, blake3 {}",
                args.file.display(),
                sent.bytes,
                hex::encode(sent.blake3)
            );
        }
        Ok(())
    })
    .await
}

pub async fn receive(args: KdcReceiveArgs) -> Outcome {
    let ctx = Context::new(&args.user)?;
    let listen: Multiaddr = args.listen.parse().map_err(|e| {
        bad_input(anyhow!(
            "--listen {:?} is not a multiaddr: {e}",
            args.listen
        ))
    })?;
    if args.out.is_dir() {
        return Err(bad_input(anyhow!(
            "--out {} is a directory; name a file",
            args.out.display()
        )));
    }
    let max_skew_ms = args.max_skew.as_millis() as u64;
    if max_skew_ms > MAX_SKEW_MS {
        return Err(bad_input(anyhow!(
            "--max-skew {}: at most {} ms (an hour)",
            humantime::format_duration(args.max_skew),
            MAX_SKEW_MS
        )));
    }
    let prompt = format!("passphrase for {}: ", ctx.name);
    let (key, user) = ctx.start(&args.user, &prompt, false, &[listen]).await?;
    let json = args.user.json;
    within(args.user.timeout_secs, "receiving", async {
        let addrs: Vec<String> = user
            .listen_addrs()
            .await
            .map_err(|e| anyhow!(e))?
            .iter()
            .map(|a| a.to_string())
            .take(MAX_PRESENCE_ADDRS)
            .collect();
        let present = client::present(
            &ctx.centre,
            &key,
            ctx.name.clone(),
            addrs.clone(),
            now_ms(),
            &mut rand_core::OsRng,
        );
        user.call_centre(&ctx.centre_addr, CentreRequest::Present(present))
            .await
            .map_err(centre_failure)?;
        let mut incoming = user.accept().map_err(|e| anyhow!(e))?;
        if json {
            println!(
                "{}",
                serde_json::json!({ "event": "ready", "name": ctx.name.as_str(), "peer": ctx.me().to_string(), "addrs": addrs })
            );
        } else {
            println!("receiving as {} at {}; waiting for a sender", ctx.name, addrs.join(", "));
        }
        let receiver = Receiver {
            centre: ctx.centre,
            name: ctx.name.clone(),
            key,
            max_skew_ms,
        };
        let receiving = kdc::receive_file(
            &mut incoming,
            &receiver,
            &args.user.data_dir,
            &args.out,
            |peer, reason| {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "event": "refused", "peer": peer.to_string(), "reason": reason })
                    );
                } else {
                    eprintln!("refused an exchange from {peer}: {reason}");
                }
            },
        );
        // On Ctrl-C or SIGTERM the exchange is dropped, which removes a partly written file.
        let got = tokio::select! {
            got = receiving => got.map_err(|e| anyhow!(e))?,
            signal = stop_signal() => {
                return Err(anyhow!("stopped by {signal} before a file arrived").into())
            }
        };
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "event": "received",
                    "from": got.from,
                    "from_peer": got.from_peer.to_string(),
                    "bytes": got.bytes,
                    "blake3": hex::encode(got.blake3),
                    "path": got.path.display().to_string(),
                })
            );
        } else {
            println!(
                "received {} bytes from {} into {}; blake3 {}",
                got.bytes,
                got.from,
                got.path.display(),
                hex::encode(got.blake3)
            );
        }
        Ok(())
    })
    .await
}
