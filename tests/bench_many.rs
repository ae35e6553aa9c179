//! `shallot bench --many` at a small size: 12 relay processes, 3 authority processes and 40
//! clients in the bench process, exchanging messages in pairs for 20 seconds over real TCP on
//! loopback. The run must deliver what was sent, each message once, and report every figure
//! it promises (latency percentiles in order, relay CPU, relay and authority memory,
//! directory bytes) with a plot. Performance itself is not asserted: that is the
//! benchmark's to report, not a test's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::process::Command;

#[test]
fn a_small_many_node_run_delivers_and_reports_every_figure() {
    let svg = shallot_rt::scratch::path("many").with_extension("svg");
    let out = Command::new(env!("CARGO_BIN_EXE_shallot"))
        .args([
            "bench",
            "--many",
            "--relays",
            "12",
            "--clients",
            "40",
            "--duration",
            "20",
            "--interval",
            "4",
            "--json",
            "--svg",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench --many failed: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let figures: HashMap<String, f64> = json["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            let name = name.strip_prefix("many-node run: ").unwrap().to_string();
            (name, f["value"].as_f64().unwrap())
        })
        .collect();
    let get = |name: &str| -> f64 {
        *figures
            .get(name)
            .unwrap_or_else(|| panic!("no figure {name:?} in {figures:?}"))
    };

    // 40 clients, one message every 4 s for 20 s: about 200 messages, each offered for sure.
    let sent = get("messages sent");
    let delivered = get("messages delivered");
    assert!(sent >= 100.0, "only {sent} sent; {stderr}");
    assert!(delivered <= sent, "{delivered} delivered of {sent}");
    // Every send either stores the message on its mailboxes or fails; under heavy load some
    // may still be on their way at the end, but most must have arrived.
    assert!(
        delivered >= sent / 2.0,
        "only {delivered} of {sent} delivered; {stderr}"
    );
    assert_eq!(get("messages that arrived twice"), 0.0);

    let (p50, p90, p99) = (
        get("latency send to arrival, p50"),
        get("latency send to arrival, p90"),
        get("latency send to arrival, p99"),
    );
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99, "{p50} {p90} {p99}");
    // Were every tenth's p99 below the p50, about 1 % of the messages would take the p50 or
    // longer, not half of them.
    let worst_tenth = get("latency p99 in the worst tenth of the voting period");
    assert!(
        worst_tenth >= p50,
        "worst tenth's p99 {worst_tenth} below the p50 {p50}"
    );
    assert!(get("relay CPU per message delivered (all relays)") > 0.0);
    for memory in [
        "relay resident memory, average",
        "relay resident memory, largest",
        "authority resident memory, average",
        "client process resident memory per client",
    ] {
        assert!(get(memory) > 1.0 / 1024.0, "{memory}: {}", get(memory));
    }
    assert!(get("relay resident memory, largest") >= get("relay resident memory, average"));
    // A new client has no consensus: it fetches one whole.
    assert!(get("directory bytes fetched per client at bootstrap") > 100.0);
    // Voting every 10 s, each client takes at least one newer consensus in the 20 s phase,
    // from its guard or an authority; both sources' bytes count.
    assert!(get("directory bytes fetched per client per hour") > 0.0);

    let plot = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(
        plot.starts_with("<svg") && plot.contains("<polyline"),
        "{plot}"
    );
    assert!(plot.contains("p99"));
}
