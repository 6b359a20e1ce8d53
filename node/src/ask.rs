//! The requester-side operations, each asked once (`otpmesh request | verify | enrol | totp |
//! password | code`, and the scenario runner's in-process and simulated backends): one typed
//! question, one typed answer.
//!
//! ```text
//!  Asker::otp(distributor) ── Question::Otp ──► a node with RoleSpec::Ask(question)
//!        ▲                                          │ the operation's one-shot state machine
//!        │                                          ▼
//!        └── Ok(Issued) / Err(Failed) ◄── read::<Issued>(event) ◄── its events
//! ```
//!
//! A question's role ([`Question::role`]) is the protocol's state machine for that operation; its
//! answer is read from the role's events in one place ([`read`], through [`Answer::of`]), and a
//! failed request becomes a [`Failed`] whose kind decides the exit code. The key distribution
//! centre's users have their own typed client (`kdc::User`): they hold a stream, not one request.

use crate::{keys, NodeConfig, NodeError, NodeEvent, RoleSpec};
use libp2p::{Multiaddr, PeerId};
use otpmesh_protocol::mesh::MeshConfig;
use otpmesh_protocol::role::{self, Event, Failure, Millis, Role};
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::threshold::password::Alphabet;
use otpmesh_protocol::wire::VerifyResult;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// What a requester asks, once.
#[derive(Clone, Debug)]
pub enum Question {
    /// An OTP from `distributor` (single mode).
    Otp { distributor: PeerId },
    /// `distributor`'s verdict on `code`, an OTP it issued.
    Verify { distributor: PeerId, code: String },
    /// A key exchange with `distributor` (the key goes under `enrolments/` in the data dir).
    Enrol { distributor: PeerId },
    /// A TOTP token from `distributor`.
    TotpEnrol { distributor: PeerId },
    /// `distributor`'s verdict on the TOTP code `code`.
    TotpVerify { distributor: PeerId, code: String },
    /// Threshold mode: an OTP combined from the partials of `distributors`.
    ThresholdOtp { distributors: Vec<PeerId> },
    /// Threshold mode: a quorum of `distributors`' verdict on `code` for (`round`, `counter`).
    ThresholdVerify {
        distributors: Vec<PeerId>,
        round: RoundId,
        counter: u64,
        code: String,
    },
    /// Threshold mode: a password of `length` characters from `alphabet`, seen only here.
    Password {
        distributors: Vec<PeerId>,
        alphabet: Alphabet,
        length: usize,
    },
    /// Threshold mode: the requester's time-step code of now, from the mesh config's distributors.
    Code,
}

impl Question {
    /// The one-shot state machine that asks this as `me`, with what the data dir holds (enrolment
    /// keys) and the mesh config it believes.
    pub(crate) fn role(
        &self,
        me: PeerId,
        config: &NodeConfig,
        mesh: &Arc<MeshConfig>,
    ) -> Result<Box<dyn Role + Send>, NodeError> {
        let enrolments = |distributors: &[PeerId]| -> Result<_, NodeError> {
            let mut keys = HashMap::new();
            for d in distributors {
                if let Some(key) = keys::load_enrolment(&config.data_dir, d)? {
                    keys.insert(*d, key);
                }
            }
            Ok(keys)
        };
        let rng = &mut rand_core::OsRng;
        Ok(match self {
            Question::Otp { distributor } => {
                let enrolment = keys::load_enrolment(&config.data_dir, distributor)?;
                Box::new(role::Requester::one_shot(me, *distributor).with_enrolment(enrolment))
            }
            Question::Verify { distributor, code } => {
                Box::new(role::Requester::verify_once(me, *distributor, code.clone()))
            }
            Question::Enrol { distributor } => {
                Box::new(role::Requester::enrol_once(me, *distributor, rng))
            }
            Question::TotpEnrol { distributor } => {
                Box::new(role::Requester::totp_enrol_once(me, *distributor, rng))
            }
            Question::TotpVerify { distributor, code } => Box::new(
                role::Requester::totp_verify_once(me, *distributor, code.clone()),
            ),
            Question::ThresholdOtp { distributors } => Box::new(
                role::threshold::Requester::issue_once(me, mesh.clone(), distributors.clone())
                    .with_enrolments(enrolments(distributors)?),
            ),
            Question::ThresholdVerify {
                distributors,
                round,
                counter,
                code,
            } => Box::new(role::threshold::Requester::verify_once(
                me,
                mesh.clone(),
                distributors.clone(),
                *round,
                *counter,
                code.clone(),
            )),
            Question::Password {
                distributors,
                alphabet,
                length,
            } => Box::new(
                role::threshold::Requester::password_once(
                    me,
                    mesh.clone(),
                    distributors.clone(),
                    alphabet.clone(),
                    *length,
                )
                .with_enrolments(enrolments(distributors)?),
            ),
            Question::Code => Box::new(role::threshold::code::Code::new(me, mesh.clone())),
        })
    }
}

/// Why a question got no answer: its kind (the exit code comes from it) and its words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Failed {
    pub failure: Failure,
    pub reason: String,
}

