//! The protocol crate's modules form layers: no two modules use each other, directly or around a
//! circle, at any depth of the module tree (`role` and `wire` as wholes, `role::distributor` and
//! `role::threshold` inside `role`, and so on). A module may use its own ancestors (it is part of
//! them); every other `crate::` or `super::` path is an edge.
//!
//! The check reads the sources as text: paths in `use` lines and in code, without comments and
//! without the `#[cfg(test)]` module at a file's end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

fn modules(root: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("protocol/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .expect("below src")
                .with_extension("");
            let mut name: Module = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(name.last().map(String::as_str), Some("mod" | "lib")) {
                name.pop();
            }
            let text = std::fs::read_to_string(&path).expect("a source file is UTF-8");
            out.insert(name, text);
        }
    }
    out
}

/// The text without line comments and without the trailing test module.
fn code_of(text: &str) -> String {
    let body = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `crate::` or `super::`, with `{a, b::c}` groups expanded.
fn paths(module: &Module, code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let at_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &code[i..];
        let head = if rest.starts_with("crate::") {
            Some(Vec::new())
        } else if rest.starts_with("super::") {
            let mut up = module.clone();
            let mut r = rest;
            while let Some(next) = r.strip_prefix("super::") {
                up.pop();
                r = next;
            }
            i += rest.len() - r.len() - "super::".len();
            Some(up)
        } else {
            None
        };
        match head {
            Some(prefix) if at_word => {
                let start = i + rest.find("::").expect("a separator") + 2;
                let end = expand(code, start, prefix, &mut out);
                i = end.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out
}

/// Reads `a::b::{c, d::e}` from `start`, pushing each full path; returns where it stopped.
fn expand(code: &str, start: usize, mut prefix: Module, out: &mut Vec<Module>) -> usize {
    let bytes = code.as_bytes();
    let mut i = start;
    loop {
        let word_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > word_start {
            prefix.push(code[word_start..i].to_string());
        }
        let group = if code[i..].starts_with("::{") {
            Some(3)
        } else if i == word_start && code[i..].starts_with('{') {
            Some(1)
        } else {
            None
        };
        if let Some(skip) = group {
            i += skip;
            loop {
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return i + 1;
                }
                i = expand(code, i, prefix.clone(), out);
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
            }
        }
        if code[i..].starts_with("::") && !code[i..].starts_with("::<") {
            i += 2;
            continue;
        }
        // Skip `as alias` and the rest of a group item.
        while i < bytes.len() && !matches!(bytes[i], b',' | b'}' | b';' | b'(' | b')') {
            if bytes[i].is_ascii_whitespace() && !code[i..].trim_start().starts_with("as ") {
                break;
            }
            i += 1;
        }
        out.push(prefix);
        return i;
    }
}

/// The longest module that `path` names or names an item of.
fn resolve<'m>(modules: &'m BTreeMap<Module, String>, path: &[String]) -> Option<&'m Module> {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

fn edges(modules: &BTreeMap<Module, String>) -> BTreeSet<(Module, Module)> {
    let mut out = BTreeSet::new();
    for (from, text) in modules {
        for path in paths(from, &code_of(text)) {
            if let Some(to) = resolve(modules, &path) {
                if !from.starts_with(to) {
                    out.insert((from.clone(), to.clone()));
                }
            }
        }
    }
    out
}

/// A cycle among the modules collapsed to their first `depth` names, if any.
fn cycle_at(edges: &BTreeSet<(Module, Module)>, depth: usize) -> Option<Vec<Module>> {
    let cut = |m: &Module| m[..m.len().min(depth)].to_vec();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (a, b) in edges {
        let (a, b) = (cut(a), cut(b));
        if a != b && !a.starts_with(&b) && !b.starts_with(&a) {
            graph.entry(a).or_default().insert(b);
        }
    }
    // Depth-first search with colours; a grey successor closes a cycle.
    let mut colour: BTreeMap<Module, u8> = BTreeMap::new();
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        colour: &mut BTreeMap<Module, u8>,
        trail: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        colour.insert(node.clone(), 1);
        trail.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match colour.get(next).copied().unwrap_or(0) {
                1 => {
                    let start = trail.iter().position(|m| m == next).expect("on the trail");
                    return Some(trail[start..].to_vec());
                }
                0 => {
                    if let Some(c) = visit(next, graph, colour, trail) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        trail.pop();
        colour.insert(node.clone(), 2);
        None
    }
    let nodes: Vec<Module> = graph.keys().cloned().collect();
    for node in nodes {
        if !colour.contains_key(&node) {
            if let Some(c) = visit(&node, &graph, &mut colour, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn show(cycle: &[Module]) -> String {
    let mut names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
    names.push(names[0].clone());
    names.join(" → ")
}

#[test]
fn no_module_of_the_protocol_crate_is_in_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&root);
    assert!(modules.len() > 40, "read {} modules", modules.len());
    let edges = edges(&modules);
    let deepest = modules.keys().map(Vec::len).max().unwrap_or(1);
    for depth in 1..=deepest {
        if let Some(cycle) = cycle_at(&edges, depth) {
            panic!("modules in a cycle (depth {depth}): {}", show(&cycle));
        }
    }
}

#[test]
fn the_checker_sees_a_cycle_and_group_imports() {
    let mut modules = BTreeMap::new();
    let m = |s: &str| s.split("::").map(String::from).collect::<Module>();
    modules.insert(m("a"), "use crate::{b::{X, c::Y}, d};".to_string());
    modules.insert(m("b"), String::new());
    modules.insert(
        m("b::c"),
        "fn f() { super::super::a::g() } // crate::d".to_string(),
    );
    modules.insert(m("d"), "fn h() -> crate::d::Z {}".to_string());
    let edges = edges(&modules);
    let expected: BTreeSet<(Module, Module)> = [
        (m("a"), m("b")),
        (m("a"), m("b::c")),
        (m("a"), m("d")),
        (m("b::c"), m("a")),
    ]
    .into_iter()
    .collect();
    assert_eq!(edges, expected);
    let cycle = cycle_at(&edges, 1).expect("a ↔ b through b::c");
    assert_eq!(show(&cycle), "a → b → a");
    assert!(cycle_at(&edges, 2).is_some(), "a → b::c → a");
    let mut acyclic = edges.clone();
    acyclic.remove(&(m("b::c"), m("a")));
    assert_eq!(cycle_at(&acyclic, 1), None);
    assert_eq!(cycle_at(&acyclic, 2), None);
}
