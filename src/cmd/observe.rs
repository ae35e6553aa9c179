//! What an operator sees of a running relay or authority: a heartbeat log line every period,
//! an optional Prometheus endpoint (`--metrics ADDR`, loopback only unless
//! `--metrics-public`), a log file, and the `status` commands that read the endpoint back.
//!
//! The endpoint serves the Prometheus text exposition format (version 0.0.4) from the
//! daemons' own counters (`shallot_relay::stats`), over the hyper server the authorities
//! already use: a registry crate would only mirror those atomics, and the format for a few
//! dozen counters and gauges is the short [`exposition`] below, tested against its grammar.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::config::{parse_duration, ConfigError, ConfigFile};

/// The flags every daemon has for being watched (each also a key in its configuration file).
#[derive(Args, Debug, Clone, Default)]
pub struct OpsArgs {
    /// Time between heartbeat log lines, such as 10m or 30s; 0 turns them off [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Serve Prometheus metrics over HTTP at this address (loopback only, unless
    /// --metrics-public); off by default.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Allow --metrics on an address other than loopback (the figures show how busy this
    /// node is; keep them from strangers with a firewall).
    #[arg(long)]
    pub metrics_public: bool,
    /// Append the log to this file instead of standard error.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
}

/// The configuration-file keys of [`OpsArgs`].
pub const OPS_KEYS: &[&str] = &["heartbeat", "metrics", "metrics_public", "log_file"];

/// The default time between heartbeats.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(600);

impl OpsArgs {
    /// Fills what the flags left out from the file.
    pub fn merge(&mut self, file: &ConfigFile) -> Result<(), ConfigError> {
        self.heartbeat = self.heartbeat.or(file.duration("heartbeat")?);
        self.metrics = self.metrics.or(file.addr("metrics")?);
        self.metrics_public =
            self.metrics_public || file.boolean("metrics_public")?.unwrap_or(false);
        self.log_file = self.log_file.take().or(file.path_value("log_file")?);
        Ok(())
    }

    /// Refuses a metrics address others could reach unless allowed.
    pub fn check(&self) -> Result<(), String> {
        match self.metrics {
            Some(a) if !a.ip().is_loopback() && !self.metrics_public => Err(format!(
                "--metrics {a} would show this node's figures to anyone who can reach it: use \
                 a loopback address such as 127.0.0.1:9100, or add --metrics-public"
            )),
            _ => Ok(()),
        }
    }

    /// The heartbeat period, `None` when turned off.
    pub fn heartbeat_period(&self) -> Option<Duration> {
        Some(self.heartbeat.unwrap_or(DEFAULT_HEARTBEAT)).filter(|d| !d.is_zero())
    }
}

/// Whether a metric only goes up or can go both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only increases while the process runs.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One sample to expose.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Its name, `[a-z_]+` (with the `shallot_` prefix).
    pub name: String,
    /// What it counts.
    pub help: String,
    /// Counter or gauge.
    pub kind: Kind,
    /// The value.
    pub value: u64,
}

impl Metric {
    /// A metric named `shallot_{name}`.
    pub fn new(name: &str, help: &str, kind: Kind, value: u64) -> Self {
        Metric {
            name: format!("shallot_{name}"),
            help: help.to_string(),
            kind,
            value,
        }
    }
}

/// The Prometheus text exposition of `metrics`.
pub fn exposition(metrics: &[Metric]) -> String {
    let mut out = String::new();
    for m in metrics {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = m.help.replace('\\', "\\\\").replace('\n', " ");
        out.push_str(&format!(
            "# HELP {} {help}\n# TYPE {} {kind}\n",
            m.name, m.name
        ));
        out.push_str(&format!("{} {}\n", m.name, m.value));
    }
    out
}

