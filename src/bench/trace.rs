//! `shallot bench --trace`: one message's path through the test network, or with `--only
//! circuits` one circuit build's, step by step, each with its time (`README.md`,
//! "Performance").
//!
//! The steps are `tracing` events with the target `shallot_trace`, emitted by the sender, the
//! circuit builder, the relays on its circuits, the mailbox relays and the recipient (all in
//! this process: the test network runs in-process). Nothing listens to them in a normal run, so each costs
//! only a disabled callsite's check; with `--trace` a [`Recorder`] keeps those that happen
//! while it is switched on.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The target of the trace events.
pub const TARGET: &str = "shallot_trace";

/// One recorded step.
#[derive(Debug, Clone)]
pub struct Step {
    /// When it happened.
    pub at: Instant,
    /// The event's message and fields, as `message key=value ...`.
    pub text: String,
}

/// Keeps the trace events that happen while it is on.
#[derive(Clone, Default)]
pub struct Recorder {
    on: Arc<AtomicBool>,
    steps: Arc<Mutex<Vec<Step>>>,
}

impl Recorder {
    /// Installs a recorder as the process's subscriber (listening to [`TARGET`] only), off
    /// until [`Recorder::start`]. Fails if a subscriber is installed already.
    pub fn install() -> Result<Recorder, String> {
        let recorder = Recorder::default();
        let layer = recorder
            .clone()
            .with_filter(Targets::new().with_target(TARGET, LevelFilter::TRACE));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())?;
        Ok(recorder)
    }

    /// Forgets what was recorded and starts recording.
    pub fn start(&self) {
        shallot_rt::lock(&self.steps).clear();
        self.on.store(true, Ordering::SeqCst);
    }

    /// Stops recording and returns the steps, in the order they happened.
    pub fn stop(&self) -> Vec<Step> {
        self.on.store(false, Ordering::SeqCst);
        std::mem::take(&mut *shallot_rt::lock(&self.steps))
    }
}

/// Writes an event's fields as text.
#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let at = Instant::now();
        let mut fields = Fields::default();
        event.record(&mut fields);
        shallot_rt::lock(&self.steps).push(Step { at, text: fields.0 });
    }
}

/// What a trace found: every time, fastest first, the path of two runs (each a message sent,
/// or a circuit built), and each step's typical time over the runs that took the most common
/// path.
pub struct Traced {
    /// The time of each run, fastest first.
    pub latencies: Vec<Duration>,
    /// The median run's steps, as [`render`] prints them.
    pub median: Vec<String>,
    /// The slowest run's steps.
    pub slowest: Vec<String>,
    /// How many runs took the most common path (the same steps in the same order, relays
    /// named by their place in it).
    pub common_runs: usize,
    /// The most common path's steps, each with its median time since the step before and the
    /// medians' running sum.
    pub typical: Vec<String>,
    /// Each kind of step (its message, without fields) that at least half the runs reached:
    /// the median and p90 of when it first happened, earliest median first.
    pub reached: Vec<String>,
}

impl Traced {
    /// From each run's time, start and steps, with relay fingerprints replaced by `names`.
    pub fn of(
        mut runs: Vec<(Duration, Instant, Vec<Step>)>,
        names: &HashMap<String, String>,
    ) -> Traced {
        runs.sort_by_key(|(time, _, _)| *time);
        let shown = |run: Option<&(Duration, Instant, Vec<Step>)>| match run {
            Some((_, start, steps)) => render(*start, steps, names),
            None => Vec::new(),
        };
        let (common_runs, typical) = typical(&runs);
        let reached = first_reached(&runs);
        Traced {
            median: shown(runs.get(runs.len().saturating_sub(1) / 2)),
            slowest: shown(runs.last()),
            latencies: runs.into_iter().map(|(time, _, _)| time).collect(),
            common_runs,
            typical,
            reached,
        }
    }
}

/// A step's kind: its message, without the `key=value` fields that follow it.
fn kind_of(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let message = words
        .iter()
        .position(|w| w.contains('='))
        .map_or(&words[..], |end| &words[..end]);
    message.join(" ")
}

