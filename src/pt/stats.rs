//! Operator statistics: is the bridge used, and how do its connections end?
//!
//! Per module (the built-in name, or the first 12 hex digits of an outside module's SHA-256)
//! and side (bridge or client), the transport counts connections accepted, completed and
//! failed by reason, the bytes the modules read from and wrote to the network, and the most
//! open at once. Every `--stats-interval` (24 h by default) and
//! at exit, one `LOG` line per module reports them and the counters restart. No address is
//! ever recorded, so the lines are safe to share.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

/// Counters of one module on one side.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub completed: u64,
    /// Failures by the reason's short word (e.g. `module`, `extor-denied`, `refused`).
    pub failed: BTreeMap<&'static str, u64>,
    /// Bytes the modules read from the network (from the peer).
    pub bytes_in: u64,
    /// Bytes the modules wrote to the network (to the peer).
    pub bytes_out: u64,
    /// Open now.
    pub open: u64,
    /// Most open at once since the last report.
    pub peak: u64,
}

/// Statistics of every module of the process.
#[derive(Debug, Default)]
pub struct Stats {
    tables: Mutex<Tables>,
}

/// The counters since the last report, and since the start (for `--metrics-listen`, whose
/// counters must only grow).
#[derive(Debug, Default)]
struct Tables {
    period: BTreeMap<String, Counters>,
    total: BTreeMap<String, Counters>,
}

impl Tables {
    /// Applies `f` to `key`'s counters in both tables.
    fn update(&mut self, key: &str, f: impl Fn(&mut Counters)) {
        for table in [&mut self.period, &mut self.total] {
            f(table.entry(key.to_owned()).or_default());
        }
    }
}

/// One accepted connection. Dropped without [`Connection::completed`] or
/// [`Connection::failed`] it counts as failed (`dropped`).
#[derive(Debug)]
pub struct Connection {
    stats: Arc<Stats>,
    key: String,
    settled: bool,
}

impl Stats {
    /// Counts a connection accepted by `side` (`bridge`, `client`) with `module`.
    pub fn accepted(self: &Arc<Self>, side: &str, module: &str) -> Connection {
        let key = format!("{side} {module}");
        self.lock().update(&key, |c| {
            c.accepted += 1;
            c.open += 1;
            c.peak = c.peak.max(c.open);
        });
        Connection {
            stats: self.clone(),
            key,
            settled: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters since the last report, by `side module`.
    pub fn snapshot(&self) -> BTreeMap<String, Counters> {
        self.lock().period.clone()
    }

    /// The counters since the start, by `side module` (`peak` is the most ever open).
    pub fn totals(&self) -> BTreeMap<String, Counters> {
        self.lock().total.clone()
    }

    /// One line per module with the counters since the last report, then restarts them
    /// (open connections stay counted as open, and as the new peak).
    pub fn report(&self, period: &str) -> Vec<String> {
        let mut tables = self.lock();
        let all = &mut tables.period;
        let lines = all
            .iter()
            .filter(|(_, c)| c.accepted + c.completed + c.open > 0 || !c.failed.is_empty())
            .map(|(key, c)| format_line(key, c, period))
            .collect();
        for c in all.values_mut() {
            *c = Counters {
                open: c.open,
                peak: c.open,
                ..Counters::default()
            };
        }
        lines
    }
}

fn format_line(key: &str, c: &Counters, period: &str) -> String {
    let failed: u64 = c.failed.values().sum();
    let mut line = format!(
        "water stats ({period}): {key}: {} accepted, {} completed, {failed} failed",
        c.accepted, c.completed
    );
    if !c.failed.is_empty() {
        line.push_str(" (");
        for (i, (reason, n)) in c.failed.iter().enumerate() {
            let _ = write!(line, "{}{reason} {n}", if i > 0 { ", " } else { "" });
        }
        line.push(')');
    }
    let _ = write!(
        line,
        ", {} bytes in, {} bytes out, {} open, peak {} at once",
        c.bytes_in, c.bytes_out, c.open, c.peak
    );
    line
}

impl Connection {
    /// Adds what the connection's module moved on the network (read from it, written to it).
    pub fn add_bytes(&self, read: u64, written: u64) {
        self.stats.lock().update(&self.key, |c| {
            c.bytes_in += read;
            c.bytes_out += written;
        });
    }

    /// The connection ended normally.
    pub fn completed(mut self) {
        self.settle(None);
    }

    /// The connection failed for `reason` (a short stable word).
    pub fn failed(mut self, reason: &'static str) {
        self.settle(Some(reason));
    }

    fn settle(&mut self, failure: Option<&'static str>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        self.stats.lock().update(&self.key, |c| {
            c.open = c.open.saturating_sub(1);
            match failure {
                None => c.completed += 1,
                Some(reason) => *c.failed.entry(reason).or_default() += 1,
            }
        });
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.settle(Some("dropped"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_report_and_restart() {
        let stats = Arc::new(Stats::default());
        let a = stats.accepted("bridge", "shadowsocks");
        let b = stats.accepted("bridge", "shadowsocks");
        let c = stats.accepted("bridge", "shadowsocks");
        a.add_bytes(10, 20);
        a.completed();
        b.failed("extor-denied");
        let lines = stats.report("24h");
        assert_eq!(
            lines,
            [
                "water stats (24h): bridge shadowsocks: 3 accepted, 1 completed, 1 failed \
              (extor-denied 1), 10 bytes in, 20 bytes out, 1 open, peak 3 at once"
            ]
        );
        drop(c);
        let snap = stats.snapshot();
        let s = &snap["bridge shadowsocks"];
        assert_eq!((s.accepted, s.open, s.peak), (0, 0, 1));
        assert_eq!(s.failed.get("dropped"), Some(&1));
        assert_eq!(stats.report("exit").len(), 1);
        assert!(stats.report("exit").is_empty(), "nothing new, nothing said");
        let total = &stats.totals()["bridge shadowsocks"];
        assert_eq!((total.accepted, total.completed, total.peak), (3, 1, 3));
        assert_eq!(total.failed.values().sum::<u64>(), 2);
    }
}
