//! The idle-connection test: how much memory, how many descriptors, mappings and threads each
//! transport process adds per connection that is open but carries nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use rustix::process::{getrlimit, Resource};

use crate::measure::{bounded, echo_once, Failures, Proc};
use crate::procfs::{self, Sample};
use crate::route::Route;
use crate::target::Target;

/// Memory of one transport process with idle connections held open.
#[derive(Debug, Clone)]
pub struct IdleSide {
    pub side: &'static str,
    pub before: Sample,
    pub held: Sample,
}

impl IdleSide {
    /// What one held connection added, from a count `before` and `held` with `n` held.
    fn per_conn(before: u64, held: u64, n: usize) -> f64 {
        (held as f64 - before as f64) / n.max(1) as f64
    }
    /// A count projected to `n` connections from before/held at `opened`.
    fn project(before: u64, held: u64, opened: usize, n: usize) -> f64 {
        before as f64 + Self::per_conn(before, held, opened) * n as f64
    }
    /// Growth per held connection, KiB.
    pub fn kib_per_conn(&self, n: usize) -> f64 {
        Self::per_conn(self.before.rss_kib, self.held.rss_kib, n)
    }
    /// Memory mappings added per held connection.
    pub fn maps_per_conn(&self, n: usize) -> f64 {
        Self::per_conn(self.before.maps, self.held.maps, n)
    }
    /// Descriptors this side would hold with `n` connections, at the measured rate.
    pub fn fds_at(&self, opened: usize, n: usize) -> f64 {
        Self::project(self.before.fds, self.held.fds, opened, n)
    }
    /// Memory mappings this side would have with `n` connections, at the measured rate.
    pub fn maps_at(&self, opened: usize, n: usize) -> f64 {
        Self::project(self.before.maps, self.held.maps, opened, n)
    }
    /// Threads this side would run with `n` connections, at the measured rate.
    pub fn threads_at(&self, opened: usize, n: usize) -> f64 {
        Self::project(self.before.threads, self.held.threads, opened, n)
    }
    /// File descriptors added per held connection.
    pub fn fds_per_conn(&self, n: usize) -> f64 {
        Self::per_conn(self.before.fds, self.held.fds, n)
    }
}

/// The idle-connection test.
#[derive(Debug, Clone)]
pub struct Idle {
    pub requested: usize,
    pub opened: usize,
    /// Connections the stand-in ORPort saw open while they were held.
    pub at_orport: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub open_secs: f64,
    pub sides: Vec<IdleSide>,
}

impl Idle {
    pub fn side(&self, name: &str) -> Option<&IdleSide> {
        self.sides.iter().find(|s| s.side == name)
    }

    /// Waits, for `limit` at most, until every transport process is back to about the
    /// threads it had before the connections were opened; says how long that
    /// took on stderr, or returns a note for the results when it did not happen in time.
    ///
    /// A process that ended thousands of connections a moment ago may still be ending their
    /// threads (water-pt runs one per connection, and each thread exit costs the kernel a
    /// stack unmapping), and that work would otherwise be charged to whichever test comes
    /// next: measured after 10,000 idle connections, it cut the next short-connection test to
    /// 500-900 conn/s at 1.5-3 ms of CPU per connection, against about 2,000 at 0.7 ms after
    /// a pause.
    pub async fn settle(&self, procs: &[Proc], limit: Duration) -> Option<String> {
        let start = Instant::now();
        if self.settled(procs, limit).await {
            eprintln!(
                "     transports back to their threads {:.1} s after the close",
                start.elapsed().as_secs_f64()
            );
            return None;
        }
        Some(format!(
            "the transports still had the idle connections' threads {} s after \
             the close; the next test pays for their teardown",
            limit.as_secs()
        ))
    }

