//! `shallot bench --compare FILE`: sets this run's figures beside those of a saved
//! `shallot bench --json` run, with the ratio between them and which way it moved, so that a
//! regression is visible at a glance (`README.md`, "Performance").
//!
//! Pure code: it takes the saved run's text and this run's figures and returns rows; the
//! command prints them.

use serde::Deserialize;

use super::Figure;

/// One figure of a saved run, as `--json` wrote it.
#[derive(Debug, Deserialize)]
struct SavedFigure {
    name: String,
    value: f64,
    unit: String,
}

/// A saved run, as `--json` wrote it.
#[derive(Debug, Deserialize)]
struct SavedRun {
    figures: Vec<SavedFigure>,
}

/// Why a saved run could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The file is not the JSON `shallot bench --json` prints.
    #[error("the saved run is not the output of `shallot bench --json`: {0}")]
    NotABenchRun(String),
}

/// Which way a figure moved, judged by its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Better than the saved run by more than the tolerance.
    Better,
    /// Worse than the saved run by more than the tolerance.
    Worse,
    /// Within the tolerance, or not comparable.
    Same,
}

/// One figure of this run beside the saved one.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The figure's name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// This run's value.
    pub now: f64,
    /// The saved run's value, if it had this figure with the same unit.
    pub then: Option<f64>,
    /// `now / then`, when both exist and `then` is not zero.
    pub ratio: Option<f64>,
    /// Which way it moved.
    pub direction: Direction,
}

/// Relative change below which a figure counts as unchanged (benchmarks on a shared machine
/// move by a few per cent from run to run).
pub const TOLERANCE: f64 = 0.10;

/// How the names of figures that describe the machine during the run begin (its scheduling
/// tail, beside the latency tails): shown beside the saved run, never graded better or worse,
/// since they say how the run was measured, not how Shallot did.
pub const MACHINE: &str = "machine:";

/// True when a larger value of a figure in `unit` is better (rates and ratios), false when a
/// smaller one is (times, bytes).
fn higher_is_better(unit: &str) -> bool {
    unit.ends_with("/s") || unit == "ratio"
}

/// Sets `current` beside the run saved in `saved` (the text of a `--json` output).
pub fn compare(current: &[Figure], saved: &str) -> Result<Vec<Comparison>, CompareError> {
    let saved: SavedRun =
        serde_json::from_str(saved).map_err(|e| CompareError::NotABenchRun(e.to_string()))?;
    Ok(current
        .iter()
        .map(|f| {
            let then = saved
                .figures
                .iter()
                .find(|s| s.name == f.name && s.unit == f.unit)
                .map(|s| s.value);
            let ratio = then.filter(|t| *t != 0.0).map(|t| f.value / t);
            let direction = match ratio {
                _ if f.name.starts_with(MACHINE) => Direction::Same,
                Some(r) if (r - 1.0).abs() > TOLERANCE => {
                    if (r > 1.0) == higher_is_better(f.unit) {
                        Direction::Better
                    } else {
                        Direction::Worse
                    }
                }
                _ => Direction::Same,
            };
            Comparison {
                name: f.name.clone(),
                unit: f.unit.to_string(),
                now: f.value,
                then,
                ratio,
                direction,
            }
        })
        .collect())
}

/// One printed line for a comparison.
pub fn render(c: &Comparison) -> String {
    let then = c
        .then
        .map_or_else(|| "(not in saved run)".to_string(), |t| format!("{t:.2}"));
    let ratio = c.ratio.map_or_else(String::new, |r| format!("×{r:.2}"));
    let mark = match c.direction {
        Direction::Better => "better",
        Direction::Worse => "WORSE",
        Direction::Same => "",
    };
    format!(
        "{:<62} {:>12.2} {:<12} was {:>12} {:>7} {}",
        c.name, c.now, c.unit, then, ratio, mark
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> String {
        serde_json::json!({ "figures": [
            { "name": "circuit build time p50", "value": 2.0, "unit": "ms", "note": "" },
            { "name": "messages per second", "value": 200.0, "unit": "messages/s", "note": "" },
            { "name": "forwarding ratio", "value": 0.8, "unit": "ratio", "note": "" },
        ]})
        .to_string()
    }

    #[test]
    fn slower_times_and_lower_rates_are_worse() {
        let now = [
            Figure::new("circuit build time p50", 3.0, "ms"),
            Figure::new("messages per second", 100.0, "messages/s"),
            Figure::new("forwarding ratio", 0.81, "ratio"),
        ];
        let rows = compare(&now, &saved()).unwrap();
        assert_eq!(rows[0].direction, Direction::Worse);
        assert_eq!(rows[0].ratio, Some(1.5));
        assert_eq!(rows[1].direction, Direction::Worse);
        assert_eq!(rows[2].direction, Direction::Same);
        assert!(render(&rows[0]).contains("WORSE"));
    }

    #[test]
    fn faster_times_and_higher_rates_are_better() {
        let now = [
            Figure::new("circuit build time p50", 1.0, "ms"),
            Figure::new("messages per second", 5000.0, "messages/s"),
        ];
        let rows = compare(&now, &saved()).unwrap();
        assert!(rows.iter().all(|r| r.direction == Direction::Better));
    }

    #[test]
    fn the_machines_own_figures_are_set_beside_but_not_graded() {
        let saved = serde_json::json!({ "figures": [
            { "name": "machine: wake-up lateness, p99", "value": 1.0, "unit": "ms", "note": "" },
        ]})
        .to_string();
        let rows = compare(
            &[Figure::new("machine: wake-up lateness, p99", 3.0, "ms")],
            &saved,
        )
        .unwrap();
        assert_eq!(rows[0].ratio, Some(3.0));
        assert_eq!(rows[0].direction, Direction::Same);
    }

    #[test]
    fn a_figure_missing_or_with_another_unit_is_not_compared() {
        let now = [
            Figure::new("new figure", 1.0, "ms"),
            Figure::new("circuit build time p50", 1.0, "s"),
        ];
        let rows = compare(&now, &saved()).unwrap();
        assert!(rows.iter().all(|r| r.then.is_none() && r.ratio.is_none()));
        assert!(render(&rows[0]).contains("not in saved run"));
    }

    #[test]
    fn text_that_is_not_a_saved_run_is_refused() {
        let err = compare(&[], "{\"figs\": []}").unwrap_err();
        assert!(err.to_string().contains("shallot bench --json"));
        assert!(compare(&[], "not json").is_err());
    }
}
