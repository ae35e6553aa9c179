//! The layering the crates promise, checked from Cargo's own dependency graph
//! (`cargo metadata --offline --filter-platform <host>`, no build): the authority's HTTP server (axum, hyper) is compiled
//! into the authority alone, and the terminal libraries (ratatui, crossterm) into the UI alone.
//! Relays and clients must not carry either.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// The normal (non-dev, non-build) dependency graph of the workspace: package name to the
/// names of its normal dependencies.
fn normal_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // For this machine's platform only: offline, the sources of other platforms' crates
    // (never downloaded by a build here) are not there to read.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .trim()
        .to_string();
    let out = Command::new(cargo)
        .args(["metadata", "--offline", "--format-version", "1"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let name = name_of[node["id"].as_str().unwrap()].to_string();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| name_of[d["pkg"].as_str().unwrap()].to_string())
            .collect();
        graph.insert(name, deps);
    }
    graph
}

/// Every package `root` compiles in a normal build, itself included.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    assert!(graph.contains_key(root), "{root} is not in the workspace");
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(graph.get(&p).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn http_server_and_terminal_libraries_stay_in_their_crates() {
    let graph = normal_graph();
    // The check itself must be able to fail: the crates that own these libraries do reach them.
    assert!(closure(&graph, "shallot-authority").contains("axum"));
    assert!(closure(&graph, "shallot-authority").contains("hyper"));
    assert!(closure(&graph, "shallot-tui").contains("ratatui"));
    for krate in [
        "shallot-directory",
        "shallot-net",
        "shallot-relay",
        "shallot-client",
    ] {
        let reached = closure(&graph, krate);
        for banned in ["axum", "hyper", "hyper-util", "ratatui", "crossterm"] {
            assert!(
                !reached.contains(banned),
                "{krate} compiles {banned}: it belongs to the authority or the UI crate alone"
            );
        }
        assert!(
            !reached.contains("shallot-authority"),
            "{krate} depends on the authority"
        );
        assert!(
            !reached.contains("shallot-tui"),
            "{krate} depends on the UI"
        );
    }
}
