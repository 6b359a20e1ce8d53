//! Shell integration from the real binary: completion scripts that a shell loads and that complete
//! otpmesh's commands and flags, and manual pages that roff accepts.

mod common;

use common::BIN;
use std::process::Command;

const SUBCOMMANDS: &[&str] = &[
    "node",
    "mesh",
    "request",
    "verify",
    "enrol",
    "scenario",
    "totp",
    "kdc",
    "bench",
    "status",
    "config",
    "completions",
    "man",
];

fn otpmesh(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "otpmesh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What bash's completion function offers for the words typed so far (the last one partial),
/// called the way bash calls it: command, current word, previous word.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; _otpmesh otpmesh \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_loads_the_completions_and_completes_commands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("otpmesh.bash");
    std::fs::write(&script, otpmesh(&["completions", "bash"]).stdout).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    assert_eq!(bash_completes(&script, &["otpmesh", "kd"]), ["kdc"]);
    let top = bash_completes(&script, &["otpmesh", ""]);
    for sub in SUBCOMMANDS {
        assert!(top.iter().any(|w| w == sub), "{sub} not offered: {top:?}");
    }
    let mut kdc = bash_completes(&script, &["otpmesh", "kdc", "re"]);
    kdc.sort();
    assert_eq!(kdc, ["receive", "register"]);
    let flags = bash_completes(&script, &["otpmesh", "node", "--data"]);
    assert_eq!(flags, ["--data-dir"]);
    let roles = bash_completes(&script, &["otpmesh", "node", "--role", "g"]);
    assert_eq!(roles, ["generator"]);
}

#[test]
fn every_shell_gets_a_script_naming_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = String::from_utf8(otpmesh(&["completions", shell]).stdout).unwrap();
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell}: {sub} missing");
        }
        assert!(script.contains("data-dir"), "{shell}: --data-dir missing");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

/// `groff`, or None when missing outside CI (`.ci/run` installs groff-base).
fn groff() -> Option<&'static str> {
    common::tool("groff", "groff-base")
}

/// Renders a roff page as text, failing on any warning.
fn render(groff: &str, page: &std::path::Path) -> String {
    let out = Command::new(groff)
        .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
        .arg(page)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(groff)
        .args(["-k", "-man", "-Tutf8"])
        .arg(page)
        .env("GROFF_NO_SGR", "1")
        .output()
        .unwrap();
    // Strip overstrikes (bold and underline as "c\bc", "_\bc").
    let text = String::from_utf8_lossy(&out.stdout);
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn the_manual_names_every_command_and_renders_cleanly() {
    let top = String::from_utf8(otpmesh(&["man"]).stdout).unwrap();
    assert!(
        top.starts_with(".ie") || top.contains(".TH otpmesh 1"),
        "{top}"
    );
    for sub in SUBCOMMANDS {
        assert!(top.contains(&format!("otpmesh\\-{sub}")), "{sub} missing");
    }

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    otpmesh(&["man", "--dir", pages.to_str().unwrap()]);
    for page in [
        "otpmesh.1",
        "otpmesh-node.1",
        "otpmesh-kdc-send.1",
        "otpmesh-mesh-up.1",
    ] {
        assert!(pages.join(page).is_file(), "{page} not written");
    }
    if let Some(groff) = groff() {
        let text = render(groff, &pages.join("otpmesh-node.1"));
        assert!(text.contains("--data-dir"), "{text}");
        assert!(text.contains("The role this node plays"), "{text}");
        let text = render(groff, &pages.join("otpmesh.1"));
        assert!(text.contains("Peer-to-peer one-time passwords"), "{text}");
    }
}
