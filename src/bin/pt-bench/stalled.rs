//! The stalled-reader test: what connections cost while their far end has stopped reading.
//!
//! Each connection asks the stand-in ORPort for a source and then never reads, the way a
//! censor's prober (or a stuck client) can, so every buffer on the way fills and the
//! transports are left holding bytes they cannot deliver. A transport that waits for the
//! peer costs nothing meanwhile; one that retries in a loop burns CPU for as long as the
//! stall lasts. The figure is the transport processes' CPU over the measured window, in % of
//! one core per stalled connection.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::measure::{bounded, open_bulk, Failures, Proc};
use crate::procfs;
use crate::route::Route;
use crate::target::{CMD_SOURCE, GO};

/// What the issue allows a stalled connection to cost.
pub const MAX_CORE_PCT_PER_CONN: f64 = 2.0;

/// The stalled-reader test's result.
#[derive(Debug, Clone)]
pub struct Stalled {
    pub requested: usize,
    pub opened: usize,
    /// Length of the measured window.
    pub secs: f64,
    /// CPU seconds of each side over the window.
    pub cpu_secs: Vec<(&'static str, f64)>,
    pub error: Option<String>,
}

impl Stalled {
    /// CPU of all transport processes per stalled connection, in % of one core.
    pub fn core_pct_per_conn(&self) -> Option<f64> {
        if self.error.is_some() || self.opened == 0 || self.secs <= 0.0 {
            return None;
        }
        let cpu: f64 = self.cpu_secs.iter().map(|(_, c)| c).sum();
        Some(cpu / self.secs / self.opened as f64 * 100.0)
    }

    /// One line for the progress log.
    pub fn summary(&self) -> String {
        format!(
            "{} % of a core per connection ({} opened){}",
            self.core_pct_per_conn()
                .map_or("n/a".into(), |v| format!("{v:.3}")),
            self.opened,
            self.error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})"))
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "what": "N connections each reading from a source behind the server transport, \
                     then never reading again; transport CPU over the window once buffers filled",
            "requested": self.requested, "opened": self.opened, "secs": self.secs,
            "pt_cpu_secs": self.cpu_secs.iter().map(|(side, c)| json!({"side": side, "cpu_secs": c})).collect::<Vec<_>>(),
            "pt_core_pct_per_conn": self.core_pct_per_conn(),
            "error": self.error,
        })
    }
}

/// A connection to a source that has been told to start.
async fn open_stalled(route: &Route) -> std::io::Result<TcpStream> {
    let mut stream = open_bulk(route, CMD_SOURCE).await?;
    stream.write_all(&[GO]).await?;
    Ok(stream)
}

/// How long the buffers on the way get to fill before the measurement starts. The sources
/// write as fast as the path takes bytes: loopback buffers fill well within this, after which
/// nothing moves.
const SETTLE: Duration = Duration::from_secs(2);

/// Opens `n` stalled connections, lets the buffers fill, then reads the transports' CPU over
/// `dur`.
pub async fn stalled(route: &Route, n: usize, dur: Duration, procs: &[Proc]) -> Stalled {
    let fails = Failures::default();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match bounded(open_stalled(route)).await {
            Ok(s) => held.push(s),
            Err(e) => fails.record(e),
        }
    }
    let mut result = Stalled {
        requested: n,
        opened: held.len(),
        secs: 0.0,
        cpu_secs: Vec::new(),
        error: fails
            .first()
            .map(|e| format!("{} failed to open: {e}", fails.count())),
    };
    tokio::time::sleep(SETTLE).await;
    let cpu = || -> std::io::Result<Vec<f64>> {
        procs.iter().map(|p| procfs::cpu_seconds(p.pid)).collect()
    };
    let (c0, t0) = (cpu(), Instant::now());
    tokio::time::sleep(dur).await;
    let (c1, t1) = (cpu(), Instant::now());
    result.secs = (t1 - t0).as_secs_f64();
    match (c0, c1) {
        (Ok(c0), Ok(c1)) => {
            result.cpu_secs = procs
                .iter()
                .zip(c0.iter().zip(&c1))
                .map(|(p, (a, b))| (p.side, b - a))
                .collect();
        }
        (Err(e), _) | (_, Err(e)) => {
            result
                .error
                .get_or_insert(format!("cannot read transport CPU: {e}"));
        }
    }
    drop(held);
    result
}
