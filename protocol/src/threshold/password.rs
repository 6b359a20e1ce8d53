//! Passwords from the threshold evaluation: Y = k·H(x) at a requester-private input
//! x = ("password", requester, round, counter), mapped to an alphabet without modulo bias.
//!
//! ```text
//! seed    = SHA-256(tag ‖ Y ‖ x)
//! block_i = SHA-256(tag ‖ seed ‖ i)                      i = 0, 1, …  (a byte stream)
//! byte b is used if b < 256 − (256 mod m), giving alphabet[b mod m]; otherwise skipped
//! ```
//! Rejection sampling keeps every character uniform over the m characters; the stream is a PRF of
//! Y, which only the requester holds.

use super::eval::Input;
use super::{framed, tags};
use curve25519_dalek::ristretto::RistrettoPoint;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The domain of password inputs.
pub const DOMAIN: &str = "password";
/// Longest password.
pub const MAX_LENGTH: usize = 256;
/// Most characters an alphabet may have (one byte chooses one).
pub const MAX_ALPHABET: usize = 256;
/// Default length: 20 characters of all four classes is about 131 bits.
pub const DEFAULT_LENGTH: usize = 20;

pub const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
pub const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
pub const DIGITS: &str = "0123456789";
pub const SYMBOLS: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("length {0}: between 1 and {MAX_LENGTH}")]
    Length(usize),
    #[error("the alphabet has {0} distinct characters; it needs 2 to {MAX_ALPHABET}")]
    AlphabetSize(usize),
    #[error("unknown character class {0:?}: lower, upper, digits or symbols")]
    Class(String),
}

/// The characters a password is drawn from: distinct, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alphabet(Vec<char>);

impl Alphabet {
    /// From class names (`lower,upper,digits,symbols`).
    pub fn classes(names: &str) -> Result<Alphabet, PasswordError> {
        let mut chars = String::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            chars.push_str(match name {
                "lower" => LOWER,
                "upper" => UPPER,
                "digits" => DIGITS,
                "symbols" => SYMBOLS,
                other => return Err(PasswordError::Class(other.into())),
            });
        }
        Alphabet::chars(&chars)
    }

    /// From explicit characters (duplicates count once).
    pub fn chars(text: &str) -> Result<Alphabet, PasswordError> {
        let mut chars: Vec<char> = Vec::new();
        for c in text.chars() {
            if !chars.contains(&c) {
                chars.push(c);
            }
        }
        if !(2..=MAX_ALPHABET).contains(&chars.len()) {
            return Err(PasswordError::AlphabetSize(chars.len()));
        }
        Ok(Alphabet(chars))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, c: char) -> bool {
        self.0.contains(&c)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bits of strength of a uniformly drawn password of `length` characters.
    pub fn bits(&self, length: usize) -> f64 {
        length as f64 * (self.0.len() as f64).log2()
    }
}

impl Default for Alphabet {
    fn default() -> Alphabet {
        Alphabet::classes("lower,upper,digits,symbols").expect("the built-in classes are valid")
    }
}

/// The password for the combined point `y` at `input`.
pub fn derive(
    y: &RistrettoPoint,
    input: &Input,
    alphabet: &Alphabet,
    length: usize,
) -> Result<Zeroizing<String>, PasswordError> {
    if !(1..=MAX_LENGTH).contains(&length) {
        return Err(PasswordError::Length(length));
    }
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        Sha256::digest(framed(
            tags::PASSWORD,
            &[&y.compress().to_bytes(), &input.bytes()],
        ))
        .into(),
    );
    Ok(Zeroizing::new(from_stream(&seed, alphabet, length)))
}

/// The password from a threshold VOPRF output (RFC 9497, [`super::voprf`]): seed =
/// SHA-256(tag ‖ output), then the same stream and rejection sampling.
pub fn from_output(
    output: &super::voprf::Output,
    alphabet: &Alphabet,
    length: usize,
) -> Result<Zeroizing<String>, PasswordError> {
    if !(1..=MAX_LENGTH).contains(&length) {
        return Err(PasswordError::Length(length));
    }
    let seed: Zeroizing<[u8; 32]> =
        Zeroizing::new(Sha256::digest(framed(tags::PASSWORD, &[output.as_slice()])).into());
    Ok(Zeroizing::new(from_stream(&seed, alphabet, length)))
}

/// Characters drawn from the byte stream of `seed` by rejection sampling.
fn from_stream(seed: &[u8; 32], alphabet: &Alphabet, length: usize) -> String {
    let m = alphabet.len();
    // The largest multiple of m that fits in a byte: bytes at or above it are skipped.
    let limit = 256 - (256 % m);
    let mut out = String::with_capacity(length);
    let mut drawn = 0;
    let mut block_index = 0u64;
    while drawn < length {
        let block: Zeroizing<[u8; 32]> = Zeroizing::new(
            Sha256::digest(framed(
                tags::PASSWORD_STREAM,
                &[seed, &block_index.to_be_bytes()],
            ))
            .into(),
        );
        block_index += 1;
        for &b in block.iter() {
            if drawn == length {
                break;
            }
            if (b as usize) < limit {
                out.push(alphabet.0[b as usize % m]);
                drawn += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_alphabet_are_honoured() {
        let alphabet = Alphabet::classes("digits").unwrap();
        for length in [1, 20, 256] {
            let p = from_stream(&[length as u8; 32], &alphabet, length);
            assert_eq!(p.chars().count(), length);
            assert!(p.chars().all(|c| c.is_ascii_digit()), "{p}");
        }
        let custom = Alphabet::chars("aab€").unwrap();
        assert_eq!(custom.len(), 3, "duplicates count once");
        assert!(from_stream(&[1; 32], &custom, 64)
            .chars()
            .all(|c| "ab€".contains(c)));
        assert_eq!(
            Alphabet::classes("lower,emoji"),
            Err(PasswordError::Class("emoji".into()))
        );
        assert_eq!(Alphabet::chars("a"), Err(PasswordError::AlphabetSize(1)));
        let all = Alphabet::default();
        assert_eq!(all.len(), 26 + 26 + 10 + SYMBOLS.len());
        assert!((all.bits(20) - 20.0 * (all.len() as f64).log2()).abs() < 1e-9);
    }

    /// χ² over many characters: with rejection sampling every character is equally likely, even
    /// for an alphabet that does not divide 256 (modulo reduction alone would favour the first
    /// 256 mod m characters).
    #[test]
    fn characters_are_uniform_by_chi_square() {
        for alphabet in [Alphabet::default(), Alphabet::classes("digits").unwrap()] {
            let m = alphabet.len();
            let mut counts = vec![0u64; m];
            let mut total = 0u64;
            for seed in 0..400u32 {
                let mut s = [0u8; 32];
                s[..4].copy_from_slice(&seed.to_be_bytes());
                for c in from_stream(&s, &alphabet, 250).chars() {
                    let i = alphabet.0.iter().position(|a| *a == c).unwrap();
                    counts[i] += 1;
                    total += 1;
                }
            }
            let expected = total as f64 / m as f64;
            let chi2: f64 = counts
                .iter()
                .map(|&c| (c as f64 - expected).powi(2) / expected)
                .sum();
            // The 99.9th percentile of χ² with m − 1 degrees of freedom, by the Wilson–Hilferty
            // approximation: a uniform source fails this 1 time in 1000.
            let k = (m - 1) as f64;
            let z = 3.09;
            let limit = k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3);
            assert!(
                chi2 < limit,
                "m = {m}: χ² = {chi2:.1} over the limit {limit:.1}"
            );
        }
    }
}
