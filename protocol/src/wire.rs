//! Every message otpmesh sends, with its version and size limits.
//!
//! Gossip ([`GOSSIP_TOPIC`], and [`PHRASE_TOPIC`] for phrases): [`Gossip`]. Request-response ([`RR_PROTOCOL`]): [`Request`] →
//! [`Response`]. Each is CBOR of `{v: VERSION, m: message}`. Decoding checks the byte limit before it
//! parses, rejects trailing bytes, other versions and out-of-bounds fields, and never panics.

use crate::digest::Digest32;
use crate::otp::{Digits, SALT_BYTES};
use crate::phrase::ClientId;
use crate::round::{Inclusion, RoundId, Secret, ThresholdKey, Transcript, MAX_ROUND_CONTRIBUTORS};
use crate::seal::{MAX_CIPHERTEXT_BYTES, MAX_SPKI_BYTES};
use crate::threshold::eval::Partial;
use crate::threshold::poly::WireCommitments;
use crate::threshold::{Index, MAX_SHAREHOLDERS};
use serde::{Deserialize, Serialize};

pub use crate::codec::{bounded_reason, WireError, MAX_REASON_BYTES, VERSION};
pub(crate) use crate::codec::{check_reason, decode, encode, field};

/// The gossipsub topic every node follows: round announcements, transcripts, failures.
pub const GOSSIP_TOPIC: &str = "otpmesh/1";
/// The topic phrases travel on. Only generators subscribe, so contributors publish to them directly
/// (fanout) and no contributor relays another's phrase: k phrases cost O(k) messages, not O(k²).
pub const PHRASE_TOPIC: &str = "otpmesh/1/phrases";
/// Use markers, which only distributors need: one per accepted OTP, so the busiest topic; kept off
/// the generator and contributors, whose gossip state would otherwise grow with the OTP rate.
pub const USED_TOPIC: &str = "otpmesh/1/used";
/// The request-response protocol name.
pub const RR_PROTOCOL: &str = "/otpmesh/rr/1";
/// Largest gossip message (a transcript of [`MAX_ROUND_CONTRIBUTORS`] entries fits: about 40
/// bytes an entry).
pub const MAX_GOSSIP_BYTES: usize = 1024 * 1024;
/// Largest request (a delivery carries a transcript).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest response (beacon entries carry their rounds' transcripts).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Most beacon entries in one catch-up answer (fewer when they would not fit a response).
pub const MAX_BEACON_PAGE: usize = 64;

/// A generator opens a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundOpen {
    pub round: RoundId,
    pub key_fingerprint: Digest32,
    pub quorum: u32,
    pub minimum: u32,
    pub deadline_ms: u64,
    pub prev_commitment: Digest32,
}

/// A contributor's sealed phrase for a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhraseSubmission {
    pub round: RoundId,
    pub client: ClientId,
    pub key_fingerprint: Digest32,
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// A round that did not seal, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundFailure {
    pub round: RoundId,
    pub reason: String,
}

/// A distributor accepted this OTP (it issued it): every other distributor answers `used` for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseMarker {
    pub requester: libp2p_identity::PeerId,
    pub round: RoundId,
    pub counter: u64,
    pub expires_at_ms: u64,
}

/// Threshold mode: a contributor's dealing. Feldman commitments to its polynomial, and share j
/// RSA-OAEP-sealed to generator j's key, for every generator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deal {
    pub round: RoundId,
    pub client: ClientId,
    pub commitments: WireCommitments,
    pub shares: Vec<serde_bytes::ByteBuf>,
    /// A generator's own dealing carries its identity key's signature over [`Deal::signed`], so a
    /// copy fetched from the coordinator is still the generator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<serde_bytes::ByteBuf>,
}

impl Deal {
    /// What a generator signs of its dealing: round, dealer, commitments and every ciphertext.
    pub fn signed(&self) -> Vec<u8> {
        let (round, client) = (self.round.0.to_be_bytes(), self.client.0.to_be_bytes());
        let mut parts: Vec<&[u8]> = vec![&round, &client];
        parts.extend(self.commitments.0.iter().map(|p| p.as_slice()));
        parts.extend(self.shares.iter().map(|s| s.as_slice()));
        crate::digest::tagged("otpmesh/1/threshold-deal", &parts)
            .0
            .to_vec()
    }

