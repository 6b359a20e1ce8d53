//! The key distribution centre a distributor runs: who is registered, where receivers listen, and issuing session keys.
//!
//! Pure decisions; the distributor ([`crate::role::Distributor`]) persists what they return and
//! answers. A session request is judged in two steps so that an OTP is only used up for a request
//! that would otherwise be granted: [`Centre::check_session`] (no change), then [`Centre::grant`].

use crate::kdc::context::{
    for_client_context, preauth_context, present_context, reregister_proof, ticket_context,
};
use crate::kdc::message::{
    ForClient, Grant, Preauth, Present, Register, SessionRequest, Ticket, MAX_ADDR_BYTES,
    MAX_PRESENCE_ADDRS,
};
use crate::kdc::{message, Key, Name, Purpose};
use crate::time::Millis;
use crate::wire::Refusal;
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// Users a centre holds.
pub const MAX_USERS: usize = 65_536;
/// Names one peer may hold, so one requester cannot take every name.
pub const MAX_NAMES_PER_PEER: usize = 4;
/// A receiver's announced addresses are forgotten after this long.
pub const PRESENCE_TTL_MS: Millis = 24 * 3_600_000;

/// A registered user, as the centre stores it (sealed at rest).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub name: Name,
    pub peer: PeerId,
    pub key: Key,
    pub registered_at_ms: Millis,
}

/// How the centre issues tickets.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub ticket_lifetime_ms: Millis,
    pub max_skew_ms: Millis,
    pub require_otp: bool,
}

/// A session request that passed every check but the OTP.
#[derive(Debug)]
pub struct Approved {
    client: Name,
    server: Name,
    nonce: [u8; 16],
}

#[derive(Debug, Default)]
pub struct Centre {
    users: HashMap<Name, User>,
    presence: HashMap<Name, (Vec<String>, Millis)>,
}

fn unauthorised(why: String) -> Refusal {
    Refusal::Unauthorised(crate::wire::bounded_reason(why))
}

fn invalid(why: String) -> Refusal {
    Refusal::Invalid(crate::wire::bounded_reason(why))
}

impl Centre {
    pub fn new(users: Vec<User>) -> Centre {
        Centre {
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            presence: HashMap::new(),
        }
    }

    pub fn user(&self, name: &Name) -> Option<&User> {
        self.users.get(name)
    }

    /// Registers (or, with a proof under the current key, re-registers) a name for `peer`.
    /// Returns the record to store and whether it replaced one.
    pub fn register(
        &mut self,
        now: Millis,
        me: &PeerId,
        peer: PeerId,
        r: &Register,
    ) -> Result<(User, bool), Refusal> {
        let replaced = match self.users.get(&r.name) {
            None if self.users.len() >= MAX_USERS => {
                return Err(Refusal::Unavailable(format!(
                    "this centre holds {MAX_USERS} users already"
                )))
            }
            None => false,
            Some(old) => {
                let Some(proof) = r.proof else {
                    return Err(Refusal::NameTaken(r.name.to_string()));
                };
                let expected = reregister_proof(&old.key, me, &r.name, &r.key, &peer);
                if !bool::from(expected.ct_eq(&proof)) {
                    return Err(unauthorised(format!(
                        "the current passphrase given for {} is wrong",
                        r.name
                    )));
                }
                true
            }
        };
        let held = self
            .users
            .values()
            .filter(|u| u.peer == peer && u.name != r.name)
            .count();
        if held >= MAX_NAMES_PER_PEER {
            return Err(unauthorised(format!(
                "{peer} holds {held} names already, the most one peer may"
            )));
        }
        let user = User {
            name: r.name.clone(),
            peer,
            key: r.key.clone(),
            registered_at_ms: now,
        };
        self.users.insert(r.name.clone(), user.clone());
        self.presence.remove(&r.name);
        Ok((user, replaced))
    }

    /// Records where a registered user's receiver listens (from its peer, with its key).
    pub fn present(
        &mut self,
        now: Millis,
        me: &PeerId,
        peer: PeerId,
        p: &Present,
        policy: &Policy,
    ) -> Result<(), Refusal> {
        let user = self.registered_to(&p.name, &peer)?;
        check_preauth(
            &user.key,
            &present_context(me, &p.name),
            &p.proof,
            now,
            policy,
            &p.name,
        )?;
        if p.addrs.is_empty()
            || p.addrs.len() > MAX_PRESENCE_ADDRS
            || p.addrs.iter().any(|a| a.len() > MAX_ADDR_BYTES)
        {
            return Err(invalid(format!(
                "announce 1 to {MAX_PRESENCE_ADDRS} addresses of at most {MAX_ADDR_BYTES} bytes"
            )));
        }
        let name = user.name.clone();
        self.presence
            .retain(|_, (_, at)| now < *at + PRESENCE_TTL_MS);
        self.presence.insert(name, (p.addrs.clone(), now));
        Ok(())
    }

