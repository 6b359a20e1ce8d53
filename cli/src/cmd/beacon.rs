//! `otpmesh beacon get | export | verify`: read a node's beacon chain (from the running node over
//! its control socket, or from its store when none runs), write it out, check it offline.

use super::{Failure, Outcome};
use crate::cli::{BeaconExportArgs, BeaconGetArgs, BeaconVerifyArgs};
use anyhow::{anyhow, Context};
use otpmesh_node::{status, store};
use otpmesh_protocol::beacon::{self, Entry, MAX_RUN};
use otpmesh_protocol::digest::Digest32;
use otpmesh_protocol::role::threshold::beacon::SINGLE_MODE;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `format` of an exported chain.
pub const FORMAT: &str = "otpmesh-beacon/1";
/// Largest file `beacon verify` reads.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// An exported chain: entries oldest first.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub format: String,
    pub entries: Vec<Entry>,
}

fn failure(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

/// Where a chain is read from.
enum Source {
    /// A node runs on this data dir: ask it.
    Node(PathBuf),
    /// None runs: its store, read whole (at most [`MAX_RUN`] entries), oldest first.
    Store(Vec<Entry>),
}

impl Source {
    async fn open(dir: &Path) -> Result<Source, Failure> {
        let asked = status::ask_beacon(dir, None, 0).await;
        match asked {
            Ok(page) if !page.threshold => return Err(failure(6, anyhow!("{SINGLE_MODE}"))),
            Ok(_) => return Ok(Source::Node(dir.to_path_buf())),
            Err(_) if dir.join(store::DB_FILE).exists() => {}
            Err(e) => {
                return Err(failure(
                    3,
                    anyhow!("{}: {e}, and there is no store to read", dir.display()),
                ))
            }
        }
        let db = store::Store::open(dir).map_err(|e| failure(3, anyhow!("{e}")))?;
        let entries = db.beacon().map_err(|e| failure(3, anyhow!("{e}")))?;
        if entries.is_empty() {
            let rounds = db.rounds().map_err(|e| failure(3, anyhow!("{e}")))?;
            if rounds.iter().any(|(t, _)| t.threshold.is_none()) {
                return Err(failure(6, anyhow!("{SINGLE_MODE}")));
            }
        }
        Ok(Source::Store(entries))
    }

    /// Entries before `before` (or the newest), newest first, at most `limit`.
    async fn page(&self, before: Option<u64>, limit: u32) -> Result<Vec<Entry>, Failure> {
        match self {
            Source::Node(dir) => status::ask_beacon(dir, before, limit)
                .await
                .map(|page| page.entries)
                .map_err(|e| failure(3, anyhow!("{e}"))),
            Source::Store(entries) => Ok(entries
                .iter()
                .rev()
                .filter(|e| before.is_none_or(|b| e.round() < b))
                .take(limit as usize)
                .cloned()
                .collect()),
        }
    }

    /// The newest run of linked entries, oldest first.
    async fn newest_run(&self) -> Result<Vec<Entry>, Failure> {
        let mut run: Vec<Entry> = Vec::new();
        let mut before = None;
        'pages: while run.len() < MAX_RUN {
            let page = self.page(before, status::MAX_BEACON_PAGE).await?;
            if page.is_empty() {
                break;
            }
            for e in page {
                if let Some(newer) = run.last() {
                    if newer.transcript.prev_commitment != e.transcript.commitment
                        || run.len() == MAX_RUN
                    {
                        break 'pages;
                    }
                }
                before = Some(e.round());
                run.push(e);
            }
        }
        run.reverse();
        Ok(run)
    }
}

/// The newest run of linked entries among `entries` (a store's, oldest first), oldest first.
pub async fn newest_run_among(entries: Vec<Entry>) -> anyhow::Result<Vec<Entry>> {
    Source::Store(entries)
        .newest_run()
        .await
        .map_err(|f| f.error)
}

/// The newest run of linked entries a node holds (running or not), oldest first.
pub async fn newest_run(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    let read = async { Source::open(dir).await?.newest_run().await };
    read.await.map_err(|f| f.error)
}

fn no_values(dir: &Path) -> Failure {
    failure(
        5,
        anyhow!(
            "{}: no beacon values yet (one comes after each threshold round, once T distributors \
             publish their partials)",
            dir.display()
        ),
    )
}

pub async fn get(args: BeaconGetArgs) -> Outcome {
    let source = Source::open(&args.data_dir).await?;
    let entry = match args.round {
        Some(r) => {
            let page = source.page(Some(r.saturating_add(1)), 1).await?;
            match page.into_iter().next() {
                Some(e) if e.round() == r => e,
                _ => {
                    return Err(failure(
                        5,
                        anyhow!("{}: no beacon value of round {r}", args.data_dir.display()),
                    ))
                }
            }
        }
        None => match source.page(None, 1).await?.into_iter().next() {
            Some(e) => e,
            None => return Err(no_values(&args.data_dir)),
        },
    };
    // What a node holds was checked when it came; check again what is printed.
    let key = entry
        .verify()
        .map_err(|e| failure(4, anyhow!("the value held does not verify: {e}")))?;
    let from: Vec<u32> = entry.value.partials.iter().map(|p| p.index.0).collect();
    let params = key.params;
    if args.json {
        let value = serde_json::json!({
            "round": entry.round(),
            "value": entry.value.value.to_hex(),
            "prev": entry.value.prev.to_hex(),
            "transcript_commitment": entry.transcript.commitment.to_hex(),
            "threshold": format!("{}/{}", params.t, params.n),
            "from": from,
            "entry": entry,
        });
        println!("{value}");
        return Ok(());
    }
    let prev = match entry.value.prev == Digest32::ZERO {
        true => "zeros (the first value of its chain)".to_string(),
        false => entry.value.prev.to_hex(),
    };
    println!(
        "round {}  beacon {}",
        entry.round(),
        entry.value.value.to_hex()
    );
    println!("  prev        {prev}");
    println!(
        "  made from   distributors {from:?}: {} of {} partials, each with a DLEQ proof against its K_j",
        params.t, params.n
    );
    println!(
        "  transcript  commitment {} (prev {})",
        entry.transcript.commitment.to_hex(),
        entry.transcript.prev_commitment.to_hex()
    );
    println!(
        "  checked     from the round's public key alone (otpmesh beacon verify does the same)"
    );
    Ok(())
}

