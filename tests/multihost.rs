//! The network across hosts: `scripts/testbed.sh` puts every authority, relay and user in its
//! own Linux network namespace with its own address (five /16s of the documentation and
//! benchmarking ranges) on one isolated bridge, starts them with the operator's commands, and
//! checks circuits, offline delivery both ways, a relay host lost and back, an authority host
//! gone, and a user back after its consensus expired who gets a newer one from its guard with
//! no authority in reach. Loopback hides timing that real hosts have (a silent host costs a
//! connect timeout, not an instant refusal); this is where that shows.
//!
//! It needs root and `ip netns`; without them it says so on one line and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

/// Why the test bed cannot run here, if it cannot.
fn cannot_run() -> Option<String> {
    let probe = format!("shallot-probe-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(out) => Some(format!(
            "`ip netns add` failed (root needed): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("no `ip` command: {e}")),
    }
}

#[test]
fn a_network_across_hosts_in_namespaces() {
    if let Some(why) = cannot_run() {
        eprintln!("SKIPPED multi-host test bed: {why}");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed.sh");
    let out = Command::new("bash")
        .args([script, "run", env!("CARGO_BIN_EXE_shallot")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "the test bed failed:\n{stdout}\n{stderr}"
    );
    // Every check ran, in order.
    for step in [
        "consensus published",
        "offline delivery alice -> bob",
        "offline delivery bob -> alice",
        "relay host lost and back",
        "authority host gone: the network carries on",
        "a user back after expiry, no authority in reach: a consensus from a guard",
    ] {
        assert!(stdout.contains(step), "missing step {step:?}:\n{stdout}");
    }
    // No retry was needed: on real hosts the first try must work, as on loopback.
    assert!(
        !stdout.contains("failed"),
        "a step needed a retry:\n{stdout}\n{stderr}"
    );
}
