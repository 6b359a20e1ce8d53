//! # otpmesh protocol
//!
//! Wire types, cryptography, round logic, OTP maths and the four roles as sans-IO state machines.
//! No sockets, no clocks, no tokio: the same code runs under libp2p, in tests and in simulators.
//!
//! ## A round
//! ```text
//!  contributor(s)              generator                      distributor            requester
//!       │   ◄── gossip Open(round, key fingerprint, deadline) ──┤                        │
//!       ├── rr PublicKey ──────────►│  (once per key: step 1)                            │
//!       │◄───────── SPKI DER ───────┤                                                    │
//!  phrase = H_client(input ‖ 32 random bytes ‖ client id)        (step 2)                 │
//!  c = RSA-OAEP-SHA256(pk, phrase; label = round, client)        (step 3)                 │
//!       ├── gossip Phrase(round, client, c) ──►│                 (step 4)                 │
//!       │                           decrypt (blinded), one per client, until quorum      │
//!       │                           secret = iterated H(round, prev, phrases)  (step 5)  │
//!       │   ◄── gossip Sealed(transcript: included, commitment, prev) ─┤                 │
//!       │                                      ├── rr Deliver(transcript, secret) ──►│   │
//!       │                                      │◄──────────── Delivered ─────────────┤   │
//!       │                                      │                          ◄── rr Otp(X25519 pk)  (step 6)
//!       │                                      │      otp = HOTP(HKDF(secret), requester, counter)
//!       │                                      │      ──── salted = otp + mask(salt) ──►  (step 7)
//!       │                                      │                         otp = salted − mask  (step 8)
//! ```
//! Modules: [`wire`] (messages and limits), [`phrase`], [`seal`] (RSA-OAEP), [`round`] (secret,
//! commitment, transcript chain), [`otp`] (issuing and salting), [`kx`] (the salt key exchange),
//! [`mesh`] (who may do what), [`role`] (the state machines), [`kdc`] (the key distribution centre),
//! [`threshold`] (threshold mode's building blocks: sharing, DKG, partial evaluation with proofs).

#![warn(clippy::too_many_lines)]

pub mod beacon;
pub mod codec;
pub mod digest;
pub mod id;
pub mod kdc;
pub mod kx;
pub mod mesh;
pub mod otp;
pub mod phrase;
pub mod role;
pub mod round;
pub mod seal;
pub mod secret;
pub mod sim;
pub mod threshold;
pub mod time;
pub mod totp;
pub mod wire;

pub use libp2p_identity::{Keypair, PeerId};
