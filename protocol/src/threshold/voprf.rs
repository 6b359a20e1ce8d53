//! # RFC 9497 VOPRF, ristretto255-SHA512: one server, or t of n share-holders
//!
//! Mode VOPRF (0x01), suite "ristretto255-SHA512", every hash domain-separated by
//! contextString = "OPRFV1-" ‖ I2OSP(0x01, 1) ‖ "-" ‖ "ristretto255-SHA512". Interoperable with
//! other RFC 9497 implementations (the test vectors of Appendix A.1.2 pass).
//!
//! ```text
//!  client:  r ← random (≠ 0);  B = r·HashToGroup(x)                        blind / blind_with
//!           B ─────────────────────────────────────────────────────► server (key k, pk = G·k)
//!  server:  Z = k·B;  π = GenerateProof(k, G, pk, [B], [Z])  (§2.2)       evaluate / prove
//!           (Z, π) ◄──────────────────────────────────────────────
//!  client:  VerifyProof(G, pk, [B], [Z], π)                               verify_proof
//!           N = r⁻¹·Z = k·HashToGroup(x)
//!           out = SHA-512(I2OSP(len x, 2) ‖ x ‖ I2OSP(32, 2) ‖ N ‖ "Finalize")   finalize
//!
//!  threshold: k is Shamir-shared (poly), holder j has k_j and K_j = G·k_j is public
//!  holder j: Z_j = k_j·B;  π_j = GenerateProof(k_j, G, K_j, [B], [Z_j])   partial_evaluate
//!  client:   checks every π_j against K_j, names bad ones                 verify_partial
//!            Z = Σ λ_j Z_j over t valid ones (Lagrange at 0) = k·B        combine
//!            then N and out exactly as above                              finalize_combined
//! ```
//!
//! Proofs: the RFC draws the nonce with `RandomScalar()`; [`prove`] hedges it instead,
//! r = H(k ‖ pk ‖ B ‖ Z ‖ 32 fresh bytes) under its own tag, so a repeated RNG state never
//! repeats a nonce across two statements (two proofs with one r and different challenges give
//! k = (s₁ − s₂)/(c₂ − c₁)). [`prove_with`] takes r from the caller, for the test vectors.
//! Either way the proof is an RFC proof and any RFC verifier accepts it.
//!
//! Wire: elements are 32-byte compressed Ristretto (the identity is refused), scalars 32 bytes
//! little endian (canonical only), a proof 64 bytes c ‖ s. Bad bytes are errors naming the field.

use super::poly::lagrange_at_zero;
use super::{Index, Params, ThresholdError};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha512};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The suite identifier.
pub const SUITE: &[u8] = b"ristretto255-SHA512";
/// modeVOPRF.
pub const MODE_VOPRF: u8 = 0x01;
/// "OPRFV1-" ‖ I2OSP(modeVOPRF, 1) ‖ "-" ‖ SUITE.
pub const CONTEXT_STRING: &[u8] = b"OPRFV1-\x01-ristretto255-SHA512";

const HASH_TO_GROUP_DST: &[u8] = b"HashToGroup-OPRFV1-\x01-ristretto255-SHA512";
const HASH_TO_SCALAR_DST: &[u8] = b"HashToScalar-OPRFV1-\x01-ristretto255-SHA512";
const DERIVE_KEY_PAIR_DST: &[u8] = b"DeriveKeyPairOPRFV1-\x01-ristretto255-SHA512";
const SEED_DST: &[u8] = b"Seed-OPRFV1-\x01-ristretto255-SHA512";
/// Ours, not the RFC's: the hedged proof nonce of [`prove`].
const HEDGED_NONCE_DST: &[u8] = b"otpmesh/1 voprf hedged nonce-OPRFV1-\x01-ristretto255-SHA512";

/// Longest input (and key info): its length is encoded in two bytes.
pub const MAX_INPUT: usize = u16::MAX as usize;

/// SHA-512's output and block sizes (RFC 9380's b_in_bytes, s_in_bytes).
const B_IN_BYTES: usize = 64;
const S_IN_BYTES: usize = 128;