/// For each kind of step that at least half of `runs` reached, the median and the p90 (the
/// slowest, with fewer than 10 runs) of the time from a run's start to the first step of that
/// kind, earliest median first, with how many runs reached it. Unlike [`typical`], it needs no
/// two runs to take the same path, so a busy trace with many interleaved steps still says
/// where the typical run's time went.
fn first_reached(runs: &[(Duration, Instant, Vec<Step>)]) -> Vec<String> {
    let mut firsts: Vec<(String, Vec<Duration>)> = Vec::new();
    for (_, start, steps) in runs {
        let mut seen: Vec<String> = Vec::new();
        for step in steps {
            let kind = kind_of(&step.text);
            if seen.contains(&kind) {
                continue;
            }
            let since = step.at.saturating_duration_since(*start);
            match firsts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, times)) => times.push(since),
                None => firsts.push((kind.clone(), vec![since])),
            }
            seen.push(kind);
        }
    }
    let mut rows: Vec<(f64, String)> = firsts
        .into_iter()
        .filter(|(_, times)| times.len() * 2 >= runs.len() && !times.is_empty())
        .map(|(kind, mut times)| {
            times.sort();
            let p50 = super::ms(times[(times.len() - 1) / 2]);
            let tail = match times.len() >= 10 {
                true => format!("p90 {:.3}", super::ms(super::quantile(&mut times, 0.9))),
                false => format!("slowest {:.3}", super::ms(super::quantile(&mut times, 1.0))),
            };
            let line = format!("{p50:>8.3} ms  ({tail}, {} runs)  {kind}", times.len());
            (p50, line)
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    rows.into_iter().map(|(_, line)| line).collect()
}

/// A run's steps with each relay fingerprint (the value of a `relay=` or `replica=` field)
/// replaced by its place among the relays in the order they first appear (`A`, `B`, ...), so
/// that runs through different relays along the same path compare equal. Other fields (the
/// counts some steps carry) are kept, so runs that differ in them take different paths.
fn path_of(steps: &[Step]) -> Vec<String> {
    const FIELDS: [&str; 2] = ["relay=", "replica="];
    let mut seen: Vec<String> = Vec::new();
    steps
        .iter()
        .map(|step| {
            let words: Vec<String> = step
                .text
                .split(' ')
                .map(|word| {
                    let Some((field, relay)) = FIELDS
                        .iter()
                        .find_map(|f| word.strip_prefix(f).map(|rest| (*f, rest)))
                    else {
                        return word.to_string();
                    };
                    let place = match seen.iter().position(|r| r == relay) {
                        Some(p) => p,
                        None => {
                            seen.push(relay.to_string());
                            seen.len() - 1
                        }
                    };
                    match u8::try_from(place).ok().filter(|p| *p < 26) {
                        Some(p) => format!("{field}{}", char::from(b'A' + p)),
                        None => word.to_string(),
                    }
                })
                .collect();
            words.join(" ")
        })
        .collect()
}

/// The most common path among `runs` (a tie goes to the path met first: of the faster run, as
/// [`Traced::of`] sorts them), and for each of its steps the median time since the step before
/// (the first step: since the run began) over the runs that took it, the lower of the two
/// middle ones for an even count, with the medians' running sum; beside it the p90, or with
/// fewer than 10 runs the slowest. A breakdown that one run's noise does not decide.
fn typical(runs: &[(Duration, Instant, Vec<Step>)]) -> (usize, Vec<String>) {
    let paths: Vec<Vec<String>> = runs.iter().map(|(_, _, steps)| path_of(steps)).collect();
    let mut counts: Vec<(&Vec<String>, usize)> = Vec::new();
    for path in &paths {
        match counts.iter_mut().find(|(p, _)| *p == path) {
            Some((_, n)) => *n += 1,
            None => counts.push((path, 1)),
        }
    }
    // `max_by_key` keeps the last of equal counts: reversed, the first met.
    let Some(&(common, n)) = counts.iter().rev().max_by_key(|(_, n)| *n) else {
        return (0, Vec::new());
    };
    let mut gaps: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); common.len()];
    for ((_, start, steps), path) in runs.iter().zip(&paths) {
        if path != common {
            continue;
        }
        let mut previous = *start;
        for (i, step) in steps.iter().enumerate() {
            gaps[i].push(step.at.saturating_duration_since(previous));
            previous = step.at;
        }
    }
    let mut sum = 0.0;
    let lines = common
        .iter()
        .zip(gaps.iter_mut())
        .map(|(text, gaps)| {
            gaps.sort();
            let p50 = super::ms(gaps[(gaps.len() - 1) / 2]);
            sum += p50;
            let tail = match n >= 10 {
                true => format!("p90 +{:.3}", super::ms(super::quantile(gaps, 0.9))),
                false => format!("slowest +{:.3}", super::ms(super::quantile(gaps, 1.0))),
            };
            format!("{sum:>8.3} ms  (+{p50:.3}, {tail})  {text}")
        })
        .collect();
    (n, lines)
}

