//! The four roles as sans-IO state machines.
//!
//! A role takes inputs — a gossip message, a request, a response, a finished decryption, a user's
//! input, a timer tick — each with the current time, and returns [`Action`]s for the node to carry
//! out in order. Randomness comes in as an argument. Nothing here touches a socket, a clock or a disk.
//!
//! The node runs [`check_gossip`] (who may send what) before any role sees a gossip message; the
//! role then adds what only it can judge (is the round open, is this a second phrase).

pub mod contributor;
pub mod distributor;
pub mod generator;
pub(crate) mod outbox;
pub mod pick;
pub mod requester;
pub mod threshold;
pub mod verifier;

pub use contributor::Contributor;
pub use distributor::Distributor;
pub use generator::Generator;
pub use requester::Requester;
pub use verifier::Verifier;

use crate::digest::Digest32;
use crate::mesh::MeshConfig;
use crate::phrase::{ClientId, Phrase, UserInput};
use crate::round::{RoundId, Secret, Transcript};
use crate::wire::{Gossip, Refusal, Request, Response};
use libp2p_identity::PeerId;
use rand_core::CryptoRngCore;
use serde::Serialize;

pub use crate::id::OtpRef;
pub use crate::time::Millis;

/// The node's handle for an inbound request awaiting a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InboundId(pub u64);

/// A role's handle for an outbound request; the response comes back with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u64);

/// The randomness every role draws from (blinding, nonces, ephemeral keys).
pub use rand_core::CryptoRngCore as Rng;

/// A gossip message as heard: who passed it on, and what it says.
#[derive(Clone, Copy, Debug)]
pub struct Heard<'a> {
    pub source: PeerId,
    pub message: &'a Gossip,
}

/// A request a peer sent this node, awaiting a [`Action::Reply`] to `id`.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub peer: PeerId,
    pub id: InboundId,
    pub request: Request,
}

/// The answer to a request this node sent with `tag`: a response, or why none came.
#[derive(Clone, Debug)]
pub struct Answer {
    pub peer: PeerId,
    pub tag: Tag,
    pub response: Result<Response, String>,
}

/// The integer a contributor's user gave for `round`.
#[derive(Clone, Copy, Debug)]
pub struct Input {
    pub round: RoundId,
    pub value: UserInput,
}

/// A code a service's user typed, to be checked under `ticket`.
#[derive(Clone, Copy, Debug)]
pub struct Typed<'a> {
    pub ticket: u64,
    pub user: &'a str,
    pub code: &'a str,
}

impl<'a> Heard<'a> {
    pub fn new(source: PeerId, message: &'a Gossip) -> Self {
        Heard { source, message }
    }
}

impl Inbound {
    pub fn new(peer: PeerId, id: InboundId, request: Request) -> Self {
        Inbound { peer, id, request }
    }
}

impl Answer {
    pub fn new(peer: PeerId, tag: Tag, response: Result<Response, String>) -> Self {
        Answer {
            peer,
            tag,
            response,
        }
    }
}

impl Input {
    pub fn new(round: RoundId, value: UserInput) -> Self {
        Input { round, value }
    }
}

impl<'a> Typed<'a> {
    pub fn new(ticket: u64, user: &'a str, code: &'a str) -> Self {
        Typed { ticket, user, code }
    }
}

/// What gossipsub should do with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Not the sender's fault (stale, not for us yet): drop without penalty.
    Ignore(String),
    /// A fault: drop and penalise the sender.
    Reject(String),
}

/// Work the generator hands off: opening one phrase (slow; runs off the event loop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecryptJob {
    pub round: RoundId,
    pub client: ClientId,
    pub ciphertext: Vec<u8>,
    /// Threshold mode: a key share dealt to this shareholder, not a phrase.
    pub share: Option<crate::threshold::Index>,
}

/// What a decryption gave: a phrase (single mode) or a key share (threshold mode); `None` when it
/// did not open (and nothing says which check failed).
#[derive(Debug)]
pub enum Opened {
    Phrase(Option<Phrase>),
    Share(Option<zeroize::Zeroizing<[u8; crate::secret::SHARE_PAIR_BYTES]>>),
}