/// The protocol output, Nh = 64 bytes.
pub type Output = [u8; 64];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoprfError {
    #[error("{field}: {got} bytes, {expected} expected")]
    Length {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{0}: not a canonical scalar")]
    Scalar(&'static str),
    #[error("{0}: zero is not allowed")]
    ZeroScalar(&'static str),
    #[error("{0}: not a Ristretto255 element")]
    Element(&'static str),
    #[error("{0}: the identity element is not allowed")]
    Identity(&'static str),
    #[error("{field}: {len} bytes, at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the input hashes to the identity element")]
    InvalidInput,
    #[error("DeriveKeyPair: no nonzero scalar in 256 attempts")]
    DeriveKeyPair,
    #[error("expand_message_xmd: cannot produce {0} bytes (at most 255·64)")]
    ExpandLength(usize),
    #[error("batch of {blinded} blinded and {evaluated} evaluated elements: need 1 ..= 65535 of each, as many of one as of the other")]
    Batch { blinded: usize, evaluated: usize },
    #[error("the proof does not verify")]
    Verify,
    #[error("partial from shareholder {}: {reason}", .index.0)]
    Partial { index: Index, reason: &'static str },
    #[error(transparent)]
    Threshold(#[from] ThresholdError),
}

// ---------------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------------

fn array32(field: &'static str, bytes: &[u8]) -> Result<[u8; 32], VoprfError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| VoprfError::Length {
        field,
        expected: 32,
        got: bytes.len(),
    })
}

/// DeserializeElement: 32 bytes, a valid encoding, not the identity.
pub fn decode_element(field: &'static str, bytes: &[u8]) -> Result<RistrettoPoint, VoprfError> {
    let point = CompressedRistretto(array32(field, bytes)?)
        .decompress()
        .ok_or(VoprfError::Element(field))?;
    if point.is_identity() {
        return Err(VoprfError::Identity(field));
    }
    Ok(point)
}

/// DeserializeScalar: 32 bytes little endian, below the group order.
pub fn decode_scalar(field: &'static str, bytes: &[u8]) -> Result<Scalar, VoprfError> {
    let raw = Zeroizing::new(array32(field, bytes)?);
    Option::<Scalar>::from(Scalar::from_canonical_bytes(*raw)).ok_or(VoprfError::Scalar(field))
}

fn nonzero(field: &'static str, s: Scalar) -> Result<Scalar, VoprfError> {
    match s == Scalar::ZERO {
        true => Err(VoprfError::ZeroScalar(field)),
        false => Ok(s),
    }
}

fn random_nonzero(rng: &mut dyn CryptoRngCore) -> Scalar {
    loop {
        let s = Scalar::random(rng);
        if s != Scalar::ZERO {
            return s;
        }
    }
}

/// `I2OSP(len(part), 2) ‖ part`; every caller's part is shorter than 2^16.
fn put(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u16).to_be_bytes());
    out.extend_from_slice(part);
}

fn check_input(field: &'static str, input: &[u8]) -> Result<(), VoprfError> {
    match input.len() > MAX_INPUT {
        true => Err(VoprfError::TooLong {
            field,
            len: input.len(),
            max: MAX_INPUT,
        }),
        false => Ok(()),
    }
}

/// A public group element with its wire name (for errors).
macro_rules! element {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "[u8; 32]", into = "[u8; 32]")]
        pub struct $name(RistrettoPoint);

        impl $name {
            /// From the wire: refuses bad encodings and the identity.
            pub fn from_bytes(bytes: &[u8]) -> Result<$name, VoprfError> {
                decode_element($field, bytes).map($name)
            }

            pub fn to_bytes(self) -> [u8; 32] {
                self.0.compress().to_bytes()
            }

            pub fn point(self) -> RistrettoPoint {
                self.0
            }

            /// From a point the caller computed (no identity check: that is for the wire).
            pub fn from_point(point: RistrettoPoint) -> $name {
                $name(point)
            }
        }

        impl TryFrom<[u8; 32]> for $name {
            type Error = VoprfError;
            fn try_from(bytes: [u8; 32]) -> Result<$name, VoprfError> {
                $name::from_bytes(&bytes)
            }
        }

        impl From<$name> for [u8; 32] {
            fn from(element: $name) -> [u8; 32] {
                element.to_bytes()
            }
        }
    };
}