/// Renders the steps as lines of `+ms since start (+ms since the previous line) step`, with
/// relay fingerprints replaced by the names in `names`, and runs of the same step (the cells
/// of one message) folded into one line with their count.
pub fn render(start: Instant, steps: &[Step], names: &HashMap<String, String>) -> Vec<String> {
    let mut named: Vec<(Instant, Instant, usize, String)> = Vec::new();
    for step in steps {
        let mut text = step.text.clone();
        for (id, name) in names {
            text = text.replace(id.as_str(), name);
        }
        match named.last_mut() {
            Some((_, last, n, t)) if *t == text => {
                *last = step.at;
                *n += 1;
            }
            _ => named.push((step.at, step.at, 1, text)),
        }
    }
    let mut previous = start;
    named
        .into_iter()
        .map(|(first, last, n, text)| {
            let since = first.saturating_duration_since(start).as_secs_f64() * 1000.0;
            let step = first.saturating_duration_since(previous).as_secs_f64() * 1000.0;
            previous = last;
            let times = if n > 1 {
                let spread = last.saturating_duration_since(first).as_secs_f64() * 1000.0;
                format!(" (x{n} over {spread:.3} ms)")
            } else {
                String::new()
            };
            format!("{since:>8.3} ms  (+{step:.3})  {text}{times}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_keeps_the_median_and_the_slowest_run() {
        let t0 = Instant::now();
        let run = |ms: u64| {
            let step = Step {
                at: t0,
                text: format!("took {ms}"),
            };
            (Duration::from_millis(ms), t0, vec![step])
        };
        let names = HashMap::new();
        // Four runs, unsorted: the median of an even count is the lower middle one.
        let t = Traced::of(vec![run(9), run(2), run(5), run(3)], &names);
        assert_eq!(t.latencies, [2, 3, 5, 9].map(Duration::from_millis));
        assert!(t.median[0].ends_with("took 3"), "{:?}", t.median);
        assert!(t.slowest[0].ends_with("took 9"), "{:?}", t.slowest);
        let none = Traced::of(Vec::new(), &names);
        assert!(none.latencies.is_empty() && none.median.is_empty() && none.slowest.is_empty());
    }

    #[test]
    fn runs_of_one_step_fold_and_names_replace_fingerprints() {
        let t0 = Instant::now();
        let step = |ms: u64, text: &str| Step {
            at: t0 + Duration::from_millis(ms),
            text: text.to_string(),
        };
        let steps = [
            step(1, "send begins"),
            step(2, "cell forwarded relay=abcd"),
            step(3, "cell forwarded relay=abcd"),
            step(5, "deposit on disk relay=abcd"),
        ];
        let names = HashMap::from([("abcd".to_string(), "relay7".to_string())]);
        let lines = render(t0, &steps, &names);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].ends_with("send begins"), "{}", lines[0]);
        assert!(
            lines[1].contains("cell forwarded relay=relay7 (x2 over 1.000 ms)"),
            "{}",
            lines[1]
        );
        // The step after a folded run is timed from the run's last cell.
        assert!(lines[2].contains("(+2.000)"), "{}", lines[2]);
        assert!(lines[2].starts_with("   5.000 ms"), "{}", lines[2]);
    }

    #[test]
    fn the_typical_path_is_the_most_common_one_with_each_steps_median() {
        let t0 = Instant::now();
        let run = |gaps: &[(u64, &str)]| {
            let mut at = t0;
            let steps = gaps
                .iter()
                .map(|(ms, text)| {
                    at += Duration::from_millis(*ms);
                    Step {
                        at,
                        text: text.to_string(),
                    }
                })
                .collect();
            (
                Duration::from_millis(gaps.iter().map(|g| g.0).sum()),
                t0,
                steps,
            )
        };
        let runs = vec![
            // The same path through different relays, three times.
            run(&[(1, "sent"), (2, "got relay=aa"), (3, "passed relay=bb")]),
            run(&[(3, "sent"), (4, "got relay=cc"), (5, "passed relay=aa")]),
            run(&[(2, "sent"), (9, "got relay=bb"), (1, "passed relay=cc")]),
            // A path of its own, twice: not the most common.
            run(&[(1, "sent"), (1, "got relay=aa"), (1, "opened relay=bb")]),
            run(&[(1, "sent"), (1, "got relay=aa"), (1, "opened relay=bb")]),
            // A relay met again keeps its first letter.
            run(&[(1, "got relay=aa"), (1, "back relay=aa")]),
        ];
        let t = Traced::of(runs, &HashMap::new());
        assert_eq!(t.common_runs, 3);
        assert_eq!(t.typical.len(), 3, "{:?}", t.typical);
        // Medians 2, 4, 3 (their running sum 2, 6, 9); with fewer than 10 runs, the slowest.
        let expected = [
            "   2.000 ms  (+2.000, slowest +3.000)  sent",
            "   6.000 ms  (+4.000, slowest +9.000)  got relay=A",
            "   9.000 ms  (+3.000, slowest +5.000)  passed relay=B",
        ];
        assert_eq!(t.typical, expected);
        // A tie goes to the faster run's path; an even count's median is the lower middle.
        let t = Traced::of(
            vec![
                run(&[(5, "slow path")]),
                run(&[(1, "fast path")]),
                run(&[(2, "fast path")]),
                run(&[(6, "slow path")]),
            ],
            &HashMap::new(),
        );
        assert_eq!(t.common_runs, 2);
        assert_eq!(
            t.typical,
            ["   1.000 ms  (+1.000, slowest +2.000)  fast path"]
        );
        let steps = [
            Step {
                at: t0,
                text: "got relay=aa".into(),
            },
            Step {
                at: t0,
                text: "stored replica=dd of relay=aa n=3".into(),
            },
        ];
        assert_eq!(
            path_of(&steps),
            ["got relay=A", "stored replica=B of relay=A n=3"]
        );
        assert_eq!(Traced::of(Vec::new(), &HashMap::new()).common_runs, 0);
    }

    #[test]
    fn first_reached_takes_each_kinds_first_step_in_each_run() {
        let t0 = Instant::now();
        let run = |steps: &[(u64, &str)]| {
            let steps = steps
                .iter()
                .map(|(ms, text)| Step {
                    at: t0 + Duration::from_millis(*ms),
                    text: text.to_string(),
                })
                .collect();
            (Duration::from_millis(10), t0, steps)
        };
        let runs = vec![
            // Different relays and counts, the same kinds; a kind's later steps do not count.
            run(&[
                (1, "sent"),
                (4, "pushed relay=aa n=1"),
                (6, "pushed relay=bb n=2"),
            ]),
            run(&[(2, "sent"), (3, "pushed relay=cc n=1"), (8, "opened")]),
            run(&[(3, "sent"), (5, "pushed relay=bb n=3"), (9, "opened")]),
            // Reached by one run of four: left out.
            run(&[(1, "sent"), (2, "rare step relay=aa")]),
        ];
        let t = Traced::of(runs, &HashMap::new());
        let expected = [
            "   1.000 ms  (slowest 3.000, 4 runs)  sent",
            "   4.000 ms  (slowest 5.000, 3 runs)  pushed",
            "   8.000 ms  (slowest 9.000, 2 runs)  opened",
        ];
        assert_eq!(t.reached, expected);
        assert_eq!(
            kind_of("cell peeled, delivered here relay=ab depth=3"),
            "cell peeled, delivered here"
        );
    }
}