    /// See [`Self::settle`].
    async fn settled(&self, procs: &[Proc], limit: Duration) -> bool {
        // water-pt keeps up to 64 finished sessions' threads waiting for the next ones.
        const THREAD_SLACK: u64 = 64;
        let deadline = Instant::now() + limit;
        loop {
            let back = self.sides.iter().all(|side| {
                procs
                    .iter()
                    .find(|p| p.side == side.side)
                    .and_then(|p| procfs::threads(p.pid).ok())
                    .is_none_or(|now| now <= side.before.threads + THREAD_SLACK)
            });
            if back {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn json(&self) -> Value {
        let sides: Vec<Value> = self
            .sides
            .iter()
            .map(|s| {
                json!({
                    "side": s.side,
                    "rss_kib_before": s.before.rss_kib, "rss_kib_held": s.held.rss_kib,
                    "rss_kib_per_conn": s.kib_per_conn(self.opened),
                    "rss_kib_per_conn_including_base": s.held.rss_kib as f64 / self.opened.max(1) as f64,
                    "threads_before": s.before.threads, "threads_held": s.held.threads,
                    "maps_before": s.before.maps, "maps_held": s.held.maps,
                    "maps_per_conn": s.maps_per_conn(self.opened),
                    "fds_before": s.before.fds, "fds_held": s.held.fds,
                    "fds_per_conn": s.fds_per_conn(self.opened),
                    "projected_at_10000": {
                        "fds": s.fds_at(self.opened, 10_000),
                        "maps": s.maps_at(self.opened, 10_000),
                        "threads": s.threads_at(self.opened, 10_000),
                    },
                })
            })
            .collect();
        json!({
            "what": "N connections opened end to end (echo of one byte each) and held; VmRSS growth / N",
            "requested": self.requested, "opened": self.opened, "at_orport": self.at_orport,
            "errors": self.errors, "first_error": self.first_error,
            "open_secs": self.open_secs, "sides": sides,
        })
    }
}

/// How many connections the idle test opens at once.
const IDLE_OPEN_CONCURRENCY: usize = 64;

pub async fn idle(
    route: &Route,
    target: &Target,
    n: usize,
    settle: Duration,
    procs: &[Proc],
) -> Idle {
    let before: Vec<Sample> = procs
        .iter()
        .map(|p| procfs::sample(p.pid).unwrap_or_default())
        .collect();
    let started = Instant::now();
    let fails = Arc::new(Failures::default());
    let gate = Arc::new(Semaphore::new(IDLE_OPEN_CONCURRENCY));
    let mut opening = JoinSet::new();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        if fails.too_many() {
            break;
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (route, fails) = (route.clone(), fails.clone());
        opening.spawn(async move {
            let _permit = permit;
            match bounded(echo_once(&route, 1)).await {
                Ok((stream, _, _)) => Some(stream),
                Err(e) => {
                    fails.record(e);
                    None
                }
            }
        });
        while let Some(done) = opening.try_join_next() {
            held.extend(done.ok().flatten());
        }
    }
    while let Some(done) = opening.join_next().await {
        held.extend(done.ok().flatten());
    }
    let open_secs = started.elapsed().as_secs_f64();
    // Let the transports finish whatever per-connection setup is lazy before looking.
    tokio::time::sleep(settle).await;
    let sides = procs
        .iter()
        .zip(before)
        .map(|(p, before)| IdleSide {
            side: p.side,
            before,
            held: procfs::sample(p.pid).unwrap_or_default(),
        })
        .collect();
    let at_orport = target.counters().await.map_or(0, |c| c.active);
    let opened = held.len();
    drop(held);
    Idle {
        requested: n,
        opened,
        at_orport,
        errors: fails.count(),
        first_error: fails.first(),
        open_secs,
        sides,
    }
}

/// Explains an idle test that could not open every connection, and for each side which
/// per-process limit 10,000 connections would exceed at the measured per-connection rates, and
/// by how much.
pub fn limit_notes(idle: &Idle) -> Vec<String> {
    let mut notes = Vec::new();
    if idle.opened < idle.requested {
        notes.push(format!(
            "idle: opened {} of {} ({} failures; first: {})",
            idle.opened,
            idle.requested,
            idle.errors,
            idle.first_error.as_deref().unwrap_or("none")
        ));
    }
    let nofile = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX) as f64;
    let maps = procfs::sysctl("vm/max_map_count").map_or(f64::INFINITY, |v| v as f64);
    let threads = [
        procfs::sysctl("kernel/threads-max"),
        procfs::sysctl("kernel/pid_max"),
        getrlimit(Resource::Nproc).current,
    ]
    .into_iter()
    .flatten()
    .min()
    .map_or(f64::INFINITY, |v| v as f64);
    for side in &idle.sides {
        let n = idle.opened;
        let checks = [
            (
                "descriptors",
                side.fds_at(n, 10_000),
                side.fds_per_conn(n),
                nofile,
                "RLIMIT_NOFILE",
            ),
            (
                "memory maps",
                side.maps_at(n, 10_000),
                side.maps_per_conn(n),
                maps,
                "vm.max_map_count",
            ),
            (
                "threads",
                side.threads_at(n, 10_000),
                (side.held.threads as f64 - side.before.threads as f64) / n.max(1) as f64,
                threads,
                "min(kernel.threads-max, kernel.pid_max, RLIMIT_NPROC)",
            ),
        ];
        for (what, at, per, limit, name) in checks {
            if at > limit {
                notes.push(format!(
                    "idle: {} side at 10,000 connections needs ~{at:.0} {what} ({per:.1} per \
                     connection) > {name} {limit:.0}: over by ~{:.0}; it would stop near {:.0} \
                     connections",
                    side.side,
                    at - limit,
                    (limit - (at - per * 10_000.0)) / per.max(1e-9),
                ));
            }
        }
    }
    notes
}