impl Failed {
    /// Nothing came back within `timeout`.
    pub fn no_answer(timeout: Duration) -> Failed {
        Failed {
            failure: Failure::Unreachable,
            reason: format!("no answer within {} s", timeout.as_secs()),
        }
    }

    fn refused(reason: String) -> Failed {
        Failed {
            failure: Failure::Refused,
            reason,
        }
    }
}

/// A typed answer, and the event of an asking role that carries it.
pub trait Answer: Sized {
    fn of(event: Event) -> Option<Self>;
}

/// `event` read for the answer `A`: `Some(Ok)` is the answer, `Some(Err)` a failed request, `None`
/// anything else. The one place an asking role's events are read.
pub fn read<A: Answer>(event: Event) -> Option<Result<A, Failed>> {
    match event {
        Event::RequestFailed {
            failure, reason, ..
        } => Some(Err(Failed { failure, reason })),
        other => A::of(other).map(Ok),
    }
}

/// An OTP one distributor issued (single mode).
#[derive(Clone, Debug)]
pub struct Issued {
    pub otp: String,
    pub round: RoundId,
    pub expires_at_ms: Millis,
    pub distributor: PeerId,
}

impl Answer for Issued {
    fn of(event: Event) -> Option<Issued> {
        match event {
            Event::OtpReceived {
                round,
                distributor,
                otp,
                expires_at_ms,
            } => Some(Issued {
                otp,
                round,
                expires_at_ms,
                distributor,
            }),
            _ => None,
        }
    }
}

/// A threshold OTP, combined here from the partials of the shareholders `from`.
#[derive(Clone, Debug)]
pub struct Combined {
    pub otp: String,
    pub round: RoundId,
    pub counter: u64,
    pub expires_at_ms: Millis,
    pub from: Vec<u32>,
    /// Distributors whose partial's proof failed.
    pub bad: Vec<PeerId>,
}

impl Answer for Combined {
    fn of(event: Event) -> Option<Combined> {
        match event {
            Event::ThresholdOtpReceived {
                round,
                counter,
                otp,
                expires_at_ms,
                from,
                bad,
            } => Some(Combined {
                otp,
                round,
                counter,
                expires_at_ms,
                from,
                bad,
            }),
            _ => None,
        }
    }
}

/// A verdict on a code: one distributor's, or a quorum's in threshold mode.
impl Answer for VerifyResult {
    fn of(event: Event) -> Option<VerifyResult> {
        match event {
            Event::VerifyAnswered { result, .. } | Event::ThresholdVerified { result, .. } => {
                Some(result)
            }
            _ => None,
        }
    }
}

/// An enrolment: the distributor and the epoch of the key now under `enrolments/`.
#[derive(Clone, Debug)]
pub struct Enrolled {
    pub peer: PeerId,
    pub epoch: u64,
}

impl Answer for Enrolled {
    fn of(event: Event) -> Option<Enrolled> {
        match event {
            Event::Enrolled { peer, epoch } => Some(Enrolled { peer, epoch }),
            _ => None,
        }
    }
}

/// A TOTP token: its secret (base32) and parameters, from `distributor`.
#[derive(Clone)]
pub struct Token {
    pub secret_base32: Zeroizing<String>,
    pub params: otpmesh_protocol::totp::Params,
    pub distributor: PeerId,
}

impl Answer for Token {
    fn of(event: Event) -> Option<Token> {
        match event {
            Event::TotpReceived {
                distributor,
                secret_base32,
                params,
            } => Some(Token {
                secret_base32: secret_base32.into(),
                params,
                distributor,
            }),
            _ => None,
        }
    }
}

/// A threshold password and its strength.
#[derive(Clone)]
pub struct Password {
    pub password: Zeroizing<String>,
    pub round: RoundId,
    pub alphabet_size: usize,
    /// length × log2(alphabet size), rounded down.
    pub bits: u32,
}

impl Answer for Password {
    fn of(event: Event) -> Option<Password> {
        match event {
            Event::PasswordReceived {
                round,
                password,
                alphabet,
                bits,
                ..
            } => Some(Password {
                password: password.into(),
                round,
                alphabet_size: alphabet,
                bits,
            }),
            _ => None,
        }
    }
}

/// The requester's time-step code of now.
#[derive(Clone)]
pub struct Code {
    pub code: Zeroizing<String>,
    pub step: u64,
    pub seconds_left: u64,
    pub round: RoundId,
}

impl Answer for Code {
    fn of(event: Event) -> Option<Code> {
        match event {
            Event::CodeReceived {
                step,
                code,
                round,
                seconds_left,
                ..
            } => Some(Code {
                code: code.into(),
                step,
                seconds_left,
                round,
            }),
            _ => None,
        }
    }
}

/// Who asks, where, and how patiently: the identity in `data_dir`, the distributors' addresses
/// (each ending in /p2p/…), the mesh config it believes (empty for a single-mode question).
#[derive(Clone, Debug)]
pub struct Asker {
    pub data_dir: PathBuf,
    pub peers: Vec<Multiaddr>,
    pub mesh: MeshConfig,
    /// Seeds the node's randomness (tests and scenario replays only).
    pub seed: Option<u64>,
    pub timeout: Duration,
}