    /// Whether `author` signed this dealing.
    pub fn signed_by(&self, author: &libp2p_identity::PeerId) -> bool {
        let (Some(signature), Some(key)) = (&self.signature, crate::round::peer_public_key(author))
        else {
            return false;
        };
        signature.len() <= crate::round::MAX_SIGNATURE_BYTES
            && key.verify(&self.signed(), signature)
    }
}

/// Threshold mode: the coordinator's list of the dealings in a round (client, commitments digest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub round: RoundId,
    pub dealings: Vec<Inclusion>,
}

/// Threshold mode: generator `index` names the proposed dealings whose share to it is missing or
/// does not match the commitments. Published even when empty: it says the generator is ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complaints {
    pub round: RoundId,
    pub index: Index,
    /// Dealings whose share to this generator did not open or does not match its commitments:
    /// their dealers answer with that share in clear.
    pub against: Vec<ClientId>,
    /// Proposed dealings that never reached this generator (not even when fetched again from the
    /// coordinator): never answered in clear, left out of the round.
    #[serde(default)]
    pub missing: Vec<ClientId>,
}

/// Threshold mode: a contributor answers a complaint by publishing the share pair in question
/// (f(j) ‖ g(j), [`crate::threshold::poly::SHARE_PAIR_BYTES`]); anyone checks it against the
/// commitments. A dealing whose complaint goes unanswered, or is answered
/// with a share that does not match, is left out of the round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Justification {
    pub round: RoundId,
    pub client: ClientId,
    pub index: Index,
    #[serde(with = "serde_bytes")]
    pub share: [u8; crate::threshold::poly::SHARE_PAIR_BYTES],
    pub commitments: WireCommitments,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    Open(RoundOpen),
    Phrase(PhraseSubmission),
    Sealed(Transcript),
    Failed(RoundFailure),
    Used(UseMarker),
    Deal(Deal),
    Proposal(Proposal),
    Complaints(Complaints),
    Justification(Justification),
    /// Threshold mode: a distributor's beacon partial.
    Beacon(BeaconPartial),
}

/// Threshold mode: distributor j's partial of round `round`'s beacon, k_j·H("beacon", prev, round)
/// with its DLEQ proof against K_j.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconPartial {
    pub round: RoundId,
    /// The beacon value before this round's (all zeros for the first).
    pub prev: Digest32,
    pub partial: Partial,
}

/// Beacon catch-up: the entries of the rounds before `before` that the node holds, newest first,
/// at most `limit` (and [`MAX_BEACON_PAGE`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconQuery {
    pub before: RoundId,
    pub limit: u32,
}