impl DecryptJob {
    /// Opens the job's ciphertext with `key`: the one place every runner (the node's worker
    /// threads, the simulator) decrypts, blinded and constant-time (`seal`).
    pub fn open(&self, key: &crate::seal::PrivateKey) -> Opened {
        let (round, client) = (self.round, self.client);
        match self.share {
            Some(index) => {
                Opened::Share(key.open_share(round, client, index, &self.ciphertext).ok())
            }
            None => Opened::Phrase(key.open(round, client, &self.ciphertext).ok()),
        }
    }
}

/// What a role asks the node to store. The node commits before it carries out the next action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A generator opened this round (round ids never repeat, even across restarts).
    Opened(RoundId),
    /// A sealed round: the generator's chain head, a distributor's held round.
    Round {
        transcript: Transcript,
        secret: Secret,
    },
    /// An OTP was issued (by `issuer`, this node) for (round, requester, counter). The OTP itself is
    /// never stored: it is recomputed from the round secret.
    Issued { otp: OtpRef, expires_at_ms: Millis },
    /// An OTP was accepted: here (`issuer` is this node) or, as a replicated marker, elsewhere.
    Used { otp: OtpRef, expires_at_ms: Millis },
    /// A requester's recent failed verifications and lockout.
    Attempts {
        requester: PeerId,
        failures: Vec<Millis>,
        locked_until: Millis,
    },
    /// Forget OTP records that expired before `expired_before_ms`, and attempt records whose
    /// failures are all older than `failures_before_ms` and whose lockout ended by `now_ms`.
    Compact {
        expired_before_ms: Millis,
        failures_before_ms: Millis,
        now_ms: Millis,
    },
    /// Forget OTP records that expired before `before_ms`, and nothing else: the small step a
    /// busy distributor takes every second, so no one commit deletes a minute of OTPs.
    ExpireOtps { before_ms: Millis },
    /// A beacon value with its round's transcript (public).
    Beacon(Box<crate::beacon::Entry>),
    /// The current enrolment key shared with `peer` (replaces any older one).
    Enrolment {
        peer: PeerId,
        epoch: u64,
        key: Secret,
    },
    /// A requester's TOTP token, with its last accepted step and drift (replaces any older one).
    TotpToken {
        requester: PeerId,
        token: crate::totp::Token,
    },
    /// A user registered with the key distribution centre (replaces any older one of that name).
    KdcUser(crate::role::distributor::kdc::User),
}

/// Why a generator turned a phrase away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhraseRefusal {
    /// For a round that is not open (late or early).
    NotOpen,
    /// Sealed under another key.
    WrongKey,
    /// A ciphertext of the wrong size for the key.
    WrongLength,
    /// A second phrase for the client in the round.
    Duplicate,
    /// It did not decrypt to a phrase of the round and client.
    DidNotOpen,
}

impl PhraseRefusal {
    /// Every refusal, for counters that start at zero.
    pub const ALL: [PhraseRefusal; 5] = [
        PhraseRefusal::NotOpen,
        PhraseRefusal::WrongKey,
        PhraseRefusal::WrongLength,
        PhraseRefusal::Duplicate,
        PhraseRefusal::DidNotOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PhraseRefusal::NotOpen => "not_open",
            PhraseRefusal::WrongKey => "wrong_key",
            PhraseRefusal::WrongLength => "wrong_length",
            PhraseRefusal::Duplicate => "duplicate",
            PhraseRefusal::DidNotOpen => "did_not_open",
        }
    }
}

