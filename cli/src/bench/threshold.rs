//! `otpmesh bench threshold`: the cryptography of threshold mode (partial evaluation with proof,
//! the requester's combination for several t, round setup) beside single mode's work for the same
//! jobs (issuing one OTP, combining a round's phrases), measured in the same run on one core.

use crate::cli::BenchThresholdArgs;
use crate::cmd::Outcome;
use anyhow::anyhow;
use curve25519_dalek::scalar::Scalar;
use otpmesh_protocol::beacon;
use otpmesh_protocol::digest::Digest32;
use otpmesh_protocol::mesh::Settings;
use otpmesh_protocol::otp::{self, Digits};
use otpmesh_protocol::phrase::{ClientId, Phrase, UserInput};
use otpmesh_protocol::round::{self, RoundId};
use otpmesh_protocol::threshold::dkg::{self, Dealing, Received};
use otpmesh_protocol::threshold::eval::{Input, KeyShare, PublicKey};
use otpmesh_protocol::threshold::poly::{Pair, Polynomial, SHARE_PAIR_BYTES};
use otpmesh_protocol::threshold::{voprf, Index, Params};
use rand::SeedableRng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Each measurement runs this long at most (and at least a few times).
const BUDGET: Duration = Duration::from_millis(400);

#[derive(Serialize)]
struct Row {
    mode: &'static str,
    what: String,
    micros: f64,
}