impl Gossip {
    /// The topic this message is published on.
    pub fn topic(&self) -> &'static str {
        match self {
            Gossip::Phrase(_) | Gossip::Deal(_) => PHRASE_TOPIC,
            Gossip::Used(_) => USED_TOPIC,
            _ => GOSSIP_TOPIC,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Gossip::Open(_) => "open",
            Gossip::Phrase(_) => "phrase",
            Gossip::Sealed(_) => "sealed",
            Gossip::Failed(_) => "failed",
            Gossip::Used(_) => "used",
            Gossip::Deal(_) => "deal",
            Gossip::Proposal(_) => "proposal",
            Gossip::Complaints(_) => "complaints",
            Gossip::Justification(_) => "justification",
            Gossip::Beacon(_) => "beacon",
        }
    }

    pub fn round(&self) -> RoundId {
        match self {
            Gossip::Open(m) => m.round,
            Gossip::Phrase(m) => m.round,
            Gossip::Sealed(m) => m.round,
            Gossip::Failed(m) => m.round,
            Gossip::Used(m) => m.round,
            Gossip::Deal(m) => m.round,
            Gossip::Proposal(m) => m.round,
            Gossip::Complaints(m) => m.round,
            Gossip::Justification(m) => m.round,
            Gossip::Beacon(m) => m.round,
        }
    }

    fn check(&self) -> Result<(), WireError> {
        match self {
            Gossip::Open(m)
                if m.minimum > m.quorum || m.quorum as usize > MAX_ROUND_CONTRIBUTORS =>
            {
                Err(field(
                    "quorum",
                    format!("quorum {} minimum {}", m.quorum, m.minimum),
                ))
            }
            Gossip::Phrase(m) if m.ciphertext.len() > MAX_CIPHERTEXT_BYTES => Err(field(
                "ciphertext",
                format!(
                    "{} bytes, at most {MAX_CIPHERTEXT_BYTES}",
                    m.ciphertext.len()
                ),
            )),
            Gossip::Sealed(t) => check_transcript(t),
            Gossip::Failed(m) => check_reason(&m.reason),
            Gossip::Deal(m) => {
                check_points("commitments", &m.commitments)?;
                if m.shares.len() > MAX_SHAREHOLDERS as usize {
                    return Err(field(
                        "shares",
                        format!("{} entries, at most {MAX_SHAREHOLDERS}", m.shares.len()),
                    ));
                }
                match m.shares.iter().find(|c| c.len() > MAX_CIPHERTEXT_BYTES) {
                    Some(c) => Err(field(
                        "shares",
                        format!("a {} byte share, at most {MAX_CIPHERTEXT_BYTES}", c.len()),
                    )),
                    None => Ok(()),
                }
            }
            Gossip::Proposal(m) if m.dealings.len() > MAX_ROUND_CONTRIBUTORS => Err(field(
                "dealings",
                format!(
                    "{} entries, at most {MAX_ROUND_CONTRIBUTORS}",
                    m.dealings.len()
                ),
            )),
            Gossip::Complaints(m) if m.against.len() > MAX_ROUND_CONTRIBUTORS => Err(field(
                "against",
                format!(
                    "{} entries, at most {MAX_ROUND_CONTRIBUTORS}",
                    m.against.len()
                ),
            )),
            Gossip::Complaints(m) if m.missing.len() > MAX_ROUND_CONTRIBUTORS => Err(field(
                "missing",
                format!(
                    "{} entries, at most {MAX_ROUND_CONTRIBUTORS}",
                    m.missing.len()
                ),
            )),
            Gossip::Justification(m) => check_points("commitments", &m.commitments),
            _ => Ok(()),
        }
    }
}

/// The round secret a generator hands a distributor, with its transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub transcript: Transcript,
    pub secret: Secret,
}

/// A requester asks for an OTP (of the newest round, or of `round`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpRequest {
    pub round: Option<RoundId>,
    /// The requester's fresh X25519 public key (ignored when `enrolled`).
    #[serde(with = "serde_bytes")]
    pub requester_key: [u8; 32],
    /// Salt with the enrolment's current epoch key instead of a fresh exchange.
    #[serde(default)]
    pub enrolled: bool,
}

/// Enrolment: the requester's fresh X25519 public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    #[serde(with = "serde_bytes")]
    pub requester_key: [u8; 32],
}

/// A requester asks for a TOTP token (its secret comes back salted, as OTPs do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpEnrolRequest {
    #[serde(with = "serde_bytes")]
    pub requester_key: [u8; 32],
}

/// A TOTP token: its parameters and its secret, masked for the requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpGrant {
    pub params: crate::totp::Params,
    /// The round whose secret the token's secret was derived from.
    pub round: RoundId,
    #[serde(with = "serde_bytes")]
    pub masked_secret: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub salt: [u8; SALT_BYTES],
    #[serde(with = "serde_bytes")]
    pub distributor_key: [u8; 32],
}

/// The distributor's half of an enrolment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolGrant {
    #[serde(with = "serde_bytes")]
    pub distributor_key: [u8; 32],
    /// The epoch the enrolment key starts at.
    pub epoch: u64,
    pub epoch_ms: u64,
}

/// A requester presents one of its OTPs, as digits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    pub code: String,
}

/// Longest code accepted in a verify request.
pub const MAX_CODE_CHARS: usize = 16;

/// What a verification came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyResult {
    /// First use, before expiry.
    Accepted,
    /// Accepted before (here or at another distributor).
    Used,
    Expired,
    /// No such OTP for this requester.
    Wrong,
    /// Too many wrong attempts: nothing is checked until the lockout ends.
    Locked,
}

