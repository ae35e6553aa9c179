//! The churn simulation of issue 12 (`docs/churn.md`): how many waiting messages survive
//! mailbox relays coming and going, and what repair costs.
//!
//! It runs the real placement and repair decisions (`shallot_proto::placement::Ring`,
//! `shallot_proto::repair::{duty, leaving, plan, reconcile}`) over a population of relays
//! whose sessions are drawn at random; only the network is simulated (a push arrives if its
//! target is up). Deterministic for a given seed.
//!
//! ```text
//! cargo run -p shallot-proto --example churn -- [--relays N] [--messages K] [--seed S]
//!     [--repair-mins R] [--consensus-mins P] [--graceful G] [--svg FILE]
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shallot_crypto::keys::RelayId;
use shallot_proto::mailbox::{EnvelopeId, MailboxId};
use shallot_proto::placement::{Ring, REPLICAS};
use shallot_proto::repair::{self, Duty, Held, Senders, Summary, HOLDERS};

/// Assumed size of one sealed envelope on the wire, for the traffic figures.
const ENVELOPE_BYTES: u64 = 4096;
/// One digest exchange for one mailbox with one peer: mailbox id and digest.
const DIGEST_BYTES: u64 = 64;
/// Hours at which retrievability is reported.
const REPORT_HOURS: [u64; 3] = [1, 24, 168];

#[derive(Clone)]
struct Params {
    relays: usize,
    messages: usize,
    seed: u64,
    repair_secs: u64,
    consensus_secs: u64,
    graceful: f64,
    hours: u64,
}

/// One relay's id: its index in the first 8 bytes, so the simulation finds it without a map.
fn rid(i: usize) -> RelayId {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&(i as u64).to_be_bytes());
    b[8..].copy_from_slice(&[0x5a; 12]);
    RelayId(b)
}

fn idx(r: &RelayId) -> usize {
    let mut b = [0u8; 8];
    b.copy_from_slice(&r.0[..8]);
    u64::from_be_bytes(b) as usize
}

struct Sim {
    p: Params,
    rng: StdRng,
    /// Hourly leave rate λ: a share `churn` of the relays up at the start of an hour has left
    /// by its end, `1 - e^-λ = churn`.
    lambda: f64,
    now: u64,
    alive: Vec<bool>,
    /// Messages each relay holds (may list messages it no longer holds; checked on use).
    holds: Vec<Vec<u32>>,
    /// Relays holding each message.
    holders: Vec<Vec<usize>>,
    /// Messages whose repair must run at the next round.
    dirty: Vec<bool>,
    mailboxes: Vec<MailboxId>,
    leaves: BinaryHeap<Reverse<(u64, usize)>>,
    ring: Ring,
    srv: [u8; 32],
    pushes: u64,
    digests: u64,
    relay_hours: f64,
    at_switch: f64,
}

impl Sim {
    fn new(p: Params, churn: f64) -> Sim {
        let mut rng = StdRng::seed_from_u64(p.seed);
        let lambda = -(1.0 - churn).ln();
        let mut sim = Sim {
            lambda,
            now: 0,
            alive: Vec::new(),
            holds: Vec::new(),
            holders: Vec::new(),
            dirty: Vec::new(),
            mailboxes: Vec::new(),
            leaves: BinaryHeap::new(),
            ring: Ring::default(),
            srv: rng.gen(),
            rng,
            pushes: 0,
            digests: 0,
            relay_hours: 0.0,
            at_switch: 1.0,
            p,
        };
        for _ in 0..sim.p.relays {
            sim.join();
        }
        sim.ring = sim.consensus();
        for m in 0..sim.p.messages {
            let mailbox = MailboxId(sim.rng.gen());
            sim.mailboxes.push(mailbox);
            sim.holders.push(Vec::new());
            sim.dirty.push(true);
            // The sender deposits on the replicas its consensus names.
            for r in sim.ring.replicas(&mailbox, REPLICAS) {
                sim.give(idx(&r), m as u32);
            }
        }
        sim
    }

