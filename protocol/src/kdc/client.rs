//! A user's side of the centre: registering, asking for a session key, opening the answer.

use super::context::{for_client_context, preauth_context, present_context, reregister_proof};
use super::message::{ForClient, Grant, Preauth, Present, Register, SessionRequest};
use super::{message, KdcError, Key, Name, Purpose, Sealed};
use crate::time::Millis;
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;

/// The registration request for `name` with `key`, sent by `me`; `old` is the name's current key
/// when it is registered already.
pub fn register(centre: &PeerId, me: &PeerId, name: Name, key: Key, old: Option<&Key>) -> Register {
    let proof = old.map(|old| reregister_proof(old, centre, &name, &key, me));
    Register { name, key, proof }
}

/// The presence announcement of `name` (holding `key`), listening at `addrs`.
pub fn present(
    centre: &PeerId,
    key: &Key,
    name: Name,
    addrs: Vec<String>,
    now: Millis,
    rng: &mut dyn CryptoRngCore,
) -> Present {
    let proof = key.seal(
        Purpose::Preauth,
        &present_context(centre, &name),
        &message::to_plain(&Preauth { ctime_ms: now }),
        rng,
    );
    Present { name, addrs, proof }
}

/// A session request from `client` (holding `key`) for `server`, with a fresh nonce.
pub fn session_request(
    centre: &PeerId,
    key: &Key,
    client: Name,
    server: Name,
    now: Millis,
    otp: Option<String>,
    rng: &mut dyn CryptoRngCore,
) -> SessionRequest {
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    let preauth = key.seal(
        Purpose::Preauth,
        &preauth_context(centre, &client, &server, &nonce),
        &message::to_plain(&Preauth { ctime_ms: now }),
        rng,
    );
    SessionRequest {
        client,
        server,
        nonce,
        preauth,
        otp,
    }
}

/// What A holds after the centre's answer: the session key, whom it is for, and the ticket.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client: Name,
    pub session_key: Key,
    pub server: Name,
    pub server_peer: PeerId,
    pub server_addrs: Vec<String>,
    pub issued_at_ms: Millis,
    pub expires_at_ms: Millis,
    pub ticket: Sealed,
}

/// Opens the centre's answer to `request` and checks it answers that request.
pub fn open_grant(
    centre: &PeerId,
    key: &Key,
    request: &SessionRequest,
    grant: Grant,
    now: Millis,
) -> Result<Credentials, KdcError> {
    let plain = key
        .open(
            Purpose::ForClient,
            &for_client_context(centre, &request.client, &request.nonce),
            &grant.for_client,
        )
        .ok_or_else(|| KdcError::GrantUnreadable(request.client.clone()))?;
    let part: ForClient = message::from_plain(&plain)
        .ok_or_else(|| KdcError::GrantUnreadable(request.client.clone()))?;
    if part.nonce != request.nonce {
        return Err(KdcError::GrantMismatch("nonce".into()));
    }
    if part.server != request.server {
        return Err(KdcError::GrantMismatch(format!(
            "asked for {}, got a key for {}",
            request.server, part.server
        )));
    }
    if part.expires_at_ms <= now {
        return Err(KdcError::GrantExpired(part.expires_at_ms));
    }
    Ok(Credentials {
        client: request.client.clone(),
        session_key: part.session_key,
        server: part.server,
        server_peer: part.server_peer,
        server_addrs: part.server_addrs,
        issued_at_ms: part.issued_at_ms,
        expires_at_ms: part.expires_at_ms,
        ticket: grant.ticket,
    })
}
