//! The runtime benchmark: what running a transport inside water-pt costs,
//! measured against plain loopback TCP on the same machine in the same run.
//!
//! Run it with `scripts/bench-runtime.sh` (or `cargo bench --bench runtime --
//! [--quick] [--strict] [--json PATH]`). Every figure is printed in one table
//! beside its baseline and target, followed by one PASS/MISS line per
//! target, and all figures are written as JSON (by default to
//! `$CARGO_TARGET_DIR/bench-runtime.json`, else `target/bench-runtime.json`).
//!
//! What is measured, and why this way:
//!
//! 1. Bulk throughput, one way: the client writes N bytes, a sink server
//!    reads them. One way because that is what a download or upload is, and
//!    because an echo would measure the echo server as much as the runtime.
//!    The clock stops at the sink's last read, so teardown is not counted.
//! 2. The same transfer through a client/server pair (a `Dialer` whose remote
//!    is a `Listener` that forwards to the sink), which is how the transport
//!    is deployed: two instances and two extra hops.
//! 3. Instance setup: `Dialer::dial` to an already-listening port, minus the
//!    time the module's own TCP connect took. The connect is timed by a
//!    wrapping `Connector` on the session's thread, so the subtraction is
//!    exact per connection rather than p50 minus p50.
//! 4. Resident memory per idle connection. The echo server these connections
//!    talk to runs in a child process (this binary re-executed with
//!    `--echo-server`), so its buffers do not inflate the figure.
//! 5. Short connections per second through the pair: dial, 1 KiB echo,
//!    close; the clock stops once every instance has ended, because an
//!    instance that is still tearing down still holds a thread and a slot.
//! 6. Module compile time, and load time from the on-disk artifact cache.
//!
//! Everything is loopback, bounded in count, and each phase has a time limit,
//! so a regression shows up as a MISS or an error instead of a hang.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use water_pt::runtime::{into_fd, Connector, DirectConnector, NetPolicy};
use water_pt::sys::Waker;
use water_pt::{Dialer, Limits, Listener, Runtime, RuntimeConfig, Watm};

pub(crate) type Res<T> = Result<T, String>;

/// Attaches what was being done to an error, so a failed phase says which.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

mod phases;
mod report;
mod support;

use phases::*;
use report::*;
use support::*;

pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// Counts for one run. The full plan is what the targets are judged on; the
/// quick plan only checks that everything still works (CI smoke run).
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) bulk_bytes: u64,
    pub(crate) bulk_runs: usize,
    pub(crate) setup_warmup: usize,
    pub(crate) setup_conns: usize,
    pub(crate) idle_conns: usize,
    pub(crate) short_conns: usize,
    pub(crate) short_concurrency: usize,
    pub(crate) compile_runs: usize,
    /// Phases to run (`--only a,b`; empty: all), for profiling one of them.
    pub(crate) only: Vec<String>,
}

/// Phase names for `--only`.
pub(crate) const PHASES: [&str; 5] = ["memory", "setup", "throughput", "short", "compile"];

