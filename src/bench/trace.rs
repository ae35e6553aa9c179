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

/// What a trace found: every time, fastest first, and the path of two runs (each a message
/// sent, or a circuit built).
pub struct Traced {
    /// The time of each run, fastest first.
    pub latencies: Vec<Duration>,
    /// The median run's steps, as [`render`] prints them.
    pub median: Vec<String>,
    /// The slowest run's steps.
    pub slowest: Vec<String>,
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
        Traced {
            median: shown(runs.get(runs.len().saturating_sub(1) / 2)),
            slowest: shown(runs.last()),
            latencies: runs.into_iter().map(|(time, _, _)| time).collect(),
        }
    }
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
}
