//! What the bridge user gets to see in tor's log, without flooding it.
//!
//! Everything is logged through `tracing` (stderr, which tor shows at info level). In managed
//! mode the events a bridge user must act on also go to tor as protocol lines:
//! `LOG SEVERITY=... MESSAGE=...` and `STATUS TRANSPORT=water ADDRESS=... CONNECT=...`.
//!
//! tor retries a failing bridge every few seconds and opens many circuits through a working one,
//! so a line per connection would bury everything else in its log. The rule here is "report
//! changes": for each bridge address the first success is reported, then nothing until a
//! failure; each distinct kind of failure is reported once until the next success. The same
//! rule gates the `LOG` lines that accompany those events. Failures without a bridge address
//! (server side: Extended ORPort, ORPort, module; client side: malformed arguments) are
//! reported once per kind for the life of the process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::output::{self, Severity};
use super::scrub;
use super::stats::Stats;
use super::TRANSPORT_NAME;

/// The most addresses remembered; beyond it the oldest state is forgotten (so at worst a line
/// is repeated), keeping the memory bounded whatever the client does.
const MAX_TRACKED: usize = 1024;

#[derive(Default)]
struct Seen {
    /// Per bridge address: `None` after a reported success, else the failure kinds reported.
    client: HashMap<String, Option<HashSet<&'static str>>>,
    other: HashSet<&'static str>,
}

/// Reports connection outcomes; shared by every connection of the process.
pub struct Reporter {
    managed: bool,
    seen: Mutex<Seen>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("managed", &self.managed)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// `managed`: also write `LOG`/`STATUS` lines on stdout for tor.
    pub fn new(managed: bool) -> Self {
        Self {
            managed,
            seen: Mutex::new(Seen::default()),
            stats: Arc::new(Stats::default()),
        }
    }

    /// The connection counts of the process, for the operator's periodic report.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Reports the statistics since the last report, one `notice` per module ([`Stats`]).
    pub fn report_stats(&self, period: &str) {
        for line in self.stats.report(period) {
            self.log(Severity::Notice, &line);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A `LOG` line for tor (managed mode) and the same message on stderr, addresses
    /// [scrubbed](super::scrub) unless `--unsafe-logging`. Write errors are ignored: once tor is
    /// gone (EPIPE) there is nobody to tell.
    pub fn log(&self, severity: Severity, msg: &str) {
        let msg = &*scrub::for_log(msg);
        match severity {
            Severity::Error => tracing::error!("{msg}"),
            Severity::Warning => tracing::warn!("{msg}"),
            Severity::Notice | Severity::Info => tracing::info!("{msg}"),
            Severity::Debug => tracing::debug!("{msg}"),
        }
        if self.managed {
            let _ = output::stdout().log(severity, msg);
        }
    }

    fn status(&self, pairs: &[(&str, &str)]) {
        if self.managed {
            let safe: Vec<_> = pairs.iter().map(|(k, v)| (*k, scrub::for_log(v))).collect();
            let _ = output::stdout().status(TRANSPORT_NAME, &safe);
        }
    }

    /// A connection to the bridge at `address` is up.
    pub fn bridge_connected(&self, address: &str) {
        let first = {
            let mut seen = self.lock();
            forget_if_full(&mut seen.client);
            !matches!(seen.client.insert(address.to_owned(), None), Some(None))
        };
        if first {
            tracing::info!("connected to bridge {address}");
            self.status(&[("ADDRESS", address), ("CONNECT", "Success")]);
        } else {
            tracing::debug!("connected to bridge {address}");
        }
    }

    /// A connection to the bridge at `address` failed; `kind` names the failure for
    /// de-duplication, `msg` says what happened.
    pub fn bridge_failed(&self, address: &str, kind: &'static str, msg: &str) {
        let first = {
            let mut seen = self.lock();
            forget_if_full(&mut seen.client);
            let kinds = seen
                .client
                .entry(address.to_owned())
                .or_insert(None)
                .get_or_insert_with(HashSet::new);
            kinds.insert(kind)
        };
        let text = format!("water: connection to bridge {address} failed: {msg}");
        if first {
            self.log(Severity::Warning, &text);
            self.status(&[("ADDRESS", address), ("CONNECT", "Failed"), ("ERRSTR", msg)]);
        } else {
            tracing::info!("{text}");
        }
    }

    /// A failure not tied to a bridge address (a server-side connection tor refused, malformed
    /// SOCKS arguments): a `LOG` warning the first time for each `kind`, stderr afterwards.
    pub fn failed_once(&self, kind: &'static str, msg: &str) {
        let first = self.lock().other.insert(kind);
        if first {
            self.log(Severity::Warning, msg);
        } else {
            tracing::info!("{msg}");
        }
    }
}

fn forget_if_full<V>(map: &mut HashMap<String, V>) {
    if map.len() >= MAX_TRACKED {
        map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_changes_only() {
        let r = Reporter::new(false);
        let state = |r: &Reporter| r.lock().client.get("a:1").cloned();
        r.bridge_connected("a:1");
        assert_eq!(state(&r), Some(None));
        r.bridge_failed("a:1", "refused", "x");
        r.bridge_failed("a:1", "refused", "x");
        assert_eq!(state(&r).unwrap().unwrap().len(), 1);
        r.bridge_failed("a:1", "pin-mismatch", "x");
        assert_eq!(state(&r).unwrap().unwrap().len(), 2);
        r.bridge_connected("a:1");
        assert_eq!(state(&r), Some(None));
        r.failed_once("denied", "x");
        r.failed_once("denied", "x");
        assert_eq!(r.lock().other.len(), 1);
    }
}