/// Something that happened, for the user, the logs and the tools. Never carries a secret except
/// the requester's own OTP in [`Event::OtpReceived`], which is that user's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RoundOpened {
        round: RoundId,
        quorum: u32,
        deadline_ms: Millis,
    },
    PhraseSubmitted {
        round: RoundId,
        client: ClientId,
        ciphertext_hash: Digest32,
    },
    PhraseAccepted {
        round: RoundId,
        client: ClientId,
    },
    PhraseRejected {
        round: RoundId,
        client: ClientId,
        peer: PeerId,
        /// Which check turned it away, as a stable label (metrics count by it).
        kind: PhraseRefusal,
        reason: String,
    },
    RoundSealed {
        round: RoundId,
        commitment: Digest32,
        prev_commitment: Digest32,
        included: Vec<ClientId>,
    },
    RoundFailed {
        round: RoundId,
        reason: String,
    },
    RoundDelivered {
        round: RoundId,
        distributor: PeerId,
    },
    RoundDeliveredAll {
        round: RoundId,
    },
    DeliveryAbandoned {
        round: RoundId,
        distributor: PeerId,
    },
    RoundStored {
        round: RoundId,
        commitment: Digest32,
    },
    ChainGap {
        round: RoundId,
        expected_prev: Digest32,
        found_prev: Digest32,
    },
    TranscriptChecked {
        round: RoundId,
        client: ClientId,
        included: bool,
    },
    KeyMismatch {
        generator: PeerId,
        expected: Digest32,
        found: Digest32,
    },
    OtpIssued {
        round: RoundId,
        requester: PeerId,
        counter: u64,
        expires_at_ms: Millis,
    },
    OtpVerified {
        requester: PeerId,
        result: crate::wire::VerifyResult,
    },
    /// Too many wrong codes: `requester` is locked out until then.
    LockedOut {
        requester: PeerId,
        until_ms: Millis,
    },
    UseReplicated {
        issuer: PeerId,
        requester: PeerId,
        round: RoundId,
        counter: u64,
    },
    Enrolled {
        peer: PeerId,
        epoch: u64,
    },
    TotpIssued {
        requester: PeerId,
        round: RoundId,
    },
    /// The requester's own new TOTP token (its user's output: never logged).
    TotpReceived {
        distributor: PeerId,
        secret_base32: String,
        params: crate::totp::Params,
    },
    VerifyAnswered {
        distributor: PeerId,
        result: crate::wire::VerifyResult,
    },
    KdcRegistered {
        name: String,
        peer: PeerId,
        replaced: bool,
    },
    KdcSessionIssued {
        client: String,
        server: String,
        expires_at_ms: Millis,
    },
    OtpReceived {
        round: RoundId,
        distributor: PeerId,
        otp: String,
        expires_at_ms: Millis,
    },
    /// Threshold mode: generator `index` complains about these dealings' shares to it.
    Complained {
        round: RoundId,
        index: u32,
        against: Vec<ClientId>,
    },
    /// Threshold mode: a contributor published its share for generator `index` (a complaint).
    ComplaintAnswered {
        round: RoundId,
        client: ClientId,
        index: u32,
    },
    /// Threshold mode: the coordinator left a dealing out of the round.
    DealingExcluded {
        round: RoundId,
        client: ClientId,
        reason: String,
    },
    /// Threshold mode: this generator holds its key share of the round.
    ShareHeld {
        round: RoundId,
        index: u32,
    },
    /// Threshold mode: this generator cannot take part in the round.
    ShareUnavailable {
        round: RoundId,
        reason: String,
    },
    /// Threshold mode: a distributor released its partial for an OTP.
    PartialIssued {
        round: RoundId,
        requester: PeerId,
        counter: u64,
        verification: bool,
    },
    /// Threshold mode: the requester's own OTP, combined from `from` (shareholder indices); `bad`
    /// names distributors whose partial failed its proof.
    ThresholdOtpReceived {
        round: RoundId,
        counter: u64,
        otp: String,
        expires_at_ms: Millis,
        from: Vec<u32>,
        bad: Vec<PeerId>,
    },
    /// Threshold mode: the requester's own password (its user's output: never logged).
    PasswordReceived {
        round: RoundId,
        password: String,
        length: usize,
        alphabet: usize,
        /// Strength, rounded down: length × log2(alphabet).
        bits: u32,
        from: Vec<u32>,
        bad: Vec<PeerId>,
    },
    /// Threshold mode: what a quorum verification came to.
    ThresholdVerified {
        round: RoundId,
        counter: u64,
        result: crate::wire::VerifyResult,
        bad: Vec<PeerId>,
    },
    /// A beacon value joined this node's chain (public: anyone may know it).
    BeaconValue {
        round: RoundId,
        value: Digest32,
        prev: Digest32,
        /// The distributors whose partials made it.
        from: Vec<u32>,
        /// Fetched from a peer rather than combined from gossip.
        caught_up: bool,
    },
    /// A beacon catch-up answer: how many values it brought, and what was wrong, if anything.
    BeaconCatchUp {
        peer: PeerId,
        accepted: u32,
        problem: Option<String>,
    },
    /// Threshold mode: the requester's own time-step code (its user's output: never logged).
    CodeReceived {
        step: u64,
        code: String,
        round: RoundId,
        seconds_left: u64,
        from: Vec<u32>,
    },
    /// A verifier decided a check a front asked for (`ticket` is the front's).
    CheckDecided {
        ticket: u64,
        user: String,
        outcome: verifier::Outcome,
        detail: String,
    },
    RequestRefused {
        peer: PeerId,
        request: String,
        /// What kind of refusal, as a type (the asker's side sees the same [`Failure`]).
        failure: Failure,
        reason: String,
    },
    RequestFailed {
        peer: PeerId,
        request: String,
        /// What kind of failure, as a type: what exit codes and runners decide on.
        failure: Failure,
        reason: String,
    },
}

