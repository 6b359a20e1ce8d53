//! `otpmesh bench rsa`: the generator's private-key operation (RSA OAEP-SHA256 decryption with
//! the project's phrase labels) in each backend, on the same key and the same ciphertexts, in one
//! run:
//! - `rsa` 0.9.10, blinded: the backend before issue 23 (RUSTSEC-2023-0071 applies);
//! - AWS-LC through `seal::PrivateKey`, blinded and constant-time: the backend in use;
//! - `rsa` 0.10.0, blinded, when built with `--features bench-rsa-0-10` (a second generation of
//!   RustCrypto crates, kept out of the default build).
//!
//! Every backend must give back the phrase that was sealed (the run fails otherwise), and each
//! also opens as many ciphertexts that must fail (sealed under another round's label): the table
//! shows what a failure costs beside a success. Passes alternate between the backends so that a
//! machine that speeds up or slows down during the run weighs on all of them alike.

use super::BenchOutput;
use crate::cli::BenchRsaArgs;
use crate::cmd::Outcome;
use crate::scenario::layout;
use anyhow::{anyhow, bail};
use otpmesh_protocol::phrase::{ClientId, Phrase, UserInput};
use otpmesh_protocol::round::RoundId;
use otpmesh_protocol::seal::{self, PrivateKey};
use serde::Serialize;
use std::time::Instant;
use zeroize::Zeroizing;

/// Passes over the ciphertexts, alternating between backends.
const PASSES: usize = 3;

/// One backend's decryption: the plaintext, or None when it did not open.
type Decrypt<'a> = Box<dyn Fn(&str, &[u8]) -> Option<Zeroizing<Vec<u8>>> + 'a>;

struct Backend<'a> {
    name: &'static str,
    constant_time: &'static str,
    decrypt: Decrypt<'a>,
    good_ms: Vec<f64>,
    failed_ms: Vec<f64>,
}

#[derive(Serialize)]
struct Row {
    backend: &'static str,
    constant_time: &'static str,
    median_ms: f64,
    p99_ms: f64,
    failed_median_ms: f64,
    per_s_one_core: f64,
    speedup: f64,
}

#[derive(Serialize)]
struct Report {
    suite: &'static str,
    bits: usize,
    decryptions: usize,
    rows: Vec<Row>,
}

pub fn rsa(args: BenchRsaArgs) -> Outcome {
    if !(10..=10_000).contains(&args.decryptions) {
        return Err(anyhow!("--decryptions {}: between 10 and 10000", args.decryptions).into());
    }
    if !seal::ALLOWED_KEY_BITS.contains(&args.bits) {
        return Err(anyhow!("--bits {}: one of {:?}", args.bits, seal::ALLOWED_KEY_BITS).into());
    }
    let mut rng = layout::rng(1, "bench/rsa");
    let key = PrivateKey::generate(args.bits, &mut rng)?;
    let pem = key.to_pkcs8_pem()?;
    // (label, ciphertext, phrase) to open, and (label, ciphertext) that must fail.
    let mut good = Vec::with_capacity(args.decryptions);
    let mut bad = Vec::with_capacity(args.decryptions);
    for i in 0..args.decryptions as u64 {
        let (round, client) = (RoundId(1 + i / 64), ClientId(1 + (i % 64) as u32));
        let phrase = Phrase::build(UserInput(i as i128), client, &mut rng)?;
        let ct = key.public().seal(round, client, &phrase, &mut rng)?;
        let wrong = seal::phrase_label(RoundId(round.0 + 1), client);
        bad.push((wrong, ct.clone()));
        good.push((seal::phrase_label(round, client), ct, phrase));
    }

    let mut backends = vec![
        Backend::new(
            "rsa 0.9.10 (before)",
            "no: RUSTSEC-2023-0071",
            rsa_0_9(&pem)?,
        ),
        Backend::new(
            "aws-lc-rs 1.19 (in use)",
            "yes",
            Box::new(|label: &str, ct: &[u8]| key.decrypt(label, ct).ok()),
        ),
    ];
    #[cfg(feature = "bench-rsa-0-10")]
    backends.push(Backend::new(
        "rsa 0.10.0",
        "no: RUSTSEC-2023-0071",
        rsa_0_10(&pem)?,
    ));
    println!(
        "RSA-{} OAEP-SHA256, {} decryptions that open and {} that must fail per backend and pass, {PASSES} passes; one core",
        args.bits,
        good.len(),
        bad.len()
    );
    for _ in 0..PASSES {
        for backend in &mut backends {
            backend.pass(&good, &bad)?;
        }
    }

    let baseline = backends[0].median();
    println!(
        "{:<24} {:>10} {:>9} {:>11} {:>9} {:>8}  constant-time",
        "backend", "median ms", "p99 ms", "failed ms", "per s", "speedup"
    );
    let rows: Vec<Row> = backends
        .iter()
        .map(|b| {
            let median_ms = b.median();
            let row = Row {
                backend: b.name,
                constant_time: b.constant_time,
                median_ms,
                p99_ms: quantile(&b.good_ms, 0.99),
                failed_median_ms: quantile(&b.failed_ms, 0.5),
                per_s_one_core: 1000.0 / median_ms,
                speedup: baseline / median_ms,
            };
            println!(
                "{:<24} {:>10.3} {:>9.3} {:>11.3} {:>9.0} {:>7.2}×  {}",
                row.backend,
                row.median_ms,
                row.p99_ms,
                row.failed_median_ms,
                row.per_s_one_core,
                row.speedup,
                row.constant_time
            );
            row
        })
        .collect();
    write(&args.out, rows, args.bits, good.len())
}

