//! The systemd units in dist/systemd are valid for systemd (`systemd-analyze verify`), keep
//! the hardening the README promises, and start the daemons from their configuration files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 2] = ["shallot-relay.service", "shallot-authority.service"];

fn unit(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dist/systemd")
            .join(name),
    )
    .unwrap()
}

#[test]
fn units_are_hardened_and_use_the_config_files() {
    for name in UNITS {
        let text = unit(name);
        for line in [
            "User=shallot",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "StateDirectoryMode=0700",
            "CapabilityBoundingSet=\n",
            "--config /etc/shallot/",
        ] {
            assert!(text.contains(line), "{name} lacks {line:?}");
        }
    }
    // The relay's resident memory stays near its budget only with few glibc arenas (README).
    assert!(unit("shallot-relay.service").contains("\nEnvironment=MALLOC_ARENA_MAX=2\n"));
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let available = Command::new("systemd-analyze").arg("--version").output();
    if !available.is_ok_and(|o| o.status.success()) {
        println!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = shallot_rt::scratch::path("units");
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for name in UNITS {
        // verify checks that ExecStart's binary exists: point it at the one just built.
        let text = unit(name).replace("/usr/local/bin/shallot", env!("CARGO_BIN_EXE_shallot"));
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    assert!(!err.contains("Unknown key"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