    fn registered_to(&self, name: &Name, peer: &PeerId) -> Result<&User, Refusal> {
        let user = self
            .users
            .get(name)
            .ok_or_else(|| unauthorised(format!("no user named {name} is registered here")))?;
        if &user.peer != peer {
            return Err(unauthorised(format!(
                "{name} is registered to another peer than {peer}"
            )));
        }
        Ok(user)
    }

    /// Every check of a session request but the OTP: the client is registered to this peer, its
    /// pre-authentication opens under its key within the clock skew, the server is registered, and
    /// an OTP is there if the policy wants one.
    pub fn check_session(
        &self,
        now: Millis,
        me: &PeerId,
        peer: PeerId,
        req: &SessionRequest,
        policy: &Policy,
    ) -> Result<Approved, Refusal> {
        let client = self.registered_to(&req.client, &peer)?;
        check_preauth(
            &client.key,
            &preauth_context(me, &req.client, &req.server, &req.nonce),
            &req.preauth,
            now,
            policy,
            &req.client,
        )?;
        if !self.users.contains_key(&req.server) {
            return Err(invalid(format!(
                "no user named {} is registered here",
                req.server
            )));
        }
        if policy.require_otp && req.otp.is_none() {
            return Err(unauthorised(
                "this centre requires one of your OTPs with a session request (--otp)".into(),
            ));
        }
        Ok(Approved {
            client: req.client.clone(),
            server: req.server.clone(),
            nonce: req.nonce,
        })
    }

    /// A fresh session key, sealed for the client and, in the ticket, for the server.
    pub fn grant(
        &self,
        now: Millis,
        me: &PeerId,
        approved: Approved,
        policy: &Policy,
        rng: &mut dyn CryptoRngCore,
    ) -> Grant {
        let client = &self.users[&approved.client];
        let server = &self.users[&approved.server];
        let session_key = Key::random(rng);
        let expires_at_ms = now + policy.ticket_lifetime_ms;
        let server_addrs = self
            .presence
            .get(&server.name)
            .filter(|(_, at)| now < *at + PRESENCE_TTL_MS)
            .map(|(addrs, _)| addrs.clone())
            .unwrap_or_default();
        let for_client = ForClient {
            session_key: session_key.clone(),
            server: server.name.clone(),
            server_peer: server.peer,
            server_addrs,
            nonce: approved.nonce,
            issued_at_ms: now,
            expires_at_ms,
        };
        let ticket = Ticket {
            session_key,
            client: client.name.clone(),
            client_peer: client.peer,
            issued_at_ms: now,
            expires_at_ms,
        };
        Grant {
            for_client: client.key.seal(
                Purpose::ForClient,
                &for_client_context(me, &client.name, &approved.nonce),
                &message::to_plain(&for_client),
                rng,
            ),
            ticket: server.key.seal(
                Purpose::Ticket,
                &ticket_context(me, &server.name),
                &message::to_plain(&ticket),
                rng,
            ),
        }
    }
}

/// Opens a pre-authentication under `key` and checks its time against the clock skew.
fn check_preauth(
    key: &Key,
    context: &[u8],
    sealed: &crate::kdc::Sealed,
    now: Millis,
    policy: &Policy,
    name: &Name,
) -> Result<(), Refusal> {
    let preauth: Option<Preauth> = key
        .open(Purpose::Preauth, context, sealed)
        .and_then(|plain| message::from_plain(&plain));
    let Some(preauth) = preauth else {
        return Err(unauthorised(format!(
            "wrong passphrase for {name} (its pre-authentication does not open)"
        )));
    };
    let off = preauth.ctime_ms.abs_diff(now);
    if off > policy.max_skew_ms {
        return Err(unauthorised(format!(
            "{name}'s clock is {off} ms off this centre's, more than the {} ms allowed",
            policy.max_skew_ms
        )));
    }
    Ok(())
}
