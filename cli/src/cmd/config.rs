//! Where a node's settings come from: flags, then `OTPMESH_*` variables, then the `--config` file,
//! then defaults; and `otpmesh config check | show`.
//!
//! clap knows whether a value came from the command line or the environment
//! ([`ArgMatches::value_source`]); a setting from neither is taken from the file. File keys are the
//! variables' names without `OTPMESH_`, in lower case (`OTPMESH_DATA_DIR` ↔ `data_dir`); relative
//! paths in a file are relative to the file.

use super::node::{build, parse_parts, read_bounded};
use super::{Failure, Outcome};
use crate::cli::{ConfigCheckArgs, LogFormat, NodeArgs, Role};
use anyhow::anyhow;
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The keys a node config file may hold: the settings of `otpmesh node`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    role: Option<Role>,
    data_dir: Option<PathBuf>,
    listen: Option<Vec<String>>,
    #[serde(alias = "peer")]
    peers: Option<Vec<String>>,
    mesh: Option<PathBuf>,
    client_id: Option<u32>,
    #[serde(default, deserialize_with = "input_text")]
    input: Option<String>,
    input_file: Option<PathBuf>,
    #[serde(alias = "distributor")]
    distributors: Option<Vec<String>>,
    open: Option<bool>,
    mdns: Option<bool>,
    json: Option<bool>,
    control_stdin: Option<bool>,
    manual_rounds: Option<bool>,
    seed: Option<u64>,
    metrics: Option<String>,
    radius: Option<String>,
    radius_clients: Option<PathBuf>,
    http: Option<String>,
    http_tokens: Option<PathBuf>,
    http_allow_remote: Option<bool>,
    log_format: Option<LogFormat>,
}

/// The contributor's input, as an integer or a string of digits. A bad value's error never
/// repeats it: it is the contributor's secret, and errors go to logs.
fn input_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input {
        Integer(i64),
        Text(String),
    }
    match Input::deserialize(d) {
        Ok(Input::Integer(i)) => Ok(Some(i.to_string())),
        Ok(Input::Text(t)) => Ok(Some(t)),
        Err(_) => Err(serde::de::Error::custom(
            "input must be an integer or a string of digits (the value is not repeated here)",
        )),
    }
}

impl FileConfig {
    pub fn from_toml(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads `path`; an error names the file, line and column.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = read_bounded(path)?;
        FileConfig::from_toml(&text).map_err(|e| located(path, &text, &e))
    }
}