/// Reads an exposition back into name → value (comments skipped; labels not used here).
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// What the metrics endpoint serves: the exposition as of the request.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds the metrics address (before the daemon starts, so a taken port is refused at once).
pub async fn bind_metrics(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` (and `/`) until the task is aborted.
pub async fn serve_metrics(listener: TcpListener, render: Render) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("metrics accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let found = req.method() == hyper::Method::GET
                    && matches!(req.uri().path(), "/metrics" | "/");
                let (status, body) = if found {
                    (hyper::StatusCode::OK, render())
                } else {
                    (
                        hyper::StatusCode::NOT_FOUND,
                        "only GET /metrics\n".to_string(),
                    )
                };
                let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = status;
                resp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// Fetches and parses the metrics a daemon serves at `addr`.
pub fn fetch_metrics(addr: SocketAddr) -> Result<BTreeMap<String, f64>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let r = runtime
        .block_on(shallot_directory::fetch::http_request(
            addr,
            hyper::Method::GET,
            "/metrics",
            None,
            Duration::from_secs(5),
            1 << 20,
        ))
        .map_err(|e| {
            format!("no metrics at {addr}: {e} (is the daemon running with --metrics {addr}?)")
        })?;
    if r.status != hyper::StatusCode::OK {
        return Err(format!("{addr} answered {}: {}", r.status, r.text()));
    }
    Ok(parse_exposition(&String::from_utf8_lossy(&r.body)))
}

/// Bytes in a short human form: `512 B`, `3.2 KiB`, `256.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// How old something made at `unix_secs` is now: "12s old", "just now" within the second
/// (or when it is dated ahead of this clock), or "none yet" for 0.
pub fn age(unix_secs: u64) -> String {
    age_at(unix_secs, shallot_rt::unix_now())
}

/// [`age`] at `now`.
fn age_at(unix_secs: u64, now: u64) -> String {
    match now.checked_sub(unix_secs) {
        _ if unix_secs == 0 => "none yet".into(),
        None | Some(0) => "just now".into(),
        Some(secs) => super::config::format_duration(Duration::from_secs(secs)) + " old",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_follows_the_text_format_and_reads_back() {
        let text = exposition(&[
            Metric::new(
                "cells_forwarded_total",
                "Relay cells forwarded.",
                Kind::Counter,
                42,
            ),
            Metric::new("circuits", "Circuits open now.", Kind::Gauge, 3),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "# HELP shallot_cells_forwarded_total Relay cells forwarded."
        );
        assert_eq!(lines[1], "# TYPE shallot_cells_forwarded_total counter");
        assert_eq!(lines[2], "shallot_cells_forwarded_total 42");
        assert_eq!(lines[4], "# TYPE shallot_circuits gauge");
        let back = parse_exposition(&text);
        assert_eq!(back.get("shallot_cells_forwarded_total"), Some(&42.0));
        assert_eq!(back.get("shallot_circuits"), Some(&3.0));
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn metrics_stay_on_loopback_unless_told() {
        let mut ops = OpsArgs {
            metrics: "127.0.0.1:9100".parse().ok(),
            ..OpsArgs::default()
        };
        assert!(ops.check().is_ok());
        ops.metrics = "[::1]:9100".parse().ok();
        assert!(ops.check().is_ok());
        ops.metrics = "0.0.0.0:9100".parse().ok();
        assert!(ops.check().unwrap_err().contains("--metrics-public"));
        ops.metrics_public = true;
        assert!(ops.check().is_ok());
    }

    #[test]
    fn heartbeats_default_to_ten_minutes_and_zero_turns_them_off() {
        let mut ops = OpsArgs::default();
        assert_eq!(ops.heartbeat_period(), Some(Duration::from_secs(600)));
        ops.heartbeat = Some(Duration::ZERO);
        assert_eq!(ops.heartbeat_period(), None);
    }

    #[test]
    fn ages_read_in_whole_seconds_never_milliseconds() {
        let t = 1_700_000_000;
        assert_eq!(age_at(t, t), "just now");
        assert_eq!(age_at(t + 5, t), "just now", "dated ahead of this clock");
        assert_eq!(age_at(t, t + 1), "1s old");
        assert_eq!(age_at(t, t + 125), "2m5s old");
        assert_eq!(age_at(0, t), "none yet");
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 << 20), "256.0 MiB");
    }
}