impl VerifyResult {
    /// Every result, for counters that start at zero.
    pub const ALL: [VerifyResult; 5] = [
        VerifyResult::Accepted,
        VerifyResult::Used,
        VerifyResult::Expired,
        VerifyResult::Wrong,
        VerifyResult::Locked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VerifyResult::Accepted => "accepted",
            VerifyResult::Used => "used",
            VerifyResult::Expired => "expired",
            VerifyResult::Wrong => "wrong",
            VerifyResult::Locked => "locked",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "Send me your RSA public key" (to a generator).
    PublicKey,
    Deliver(Box<Delivery>),
    Otp(OtpRequest),
    Verify(VerifyRequest),
    Enrol(EnrolRequest),
    TotpEnrol(TotpEnrolRequest),
    TotpVerify(VerifyRequest),
    /// To a distributor acting as key distribution centre.
    Kdc(crate::kdc::message::CentreRequest),
    /// Threshold mode: generator j hands its key share of a round to distributor j.
    Handover(Box<Handover>),
    /// Threshold mode: a requester asks for a distributor's partial evaluation of its OTP.
    Partial(PartialRequest),
    /// Threshold mode: a verifier asks for a partial of an OTP being presented; the distributor
    /// marks it used first, so what it reveals is already spent.
    VerifyPartial(VerifyPartialRequest),
    /// Threshold mode, to any node: beacon entries, for catch-up.
    Beacon(BeaconQuery),
    /// Threshold mode, generator to the coordinator: a proposed dealing this generator missed
    /// (its shares are RSA-sealed, so the dealing is public).
    Dealing(DealingRequest),
    /// Threshold mode, requester to a distributor: a password's blinded input (RFC 9497 VOPRF,
    /// ristretto255-SHA512): the distributor sees one random group element and learns nothing.
    Evaluate(EvaluateRequest),
    /// From a listed verifier: is `code` a live OTP of `user`? Judged and spent as a requester's
    /// own verification would be; answered with `Verified`.
    Check(CheckRequest),
    /// Threshold mode: a partial of a time-step code (`threshold::code`), for the requester's own
    /// code, or for a listed verifier checking a user's (then the step is spent first).
    Code(CodeRequest),
}

/// Threshold mode: the partial of step `step`'s code of `user` (a verifier) or of the asker (a
/// requester), masked under an exchange with `key` (the asker's fresh X25519 key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRequest {
    pub user: Option<crate::id::UserName>,
    pub step: u64,
    #[serde(with = "serde_bytes")]
    pub key: [u8; 32],
}

/// Distributor j's answer to a [`CodeRequest`]: the round the rule chose and its signed key, and
/// y_j masked for the asker with its proof, or nothing if the step was spent before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    pub step: u64,
    pub round: RoundId,
    pub index: Index,
    pub key: ThresholdKey,
    #[serde(with = "serde_bytes")]
    pub salt: [u8; SALT_BYTES],
    #[serde(with = "serde_bytes")]
    pub distributor_key: [u8; 32],
    /// None: the step was already spent here.
    pub partial: Option<MaskedPartial>,
}

/// y_j masked, and its proof in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedPartial {
    #[serde(with = "serde_bytes")]
    pub masked_y: [u8; 32],
    pub proof: crate::threshold::dleq::Proof,
}

/// A verifier asks on behalf of a service where `user` typed `code`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub user: crate::id::UserName,
    pub code: String,
}

/// A blinded element B = r·H(input) for a password, under the password key k' of `round` (the
/// newest held if absent); never under the OTP key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluateRequest {
    pub round: Option<RoundId>,
    #[serde(with = "serde_bytes")]
    pub blinded: [u8; 32],
}

/// Distributor j's blind evaluation k'_j·B with its RFC 9497 proof against K'_j, and the round key
/// (signed by the coordinator) that K'_j comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluateGrant {
    pub round: RoundId,
    pub partial: crate::threshold::voprf::Partial,
    pub key: ThresholdKey,
}

/// Which dealing a generator missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealingRequest {
    pub round: RoundId,
    pub client: ClientId,
}

