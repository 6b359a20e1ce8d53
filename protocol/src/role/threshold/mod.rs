//! Threshold mode's roles: the round key exists only as shares.
//!
//! ```text
//!  coordinator (generator 1)   generators j = 1..n        contributors i            distributor j      requester
//!  ── gossip Open(round) ──────────────────────────────────────►│
//!                              ◄── rr PublicKey (each j, authenticated by its PeerId) ─┤
//!                              ◄── gossip Deal(C_i, share j RSA-OAEP-sealed to j, for all j) ─┤
//!                              decrypt own share (blinded)
//!  at quorum or deadline: gossip Proposal(dealings: client, H(C_i)) ─►
//!                              check shares (one aggregate check) ─► gossip Complaints(j, against)
//!                                                              ◄── a complaint against i: gossip
//!                                                                  Justification(share i→j, C_i)
//!  all n complained (or the window closed): Q = proposal − unanswered/bad complaints
//!  ── gossip Sealed(transcript: Q, public key Σ C_i, chained commitment) ─►
//!                              k_j = Σ_{i∈Q} f_i(j); G·k_j == K_j?
//!                              ── rr Handover(transcript, k_j) ──► (distributor j only)
//!                                                                        ◄── rr Partial(x) ── (all n)
//!                                                    y_j masked under the requester's salt key + DLEQ ──►
//!                                                                          combine t valid ─► OTP
//!  verify: ── rr VerifyPartial(round, counter) ─► mark x used (durably) ─► partial ─► combine, compare
//! ```
//! [`Generator`] runs both generator parts (the coordinator is generator 1); [`Contributor`] deals;
//! distributors serve partials from [`crate::role::Distributor`] (its `threshold` part); [`Requester`]
//! fans out and combines; [`Follower`] runs one per sealed round (a requester node).

pub mod beacon;
pub mod code;
pub mod contributor;
pub mod follower;
pub mod generator;
pub mod requester;

pub use beacon::{Beaconed, Keeper};
pub use contributor::Contributor;
pub use follower::Follower;
pub use generator::Generator;
pub use requester::Requester;

pub use crate::wire::otp_input;