pub async fn export(args: BeaconExportArgs) -> Outcome {
    let source = Source::open(&args.data_dir).await?;
    let entries = source.newest_run().await?;
    if entries.is_empty() {
        return Err(no_values(&args.data_dir));
    }
    let (first, last, count) = (
        entries[0].round(),
        entries[entries.len() - 1].round(),
        entries.len(),
    );
    let export = Export {
        format: FORMAT.into(),
        entries,
    };
    let mut text = serde_json::to_string(&export).context("encoding the chain")?;
    text.push('\n');
    match &args.out {
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text).with_context(|| format!("{}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
            eprintln!(
                "{count} beacon values (rounds {first}..{last}) written to {}",
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// The entries in a file: an export, one `beacon get --json` value, or a bare entry.
fn read_entries(path: &Path) -> Result<Vec<Entry>, Failure> {
    let bad = |e: anyhow::Error| failure(2, e);
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))
        .map_err(bad)?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(bad(anyhow!(
            "{}: {len} bytes, more than the {MAX_FILE_BYTES} a beacon file may have",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}", path.display()))
        .map_err(bad)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", path.display()))
        .map_err(bad)?;
    let not = |e: serde_json::Error| {
        bad(anyhow!(
            "{} is not a beacon export or value: {e}",
            path.display()
        ))
    };
    if value.get("entries").is_some() {
        let export: Export = serde_json::from_value(value).map_err(not)?;
        if export.format != FORMAT {
            return Err(bad(anyhow!(
                "{}: format {:?}, expected {FORMAT:?}",
                path.display(),
                export.format
            )));
        }
        return Ok(export.entries);
    }
    let entry = match value.get("entry") {
        Some(entry) => serde_json::from_value(entry.clone()).map_err(not)?,
        None => serde_json::from_value(value).map_err(not)?,
    };
    Ok(vec![entry])
}

pub fn verify(args: BeaconVerifyArgs) -> Outcome {
    let head = match &args.head {
        Some(h) => Some(
            Digest32::from_hex(h.trim())
                .ok_or_else(|| failure(2, anyhow!("--head {h:?}: expected 64 hex digits")))?,
        ),
        None => None,
    };
    let entries = read_entries(&args.file)?;
    if entries.is_empty() {
        return Err(failure(
            4,
            anyhow!("{}: no beacon values in it", args.file.display()),
        ));
    }
    let coordinator = match &args.mesh {
        Some(path) => {
            let mesh = super::node::load_mesh(path).map_err(|e| failure(2, e))?;
            let (Some(coordinator), Some(params)) = (mesh.coordinator(), mesh.threshold()) else {
                return Err(failure(
                    2,
                    anyhow!(
                        "{}: not a threshold mesh (no threshold = \"T/N\")",
                        path.display()
                    ),
                ));
            };
            Some((coordinator, params))
        }
        None => None,
    };
    let checked = beacon::verify_run(&entries)
        .map_err(|e| anyhow!("{e}"))
        .and_then(|()| match coordinator {
            None => Ok(()),
            Some((coordinator, params)) => entries.iter().try_for_each(|e| {
                let t = &e.transcript;
                if t.threshold.as_ref().map(|k| k.params) != Some(params) {
                    return Err(anyhow!(
                        "round {}: its key is not of the mesh's T/N",
                        t.round
                    ));
                }
                t.check_seal(&coordinator)
                    .map_err(|err| anyhow!("round {}: {err}", t.round))
            }),
        })
        .and_then(|()| {
            let newest = &entries[entries.len() - 1].transcript.commitment;
            match head {
                Some(h) if h != *newest => Err(anyhow!(
                    "the newest entry's transcript commitment {newest} is not --head {h}"
                )),
                _ => Ok(()),
            }
        });
    let (first, last) = (&entries[0], &entries[entries.len() - 1]);
    match (checked, args.json) {
        (Ok(()), true) => println!(
            "{}",
            serde_json::json!({
                "valid": true,
                "values": entries.len(),
                "first_round": first.round(),
                "last_round": last.round(),
                "newest_value": last.value.value.to_hex(),
                "head": last.transcript.commitment.to_hex(),
            })
        ),
        (Ok(()), false) => {
            println!(
                "valid: {} beacon values, rounds {}..{}, each proven from its round's public key and linked to the one before",
                entries.len(),
                first.round(),
                last.round()
            );
            println!("  newest value  {}", last.value.value.to_hex());
            println!(
                "  head          {} (round {}'s transcript commitment: compare it with a node you trust)",
                last.transcript.commitment.to_hex(),
                last.round()
            );
        }
        (Err(e), json) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "error": e.to_string()})
                );
            }
            return Err(failure(
                4,
                e.context(format!("{} does not verify", args.file.display())),
            ));
        }
    }
    Ok(())
}