/// What a role asks the node to do.
#[derive(Clone, Debug)]
pub enum Action {
    Publish(Gossip),
    Send {
        peer: PeerId,
        tag: Tag,
        request: Request,
    },
    Reply {
        to: InboundId,
        response: Response,
    },
    Persist(Record),
    Decrypt(DecryptJob),
    Emit(Event),
    /// Ask the user for the integer for this round.
    AskInput {
        round: RoundId,
    },
}

/// A state machine for one role. Every method has a sensible default, so each role states only the
/// inputs it cares about.
pub trait Role {
    fn start(&mut self, _now: Millis, _rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        Vec::new()
    }

    fn tick(&mut self, _now: Millis, _rng: &mut dyn CryptoRngCore) -> Vec<Action> {
        Vec::new()
    }

    /// A gossip message that passed [`check_gossip`].
    fn gossip(
        &mut self,
        _now: Millis,
        _heard: Heard,
        _rng: &mut dyn Rng,
    ) -> (Verdict, Vec<Action>) {
        (Verdict::Accept, Vec::new())
    }

    fn request(&mut self, _now: Millis, asked: Inbound, _rng: &mut dyn Rng) -> Vec<Action> {
        let Inbound { peer, id, request } = asked;
        refuse(
            peer,
            id,
            &request,
            Refusal::WrongRole(request.kind().into()),
        )
    }

    fn response(&mut self, _now: Millis, _answer: Answer, _rng: &mut dyn Rng) -> Vec<Action> {
        Vec::new()
    }

    /// A [`DecryptJob`] the role asked for, opened.
    fn decrypted(&mut self, _now: Millis, _job: DecryptJob, _opened: Opened) -> Vec<Action> {
        Vec::new()
    }

    fn user_input(&mut self, _now: Millis, _input: Input, _rng: &mut dyn Rng) -> Vec<Action> {
        Vec::new()
    }

    /// Verifier: a service's user typed `code`; answered by an [`Event::CheckDecided`] with
    /// `ticket`. Other roles decide it unavailable at once.
    fn check(&mut self, _now: Millis, typed: Typed, _rng: &mut dyn Rng) -> Vec<Action> {
        let Typed { ticket, user, .. } = typed;
        vec![Action::Emit(Event::CheckDecided {
            ticket,
            user: user.to_string(),
            outcome: verifier::Outcome::Unavailable,
            detail: "this node is not a verifier".into(),
        })]
    }

