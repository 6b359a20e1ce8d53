//! The kdc steps on the simulator. Each user speaks from its own peer id, as `otpmesh kdc` does
//! from its data dir: the centre's messages (register, present, session) go over the simulated
//! net to the centre's real distributor role, and the exchange between sender and receiver runs
//! frame by frame in memory, the receiver's replay cache kept in its data dir as a receiver keeps
//! it.

use super::{arrived, judge, Registration, Transfer, KDC_TIMEOUT};
use crate::scenario::runner::Judged;
use crate::scenario::simulated::Simulated;
use crate::scenario::spec::KdcExpect;
use libp2p::PeerId;
use otpmesh_node::kdc::{load_replay_cache, save_replay_cache, CentreFailure};
use otpmesh_protocol::kdc::exchange::{self, Receiver};
use otpmesh_protocol::kdc::message::{CentreRequest, CentreResponse};
use otpmesh_protocol::kdc::{client, Key, Name};
use otpmesh_protocol::role::Millis;
use otpmesh_protocol::wire::{Refusal, Request};
use rand_core::CryptoRngCore;

/// The clock skew a receiver allows: `otpmesh kdc receive`'s default `--max-skew`.
const RECEIVER_SKEW_MS: Millis = 5 * 60_000;

/// `request` from `from` to the centre at `centre`, judged as `otpmesh kdc` judges the answer.
fn call(
    sim: &mut Simulated,
    from: PeerId,
    centre: PeerId,
    request: CentreRequest,
) -> anyhow::Result<Result<CentreResponse, CentreFailure>> {
    let answer = sim
        .call(from, centre, Request::Kdc(request), KDC_TIMEOUT)?
        .unwrap_or_else(|| Err(format!("no answer within {} s", KDC_TIMEOUT.as_secs())));
    Ok(CentreFailure::judge(answer))
}

fn unexpected(answer: CentreResponse) -> String {
    format!("unexpected answer from the centre: {answer:?}")
}

/// The user `name` and its key at `centre` from `passphrase` (Argon2id), or why there is none.
fn user(name: &str, passphrase: &str, centre: &PeerId) -> Result<(Name, Key), String> {
    let name = Name::new(name).map_err(|e| e.to_string())?;
    let key = Key::derive(passphrase.as_bytes(), &name, centre).map_err(|e| e.to_string())?;
    Ok((name, key))
}

pub fn register(
    sim: &mut Simulated,
    r: &Registration<'_>,
    expect: &KdcExpect,
) -> anyhow::Result<Judged> {
    let result = registered(sim, r)?;
    Ok(judge(expect, result))
}

type Outcome = anyhow::Result<Result<String, String>>;

fn registered(sim: &mut Simulated, r: &Registration<'_>) -> Outcome {
    let (me, centre) = (r.user.peer_id, r.centre.peer_id);
    let (name, key) = match user(r.name, r.passphrase, &centre) {
        Ok(user) => user,
        Err(e) => return Ok(Err(e)),
    };
    let ask = |old: Option<&Key>| {
        let register = client::register(&centre, &me, name.clone(), key.clone(), old);
        CentreRequest::Register(register)
    };
    let mut answer = call(sim, me, centre, ask(None))?;
    let taken = matches!(answer, Err(CentreFailure::Refused(Refusal::NameTaken(_))));
    if let (true, Some(old)) = (taken, r.old_passphrase) {
        let old = match user(r.name, old, &centre) {
            Ok((_, old)) => old,
            Err(e) => return Ok(Err(e)),
        };
        answer = call(sim, me, centre, ask(Some(&old)))?;
    }
    Ok(match answer {
        Ok(CentreResponse::Registered { replaced, .. }) => {
            let again = if replaced { " again" } else { "" };
            Ok(format!("{name} registered{again}"))
        }
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(e.to_string()),
    })
}

pub fn send(
    sim: &mut Simulated,
    t: &Transfer<'_>,
    expect: &KdcExpect,
    rng: &mut dyn CryptoRngCore,
) -> anyhow::Result<Judged> {
    let result = sent(sim, t, rng)?;
    Ok(judge(expect, result))
}

fn sent(sim: &mut Simulated, t: &Transfer<'_>, rng: &mut dyn CryptoRngCore) -> Outcome {
    let centre = t.centre.peer_id;
    let now = |sim: &Simulated| sim.clock().as_millis() as Millis;
    // The receiver first: it tells the centre where it listens, under its key.
    let receiver = match user(&t.to.name, t.receiver_passphrase, &centre) {
        Ok((name, key)) => Receiver {
            centre,
            name,
            key,
            max_skew_ms: RECEIVER_SKEW_MS,
        },
        Err(e) => return Ok(Err(format!("the receiver did not start: {e}"))),
    };
    let (name, key) = (receiver.name.clone(), &receiver.key);
    let addrs = vec![t.to.addr.to_string()];
    let present = client::present(&centre, key, name, addrs, now(sim), rng);
    if let Err(e) = call(sim, t.to.peer_id, centre, CentreRequest::Present(present))? {
        return Ok(Err(format!("the receiver did not start: {e}")));
    }
    // The sender asks for a session key and a ticket.
    let (me, my_key) = match user(&t.from.name, t.passphrase, &centre) {
        Ok(user) => user,
        Err(e) => return Ok(Err(e)),
    };
    let server = match Name::new(t.to_name) {
        Ok(server) => server,
        Err(e) => return Ok(Err(format!("--to: {e}"))),
    };
    let otp = t.otp.map(String::from);
    let request = client::session_request(&centre, &my_key, me, server, now(sim), otp, rng);
    let ask = CentreRequest::Session(request.clone());
    let grant = match call(sim, t.from.peer_id, centre, ask)? {
        Ok(CentreResponse::Session(grant)) => grant,
        Ok(other) => return Ok(Err(unexpected(other))),
        Err(e) => return Ok(Err(e.to_string())),
    };
    let creds = match client::open_grant(&centre, &my_key, &request, grant, now(sim)) {
        Ok(creds) => creds,
        Err(e) => return Ok(Err(e.to_string())),
    };
    // The exchange, frame by frame; the replay cache lives in the receiver's data dir.
    let dir = &t.to.data_dir;
    std::fs::create_dir_all(dir)?;
    let mut cache = load_replay_cache(dir).map_err(anyhow::Error::msg)?;
    let (from, at) = (t.from.peer_id, now(sim));
    let outcome = exchange::in_memory(&creds, &from, &receiver, &mut cache, at, t.file, rng);
    save_replay_cache(dir, &cache).map_err(anyhow::Error::msg)?;
    Ok(match outcome {
        Ok((got, _receipt)) => arrived(t, &got),
        Err(e) => Err(e.to_string()),
    })
}