impl Asker {
    pub async fn otp(&self, distributor: PeerId) -> Result<Issued, Failed> {
        self.ask(Question::Otp { distributor }).await
    }

    pub async fn verify(&self, distributor: PeerId, code: String) -> Result<VerifyResult, Failed> {
        self.ask(Question::Verify { distributor, code }).await
    }

    pub async fn enrol(&self, distributor: PeerId) -> Result<Enrolled, Failed> {
        self.ask(Question::Enrol { distributor }).await
    }

    pub async fn totp_enrol(&self, distributor: PeerId) -> Result<Token, Failed> {
        self.ask(Question::TotpEnrol { distributor }).await
    }

    pub async fn totp_verify(
        &self,
        distributor: PeerId,
        code: String,
    ) -> Result<VerifyResult, Failed> {
        self.ask(Question::TotpVerify { distributor, code }).await
    }

    pub async fn threshold_otp(&self, distributors: Vec<PeerId>) -> Result<Combined, Failed> {
        self.ask(Question::ThresholdOtp { distributors }).await
    }

    pub async fn threshold_verify(
        &self,
        distributors: Vec<PeerId>,
        (round, counter): (RoundId, u64),
        code: String,
    ) -> Result<VerifyResult, Failed> {
        let question = Question::ThresholdVerify {
            distributors,
            round,
            counter,
            code,
        };
        self.ask(question).await
    }

    pub async fn password(
        &self,
        distributors: Vec<PeerId>,
        alphabet: Alphabet,
        length: usize,
    ) -> Result<Password, Failed> {
        let question = Question::Password {
            distributors,
            alphabet,
            length,
        };
        self.ask(question).await
    }

    pub async fn code(&self) -> Result<Code, Failed> {
        self.ask(Question::Code).await
    }

    /// The one-shot node that asks `question`.
    pub fn config(&self, question: Question) -> NodeConfig {
        NodeConfig {
            role: RoleSpec::Ask(question),
            data_dir: self.data_dir.clone(),
            listen: Vec::new(),
            peers: self.peers.clone(),
            mesh: self.mesh.clone(),
            mdns: false,
            manual_rounds: false,
            seed: self.seed,
            metrics: None,
        }
    }

    /// Asks `question` once, reading its answer as `A` (the typed methods above pair each
    /// question with its answer): the answer, or why none came.
    pub async fn ask<A: Answer>(&self, question: Question) -> Result<A, Failed> {
        let node =
            crate::start(self.config(question)).map_err(|e| Failed::refused(e.to_string()))?;
        let (client, mut events) = (node.client.clone(), node.events);
        tokio::spawn(node.event_loop.run());
        let answer = tokio::time::timeout(self.timeout, async {
            while let Some(event) = events.recv().await {
                if let NodeEvent::Role(event) = event {
                    if let Some(answer) = read::<A>(event) {
                        return answer;
                    }
                }
            }
            Err(Failed::refused(
                "the node stopped before an answer came".into(),
            ))
        })
        .await
        .unwrap_or_else(|_| Err(Failed::no_answer(self.timeout)));
        let _ = client.shutdown().await;
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn an_answer_is_read_from_its_own_event_and_a_failure_keeps_its_kind() {
        let distributor = peer();
        let issued = Event::OtpReceived {
            round: RoundId(4),
            distributor,
            otp: "12345678".into(),
            expires_at_ms: 9,
        };
        let got = read::<Issued>(issued.clone()).unwrap().unwrap();
        assert_eq!(
            (got.otp.as_str(), got.round, got.distributor),
            ("12345678", RoundId(4), distributor)
        );
        // Another question's answer is not this one's.
        assert!(read::<VerifyResult>(issued).is_none());
        let verdict = Event::VerifyAnswered {
            distributor,
            result: VerifyResult::Used,
        };
        assert_eq!(read::<VerifyResult>(verdict), Some(Ok(VerifyResult::Used)));
        let failed = Event::RequestFailed {
            peer: distributor,
            request: "otp".into(),
            failure: Failure::NoRound,
            reason: "no round sealed yet".into(),
        };
        let Some(Err(f)) = read::<Issued>(failed) else {
            panic!("a failed request is the answer's failure");
        };
        assert_eq!(f.failure, Failure::NoRound);
        assert_eq!(f.failure.exit_code(), 5);
    }

    #[tokio::test]
    async fn an_unreachable_distributor_is_a_typed_failure_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let distributor = peer();
        // A port nothing listens on (bound, then freed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{distributor}")
            .parse()
            .unwrap();
        let asker = Asker {
            data_dir: dir.path().to_path_buf(),
            peers: vec![addr],
            mesh: MeshConfig::default(),
            seed: None,
            timeout: Duration::from_secs(20),
        };
        let failed = asker.otp(distributor).await.map(|_| ()).unwrap_err();
        assert_eq!(failed.failure, Failure::Unreachable, "{failed}");
    }
}
