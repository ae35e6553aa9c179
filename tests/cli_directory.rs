//! `shallot directory init|run` as a user runs them: the key file's permissions, the
//! printed network.toml entry, one-line errors, and a running authority that serves a
//! consensus over real TCP.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn shallot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shallot"))
        .args(args)
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    shallot_rt::scratch::path(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_a_private_key_and_prints_the_entry() {
    let dir = scratch("init");
    let d = dir.to_str().unwrap();
    let out = shallot(&[
        "directory",
        "init",
        "--data-dir",
        d,
        "--name",
        "auth9",
        "--address",
        "127.9.0.1:7000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("[[authority]]\nname = \"auth9\"\naddress = \"127.9.0.1:7000\"\nkey = \"")
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("authority.key")), 0o600);

    // The printed entry is a valid network file on its own.
    let entry = &stdout[stdout.find("[[authority]]").unwrap()..];
    let net = dir.join("network.toml");
    std::fs::write(&net, entry).unwrap();
    let parsed = shallot_directory::NetworkFile::load(&net).unwrap();
    assert_eq!(parsed.authorities[0].name, "auth9");

    // A second init refuses to overwrite the key, on one line.
    let again = shallot(&["directory", "init", "--data-dir", d]);
    assert_eq!(again.status.code(), Some(1));
    let err = stderr(&again);
    assert!(
        err.starts_with("shallot: ") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn user_errors_are_one_line() {
    let dir = scratch("errors");
    let d = dir.to_str().unwrap();
    let initialised = scratch("errors-init");
    let i = initialised.to_str().unwrap();
    assert!(shallot(&["directory", "init", "--data-dir", i])
        .status
        .success());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["directory", "init"], "needs --data-dir"),
        (
            vec![
                "directory",
                "run",
                "--data-dir",
                i,
                "--listen",
                "127.0.0.1:0",
                "--network",
                "/nonexistent/network.toml",
            ],
            "cannot read network file",
        ),
        (
            vec!["directory", "init", "--data-dir", d, "--name", "a\"b"],
            "invalid --name",
        ),
    ];
    for (args, want) in cases {
        let out = shallot(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("shallot: ") && err.contains(want), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_serves_a_consensus() {
    let dir = scratch("run");
    let d = dir.to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = shallot(&["directory", "init", "--data-dir", d, "--address", &addr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let entry = &stdout[stdout.find("[[authority]]").unwrap()..];
    let net = dir.join("network.toml");
    std::fs::write(
        &net,
        format!("{entry}\n[params]\ntest_network = true\nvoting_interval_secs = 2\n"),
    )
    .unwrap();

    // Not listed in the network file: refused on one line.
    let other = scratch("other");
    let o = other.to_str().unwrap();
    assert!(shallot(&["directory", "init", "--data-dir", o])
        .status
        .success());
    let out = shallot(&[
        "directory",
        "run",
        "--data-dir",
        o,
        "--listen",
        "127.0.0.1:0",
        "--network",
        net.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not listed in the network file"),
        "{}",
        stderr(&out)
    );

    let _child = Killed(
        Command::new(env!("CARGO_BIN_EXE_shallot"))
            .args([
                "directory",
                "run",
                "--data-dir",
                d,
                "--listen",
                &addr,
                "--network",
                net.to_str().unwrap(),
            ])
            // Stops with this test process however it ends.
            .env("SHALLOT_STOP_ON_STDIN_EOF", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /consensus HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") {
                assert!(reply.contains("shallot-consensus 4\n"), "{reply}");
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no consensus served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