/// Threshold mode: a round's transcript and generator j's key share k_j, for distributor j only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub transcript: Transcript,
    pub index: Index,
    pub share: Secret,
}

/// What a threshold evaluation is for: its input's domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// An OTP: recorded, expires, verified once.
    #[default]
    Otp,
    /// A password only the requester sees: nothing is recorded.
    Password,
}

impl Domain {
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Otp => crate::threshold::eval::OTP_DOMAIN,
            Domain::Password => crate::threshold::password::DOMAIN,
        }
    }

    /// The input x = (domain, requester, round, counter) a partial is evaluated at.
    pub fn input(
        self,
        requester: &libp2p_identity::PeerId,
        round: RoundId,
        counter: u64,
    ) -> crate::threshold::eval::Input {
        crate::threshold::eval::Input {
            domain: self.as_str().into(),
            requester: requester.to_bytes(),
            round: round.0,
            counter,
        }
    }
}

/// The input of `requester`'s OTP with `counter` in `round`.
pub fn otp_input(
    requester: &libp2p_identity::PeerId,
    round: RoundId,
    counter: u64,
) -> crate::threshold::eval::Input {
    Domain::Otp.input(requester, round, counter)
}

/// Threshold mode: the partial for x = (domain, requester, round, counter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialRequest {
    #[serde(default)]
    pub domain: Domain,
    /// The newest round this distributor holds if absent.
    pub round: Option<RoundId>,
    /// Chosen by the requester: see [`crate::threshold::counter`].
    pub counter: u64,
    #[serde(with = "serde_bytes")]
    pub requester_key: [u8; 32],
    #[serde(default)]
    pub enrolled: bool,
}

/// Threshold mode: the partial for an OTP being verified (the requester's own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPartialRequest {
    pub round: RoundId,
    pub counter: u64,
}

/// Threshold mode: distributor j's partial y_j = k_j·H(x), its point masked for the requester
/// (as single mode salts an OTP), its proof in clear, and the round's public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialGrant {
    pub round: RoundId,
    pub counter: u64,
    pub digits: Digits,
    pub index: Index,
    #[serde(with = "serde_bytes")]
    pub masked_y: [u8; 32],
    pub proof: crate::threshold::dleq::Proof,
    #[serde(with = "serde_bytes")]
    pub salt: [u8; SALT_BYTES],
    #[serde(with = "serde_bytes")]
    pub distributor_key: [u8; 32],
    pub epoch: Option<u64>,
    pub expires_at_ms: u64,
    pub key: ThresholdKey,
}

/// Threshold mode: a partial released for verification (the OTP is already marked used).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPartialGrant {
    pub partial: Partial,
    pub digits: Digits,
    pub key: ThresholdKey,
}

impl Request {
    pub fn kind(&self) -> &'static str {
        match self {
            Request::PublicKey => "public-key",
            Request::Deliver(_) => "deliver",
            Request::Otp(_) => "otp",
            Request::Verify(_) => "verify",
            Request::Enrol(_) => "enrol",
            Request::TotpEnrol(_) => "totp-enrol",
            Request::TotpVerify(_) => "totp-verify",
            Request::Kdc(crate::kdc::message::CentreRequest::Register(_)) => "kdc-register",
            Request::Kdc(crate::kdc::message::CentreRequest::Present(_)) => "kdc-present",
            Request::Kdc(crate::kdc::message::CentreRequest::Session(_)) => "kdc-session",
            Request::Handover(_) => "handover",
            Request::Partial(_) => "partial",
            Request::VerifyPartial(_) => "verify-partial",
            Request::Beacon(_) => "beacon",
            Request::Dealing(_) => "dealing",
            Request::Evaluate(_) => "evaluate",
            Request::Check(_) => "check",
            Request::Code(_) => "code",
        }
    }

    fn check(&self) -> Result<(), WireError> {
        match self {
            Request::Deliver(d) => check_transcript(&d.transcript),
            Request::Verify(v) if v.code.len() > MAX_CODE_CHARS => Err(field(
                "code",
                format!("{} characters, at most {MAX_CODE_CHARS}", v.code.len()),
            )),
            Request::Check(c) if c.code.len() > MAX_CODE_CHARS => Err(field(
                "code",
                format!("{} characters, at most {MAX_CODE_CHARS}", c.code.len()),
            )),
            Request::Kdc(k) => k.check(),
            Request::Handover(h) => check_transcript(&h.transcript),
            _ => Ok(()),
        }
    }
}