    /// An operator's instruction (a scenario step, a control channel). Roles ignore what is not
    /// theirs.
    fn control(&mut self, _now: Millis, _control: Control) -> Vec<Action> {
        Vec::new()
    }
}

/// Instructions an operator can give a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Generator: open the next round now (if none is open).
    OpenRound,
}

/// Why a request failed, as a type (its words go beside it, for people).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The peer could not be reached: no connection, or no answer in time.
    Unreachable,
    /// The peer refused this node: not listed, or not allowed to ask that.
    Unauthorised,
    /// No round has been sealed and delivered there yet, not the one asked for (the delivery is
    /// still on its way), or none old enough for a code.
    NoRound,
    /// Threshold mode: fewer than T distributors gave a partial that combines.
    QuorumUnavailable,
    /// Refused for another reason, an answer that makes no sense, or bad local input.
    Refused,
}

impl Failure {
    /// The failure a distributor's refusal means.
    pub fn of_refusal(refusal: &Refusal) -> Failure {
        match refusal {
            Refusal::Unauthorised(_) | Refusal::NameTaken(_) => Failure::Unauthorised,
            Refusal::NoRound | Refusal::UnknownRound(_) | Refusal::NoCodeRound { .. } => {
                Failure::NoRound
            }
            _ => Failure::Refused,
        }
    }

    /// The process exit code for it (one table: `otpmesh --help` and the README list it).
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Unreachable => 3,
            Failure::Unauthorised => 4,
            Failure::NoRound => 5,
            Failure::QuorumUnavailable => 6,
            Failure::Refused => 1,
        }
    }
}

/// Why a response is not the one asked for: the refusal's words, the transport's error, or which
/// kind of answer came instead (never its contents).
pub fn failure_reason(response: Result<Response, String>) -> String {
    failure_of(response).1
}

/// [`failure_reason`], with the kind of failure.
pub fn failure_of(response: Result<Response, String>) -> (Failure, String) {
    match response {
        Ok(Response::Refused(r)) => (Failure::of_refusal(&r), r.to_string()),
        Ok(other) => (
            Failure::Refused,
            format!("unexpected {} response", other.kind()),
        ),
        Err(e) => (Failure::Unreachable, e),
    }
}

/// Refuses a request: the reply, and an event saying why.
pub fn refuse(peer: PeerId, to: InboundId, request: &Request, refusal: Refusal) -> Vec<Action> {
    vec![
        Action::Emit(Event::RequestRefused {
            peer,
            request: request.kind().into(),
            failure: Failure::of_refusal(&refusal),
            reason: refusal.to_string(),
        }),
        Action::Reply {
            to,
            response: Response::Refused(refusal),
        },
    ]
}