    /// A new relay comes up now; its session length is drawn from an exponential.
    fn join(&mut self) {
        let i = self.alive.len();
        self.alive.push(true);
        self.holds.push(Vec::new());
        let u: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
        let session = (-u.ln() / self.lambda * 3600.0) as u64;
        self.leaves.push(Reverse((self.now + session.max(1), i)));
    }

    /// The consensus now: every relay up at vote time.
    fn consensus(&self) -> Ring {
        let up = (0..self.alive.len()).filter(|i| self.alive[*i]).map(rid);
        Ring::new(&self.srv, 0, up)
    }

    fn has(&self, relay: usize, m: u32) -> bool {
        self.holders[m as usize].contains(&relay)
    }

    /// `to` receives a copy of message `m` if it is up and lacks it.
    fn push(&mut self, to: usize, m: u32) {
        if self.alive[to] && !self.has(to, m) {
            self.pushes += 1;
            self.give(to, m);
        }
    }

    fn give(&mut self, relay: usize, m: u32) {
        self.holders[m as usize].push(relay);
        self.holds[relay].push(m);
    }

    fn drop_message(&mut self, relay: usize, m: u32) {
        self.holders[m as usize].retain(|r| *r != relay);
    }

    fn held_by(&self, relay: usize) -> Vec<u32> {
        let mut v: Vec<u32> = self.holds[relay]
            .iter()
            .copied()
            .filter(|m| self.has(relay, *m))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Relay `i` leaves now, handing its mailboxes over first if it leaves gracefully.
    fn leave(&mut self, i: usize) {
        let held = self.held_by(i);
        if self.rng.gen_bool(self.p.graceful) {
            let me = rid(i);
            for m in &held {
                let alive = &self.alive;
                let to = repair::leaving(&me, &self.ring, &self.mailboxes[*m as usize], |r| {
                    !alive[idx(r)]
                });
                for r in to {
                    self.push(idx(&r), *m);
                }
            }
        }
        self.alive[i] = false;
        for m in held {
            self.drop_message(i, m);
            self.dirty[m as usize] = true;
        }
        self.holds[i].clear();
        // The population stays the same size: someone else comes up.
        self.join();
    }

    /// One anti-entropy round on every relay, after `plan` if the ring changed.
    ///
    /// A mailbox whose holders all hold it, on a ring and with relays up as at its last
    /// round, would be decided the same again: it only pays its digest exchanges.
    fn repair_round(&mut self, old: Option<&Ring>) {
        for m in 0..self.mailboxes.len() as u32 {
            if old.is_none() && !self.dirty[m as usize] {
                self.digests += (self.holders[m as usize].len() * (HOLDERS - 1)) as u64;
                continue;
            }
            let (pushes_before, holders_before) = (self.pushes, self.holders[m as usize].clone());
            let mailbox = self.mailboxes[m as usize];
            let envelope = envelope_of(m);
            for h in holders_before.iter().copied() {
                if !self.alive[h] || !self.has(h, m) {
                    continue;
                }
                let me = rid(h);
                let (pushes, duty) = {
                    let alive = &self.alive;
                    let down = |r: &RelayId| !alive.get(idx(r)).copied().unwrap_or(false);
                    let held = [Held {
                        mailbox,
                        ids: vec![envelope],
                    }];
                    let pushes = old
                        .map(|old| {
                            repair::plan(&me, old, &self.ring, &held, Senders::Nearest, down).pushes
                        })
                        .unwrap_or_default();
                    (pushes, repair::duty(&me, &self.ring, &mailbox, down))
                };
                for t in pushes {
                    self.push(idx(&t.to), m);
                }
                let mine = Summary {
                    live: BTreeSet::from([envelope]),
                    gone: BTreeSet::new(),
                };
                match duty {
                    Duty::Keep { peers } => {
                        for peer in peers {
                            self.exchange(&mailbox, &mine, idx(&peer), m);
                        }
                    }
                    Duty::HandOver { to } => {
                        let mut settled = true;
                        for peer in to {
                            let pi = idx(&peer);
                            self.exchange(&mailbox, &mine, pi, m);
                            settled &= self.has(pi, m);
                        }
                        if settled {
                            self.drop_message(h, m);
                        }
                    }
                }
            }
            let full = self.holders[m as usize].len() >= HOLDERS;
            self.dirty[m as usize] =
                self.pushes != pushes_before || self.holders[m as usize] != holders_before || !full;
        }
    }

    /// One digest exchange from `h` to `peer` about message `m`, and the pushes it calls for.
    fn exchange(&mut self, mailbox: &MailboxId, mine: &Summary, peer: usize, m: u32) {
        if !self.alive[peer] {
            return;
        }
        self.digests += 1;
        let theirs = if self.has(peer, m) {
            mine.clone()
        } else {
            Summary::default()
        };
        if repair::digest(mailbox, mine) == repair::digest(mailbox, &theirs) {
            return;
        }
        if !repair::reconcile(mine, &theirs).send.is_empty() {
            self.push(peer, m);
        }
    }

    /// Shares of messages a recipient finds (held by an up relay among the replicas named by
    /// its consensus or the one before, which owners also read while the ring settles), and
    /// of messages still held by any up relay.
    fn retrievable(&self, previous: &Ring) -> (f64, f64) {
        let (mut found, mut held) = (0usize, 0usize);
        for (m, mailbox) in self.mailboxes.iter().enumerate() {
            let has = |r: &RelayId| self.alive[idx(r)] && self.has(idx(r), m as u32);
            if self.ring.replicas(mailbox, REPLICAS).iter().any(has)
                || previous.replicas(mailbox, REPLICAS).iter().any(has)
            {
                found += 1;
            }
            if self.holders[m].iter().any(|r| self.alive[*r]) {
                held += 1;
            }
        }
        let n = self.mailboxes.len().max(1) as f64;
        (found as f64 / n, held as f64 / n)
    }

    /// Runs the whole period; returns retrievability and survival at each hour (index 0 =
    /// start), measured once relays have acted on that hour's consensus (`at_switch` keeps
    /// the last hour's figure from before they did).
    fn run(&mut self) -> Vec<(f64, f64)> {
        let mut previous = self.ring.clone();
        let mut curve = vec![self.retrievable(&previous)];
        let end = self.p.hours * 3600;
        let step = self.p.repair_secs.max(1);
        let mut next_consensus = self.p.consensus_secs;
        let mut last_ring: Option<Ring> = None;
        while self.now < end {
            let t = self.now + step;
            while let Some(Reverse((when, i))) = self.leaves.peek().copied() {
                if when > t {
                    break;
                }
                self.leaves.pop();
                self.now = when;
                self.leave(i);
            }
            self.now = t;
            if t >= next_consensus {
                next_consensus += self.p.consensus_secs;
                let fresh = self.consensus();
                previous = std::mem::replace(&mut self.ring, fresh);
                last_ring = Some(previous.clone());
            }
            let hour = t.is_multiple_of(3600);
            if hour {
                self.at_switch = self.retrievable(&previous).0;
            }
            let old = last_ring.take();
            self.repair_round(old.as_ref());
            if hour {
                curve.push(self.retrievable(&previous));
            }
            self.relay_hours += self.p.relays as f64 * step as f64 / 3600.0;
        }
        curve
    }
}

/// The one envelope of message `m`.
fn envelope_of(m: u32) -> EnvelopeId {
    let b = m.to_be_bytes();
    EnvelopeId([
        b[0], b[1], b[2], b[3], b[0], b[1], b[2], b[3], b[0], b[1], b[2], b[3], 0, 0, 0, 0,
    ])
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let p = Params {
        relays: arg(&args, "--relays", 10_000),
        messages: arg(&args, "--messages", 20_000),
        seed: arg(&args, "--seed", 1),
        repair_secs: arg(&args, "--repair-mins", 10u64) * 60,
        consensus_secs: arg(&args, "--consensus-mins", 60u64) * 60,
        graceful: arg(&args, "--graceful", 0.5f64),
        hours: arg(&args, "--hours", 168u64),
    };
    let svg_path: String = arg(&args, "--svg", "docs/churn.svg".to_string());
    println!(
        "relays {}, messages {} (one per mailbox), holders {} ({} replicas + spares), repair every {} min, consensus every {} min, graceful leaves {:.0} %, seed {}",
        p.relays,
        p.messages,
        HOLDERS,
        REPLICAS,
        p.repair_secs / 60,
        p.consensus_secs / 60,
        p.graceful * 100.0,
        p.seed
    );
    println!();
    println!("| churn/h | retrievable 1 h | 24 h | 7 d | not retrievable at 7 d | 7 d, before relays act on the new consensus | envelope pushes /relay/h | digest exchanges /relay/h | repair KiB /relay/h |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut curves = Vec::new();
    for churn in [0.05, 0.20, 0.50] {
        let mut sim = Sim::new(p.clone(), churn);
        let curve = sim.run();
        let at = |h: u64| curve.get(h as usize).map_or(f64::NAN, |c| c.0);
        let survived = curve.last().map_or(f64::NAN, |c| c.1);
        let pushes = sim.pushes as f64 / sim.relay_hours;
        let digests = sim.digests as f64 / sim.relay_hours;
        let kib = (sim.pushes * ENVELOPE_BYTES + sim.digests * DIGEST_BYTES) as f64
            / 1024.0
            / sim.relay_hours;
        let lost = ((1.0 - at(168)) * p.messages as f64).round();
        let gone = ((1.0 - survived) * p.messages as f64).round();
        println!(
            "| {:.0} % | {:.4} % | {:.4} % | {:.4} % | {} ({} held nowhere) of {} | {:.4} % | {:.3} | {:.1} | {:.2} |",
            churn * 100.0,
            at(REPORT_HOURS[0]) * 100.0,
            at(REPORT_HOURS[1]) * 100.0,
            at(REPORT_HOURS[2]) * 100.0,
            lost,
            gone,
            p.messages,
            sim.at_switch * 100.0,
            pushes,
            digests,
            kib
        );
        curves.push((churn, curve.iter().map(|c| c.0).collect::<Vec<f64>>()));
    }
    let svg = plot(&curves, &p);
    match std::fs::write(&svg_path, svg) {
        Ok(()) => println!("\nplot written to {svg_path}"),
        Err(e) => eprintln!("cannot write {svg_path}: {e}"),
    }
}

/// Retrievable share against time, one line per churn rate, as a small hand-written SVG.
fn plot(curves: &[(f64, Vec<f64>)], p: &Params) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 80.0, 150.0, 40.0, 50.0);
    let lowest = curves
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .fold(1.0f64, f64::min);
    // The y axis spans from a round figure below the lowest point to 100 %.
    let mut floor = 0.999;
    while floor > lowest && floor > 0.0 {
        floor = 1.0 - (1.0 - floor) * 10.0;
    }
    let floor = floor.max(0.0);
    let hours = p.hours as f64;
    let x = |t: f64| left + (w - left - right) * t / hours;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v - floor) / (1.0 - floor));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="14">Messages retrievable under churn ({} relays, {} messages)</text>"#,
        left, p.relays, p.messages
    );
    for i in 0..=4 {
        let v = floor + (1.0 - floor) * i as f64 / 4.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.3} %</text>"##,
            w - right,
            left - 6.0,
            yy + 4.0,
            v * 100.0
        );
    }
    for d in 0..=7 {
        let xx = x(d as f64 * 24.0);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{d} d</text>"##,
            h - bottom,
            h - bottom + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since deposit (sender and recipient offline)</text>"#,
        left + (w - left - right) / 2.0,
        h - 10.0
    );
    let colours = ["#1b9e77", "#d95f02", "#7570b3"];
    for (k, (churn, curve)) in curves.iter().enumerate() {
        let colour = colours[k % colours.len()];
        let points: Vec<String> = curve
            .iter()
            .enumerate()
            .map(|(t, v)| format!("{:.1},{:.1}", x(t as f64), y(v.max(floor))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = top + 20.0 + 20.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{:.0} % churn/h</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 35.0,
            ly + 4.0,
            churn * 100.0
        );
    }
    s.push_str("</svg>\n");
    s
}