/// A salted OTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtpGrant {
    pub round: RoundId,
    pub counter: u64,
    pub digits: Digits,
    pub salted: u64,
    #[serde(with = "serde_bytes")]
    pub salt: [u8; SALT_BYTES],
    /// The distributor's fresh X25519 public key (zero when salted under an enrolment).
    #[serde(with = "serde_bytes")]
    pub distributor_key: [u8; 32],
    pub expires_at_ms: u64,
    /// The enrolment epoch whose key salted this, if any.
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// Why a request was refused. Shown to the requester as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("not authorised: {0}")]
    Unauthorised(String),
    #[error("no round has been sealed and delivered to this distributor yet")]
    NoRound,
    #[error("this distributor does not hold round {0}")]
    UnknownRound(RoundId),
    #[error("this node's role does not serve {0} requests")]
    WrongRole(String),
    #[error("request rejected: {0}")]
    Invalid(String),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// The KDC: the name is registered, and re-registering it needs its current passphrase.
    #[error("the name {0} is taken; registering it again needs its current passphrase")]
    NameTaken(String),
    /// A threshold request (`{0}`: its kind) to a single-generator mesh.
    #[error("{0}: this mesh runs in single-generator mode, where one distributor holds each round's whole secret; it needs a threshold key (threshold = \"T/N\" in the mesh config)")]
    NeedsThreshold(String),
    /// Threshold codes: no round held was sealed `margin_s` before `step` began.
    #[error("no round held here was sealed {margin_s} s before step {step} began (a new mesh serves codes once its first round is that old)")]
    NoCodeRound { step: u64, margin_s: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    PublicKey(#[serde(with = "serde_bytes")] Vec<u8>),
    Delivered(RoundId),
    Otp(OtpGrant),
    Verified(VerifyResult),
    Enrolled(EnrolGrant),
    TotpEnrolled(TotpGrant),
    Kdc(crate::kdc::message::CentreResponse),
    Refused(Refusal),
    Partial(Box<PartialGrant>),
    VerifyPartial(Box<VerifyPartialGrant>),
    /// Beacon entries, newest first.
    Beacon(Vec<crate::beacon::Entry>),
    /// A dealing, as its dealer gossiped it.
    Dealing(Box<Deal>),
    Evaluated(Box<EvaluateGrant>),
    Code(Box<CodeGrant>),
}

impl Response {
    pub fn kind(&self) -> &'static str {
        match self {
            Response::PublicKey(_) => "public-key",
            Response::Delivered(_) => "delivered",
            Response::Otp(_) => "otp",
            Response::Verified(_) => "verified",
            Response::Enrolled(_) => "enrolled",
            Response::TotpEnrolled(_) => "totp-enrolled",
            Response::Kdc(_) => "kdc",
            Response::Refused(_) => "refused",
            Response::Partial(_) => "partial",
            Response::VerifyPartial(_) => "verify-partial",
            Response::Beacon(_) => "beacon",
            Response::Dealing(_) => "dealing",
            Response::Evaluated(_) => "evaluated",
            Response::Code(_) => "code",
        }
    }

    fn check(&self) -> Result<(), WireError> {
        match self {
            Response::PublicKey(der) if der.len() > MAX_SPKI_BYTES => Err(field(
                "public_key",
                format!("{} bytes, at most {MAX_SPKI_BYTES}", der.len()),
            )),
            Response::Refused(
                Refusal::Unauthorised(s)
                | Refusal::WrongRole(s)
                | Refusal::Invalid(s)
                | Refusal::Unavailable(s)
                | Refusal::NameTaken(s)
                | Refusal::NeedsThreshold(s),
            ) => check_reason(s),
            Response::Partial(g) => check_points("public", &g.key.public),
            Response::VerifyPartial(g) => check_points("public", &g.key.public),
            Response::Evaluated(g) => check_points("public", &g.key.public),
            Response::Code(g) => check_points("public", &g.key.public),
            Response::Beacon(entries) => {
                if entries.len() > MAX_BEACON_PAGE {
                    return Err(field(
                        "entries",
                        format!("{} entries, at most {MAX_BEACON_PAGE}", entries.len()),
                    ));
                }
                entries.iter().try_for_each(|e| {
                    check_transcript(&e.transcript)?;
                    match e.value.partials.len() > MAX_SHAREHOLDERS as usize {
                        true => Err(field(
                            "partials",
                            format!(
                                "{} partials, at most {MAX_SHAREHOLDERS}",
                                e.value.partials.len()
                            ),
                        )),
                        false => Ok(()),
                    }
                })
            }
            _ => Ok(()),
        }
    }
}

