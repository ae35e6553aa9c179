//! The real `shallot demo` binary in a pseudo-terminal, as a person runs it: the echo contact
//! keeps answering long after start (five voting intervals and more), and every way the demo
//! can be stopped (`q`, SIGTERM, the terminal closing) restores the terminal and removes its
//! temporary directory. Also: a `shallot testnet --processes` that dies takes its nodes with
//! it, and one started again on the same directory is ready for circuits when it says so.
//!
//! The tests share one lock: each demo is a whole network, and two at once on a 2-core
//! machine would only slow each other down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use shallot_rt::lock;

/// The demo's voting interval (`shallot testnet`'s default).
const VOTING_INTERVAL: Duration = Duration::from_secs(3);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    lock(&ONE_AT_A_TIME)
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = shallot_rt::scratch::path(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `shallot` running in a pseudo-terminal, with what it draws parsed into a screen.
struct Pty {
    child: Box<dyn Child + Send + Sync>,
    master: Option<Box<dyn MasterPty + Send>>,
    writer: Option<Box<dyn Write + Send>>,
    screen: Arc<Mutex<vt100::Parser>>,
    /// The temporary directory given to the process as `TMPDIR`.
    tmp: PathBuf,
}

impl Pty {
    /// Runs `shallot ARGS` in a `cols`×`rows` terminal, with `TMPDIR` set to a scratch
    /// directory of its own.
    fn spawn(args: &[&str], cols: u16, rows: u16) -> Pty {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let tmp = scratch("demo-tmp");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_shallot"));
        cmd.args(args);
        cmd.env("TMPDIR", &tmp);
        cmd.env("TERM", "xterm-256color");
        cmd.env("TZ", "UTC");
        let child = pair.slave.spawn_command(cmd).unwrap();
        drop(pair.slave);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let mut reader = pair.master.try_clone_reader().unwrap();
        let parser = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends when every holder of the terminal's other side has gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                lock(&parser).process(&buf[..n]);
            }
        });
        let writer = pair.master.take_writer().unwrap();
        Pty {
            child,
            master: Some(pair.master),
            writer: Some(writer),
            screen,
            tmp,
        }
    }

    fn contents(&self) -> String {
        lock(&self.screen).screen().contents()
    }

    /// Waits until the screen satisfies `ready`, failing with the screen after `limit`.
    fn wait_for(&mut self, what: &str, limit: Duration, ready: impl Fn(&vt100::Screen) -> bool) {
        let start = Instant::now();
        loop {
            {
                let parser = lock(&self.screen);
                if ready(parser.screen()) {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "shallot exited ({status:?}) while waiting for {what}; screen:\n{}",
                    self.contents()
                );
            }
            assert!(
                start.elapsed() < limit,
                "no {what} after {limit:?}; screen:\n{}",
                self.contents()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_text(&mut self, text: &str, limit: Duration) {
        let t = text.to_string();
        self.wait_for(&format!("{text:?} on screen"), limit, move |s| {
            s.contents().contains(&t)
        });
    }

    fn type_text(&mut self, text: &str) {
        let w = self.writer.as_mut().unwrap();
        w.write_all(text.as_bytes()).unwrap();
        w.flush().unwrap();
    }

    /// Waits for the process to exit, failing after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> portable_pty::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "shallot did not exit within {limit:?}; screen:\n{}",
                    self.contents()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.process_id().unwrap()
    }

    fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// What `stty -a` says of the terminal's settings.
    fn stty(&self) -> String {
        let tty = self.master.as_ref().unwrap().tty_name().unwrap();
        let out = std::process::Command::new("stty")
            .arg("-F")
            .arg(tty)
            .arg("-a")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Opens the demo and waits for the chat with the echo conversation.
    fn demo() -> Pty {
        let mut pty = Pty::spawn(&["demo"], 100, 30);
        pty.wait_for_text("to echo", Duration::from_secs(120));
        pty
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Whether `dir` has nothing left in it (the demo's own directory lives inside).
fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// Asserts the terminal is back as it was: main screen, cursor shown, no bracketed paste,
/// and line editing and echo on.
fn assert_terminal_restored(pty: &Pty) {
    {
        let parser = lock(&pty.screen);
        let screen = parser.screen();
        assert!(!screen.alternate_screen(), "still on the alternate screen");
        assert!(!screen.hide_cursor(), "cursor still hidden");
        assert!(!screen.bracketed_paste(), "bracketed paste still on");
    }
    let stty = pty.stty();
    let words: Vec<&str> = stty.split_whitespace().collect();
    assert!(
        words.contains(&"icanon") && words.contains(&"echo"),
        "terminal still in raw mode: {stty}"
    );
}

#[test]
fn demo_echo_answers_long_after_start_and_q_cleans_up() {
    let _one = one_at_a_time();
    let mut pty = Pty::demo();
    // The echo used to stop answering once its first consensus expired (three intervals).
    std::thread::sleep(VOTING_INTERVAL * 6);
    pty.type_text("hello after six intervals\r");
    pty.wait_for_text("echo: hello after six intervals", Duration::from_secs(60));
    pty.wait_for(
        "the message acknowledged (✓✓)",
        Duration::from_secs(60),
        |s| {
            s.contents()
                .lines()
                .any(|l| l.contains("hello after six intervals") && l.contains("✓✓"))
        },
    );
    // A second round, later again, on circuits and consensuses that have moved on.
    std::thread::sleep(VOTING_INTERVAL * 2);
    pty.type_text("and again\r");
    pty.wait_for_text("echo: and again", Duration::from_secs(60));

    // Esc leaves the input line; q quits.
    pty.type_text("\x1b");
    // Seen on screen before q goes: sent together, the two bytes would read as Alt-q.
    pty.wait_for_text("Tab or Enter to write", Duration::from_secs(30));
    pty.type_text("q");
    let status = pty.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "demo exited with {status:?}");
    assert_terminal_restored(&pty);
    assert!(
        is_empty(&pty.tmp),
        "the demo left files behind in {}",
        pty.tmp.display()
    );
}

#[test]
fn demo_sigterm_restores_the_terminal_and_removes_its_directory() {
    let _one = one_at_a_time();
    let mut pty = Pty::demo();
    assert!(!is_empty(&pty.tmp), "the demo keeps its files in TMPDIR");
    pty.signal("TERM");
    let status = pty.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "demo exited with {status:?}");
    assert_terminal_restored(&pty);
    assert!(is_empty(&pty.tmp), "the demo left files behind");
}

#[test]
fn demo_sighup_restores_the_terminal_and_removes_its_directory() {
    let _one = one_at_a_time();
    let mut pty = Pty::demo();
    assert!(!is_empty(&pty.tmp));
    // What the kernel sends when the terminal window is closed. (Closing the master here
    // would not hang up: the screen reader thread holds a copy of it.)
    pty.signal("HUP");
    let status = pty.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "demo exited with {status:?}");
    assert_terminal_restored(&pty);
    assert!(is_empty(&pty.tmp), "the demo left files behind");
}

/// The pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

fn wait_until_gone(needle: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() {
            return;
        }
        if start.elapsed() > limit {
            for pid in &left {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            panic!("processes left behind after {limit:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `shallot testnet --processes` with 4 relays in `net_dir` as a plain child (no
/// terminal of its own, so no hangup from a terminal can stop its nodes for it), and waits
/// for its "ready:" line.
fn testnet_processes(net_dir: &Path) -> std::process::Child {
    use std::io::BufRead;
    let net_arg = net_dir.display().to_string();
    let mut testnet = std::process::Command::new(env!("CARGO_BIN_EXE_shallot"))
        .args(["testnet", "--dir", &net_arg, "--relays", "4", "--processes"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = testnet.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(120));
    assert!(
        ready.as_deref().is_ok_and(|l| l.starts_with("ready:")),
        "testnet not ready: {ready:?}"
    );
    testnet
}

/// Sends `signal` to `testnet` and waits until it and every node it started have exited.
fn stop_testnet(mut testnet: std::process::Child, net_dir: &Path, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &testnet.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let start = Instant::now();
    while testnet.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "testnet still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until_gone(&net_dir.display().to_string(), Duration::from_secs(30));
}

/// Starts `shallot testnet --processes`, sends it `signal` once ready, and checks that every
/// node it started exits.
fn testnet_processes_die_with_it(signal: &str) {
    let _one = one_at_a_time();
    let dir = scratch(&format!("testnet-{}", signal.to_lowercase()));
    let net_dir = dir.join("net");
    let testnet = testnet_processes(&net_dir);
    let nodes = processes_mentioning(&net_dir.display().to_string());
    // The testnet itself, 3 authorities and 4 relays.
    assert!(
        nodes.len() >= 8,
        "expected 7 nodes and the testnet: {nodes:?}"
    );
    stop_testnet(testnet, &net_dir, signal);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `shallot testnet --processes` started again on the same directory says it is ready only
/// once the consensus lists its relays where they listen and they hold it: a client builds
/// circuits at once. (Its authorities serve the consensus kept from the last run, which
/// named the relays' addresses of then.)
#[test]
fn a_testnet_started_again_is_ready_for_circuits_when_it_says_so() {
    let _one = one_at_a_time();
    let dir = scratch("testnet-again");
    let net_dir = dir.join("net");
    stop_testnet(testnet_processes(&net_dir), &net_dir, "TERM");
    let testnet = testnet_processes(&net_dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shallot"))
        .args(["--no-passphrase", "circuit", "--count", "3", "--network"])
        .arg(net_dir.join("network.toml"))
        .arg("--data-dir")
        .arg(dir.join("client"))
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    stop_testnet(testnet, &net_dir, "TERM");
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("built 3 circuits"), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn testnet_nodes_stop_on_sighup() {
    testnet_processes_die_with_it("HUP");
}

#[test]
fn testnet_nodes_stop_when_it_is_killed() {
    // SIGKILL cannot be caught: the nodes notice their parent is gone by themselves.
    testnet_processes_die_with_it("KILL");
}