impl Plan {
    pub(crate) fn wants(&self, phase: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == phase)
    }

    pub(crate) fn full() -> Self {
        Self {
            bulk_bytes: 1 << 30,
            bulk_runs: 5,
            setup_warmup: 100,
            setup_conns: 2_000,
            idle_conns: 1_000,
            short_conns: 20_000,
            short_concurrency: 32,
            compile_runs: 5,
            only: Vec::new(),
        }
    }

    pub(crate) fn quick() -> Self {
        Self {
            bulk_bytes: 64 << 20,
            bulk_runs: 3,
            setup_warmup: 20,
            setup_conns: 300,
            idle_conns: 200,
            short_conns: 2_000,
            short_concurrency: 32,
            compile_runs: 3,
            only: Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--echo-server") {
        return echo_server_main();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let strict = args.iter().any(|a| a == "--strict");
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let json_path = value_of("--json")
        .map(PathBuf::from)
        .unwrap_or_else(default_json_path);
    for a in &args {
        // `cargo bench` passes `--bench` to every bench binary.
        let known = ["--quick", "--strict", "--json", "--only", "--bench"];
        if a.starts_with("--") && !known.contains(&a.as_str()) {
            eprintln!("bench-runtime: ignoring unknown argument {a}");
        }
    }

    let mut plan = if quick { Plan::quick() } else { Plan::full() };
    if let Some(only) = value_of("--only") {
        plan.only = only.split(',').map(str::to_owned).collect();
        if let Some(bad) = plan.only.iter().find(|p| !PHASES.contains(&p.as_str())) {
            eprintln!("bench-runtime: unknown phase {bad}; phases are {PHASES:?}");
            return ExitCode::FAILURE;
        }
    }
    let nofile = raise_nofile();
    // About eight descriptors per idle dialer connection (caller pair,
    // control pair, eventfd, network socket) plus the direct-TCP baseline.
    let fits = (nofile.saturating_sub(500) / 10) as usize;
    if fits < plan.idle_conns {
        eprintln!(
            "bench-runtime: RLIMIT_NOFILE is {nofile}; measuring {fits} idle connections instead of {}",
            plan.idle_conns
        );
        plan.idle_conns = fits.max(10);
    }

    let machine = Machine::probe(nofile);
    println!(
        "water-pt runtime benchmark ({})",
        if quick { "quick" } else { "full" }
    );
    println!("{}", machine.describe());
    println!("{plan:?}");
    println!();

    let mut report = Report::default();
    let started = Instant::now();
    let load_before = loadavg();
    let outcome = run(&plan, &mut report);
    report.note(format!(
        "load average (1/5/15 min) before {load_before}, after {}; other work on the machine \
         skews every figure",
        loadavg()
    ));
    if let Err(e) = &outcome {
        eprintln!("bench-runtime: stopped early: {e}");
        report.errors.push(e.clone());
    }
    report.print();
    let json = report.to_json(&machine, &plan, quick, started.elapsed());
    match write_json(&json_path, &json) {
        Ok(()) => println!("figures written to {}", json_path.display()),
        Err(e) => eprintln!("bench-runtime: cannot write {}: {e}", json_path.display()),
    }
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    if !report.errors.is_empty() || (strict && report.misses() > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// All phases in order. Memory is measured first, before the throughput and
/// churn phases have grown the allocator's caches, so its baseline reading
/// is not inflated by memory that later connections would merely reuse.
pub(crate) fn run(plan: &Plan, report: &mut Report) -> Res<()> {
    let echo = EchoChild::spawn()?;
    let wasm = std::fs::read(module_path("plain")).ctx("reading plain.wasm")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .ctx("tokio runtime")?;
    tokio.block_on(async {
        let rt = Runtime::new(RuntimeConfig {
            limits: Limits {
                max_connections: 4_096,
                ..Limits::default()
            },
            ..RuntimeConfig::default()
        })
        .ctx("runtime")?;
        let watm = rt.load(&wasm).ctx("loading plain.wasm")?;

        if plan.wants("memory") {
            phase("idle memory", Duration::from_secs(120), async {
                idle_memory(&rt, &watm, echo.addr, plan.idle_conns, report).await
            })
            .await?;
        }
        if plan.wants("setup") {
            phase("setup time", Duration::from_secs(120), async {
                setup_time(&rt, &watm, echo.addr, plan, report).await
            })
            .await?;
        }
        if plan.wants("throughput") {
            phase("throughput", Duration::from_secs(300), async {
                throughput(&rt, &watm, plan, report).await
            })
            .await?;
        }
        if plan.wants("short") {
            phase("short connections", Duration::from_secs(180), async {
                short_connections(&rt, &watm, echo.addr, plan, report).await
            })
            .await?;
        }
        Ok::<_, String>(())
    })?;
    drop(tokio);
    if plan.wants("compile") {
        compile_and_cache(&wasm, plan.compile_runs, report)?;
    }
    Ok(())
}

/// Runs one phase under a time limit, saying how long it took.
pub(crate) async fn phase<T>(
    name: &str,
    limit: Duration,
    f: impl Future<Output = Res<T>>,
) -> Res<T> {
    eprintln!("bench-runtime: {name} ...");
    let t = Instant::now();
    let r = tokio::time::timeout(limit, f)
        .await
        .map_err(|_| format!("{name}: did not finish within {limit:?}"))?;
    eprintln!(
        "bench-runtime: {name} done in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    r
}

// ---------------------------------------------------------------- phases