fn check_points(name: &'static str, points: &WireCommitments) -> Result<(), WireError> {
    // Two polynomials of t ≤ MAX_SHAREHOLDERS points each (threshold::poly::Pair).
    match points.0.len() {
        0 => Err(field(name, "no points".into())),
        n if n > 2 * MAX_SHAREHOLDERS as usize => Err(field(
            name,
            format!("{n} points, at most {}", 2 * MAX_SHAREHOLDERS),
        )),
        n if !n.is_multiple_of(2) => Err(field(
            name,
            format!("{n} points: two polynomials need an even count"),
        )),
        _ => Ok(()),
    }
}

fn check_transcript(t: &Transcript) -> Result<(), WireError> {
    if t.included.len() > MAX_ROUND_CONTRIBUTORS {
        return Err(field(
            "included",
            format!(
                "{} entries, at most {MAX_ROUND_CONTRIBUTORS}",
                t.included.len()
            ),
        ));
    }
    match &t.threshold {
        Some(key) => check_points("public", &key.public),
        None => Ok(()),
    }
}

pub fn encode_gossip(m: &Gossip) -> Vec<u8> {
    encode(m)
}

pub fn decode_gossip(bytes: &[u8]) -> Result<Gossip, WireError> {
    let m: Gossip = decode(bytes, MAX_GOSSIP_BYTES)?;
    m.check()?;
    Ok(m)
}

pub fn encode_request(m: &Request) -> Vec<u8> {
    encode(m)
}

pub fn decode_request(bytes: &[u8]) -> Result<Request, WireError> {
    let m: Request = decode(bytes, MAX_REQUEST_BYTES)?;
    m.check()?;
    Ok(m)
}