/// Who may send what on the gossip topic; every node applies it before forwarding anything.
pub fn check_gossip(mesh: &MeshConfig, source: &PeerId, message: &Gossip) -> Verdict {
    match message {
        Gossip::Used(_) if !mesh.is_distributor(source) => Verdict::Reject(format!(
            "use marker from {source}, which is not a listed distributor"
        )),
        // Threshold mode: only the coordinator opens, fails and seals rounds.
        Gossip::Open(_) | Gossip::Failed(_) | Gossip::Sealed(_)
            if mesh.threshold().is_some() && mesh.coordinator() != Some(*source) =>
        {
            Verdict::Reject(format!(
                "{} from {source}, which is not the coordinator (the first listed generator)",
                message.kind()
            ))
        }
        Gossip::Open(_) | Gossip::Failed(_) if !mesh.is_generator(source) => {
            Verdict::Reject(format!(
                "{} from {source}, which is not a listed generator",
                message.kind()
            ))
        }
        Gossip::Sealed(t) if !mesh.is_generator(source) || &t.generator != source => {
            Verdict::Reject(format!(
                "transcript from {source}, which is not its listed generator"
            ))
        }
        Gossip::Sealed(t) => match t.check(None) {
            Ok(()) => Verdict::Accept,
            Err(e) => Verdict::Reject(format!("malformed transcript: {e}")),
        },
        Gossip::Proposal(_) if mesh.coordinator() != Some(*source) => Verdict::Reject(format!(
            "proposal from {source}, which is not the coordinator (the first listed generator)"
        )),
        Gossip::Complaints(c) if mesh.generator_at(c.index) != Some(*source) => Verdict::Reject(
            format!("complaints as generator {} from {source}", c.index.0),
        ),
        Gossip::Deal(d) => match mesh.may_contribute(source, d.client) {
            Ok(()) if d.shares.iter().any(|c| ![256, 384, 512].contains(&c.len())) => {
                Verdict::Reject("a share ciphertext fits no allowed RSA key size".into())
            }
            Ok(()) => Verdict::Accept,
            Err(denied) => Verdict::Reject(format!("dealing from {source}: {denied}")),
        },
        Gossip::Beacon(_) if mesh.threshold().is_none() => Verdict::Reject(format!(
            "beacon partial from {source}: this mesh has no threshold key"
        )),
        Gossip::Beacon(b) if mesh.distributor_at(b.partial.index) != Some(*source) => {
            Verdict::Reject(format!(
                "beacon partial as distributor {} from {source}",
                b.partial.index.0
            ))
        }
        Gossip::Justification(j) => match mesh.may_contribute(source, j.client) {
            Ok(()) => Verdict::Accept,
            Err(denied) => Verdict::Reject(format!("justification from {source}: {denied}")),
        },
        Gossip::Phrase(p) => match mesh.may_contribute(source, p.client) {
            Ok(()) if ![256, 384, 512].contains(&p.ciphertext.len()) => Verdict::Reject(format!(
                "ciphertext of {} bytes fits no allowed RSA key size",
                p.ciphertext.len()
            )),
            Ok(()) => Verdict::Accept,
            Err(denied) => Verdict::Reject(format!("phrase from {source}: {denied}")),
        },
        _ => Verdict::Accept,
    }
}

/// Hands out request tags.
#[derive(Debug, Default)]
pub(crate) struct Tags(u64);

impl Tags {
    /// Tags from `first` on: two state machines in one role keep their tags apart.
    pub(crate) fn starting_at(first: u64) -> Tags {
        Tags(first)
    }

    pub(crate) fn next(&mut self) -> Tag {
        self.0 += 1;
        Tag(self.0)
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    /// A distributor that does not hold the round asked for yet is the same routine miss as one
    /// that holds none: the requester retries both, and neither is logged as a warning.
    #[test]
    fn a_round_not_held_yet_is_a_no_round_failure() {
        assert_eq!(
            Failure::of_refusal(&Refusal::UnknownRound(RoundId(1))),
            Failure::NoRound
        );
    }

    #[test]
    fn a_failure_is_typed_from_the_answer_and_has_one_exit_code() {
        let of = |r: Result<Response, String>| failure_of(r).0;
        assert_eq!(of(Err("connection refused".into())), Failure::Unreachable);
        assert_eq!(
            of(Ok(Response::Refused(Refusal::Unauthorised("x".into())))),
            Failure::Unauthorised
        );
        assert_eq!(
            of(Ok(Response::Refused(Refusal::NoRound))),
            Failure::NoRound
        );
        assert_eq!(
            of(Ok(Response::Refused(Refusal::NoCodeRound {
                step: 1,
                margin_s: 10
            }))),
            Failure::NoRound
        );
        assert_eq!(
            of(Ok(Response::Refused(Refusal::Invalid("x".into())))),
            Failure::Refused
        );
        assert_eq!(of(Ok(Response::Delivered(RoundId(1)))), Failure::Refused);
        let all = [
            Failure::Unreachable,
            Failure::Unauthorised,
            Failure::NoRound,
            Failure::QuorumUnavailable,
            Failure::Refused,
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(|f| f.exit_code()).collect();
        assert_eq!(codes.len(), all.len(), "one exit code per kind");
    }
}