element!(
    /// pkS = G·skS (or a share-holder's K_j = G·k_j).
    PublicKey,
    "pkS"
);
element!(
    /// B = blind·HashToGroup(input): what the client sends.
    BlindedElement,
    "blindedElement"
);
element!(
    /// Z = k·B: what the server (or share-holder) answers.
    EvaluatedElement,
    "evaluatedElement"
);

/// skS (or a key share k_j), never zero. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Scalar);

impl SecretKey {
    pub fn random(rng: &mut dyn CryptoRngCore) -> SecretKey {
        SecretKey(random_nonzero(rng))
    }

    pub fn from_scalar(k: Scalar) -> Result<SecretKey, VoprfError> {
        nonzero("skS", k).map(SecretKey)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, VoprfError> {
        SecretKey::from_scalar(decode_scalar("skS", bytes)?)
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(RistrettoPoint::mul_base(&self.0))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The client's blinding scalar, never zero; kept until [`finalize`]. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Blind(Scalar);

impl Blind {
    pub fn random(rng: &mut dyn CryptoRngCore) -> Blind {
        Blind(random_nonzero(rng))
    }

    pub fn from_scalar(r: Scalar) -> Result<Blind, VoprfError> {
        nonzero("blind", r).map(Blind)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Blind, VoprfError> {
        Blind::from_scalar(decode_scalar("blind", bytes)?)
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }
}

impl fmt::Debug for Blind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Blind(..)")
    }
}

/// A DLEQ proof (§2.2): 64 bytes c ‖ s on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ByteBuf", into = "ByteBuf")]
pub struct Proof {
    pub c: Scalar,
    pub s: Scalar,
}

impl Proof {
    pub const LEN: usize = 64;

    pub fn to_bytes(self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.c.as_bytes());
        out[32..].copy_from_slice(self.s.as_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Proof, VoprfError> {
        if bytes.len() != Proof::LEN {
            return Err(VoprfError::Length {
                field: "proof",
                expected: Proof::LEN,
                got: bytes.len(),
            });
        }
        Ok(Proof {
            c: decode_scalar("proof.c", &bytes[..32])?,
            s: decode_scalar("proof.s", &bytes[32..])?,
        })
    }
}

impl TryFrom<ByteBuf> for Proof {
    type Error = VoprfError;
    fn try_from(bytes: ByteBuf) -> Result<Proof, VoprfError> {
        Proof::from_bytes(&bytes[..])
    }
}

impl From<Proof> for ByteBuf {
    fn from(proof: Proof) -> ByteBuf {
        ByteBuf::from(proof.to_bytes().to_vec())
    }
}

// ---------------------------------------------------------------------------------------------
// Hashing (RFC 9380 §5.3.1, RFC 9497 §4.1)
// ---------------------------------------------------------------------------------------------

/// expand_message_xmd with SHA-512 into `out`, the message given in parts (concatenated).
/// Callers keep `out.len()` ≤ 255·64.
fn xmd(msg: &[&[u8]], dst: &[u8], out: &mut [u8]) {
    let hashed;
    let dst: &[u8] = if dst.len() > 255 {
        hashed = Sha512::new()
            .chain_update(b"H2C-OVERSIZE-DST-")
            .chain_update(dst)
            .finalize();
        hashed.as_slice()
    } else {
        dst
    };
    let dst_len = [dst.len() as u8];

    let mut h = Sha512::new();
    h.update([0u8; S_IN_BYTES]);
    for part in msg {
        h.update(part);
    }
    h.update((out.len() as u16).to_be_bytes());
    h.update([0u8]);
    h.update(dst);
    h.update(dst_len);
    let mut b0 = [0u8; B_IN_BYTES];
    b0.copy_from_slice(&h.finalize());

    // b_1 = H(b_0 ‖ 1 ‖ DST'), b_i = H((b_0 ⊕ b_{i−1}) ‖ i ‖ DST'): with b_{0} taken as zeros
    // here, one loop does both.
    let mut prev = [0u8; B_IN_BYTES];
    let mut mixed = [0u8; B_IN_BYTES];
    for (i, chunk) in out.chunks_mut(B_IN_BYTES).enumerate() {
        for (m, (a, b)) in mixed.iter_mut().zip(b0.iter().zip(prev.iter())) {
            *m = a ^ b;
        }
        let mut h = Sha512::new();
        h.update(mixed);
        h.update([(i + 1) as u8]);
        h.update(dst);
        h.update(dst_len);
        prev.copy_from_slice(&h.finalize());
        chunk.copy_from_slice(&prev[..chunk.len()]);
    }
    b0.zeroize();
    prev.zeroize();
    mixed.zeroize();
}

/// expand_message_xmd(msg, DST, len_in_bytes) with SHA-512 (RFC 9380 §5.3.1).
pub fn expand_message_xmd(msg: &[u8], dst: &[u8], len: usize) -> Result<Vec<u8>, VoprfError> {
    if len > 255 * B_IN_BYTES {
        return Err(VoprfError::ExpandLength(len));
    }
    let mut out = vec![0u8; len];
    xmd(&[msg], dst, &mut out);
    Ok(out)
}

fn xmd64(msg: &[&[u8]], dst: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    xmd(msg, dst, &mut out);
    out
}

fn scalar_with_dst(msg: &[&[u8]], dst: &[u8]) -> Scalar {
    let mut uniform = xmd64(msg, dst);
    let s = Scalar::from_bytes_mod_order_wide(&uniform);
    uniform.zeroize();
    s
}

/// HashToGroup: hash_to_ristretto255 with DST "HashToGroup-" ‖ contextString.
pub fn hash_to_group(input: &[u8]) -> RistrettoPoint {
    let mut uniform = xmd64(&[input], HASH_TO_GROUP_DST);
    let point = RistrettoPoint::from_uniform_bytes(&uniform);
    uniform.zeroize();
    point
}

/// HashToScalar: 64 bytes of expand_message_xmd under "HashToScalar-" ‖ contextString, read
/// little endian and reduced.
pub fn hash_to_scalar(msg: &[u8]) -> Scalar {
    scalar_with_dst(&[msg], HASH_TO_SCALAR_DST)
}

/// DeriveKeyPair(seed, info) (§3.2.1).
pub fn derive_key_pair(seed: &[u8; 32], info: &[u8]) -> Result<(SecretKey, PublicKey), VoprfError> {
    check_input("keyInfo", info)?;
    let mut derive_input = Zeroizing::new(Vec::with_capacity(seed.len() + 2 + info.len()));
    derive_input.extend_from_slice(seed);
    put(&mut derive_input, info);
    for counter in 0..=255u8 {
        let k = scalar_with_dst(&[derive_input.as_slice(), &[counter]], DERIVE_KEY_PAIR_DST);
        if k != Scalar::ZERO {
            let sk = SecretKey(k);
            let pk = sk.public();
            return Ok((sk, pk));
        }
    }
    Err(VoprfError::DeriveKeyPair)
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

fn input_element(input: &[u8]) -> Result<RistrettoPoint, VoprfError> {
    check_input("input", input)?;
    let point = hash_to_group(input);
    if point.is_identity() {
        return Err(VoprfError::InvalidInput);
    }
    Ok(point)
}

/// Blind(input) with a fresh blind.
pub fn blind(
    input: &[u8],
    rng: &mut dyn CryptoRngCore,
) -> Result<(Blind, BlindedElement), VoprfError> {
    blind_with(input, Blind::random(rng))
}

/// Blind(input) with the caller's blind (deterministic, for test vectors).
pub fn blind_with(input: &[u8], blind: Blind) -> Result<(Blind, BlindedElement), VoprfError> {
    let blinded = BlindedElement(input_element(input)? * blind.0);
    Ok((blind, blinded))
}

/// Finalize (§3.3.2): checks the server's proof, then unblinds and hashes.
pub fn finalize(
    input: &[u8],
    blind: &Blind,
    evaluated: &EvaluatedElement,
    blinded: &BlindedElement,
    pk: &PublicKey,
    proof: &Proof,
) -> Result<Output, VoprfError> {
    check_input("input", input)?;
    verify_proof(
        pk,
        std::slice::from_ref(blinded),
        std::slice::from_ref(evaluated),
        proof,
    )?;
    finalize_element(input, blind, &evaluated.0)
}

/// The unblind-and-hash half of Finalize, for an element already known good (proof checked,
/// or combined from checked partials): N = blind⁻¹·Z, then
/// SHA-512(I2OSP(len(input), 2) ‖ input ‖ I2OSP(len(N), 2) ‖ N ‖ "Finalize").
pub fn finalize_element(
    input: &[u8],
    blind: &Blind,
    evaluated: &RistrettoPoint,
) -> Result<Output, VoprfError> {
    check_input("input", input)?;
    let unblinded = (evaluated * blind.0.invert()).compress();
    let mut hash_input = Zeroizing::new(Vec::with_capacity(2 + input.len() + 2 + 32 + 8));
    put(&mut hash_input, input);
    put(&mut hash_input, unblinded.as_bytes());
    hash_input.extend_from_slice(b"Finalize");
    let mut out = [0u8; 64];
    out.copy_from_slice(&Sha512::digest(hash_input.as_slice()));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Z = k·B, without a proof (the OPRF-mode BlindEvaluate).
pub fn blind_evaluate(k: &SecretKey, blinded: &BlindedElement) -> EvaluatedElement {
    EvaluatedElement(blinded.0 * k.0)
}

/// BlindEvaluate (§3.3.2): Z = k·B and a (hedged) proof that log_G pk = log_B Z.
pub fn evaluate(
    k: &SecretKey,
    blinded: &BlindedElement,
    rng: &mut dyn CryptoRngCore,
) -> (EvaluatedElement, Proof) {
    let evaluated = blind_evaluate(k, blinded);
    let pk = k.public();
    let (c, d) = (
        std::slice::from_ref(blinded),
        std::slice::from_ref(&evaluated),
    );
    let mut r = hedged_nonce(k, &pk, c, d, rng);
    let proof = generate_proof(k, &pk, c, d, &r);
    r.zeroize();
    (evaluated, proof)
}

// ---------------------------------------------------------------------------------------------
// Proofs (§2.2), A = G and B = pk throughout
// ---------------------------------------------------------------------------------------------

fn check_batch(
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
) -> Result<(), VoprfError> {
    let (m, n) = (blinded.len(), evaluated.len());
    match m == n && (1..=usize::from(u16::MAX)).contains(&m) {
        true => Ok(()),
        false => Err(VoprfError::Batch {
            blinded: m,
            evaluated: n,
        }),
    }
}

/// The d_i of ComputeComposites: seed = Hash(Bm ‖ seedDST), then d_i from the "Composite"
/// transcript of (seed, i, C_i, D_i).
fn composite_weights(
    pk: &PublicKey,
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
) -> Vec<Scalar> {
    let mut seed_transcript = Vec::with_capacity(2 + 32 + 2 + SEED_DST.len());
    put(&mut seed_transcript, &pk.to_bytes());
    put(&mut seed_transcript, SEED_DST);
    let mut seed = [0u8; 64];
    seed.copy_from_slice(&Sha512::digest(&seed_transcript));

    blinded
        .iter()
        .zip(evaluated)
        .enumerate()
        .map(|(i, (c, d))| {
            let mut t = Vec::with_capacity(2 + 64 + 2 + 2 + 32 + 2 + 32 + 9);
            put(&mut t, &seed);
            t.extend_from_slice(&(i as u16).to_be_bytes());
            put(&mut t, &c.to_bytes());
            put(&mut t, &d.to_bytes());
            t.extend_from_slice(b"Composite");
            hash_to_scalar(&t)
        })
        .collect()
}

/// M = Σ d_i·C_i.
fn composite_m(weights: &[Scalar], blinded: &[BlindedElement]) -> RistrettoPoint {
    weights.iter().zip(blinded).map(|(w, c)| c.0 * w).sum()
}

/// The "Challenge" transcript over Bm = pk, a0 = M, a1 = Z, a2 = t2, a3 = t3.
fn challenge(
    pk: &PublicKey,
    m: &RistrettoPoint,
    z: &RistrettoPoint,
    t2: &RistrettoPoint,
    t3: &RistrettoPoint,
) -> Scalar {
    let mut t = Vec::with_capacity(5 * (2 + 32) + 9);
    put(&mut t, &pk.to_bytes());
    for p in [m, z, t2, t3] {
        put(&mut t, p.compress().as_bytes());
    }
    t.extend_from_slice(b"Challenge");
    hash_to_scalar(&t)
}

/// GenerateProof with ComputeCompositesFast; the batch is already checked.
fn generate_proof(
    k: &SecretKey,
    pk: &PublicKey,
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
    r: &Scalar,
) -> Proof {
    let m = composite_m(&composite_weights(pk, blinded, evaluated), blinded);
    let z = m * k.0;
    let t2 = RistrettoPoint::mul_base(r);
    let t3 = m * r;
    let c = challenge(pk, &m, &z, &t2, &t3);
    Proof { c, s: r - c * k.0 }
}

/// r = H(k ‖ pk ‖ m ‖ (C_i ‖ D_i)… ‖ 32 fresh bytes) under our own tag: a nonce never repeats
/// across statements even when the RNG does, and stays unpredictable when the RNG is good.
fn hedged_nonce(
    k: &SecretKey,
    pk: &PublicKey,
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
    rng: &mut dyn CryptoRngCore,
) -> Scalar {
    let mut fresh = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *fresh);
    let key = k.to_bytes();
    let mut t = Zeroizing::new(Vec::with_capacity(3 * 34 + 2 + blinded.len() * 2 * 34));
    put(&mut t, &*key);
    put(&mut t, &pk.to_bytes());
    t.extend_from_slice(&(blinded.len() as u16).to_be_bytes());
    for (c, d) in blinded.iter().zip(evaluated) {
        put(&mut t, &c.to_bytes());
        put(&mut t, &d.to_bytes());
    }
    put(&mut t, &*fresh);
    scalar_with_dst(&[t.as_slice()], HEDGED_NONCE_DST)
}

/// GenerateProof(k, G, pk, C, D) with the caller's nonce r (deterministic, for test vectors;
/// never reuse an r across statements).
pub fn prove_with(
    k: &SecretKey,
    pk: &PublicKey,
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
    r: &Scalar,
) -> Result<Proof, VoprfError> {
    check_batch(blinded, evaluated)?;
    Ok(generate_proof(k, pk, blinded, evaluated, r))
}

/// GenerateProof(k, G, pk, C, D) with a hedged nonce.
pub fn prove(
    k: &SecretKey,
    pk: &PublicKey,
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
    rng: &mut dyn CryptoRngCore,
) -> Result<Proof, VoprfError> {
    check_batch(blinded, evaluated)?;
    let mut r = hedged_nonce(k, pk, blinded, evaluated, rng);
    let proof = generate_proof(k, pk, blinded, evaluated, &r);
    r.zeroize();
    Ok(proof)
}

/// VerifyProof(G, pk, C, D, proof) with ComputeComposites.
pub fn verify_proof(
    pk: &PublicKey,
    blinded: &[BlindedElement],
    evaluated: &[EvaluatedElement],
    proof: &Proof,
) -> Result<(), VoprfError> {
    check_batch(blinded, evaluated)?;
    let weights = composite_weights(pk, blinded, evaluated);
    let m = composite_m(&weights, blinded);
    let z: RistrettoPoint = weights.iter().zip(evaluated).map(|(w, d)| d.0 * w).sum();
    let t2 = RistrettoPoint::mul_base(&proof.s) + pk.0 * proof.c;
    let t3 = m * proof.s + z * proof.c;
    match challenge(pk, &m, &z, &t2, &t3) == proof.c {
        true => Ok(()),
        false => Err(VoprfError::Verify),
    }
}

// ---------------------------------------------------------------------------------------------
// Threshold
// ---------------------------------------------------------------------------------------------

/// Share-holder `index`'s answer: Z_j = k_j·B and an RFC proof against K_j = G·k_j.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub index: Index,
    pub evaluated: EvaluatedElement,
    pub proof: Proof,
}

/// Share-holder `index` (key share k_j) evaluates B.
pub fn partial_evaluate(
    index: Index,
    k_j: &SecretKey,
    blinded: &BlindedElement,
    rng: &mut dyn CryptoRngCore,
) -> Partial {
    let (evaluated, proof) = evaluate(k_j, blinded, rng);
    Partial {
        index,
        evaluated,
        proof,
    }
}

/// Z_j, if `partial`'s proof holds against `share_key` = K_j; else an error naming it.
pub fn verify_partial(
    partial: &Partial,
    share_key: &PublicKey,
    blinded: &BlindedElement,
) -> Result<RistrettoPoint, VoprfError> {
    verify_proof(
        share_key,
        std::slice::from_ref(blinded),
        std::slice::from_ref(&partial.evaluated),
        &partial.proof,
    )
    .map(|()| partial.evaluated.0)
    .map_err(|_| VoprfError::Partial {
        index: partial.index,
        reason: "proof does not verify against its share key",
    })
}

/// Σ λ_j·Z_j (Lagrange at 0) over the given partials, whose indices must be distinct: k·B when
/// they are t valid ones.
pub fn combine(partials: &[(Index, RistrettoPoint)]) -> RistrettoPoint {
    let indices: Vec<Index> = partials.iter().map(|(i, _)| *i).collect();
    partials
        .iter()
        .map(|(i, y)| y * lagrange_at_zero(&indices, *i))
        .sum()
}

/// K_j from `share_keys` (K_1 first).
fn share_key(
    params: Params,
    share_keys: &[PublicKey],
    index: Index,
) -> Result<PublicKey, VoprfError> {
    params.check(index).map_err(|_| VoprfError::Partial {
        index,
        reason: "not a shareholder",
    })?;
    share_keys
        .get(index.0 as usize - 1)
        .copied()
        .ok_or(VoprfError::Partial {
            index,
            reason: "no share key for it",
        })
}

/// k·B from the first t partials whose proofs hold against their K_j (`share_keys[j − 1]`).
/// Bad partials are skipped and named (the Vec); a second partial from one index is ignored;
/// fewer than t valid ones is a quorum error naming the bad.
pub fn combine_verified(
    params: Params,
    share_keys: &[PublicKey],
    blinded: &BlindedElement,
    partials: &[Partial],
) -> Result<(RistrettoPoint, Vec<Index>), VoprfError> {
    let needed = params.t as usize;
    let mut valid: Vec<(Index, RistrettoPoint)> = Vec::with_capacity(needed);
    let mut bad = Vec::new();
    for p in partials {
        if valid.len() == needed {
            break;
        }
        if valid.iter().any(|(i, _)| *i == p.index) || bad.contains(&p.index) {
            continue;
        }
        let checked =
            share_key(params, share_keys, p.index).and_then(|key| verify_partial(p, &key, blinded));
        match checked {
            Ok(y) => valid.push((p.index, y)),
            Err(_) => bad.push(p.index),
        }
    }
    if valid.len() < needed {
        return Err(ThresholdError::Quorum {
            valid: valid.len(),
            needed: params.t,
            bad,
        }
        .into());
    }
    Ok((combine(&valid), bad))
}

/// The threshold client's Finalize: checks and combines the partials, then unblinds and hashes
/// exactly as [`finalize`] does. Returns the output and the share-holders whose partials were bad.
pub fn finalize_combined(
    input: &[u8],
    blind: &Blind,
    blinded: &BlindedElement,
    params: Params,
    share_keys: &[PublicKey],
    partials: &[Partial],
) -> Result<(Output, Vec<Index>), VoprfError> {
    check_input("input", input)?;
    let (combined, bad) = combine_verified(params, share_keys, blinded, partials)?;
    Ok((finalize_element(input, blind, &combined)?, bad))
}