fn write(out: &BenchOutput, rows: Vec<Row>, bits: usize, decryptions: usize) -> Outcome {
    out.write_json(&Report {
        suite: "rsa",
        bits,
        decryptions,
        rows,
    })?;
    Ok(())
}

impl<'a> Backend<'a> {
    fn new(name: &'static str, constant_time: &'static str, decrypt: Decrypt<'a>) -> Backend<'a> {
        Backend {
            name,
            constant_time,
            decrypt,
            good_ms: Vec::new(),
            failed_ms: Vec::new(),
        }
    }

    /// Opens every good ciphertext (each must give back its phrase) and every bad one (each must
    /// fail), timing each.
    fn pass(
        &mut self,
        good: &[(String, Vec<u8>, Phrase)],
        bad: &[(String, Vec<u8>)],
    ) -> anyhow::Result<()> {
        for ((label, ct, phrase), (wrong, bad_ct)) in good.iter().zip(bad) {
            let t = Instant::now();
            let opened = (self.decrypt)(label, ct);
            self.good_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if opened.as_deref().map(Vec::as_slice) != Some(phrase.as_bytes()) {
                bail!("{}: a ciphertext did not open to its phrase", self.name);
            }
            let t = Instant::now();
            let opened = (self.decrypt)(wrong, bad_ct);
            self.failed_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if opened.is_some() {
                bail!("{}: a ciphertext opened under another label", self.name);
            }
        }
        Ok(())
    }

    fn median(&self) -> f64 {
        quantile(&self.good_ms, 0.5)
    }
}

fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `rsa` 0.9.10's blinded decryption (the generator's backend before issue 23).
fn rsa_0_9(pem: &str) -> anyhow::Result<Decrypt<'static>> {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)?;
    Ok(Box::new(move |label: &str, ct: &[u8]| {
        let padding = rsa::Oaep::new_with_label::<sha2::Sha256, _>(label);
        key.decrypt_blinded(&mut rand::rngs::OsRng, padding, ct)
            .ok()
            .map(Zeroizing::new)
    }))
}

/// `rsa` 0.10.0's decryption, blinded with the operating system's generator.
#[cfg(feature = "bench-rsa-0-10")]
fn rsa_0_10(pem: &str) -> anyhow::Result<Decrypt<'static>> {
    use rsa_0_10::pkcs8::DecodePrivateKey;
    let key = rsa_0_10::PrivateKey::from_pkcs8_pem(pem).map_err(|e| anyhow!("rsa 0.10: {e}"))?;
    Ok(Box::new(move |label: &str, ct: &[u8]| {
        let padding =
            rsa_0_10::Oaep::<rsa_0_10::sha2::Sha256>::new_with_label(label.as_bytes().to_vec());
        key.decrypt(padding, ct).ok().map(Zeroizing::new)
    }))
}