/// `FILE:LINE:COLUMN: message` for a TOML error.
pub fn located(path: &Path, text: &str, error: &toml::de::Error) -> anyhow::Error {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
            anyhow!("{}:{line}:{column}: {message}", path.display())
        }
        None => anyhow!("{}: {message}", path.display()),
    }
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// A node's settings with the source of each.
#[derive(Debug)]
pub struct Resolved {
    pub args: NodeArgs,
    pub log_format: LogFormat,
    /// (setting, source), in the order `otpmesh node --help` lists them.
    pub sources: Vec<(&'static str, Source)>,
}

/// Fills every setting neither a flag nor a variable gave from `args.config`'s file.
pub fn resolve(
    mut args: NodeArgs,
    log_format: LogFormat,
    matches: &ArgMatches,
) -> anyhow::Result<Resolved> {
    let given = |id: &str| match matches
        .ids()
        .any(|i| i.as_str() == id)
        .then(|| matches.value_source(id))
        .flatten()
    {
        Some(ValueSource::CommandLine) => Some(Source::Flag),
        Some(ValueSource::EnvVariable) => Some(Source::Env),
        _ => None,
    };
    let (mut file, base) = match &args.config {
        Some(path) => (
            FileConfig::load(path)?,
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        ),
        None => (FileConfig::default(), PathBuf::new()),
    };
    let rel = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    let mut sources = Vec::new();
    // A setting: the flag's or variable's value, else the file's (through `$map`), else unset.
    macro_rules! setting {
        ($key:ident, $map:expr) => {{
            let source = match given(stringify!($key)) {
                Some(source) => source,
                None => match file.$key.take() {
                    Some(value) => {
                        args.$key = $map(value);
                        Source::File
                    }
                    None => Source::Default,
                },
            };
            sources.push((stringify!($key), source));
        }};
    }
    setting!(role, Some);
    setting!(data_dir, |p| Some(rel(p)));
    setting!(listen, |v| v);
    setting!(peers, |v| v);
    setting!(mesh, |p| Some(rel(p)));
    sources.push(("config", given("config").unwrap_or(Source::Default)));
    setting!(client_id, Some);
    // The input comes whole from one layer: a flag or variable for either of the pair hides the
    // file's (else `--input-file` over a file's `input` would be "both given").
    if given("input").is_some() || given("input_file").is_some() {
        file.input = None;
        file.input_file = None;
    }
    setting!(input, Some);
    setting!(input_file, |p| Some(rel(p)));
    setting!(distributors, |v| v);
    setting!(open, |b| b);
    setting!(mdns, |b| b);
    setting!(json, |b| b);
    setting!(control_stdin, |b| b);
    setting!(manual_rounds, |b| b);
    setting!(seed, Some);
    setting!(metrics, Some);
    setting!(radius, Some);
    setting!(radius_clients, |p| Some(rel(p)));
    setting!(http, Some);
    setting!(http_tokens, |p| Some(rel(p)));
    setting!(http_allow_remote, |b| b);
    let log_format = match (given("log_format"), file.log_format) {
        (Some(source), _) => {
            sources.push(("log_format", source));
            log_format
        }
        (None, Some(format)) => {
            sources.push(("log_format", Source::File));
            format
        }
        (None, None) => {
            sources.push(("log_format", Source::Default));
            log_format
        }
    };
    Ok(Resolved {
        args,
        log_format,
        sources,
    })
}

impl Resolved {
    /// The settings as a node config file, each line commented with its source; the input is
    /// never shown.
    pub fn to_toml(&self) -> String {
        use toml::Value;
        let a = &self.args;
        // Absolute, so that the output means the same wherever it is saved.
        let path = |p: &Option<PathBuf>| {
            p.as_ref().map(|p| {
                let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                Value::from(p.display().to_string())
            })
        };
        let list = |v: &Vec<String>| {
            (!v.is_empty())
                .then(|| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect()))
        };
        let mut out = String::new();
        for (key, source) in &self.sources {
            let value = match *key {
                "role" => a.role.map(|r| Value::from(format!("{r:?}").to_lowercase())),
                "data_dir" => path(&a.data_dir),
                "listen" => list(&a.listen),
                "peers" => list(&a.peers),
                "mesh" => path(&a.mesh),
                "config" => path(&a.config),
                "client_id" => a.client_id.map(|c| Value::from(i64::from(c))),
                "input" => a.input.as_ref().map(|_| Value::from("")),
                "input_file" => path(&a.input_file),
                "distributors" => list(&a.distributors),
                "open" => Some(Value::from(a.open)),
                "mdns" => Some(Value::from(a.mdns)),
                "json" => Some(Value::from(a.json)),
                "control_stdin" => Some(Value::from(a.control_stdin)),
                "manual_rounds" => Some(Value::from(a.manual_rounds)),
                // TOML integers are i64: a larger seed can only be a flag.
                "seed" => a.seed.and_then(|s| i64::try_from(s).ok()).map(Value::from),
                "metrics" => a.metrics.as_ref().map(|m| Value::from(m.as_str())),
                "radius" => a.radius.as_ref().map(|m| Value::from(m.as_str())),
                "radius_clients" => path(&a.radius_clients),
                "http" => a.http.as_ref().map(|m| Value::from(m.as_str())),
                "http_tokens" => path(&a.http_tokens),
                "http_allow_remote" => Some(Value::from(a.http_allow_remote)),
                "log_format" => Some(Value::from(format!("{:?}", self.log_format).to_lowercase())),
                _ => None,
            };
            let source = format!("{source:?}").to_lowercase();
            match value {
                // `config` names the file itself: not a key inside one.
                Some(v) if *key == "config" => {
                    out.push_str(&format!("# config = {v}  # {source}\n"))
                }
                Some(_) if *key == "input" => {
                    out.push_str(&format!("# input = <hidden>  # {source}\n"))
                }
                Some(v) => out.push_str(&format!("{key} = {v}  # {source}\n")),
                // TOML integers are i64: a larger seed can only be a flag or variable.
                None if *key == "seed" && a.seed.is_some() => out.push_str(&format!(
                    "# seed = {}  # {source} (beyond a TOML integer)\n",
                    a.seed.unwrap_or_default()
                )),
                None => out.push_str(&format!("# {key}: not set\n")),
            }
        }
        out
    }
}

/// `otpmesh config show`.
pub fn show(resolved: Resolved) -> Outcome {
    print!("{}", resolved.to_toml());
    Ok(())
}

/// `otpmesh config check FILE`: the file alone (no flags, no variables), every value parsed and
/// the mesh config it names loaded and validated.
pub fn check(args: ConfigCheckArgs) -> Outcome {
    let bad = |error: anyhow::Error| Failure { code: 2, error };
    let node = NodeArgs {
        config: Some(args.file.clone()),
        ..NodeArgs::default()
    };
    let resolved = resolve(node, LogFormat::Text, &ArgMatches::default()).map_err(bad)?;
    let a = &resolved.args;
    let mut notes = Vec::new();
    if a.role.is_none() {
        notes.push("no role: give --role or OTPMESH_ROLE".to_string());
    }
    if a.data_dir.is_none() {
        notes.push("no data_dir: give --data-dir or OTPMESH_DATA_DIR".to_string());
    }
    if a.mesh.is_none() {
        notes.push("no mesh: give --mesh or OTPMESH_MESH".to_string());
    }
    let failed = |e: anyhow::Error| bad(anyhow!("{}: {e:#}", args.file.display()));
    // Every value that is there parses; with everything a node needs, it builds as a node would
    // (without starting).
    parse_parts(a).map_err(failed)?;
    if notes.is_empty() {
        build(a).map_err(failed)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"file": args.file.display().to_string(), "valid": true, "notes": notes})
        );
    } else {
        println!("{}: valid", args.file.display());
        for note in notes {
            println!("  note: {note}");
        }
    }
    Ok(())
}
