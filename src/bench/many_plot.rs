//! The plot of a many-node run (`docs/many-nodes.svg`): on the left the distribution of
//! latency from send to arrival (share of messages arrived within each time), on the right
//! the median and 99th percentile of the messages sent in each slice of the run. A small SVG
//! written by hand, as `docs/churn.svg` is, so the plot needs no dependency.

use std::fmt::Write;
use std::time::Duration;

const W: f64 = 900.0;
const H: f64 = 400.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 50.0;
const PANEL_W: f64 = 340.0;
const LEFTS: [f64; 2] = [70.0, 520.0];
const COLOURS: [&str; 3] = ["#1b9e77", "#d95f02", "#7570b3"];

/// A logarithmic latency axis over whole decades of milliseconds.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn new(values_ms: &[f64]) -> LogAxis {
        let min = values_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values_ms.iter().copied().fold(0.0, f64::max);
        let lo = min.max(0.01).log10().floor();
        let hi = max.max(min.max(0.01) * 10.0).log10().ceil();
        LogAxis {
            lo,
            hi: hi.max(lo + 1.0),
        }
    }

    /// Where `ms` falls, from 0 (low end) to 1 (high end).
    fn at(&self, ms: f64) -> f64 {
        ((ms.max(10f64.powf(self.lo)).log10() - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
    }

    fn decades(&self) -> impl Iterator<Item = f64> + '_ {
        (self.lo as i32..=self.hi as i32).map(|d| 10f64.powi(d))
    }
}

fn label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// The plot of `samples` ((send time in seconds since sending began, latency) per message
/// delivered), titled `title`.
pub fn plot(title: &str, samples: &[(f64, Duration)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="14">{}</text>"#,
        LEFTS[0],
        escape(title)
    );
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|(_, l)| l.as_secs_f64() * 1000.0)
        .collect();
    if ms.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="200">no message arrived</text>"#,
            LEFTS[0]
        );
        s.push_str("</svg>\n");
        return s;
    }
    ms.sort_by(f64::total_cmp);
    let axis = LogAxis::new(&ms);
    let plot_h = H - TOP - BOTTOM;
    let y_of = |share: f64| TOP + plot_h * (1.0 - share);

    // Left: the share of messages arrived within each latency.
    let x0 = LEFTS[0];
    let x_of = |v: f64| x0 + PANEL_W * axis.at(v);
    frame(&mut s, x0, "latency, send to arrival (log scale)");
    for d in axis.decades() {
        let x = x_of(d);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            label(d)
        );
    }
    for i in 0..=4 {
        let share = i as f64 / 4.0;
        let y = y_of(share);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0} %</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            y + 4.0,
            share * 100.0
        );
    }
    // At most a few hundred points: one per step of the sorted values.
    let step = (ms.len() / 400).max(1);
    let mut points: Vec<String> = ms
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(i, v)| {
            let share = (i + 1) as f64 / ms.len() as f64;
            format!("{:.1},{:.1}", x_of(*v), y_of(share))
        })
        .collect();
    if let Some(last) = ms.last() {
        points.push(format!("{:.1},{:.1}", x_of(*last), y_of(1.0)));
    }
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
        COLOURS[0],
        points.join(" ")
    );
    for (k, q) in [0.5, 0.9, 0.99].iter().enumerate() {
        let i = ((ms.len() - 1) as f64 * q).round() as usize;
        let v = ms[i.min(ms.len() - 1)];
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#333"/><text x="{:.1}" y="{:.1}">p{} {:.1} ms</text>"##,
            x_of(v),
            y_of(*q),
            x_of(v) + 6.0,
            y_of(*q) + 14.0 + 2.0 * k as f64,
            q * 100.0,
            v
        );
    }

    // Right: p50 and p99 of the messages sent in each slice of the run.
    let x0 = LEFTS[1];
    let end = samples.iter().map(|(t, _)| *t).fold(0.0, f64::max).max(1.0);
    let slice = (end / 30.0).max(1.0).ceil();
    let slices = (end / slice).ceil() as usize;
    let tx = |t: f64| x0 + PANEL_W * (t / (slices as f64 * slice)).clamp(0.0, 1.0);
    let ly = |v: f64| TOP + plot_h * (1.0 - axis.at(v));
    frame(&mut s, x0, "time the message was sent");
    for d in axis.decades() {
        let y = ly(d);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            y + 4.0,
            label(d)
        );
    }
    let ticks = 5usize;
    for i in 0..=ticks {
        let t = slices as f64 * slice * i as f64 / ticks as f64;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0} s</text>"#,
            tx(t),
            H - BOTTOM + 16.0,
            t
        );
    }
    let mut lines: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for k in 0..slices {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| (*t / slice).floor() as usize == k)
            .map(|(_, l)| l.as_secs_f64() * 1000.0)
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f64::total_cmp);
        let mid = (k as f64 + 0.5) * slice;
        for (line, q) in lines.iter_mut().zip([0.5, 0.99]) {
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            line.push(format!("{:.1},{:.1}", tx(mid), ly(v[i.min(v.len() - 1)])));
        }
    }
    for (k, (line, name)) in lines.iter().zip(["p50", "p99"]).enumerate() {
        let colour = COLOURS[k + 1];
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            line.join(" ")
        );
        let y = TOP + 14.0 + 16.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name} of each {slice:.0} s</text>"#,
            x0 + PANEL_W - 120.0,
            x0 + PANEL_W - 100.0,
            x0 + PANEL_W - 95.0,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The box of one panel and its x-axis title.
fn frame(s: &mut String, x0: f64, x_title: &str) {
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{:.1}" fill="none" stroke="#999"/>"##,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        x0 + PANEL_W / 2.0,
        H - 12.0,
        escape(x_title)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_every_panel_and_marks_the_percentiles() {
        let samples: Vec<(f64, Duration)> = (0..1000)
            .map(|i| (i as f64 * 0.1, Duration::from_micros(2000 + (i % 97) * 300)))
            .collect();
        let svg = plot("a <run>", &samples);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;run&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        for p in ["p50 ", "p90 ", "p99 "] {
            assert!(svg.contains(p), "{p} missing");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn an_empty_run_says_so() {
        let svg = plot("nothing", &[]);
        assert!(svg.contains("no message arrived"));
    }
}