/// Median µs of `f` over repeated runs within [`BUDGET`] (at least 5, at most 1000).
fn time(mut f: impl FnMut()) -> f64 {
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < BUDGET && samples.len() < 1000) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A round set up by `contributors` dealers for `params`: the public key and every share.
fn setup(
    params: Params,
    contributors: u32,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> (PublicKey, Vec<KeyShare>) {
    let dealings: Vec<Dealing> = (1..=contributors)
        .map(|c| Dealing::new(dkg::contribution_scalar(b"bench", 1, c), params, rng))
        .collect();
    let qualified: Vec<u32> = (1..=contributors).collect();
    let shares = params
        .indices()
        .map(|j| dkg::key_share(j, &received(j, &dealings), &qualified))
        .collect();
    let commitments: Vec<&Pair> = dealings.iter().map(|d| &d.commitments).collect();
    let public = dkg::public_key(params, &commitments).expect("honest dealings");
    (public, shares)
}

fn received(j: Index, dealings: &[Dealing]) -> Vec<Received> {
    dealings
        .iter()
        .enumerate()
        .map(|(i, d)| d.received_by(i as u32 + 1, j).expect("j is a shareholder"))
        .collect()
}

pub fn threshold(args: BenchThresholdArgs) -> Outcome {
    let ts = super::counts(&args.t, "t", 1..=128)?;
    if !(1..=1024).contains(&args.contributors) {
        return Err(anyhow!("--contributors {}: between 1 and 1024", args.contributors).into());
    }
    let setup_params = Params::new(args.generators / 2 + 1, args.generators)
        .map_err(|e| anyhow!("--generators {}: {e}", args.generators))?;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let digits = Digits::new(8).map_err(|e| anyhow!("{e}"))?;
    let requester = libp2p::PeerId::random();
    let x = Input {
        domain: "otp".into(),
        requester: requester.to_bytes(),
        round: 1,
        counter: 1,
    };
    let mut rows = Vec::new();
    let mut row = |mode: &'static str, what: String, micros: f64| {
        println!("{mode:<10} {what:<58} {micros:>12.1}");
        rows.push(Row { mode, what, micros });
    };
    println!("{:<10} {:<58} {:>12}", "mode", "operation (one core)", "µs");

    // Single mode, the baseline: one distributor issues an OTP from the round secret; the
    // generator combines k phrases into it.
    let settings = Settings::default();
    let phrases: BTreeMap<ClientId, Phrase> = (1..=args.contributors)
        .map(|c| {
            let phrase = Phrase::build(UserInput(i128::from(c)), ClientId(c), &mut rng)?;
            Ok((ClientId(c), phrase))
        })
        .collect::<anyhow::Result<_>>()?;
    let secret = round::derive_secret(RoundId(1), &Digest32([0; 32]), &phrases, 1);
    let issuer = libp2p::PeerId::random();
    row(
        "single",
        "distributor: issue one OTP".into(),
        time(|| {
            std::hint::black_box(otp::issue(
                &secret,
                RoundId(1),
                &requester,
                &issuer,
                1,
                digits,
            ));
        }),
    );
    row(
        "single",
        format!(
            "generator: combine {} phrases ({} hash iterations)",
            args.contributors, settings.hash_iterations
        ),
        time(|| {
            std::hint::black_box(round::derive_secret(
                RoundId(1),
                &Digest32([0; 32]),
                &phrases,
                settings.hash_iterations,
            ));
        }),
    );

    // RSA-OAEP, both modes' transport for what a contributor sends a generator: one phrase to one
    // generator, or one share to each of n generators; a generator opens one per contributor.
    let key = otpmesh_protocol::seal::PrivateKey::generate(settings.rsa_bits, &mut rng)
        .map_err(|e| anyhow!("{e}"))?;
    let (r1, first) = (RoundId(1), ClientId(1));
    let sealed_phrase = key
        .public()
        .seal(r1, first, &phrases[&first], &mut rng)
        .map_err(|e| anyhow!("{e}"))?;
    row(
        "single",
        "contributor: seal its phrase (RSA-OAEP, 1 generator)".into(),
        time(|| {
            std::hint::black_box(
                key.public()
                    .seal(r1, first, &phrases[&first], &mut rng)
                    .ok(),
            );
        }),
    );
    row(
        "single",
        format!(
            "generator: open {} phrases (blinded RSA)",
            args.contributors
        ),
        time(|| {
            for _ in 0..args.contributors {
                std::hint::black_box(key.open(r1, first, &sealed_phrase).ok());
            }
        }),
    );
    let share = [7u8; SHARE_PAIR_BYTES];
    let sealed_share = key
        .public()
        .seal_share(r1, first, Index(1), &share, &mut rng)
        .map_err(|e| anyhow!("{e}"))?;
    row(
        "threshold",
        format!(
            "contributor: seal its {} shares (RSA-OAEP, 1 per generator)",
            args.generators
        ),
        time(|| {
            for j in 1..=args.generators {
                let sealed = key
                    .public()
                    .seal_share(r1, first, Index(j), &share, &mut rng);
                std::hint::black_box(sealed.ok());
            }
        }),
    );
    row(
        "threshold",
        format!(
            "(before) generator: open {} shares (blinded RSA)",
            args.contributors
        ),
        time(|| {
            for _ in 0..args.contributors {
                let opened = key.open_share(r1, first, Index(1), &sealed_share);
                std::hint::black_box(opened.ok());
            }
        }),
    );
    // Since issue 20 every generator deals too: a generator opens n more shares.
    row(
        "threshold",
        format!(
            "generator: open {} + {} shares (blinded RSA)",
            args.contributors, args.generators
        ),
        time(|| {
            for _ in 0..args.contributors + args.generators {
                let opened = key.open_share(r1, first, Index(1), &sealed_share);
                std::hint::black_box(opened.ok());
            }
        }),
    );

    // Threshold mode: per OTP, one distributor's partial with its proof, and the requester's
    // whole job (check t proofs, combine, derive) for each t, with n = 2t − 1.
    for &t in &ts {
        let params = Params::new(t, 2 * t - 1).map_err(|e| anyhow!("{e}"))?;
        let (public, shares) = setup(params, 4, &mut rng);
        if t == ts[0] {
            row(
                "threshold",
                "distributor: partial evaluation + DLEQ proof".into(),
                time(|| {
                    std::hint::black_box(shares[0].evaluate(&x, &mut rng));
                }),
            );
        }
        let partials: Vec<_> = shares[..t as usize]
            .iter()
            .map(|s| s.evaluate(&x, &mut rng))
            .collect();
        row(
            "threshold",
            format!(
                "requester: check {t} proofs, combine, derive (t = {t}, n = {})",
                params.n
            ),
            time(|| {
                let (y, _) = public.combine(&partials, &x).expect("valid partials");
                std::hint::black_box(otpmesh_protocol::threshold::eval::otp(&y, &x, digits));
            }),
        );
        // Passwords: before issue 20 the requester combined t partials at an input the
        // distributors saw (the OTP path, then derive); now a blinded VOPRF evaluation (RFC 9497):
        // blind, check t proofs, combine, unblind, finalize, derive. Same t, same run.
        let alphabet = otpmesh_protocol::threshold::password::Alphabet::default();
        let pw_input = Input {
            domain: "password".into(),
            ..x.clone()
        };
        let pw_partials: Vec<_> = shares[..t as usize]
            .iter()
            .map(|s| s.evaluate(&pw_input, &mut rng))
            .collect();
        row(
            "threshold",
            format!("requester: password, unblinded (before; t = {t})"),
            time(|| {
                let (y, _) = public
                    .combine(&pw_partials, &pw_input)
                    .expect("valid partials");
                let pw =
                    otpmesh_protocol::threshold::password::derive(&y, &pw_input, &alphabet, 20);
                std::hint::black_box(pw.ok());
            }),
        );
        let share_keys: Vec<voprf::PublicKey> = params
            .indices()
            .map(|j| voprf::PublicKey::from_point(public.password_share_key(j)))
            .collect();
        // The password half of each key share pair (k'_j).
        let voprf_keys: Vec<voprf::SecretKey> = shares
            .iter()
            .map(|s| {
                let bytes: [u8; 32] = s.to_bytes()[32..].try_into().expect("32 bytes");
                let k = Scalar::from_canonical_bytes(bytes).expect("canonical");
                voprf::SecretKey::from_scalar(k).expect("non-zero share")
            })
            .collect();
        let secret_input = [5u8; 32];
        let (blind, blinded) = voprf::blind(&secret_input, &mut rng).expect("32-byte input");
        let evaluations: Vec<voprf::Partial> = voprf_keys[..t as usize]
            .iter()
            .zip(params.indices())
            .map(|(k, j)| voprf::partial_evaluate(j, k, &blinded, &mut rng))
            .collect();
        if t == ts[0] {
            row(
                "threshold",
                "distributor: password, VOPRF evaluation + RFC 9497 proof".into(),
                time(|| {
                    let p = voprf::partial_evaluate(Index(1), &voprf_keys[0], &blinded, &mut rng);
                    std::hint::black_box(p);
                }),
            );
        }
        row(
            "threshold",
            format!("requester: password, VOPRF blind+check+combine+finalize (t = {t})"),
            time(|| {
                let (b, e) = voprf::blind(&secret_input, &mut rng).expect("32-byte input");
                std::hint::black_box((b, e));
                let (out, _) = voprf::finalize_combined(
                    &secret_input,
                    &blind,
                    &blinded,
                    params,
                    &share_keys,
                    &evaluations,
                )
                .expect("valid partials");
                let pw = otpmesh_protocol::threshold::password::from_output(&out, &alphabet, 20);
                std::hint::black_box(pw.ok());
            }),
        );
        // The beacon: every node combines each round's value; a verifier checks it offline.
        let prev = Digest32([9; 32]);
        let bx = beacon::input(1, &prev);
        let beacon_partials: Vec<_> = shares[..t as usize]
            .iter()
            .map(|s| s.evaluate(&bx, &mut rng))
            .collect();
        let value = beacon::combine(&public, 1, &prev, &beacon_partials).expect("valid partials");
        row(
            "threshold",
            format!("any node: beacon value from {t} partials (check, combine)"),
            time(|| {
                std::hint::black_box(beacon::combine(&public, 1, &prev, &beacon_partials).ok());
            }),
        );
        row(
            "threshold",
            format!("verifier: one beacon value offline (t = {t})"),
            time(|| {
                std::hint::black_box(beacon::verify(&value, &public).ok());
            }),
        );
    }

    // Round setup for the contributors and generators asked for.
    let c = args.contributors;
    let (n, t) = (setup_params.n, setup_params.t);
    row(
        "threshold",
        format!("contributor: deal to n = {n} (t = {t}): split + commitments"),
        time(|| {
            std::hint::black_box(Dealing::new(Scalar::from(7u64), setup_params, &mut rng));
        }),
    );
    row(
        "threshold",
        format!("(before) contributor: deal one sharing (no password key) to n = {n}"),
        time(|| {
            let f = Polynomial::random(Scalar::from(7u64), setup_params, &mut rng);
            std::hint::black_box((f.commit(), f.shares(setup_params)));
        }),
    );
    // The contributors' dealings, then (since issue 20) the n generators' own.
    let all: Vec<Dealing> = (1..=c + n)
        .map(|i| {
            Dealing::new(
                dkg::contribution_scalar(b"bench", 1, i),
                setup_params,
                &mut rng,
            )
        })
        .collect();
    let dealings = &all[..c as usize];
    let at_one = received(Index(1), dealings);
    let qualified: Vec<u32> = (1..=c).collect();
    row(
        "threshold",
        format!("(contributors only) generator: weighted check of {c} shares + key share"),
        time(|| {
            assert!(
                dkg::complaints(Index(1), setup_params, &at_one, &mut rand_core::OsRng).is_empty()
            );
            std::hint::black_box(dkg::key_share(Index(1), &at_one, &qualified));
        }),
    );
    row(
        "threshold",
        format!("(before) generator: check {c} shares by plain sum (unsound)"),
        time(|| {
            let sum: Scalar = at_one.iter().map(|r| r.share.otp).sum();
            let expected = at_one
                .iter()
                .map(|r| r.commitments.otp.clone())
                .reduce(|a, b| a.add(&b))
                .map(|c| c.evaluate(Index(1)))
                .unwrap_or_default();
            assert!(curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT * sum == expected);
        }),
    );
    // Every generator deals too: a generator checks c + n dealings.
    let at_one_all = received(Index(1), &all);
    row(
        "threshold",
        format!("generator: weighted check of {c} + {n} dealings"),
        time(|| {
            assert!(
                dkg::complaints(Index(1), setup_params, &at_one_all, &mut rand_core::OsRng)
                    .is_empty()
            );
        }),
    );
    let commitments: Vec<&Pair> = dealings.iter().map(|d| &d.commitments).collect();
    row(
        "threshold",
        format!("anyone: round public key from {c} dealings"),
        time(|| {
            std::hint::black_box(dkg::public_key(setup_params, &commitments).expect("honest"));
        }),
    );
    let path = |mode: &str, roles: &[&str]| {
        rows.iter()
            .filter(|r| r.mode == mode)
            .filter(|r| roles.iter().any(|p| r.what.starts_with(p)))
            .map(|r| r.micros)
            .sum::<f64>()
            / 1000.0
    };
    println!(
        "round setup critical path (one contributor's work + one generator's; contributors and generators run in parallel): single ≈ {:.1} ms, threshold ≈ {:.1} ms (before issue 20, same run: ≈ {:.1} ms)",
        path("single", &["contributor", "generator"]),
        path("threshold", &["contributor", "generator"]),
        path(
            "threshold",
            &["contributor: seal", "(before) contributor", "(before) generator"]
        )
    );
    args.out
        .write_json(&serde_json::json!({ "suite": "threshold", "rows": rows }))?;
    Ok(())
}