pub fn encode_response(m: &Response) -> Vec<u8> {
    encode(m)
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, WireError> {
    let m: Response = decode(bytes, MAX_RESPONSE_BYTES)?;
    m.check()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Envelope;
    use libp2p_identity::PeerId;
    use proptest::prelude::*;

    fn sample_transcript(n: usize) -> Transcript {
        Transcript {
            round: RoundId(7),
            generator: PeerId::random(),
            key_fingerprint: Digest32([1; 32]),
            included: (1..=n as u32)
                .map(|c| Inclusion {
                    client: ClientId(c),
                    ciphertext_hash: Digest32([2; 32]),
                })
                .collect(),
            prev_commitment: Digest32([3; 32]),
            commitment: Digest32([4; 32]),
            sealed_at_ms: 1,
            threshold: None,
        }
    }

    fn samples() -> Vec<Gossip> {
        vec![
            Gossip::Open(RoundOpen {
                round: RoundId(1),
                key_fingerprint: Digest32([5; 32]),
                quorum: 4,
                minimum: 3,
                deadline_ms: 99,
                prev_commitment: Digest32::ZERO,
            }),
            Gossip::Phrase(PhraseSubmission {
                round: RoundId(1),
                client: ClientId(2),
                key_fingerprint: Digest32([5; 32]),
                ciphertext: vec![9; 256],
            }),
            Gossip::Sealed(sample_transcript(4)),
            Gossip::Failed(RoundFailure {
                round: RoundId(2),
                reason: "deadline".into(),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for g in samples() {
            assert_eq!(decode_gossip(&encode_gossip(&g)).unwrap(), g);
        }
        let reqs = [
            Request::PublicKey,
            Request::Otp(OtpRequest {
                round: Some(RoundId(3)),
                requester_key: [7; 32],
                enrolled: false,
            }),
            Request::Otp(OtpRequest {
                round: None,
                requester_key: [0; 32],
                enrolled: true,
            }),
            Request::Verify(VerifyRequest {
                code: "01234567".into(),
            }),
            Request::Enrol(EnrolRequest {
                requester_key: [3; 32],
            }),
            Request::Deliver(Box::new(Delivery {
                transcript: sample_transcript(2),
                secret: Secret::from_bytes([8; 32]),
            })),
        ];
        for r in reqs {
            assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
        }
        let resps = [
            Response::PublicKey(vec![1, 2, 3]),
            Response::Delivered(RoundId(3)),
            Response::Refused(Refusal::NoRound),
            Response::Otp(OtpGrant {
                round: RoundId(1),
                counter: 2,
                digits: Digits::default(),
                salted: 12345678,
                salt: [1; 16],
                distributor_key: [2; 32],
                expires_at_ms: 5,
                epoch: Some(4),
            }),
            Response::Verified(VerifyResult::Used),
            Response::Enrolled(EnrolGrant {
                distributor_key: [4; 32],
                epoch: 9,
                epoch_ms: 1000,
            }),
        ];
        for r in resps {
            assert_eq!(decode_response(&encode_response(&r)).unwrap(), r);
        }
    }

    #[test]
    fn the_largest_transcript_fits_the_limits() {
        let g = Gossip::Sealed(sample_transcript(MAX_ROUND_CONTRIBUTORS));
        let bytes = encode_gossip(&g);
        assert!(bytes.len() <= MAX_GOSSIP_BYTES, "{} bytes", bytes.len());
        assert_eq!(decode_gossip(&bytes).unwrap(), g);
    }

    #[test]
    fn limits_versions_and_trailing_bytes_are_typed_errors() {
        let big = vec![0u8; MAX_GOSSIP_BYTES + 1];
        assert_eq!(
            decode_gossip(&big),
            Err(WireError::TooLarge {
                len: big.len(),
                max: MAX_GOSSIP_BYTES
            })
        );
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &Envelope {
                v: 9,
                m: &samples()[0],
            },
            &mut bytes,
        )
        .unwrap();
        assert_eq!(decode_gossip(&bytes), Err(WireError::Version { found: 9 }));
        let mut other = Vec::new();
        ciborium::into_writer(
            &Envelope {
                v: 2,
                m: "something new",
            },
            &mut other,
        )
        .unwrap();
        assert_eq!(decode_gossip(&other), Err(WireError::Version { found: 2 }));
        let mut trailing = encode_gossip(&samples()[0]);
        trailing.push(0);
        assert_eq!(decode_gossip(&trailing), Err(WireError::Trailing(1)));
        let oversized_ct = Gossip::Phrase(PhraseSubmission {
            round: RoundId(1),
            client: ClientId(1),
            key_fingerprint: Digest32::ZERO,
            ciphertext: vec![0; MAX_CIPHERTEXT_BYTES + 1],
        });
        assert!(matches!(
            decode_gossip(&encode_gossip(&oversized_ct)),
            Err(WireError::Field {
                field: "ciphertext",
                ..
            })
        ));
        assert!(matches!(
            decode_request(b"\xff\x00"),
            Err(WireError::Malformed(_))
        ));
        let long = Response::Refused(Refusal::Invalid("x".repeat(MAX_REASON_BYTES + 1)));
        assert!(matches!(
            decode_response(&encode_response(&long)),
            Err(WireError::Field {
                field: "reason",
                ..
            })
        ));
        assert_eq!(bounded_reason("é".repeat(200)).len(), MAX_REASON_BYTES);
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_gossip(&bytes);
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }

        #[test]
        fn decoders_never_panic_on_mutated_messages(which in 0usize..4, pos in any::<proptest::sample::Index>(), byte in any::<u8>(), cut in any::<proptest::sample::Index>()) {
            let original = encode_gossip(&samples()[which]);
            let end = cut.index(original.len());
            prop_assert!(decode_gossip(&original[..end]).is_err(), "a truncated message decoded");
            let mut bytes = original;
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            let _ = decode_gossip(&bytes);
        }
    }
}
