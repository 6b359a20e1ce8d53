//! The envelope every message travels in: CBOR of `{v: VERSION, m: message}`, its byte bound
//! checked before parsing, trailing bytes and other versions refused, never a panic. Below
//! [`crate::wire`] and [`crate::kdc`], which both frame their messages with it.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

/// The wire protocol version every message carries.
pub const VERSION: u16 = 1;
/// Longest free-text reason in a message.
pub const MAX_REASON_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("message has protocol version {found}, this node speaks version {VERSION}")]
    Version { found: u16 },
    #[error("message is not valid CBOR for this type: {0}")]
    Malformed(String),
    #[error("message has {0} trailing bytes")]
    Trailing(usize),
    #[error("field {field} is out of bounds: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

pub(crate) fn field(field: &'static str, problem: String) -> WireError {
    WireError::Field { field, problem }
}

pub(crate) fn check_reason(reason: &str) -> Result<(), WireError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(field(
            "reason",
            format!("{} bytes, at most {MAX_REASON_BYTES}", reason.len()),
        ));
    }
    Ok(())
}

/// Cuts a reason to [`MAX_REASON_BYTES`] on a character boundary.
pub fn bounded_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope<T> {
    pub(crate) v: u16,
    pub(crate) m: T,
}

pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(
        &Envelope {
            v: VERSION,
            m: message,
        },
        &mut out,
    )
    .expect("writing CBOR into a Vec cannot fail");
    out
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let mut rest = bytes;
    match ciborium::from_reader::<Envelope<T>, _>(&mut rest) {
        Ok(env) if env.v != VERSION => Err(WireError::Version { found: env.v }),
        Ok(_) if !rest.is_empty() => Err(WireError::Trailing(rest.len())),
        Ok(env) => Ok(env.m),
        Err(e) => match ciborium::from_reader::<Envelope<IgnoredAny>, _>(bytes) {
            Ok(env) if env.v != VERSION => Err(WireError::Version { found: env.v }),
            _ => Err(WireError::Malformed(e.to_string())),
        },
    }
}
