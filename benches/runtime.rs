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

type Res<T> = Result<T, String>;

/// Attaches what was being done to an error, so a failed phase says which.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Counts for one run. The full plan is what the targets are judged on; the
/// quick plan only checks that everything still works (CI smoke run).
#[derive(Clone, Debug)]
struct Plan {
    bulk_bytes: u64,
    bulk_runs: usize,
    setup_warmup: usize,
    setup_conns: usize,
    idle_conns: usize,
    short_conns: usize,
    short_concurrency: usize,
    compile_runs: usize,
    /// Phases to run (`--only a,b`; empty: all), for profiling one of them.
    only: Vec<String>,
}

/// Phase names for `--only`.
const PHASES: [&str; 5] = ["memory", "setup", "throughput", "short", "compile"];

impl Plan {
    fn wants(&self, phase: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == phase)
    }

    fn full() -> Self {
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

    fn quick() -> Self {
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
fn run(plan: &Plan, report: &mut Report) -> Res<()> {
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
async fn phase<T>(name: &str, limit: Duration, f: impl Future<Output = Res<T>>) -> Res<T> {
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

/// Phase 4: VmRSS growth per connection with `n` connections open, each
/// after one 64-byte echo (so the guest's buffers and the socket paths have
/// been used once, as in real traffic), against the same for direct TCP.
async fn idle_memory(
    rt: &Runtime,
    watm: &Arc<Watm>,
    echo: SocketAddr,
    n: usize,
    report: &mut Report,
) -> Res<()> {
    let dialer = Dialer::new(rt, watm.clone());
    let target = echo.to_string();
    let msg = [0x42u8; 64];
    // One connection first, so lazily built state (thread-local caches, the
    // first pool slot, code pages) is not charged to the measured ones.
    {
        let mut s = dialer.dial("tcp", &target).await.ctx("warm-up dial")?;
        roundtrip(&mut s, &msg).await?;
    }
    bounded_idle(rt, Duration::from_secs(10)).await?;
    settle().await;
    let (fds0, threads0) = water_pt::sys::process_counts().unwrap_or((0, 0));
    let before = rss_kib()?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = dialer
            .dial("tcp", &target)
            .await
            .ctx(&format!("dial #{i}"))?;
        roundtrip(&mut s, &msg).await?;
        conns.push(s);
    }
    settle().await;
    let after = rss_kib()?;
    let (fds1, threads1) = water_pt::sys::process_counts().unwrap_or((0, 0));
    drop(conns);
    bounded_idle(rt, Duration::from_secs(30)).await?;

    // The same with direct TCP: what the socket and the caller's state cost
    // without the runtime.
    settle().await;
    let before_tcp = rss_kib()?;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(echo).await.ctx("direct connect")?;
        roundtrip(&mut s, &msg).await?;
        conns.push(s);
    }
    settle().await;
    let after_tcp = rss_kib()?;
    drop(conns);

    let per = after.saturating_sub(before) as f64 / n as f64;
    let per_tcp = after_tcp.saturating_sub(before_tcp) as f64 / n as f64;
    report.row(
        Row::new(
            "rss_per_idle_conn_kib",
            "RSS per idle connection (plain dialer)",
        )
        .value(per, "KiB", 1)
        .baseline(format!("direct TCP {per_tcp:.1} KiB"))
        .target(Op::AtMost, 150.0),
    );
    report.figure("rss_per_idle_conn_direct_tcp_kib", per_tcp);
    report.figure("rss_before_kib", before as f64);
    report.figure("rss_after_kib", after as f64);
    report.figure("idle_conns", n as f64);
    report.note(format!(
        "idle memory: VmRSS {before} -> {after} KiB over {n} connections; per connection \
         {:.1} fds and {:.2} threads",
        fds1.saturating_sub(fds0) as f64 / n as f64,
        threads1.saturating_sub(threads0) as f64 / n as f64
    ));
    Ok(())
}

/// A `Connector` that remembers how long the last connect took. Sessions in
/// the setup phase run one at a time, so "the last" is "this session's".
struct TimedConnector {
    inner: DirectConnector,
    last_nanos: AtomicU64,
}

impl Connector for TimedConnector {
    fn connect(
        &self,
        network: &str,
        address: &str,
        cancel: &Waker,
    ) -> std::io::Result<std::net::TcpStream> {
        let t = Instant::now();
        let r = self.inner.connect(network, address, cancel);
        self.last_nanos
            .store(t.elapsed().as_nanos() as u64, Ordering::SeqCst);
        r
    }
}

/// Phase 3: instance setup time excluding the TCP connect, one connection
/// at a time (each waits for the previous instance to end, so the figure is
/// the uncontended cost).
async fn setup_time(
    rt: &Runtime,
    watm: &Arc<Watm>,
    echo: SocketAddr,
    plan: &Plan,
    report: &mut Report,
) -> Res<()> {
    let timed = Arc::new(TimedConnector {
        inner: DirectConnector::default(),
        last_nanos: AtomicU64::new(0),
    });
    let dialer = Dialer::new(rt, watm.clone()).with_policy(NetPolicy {
        connector: timed.clone(),
        ..NetPolicy::default()
    });
    let target = echo.to_string();
    let (mut total, mut connect, mut setup) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu0 = cpu_seconds();
    for i in 0..plan.setup_warmup + plan.setup_conns {
        if i == plan.setup_warmup {
            cpu0 = cpu_seconds();
        }
        timed.last_nanos.store(0, Ordering::SeqCst);
        let t = Instant::now();
        let s = dialer.dial("tcp", &target).await.ctx("setup dial")?;
        let took = t.elapsed();
        let conn = Duration::from_nanos(timed.last_nanos.load(Ordering::SeqCst));
        let session = s.session().clone();
        drop(s);
        tokio::time::timeout(Duration::from_secs(5), session.finished())
            .await
            .ctx("waiting for a setup-phase instance to end")?;
        if i >= plan.setup_warmup {
            total.push(micros(took));
            connect.push(micros(conn));
            setup.push(micros(took.saturating_sub(conn)));
        }
    }
    let cpu_per_conn = (cpu_seconds() - cpu0) * 1e6 / plan.setup_conns as f64;

    // A connect from a plain thread, as the module's host call does it,
    // without any runtime around it.
    let n = plan.setup_conns;
    let plain_connect = tokio::task::spawn_blocking(move || -> Res<Vec<f64>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let s = StdStream::connect(echo).ctx("plain connect")?;
            v.push(micros(t.elapsed()));
            drop(s);
        }
        Ok(v)
    })
    .await
    .ctx("connect thread")??;

    let (s50, s99) = (percentile(&mut setup, 50.0), percentile(&mut setup, 99.0));
    let (t50, t99) = (percentile(&mut total, 50.0), percentile(&mut total, 99.0));
    let (c50, c99) = (
        percentile(&mut connect, 50.0),
        percentile(&mut connect, 99.0),
    );
    let (p50, p99) = (
        percentile(&mut plain_connect.clone(), 50.0),
        percentile(&mut plain_connect.clone(), 99.0),
    );
    report.row(
        Row::new("tcp_connect_p50_us", "TCP connect, plain thread, p50 / p99")
            .value(p50, "µs", 1)
            .second(p99),
    );
    report.row(
        Row::new("dial_total_p50_us", "Dialer::dial total, p50 / p99")
            .value(t50, "µs", 1)
            .second(t99),
    );
    report.row(
        Row::new(
            "dial_connect_p50_us",
            "  of which module's TCP connect, p50 / p99",
        )
        .value(c50, "µs", 1)
        .second(c99),
    );
    report.row(
        Row::new("setup_excl_dial_p50_us", "instance setup excl. dial, p50")
            .value(s50, "µs", 1)
            .baseline("reference runtime 4290 µs incl. dial".into())
            .target(Op::AtMost, 100.0),
    );
    report.row(
        Row::new("setup_excl_dial_p99_us", "instance setup excl. dial, p99").value(s99, "µs", 1),
    );
    report.row(
        Row::new("setup_cpu_per_conn_us", "CPU per connection, dial to end")
            .value(cpu_per_conn, "µs", 0)
            .baseline("whole lifecycle, this process".into()),
    );
    let (spawn, handoff, wake) = (
        thread_spawn_latency(n).await?,
        thread_handoff_latency(n).await?,
        wake_latency(n).await?,
    );
    report.row(
        Row::new(
            "thread_spawn_p50_us",
            "  context: new OS thread running, p50",
        )
        .value(spawn, "µs", 1)
        .baseline("1 MiB stack, as a session's".into()),
    );
    report.row(
        Row::new(
            "thread_handoff_p50_us",
            "  context: hand-off to parked thread, p50",
        )
        .value(handoff, "µs", 1)
        .baseline("what a thread pool would pay".into()),
    );
    report.row(
        Row::new(
            "wake_to_task_p50_us",
            "  context: thread -> awaiting task, p50",
        )
        .value(wake, "µs", 1)
        .baseline("the \"ready\" notification".into()),
    );
    report.figure("dial_total_p99_us", t99);
    report.figure("dial_connect_p99_us", c99);
    report.figure("tcp_connect_p99_us", p99);
    report.figure("setup_conns", plan.setup_conns as f64);
    Ok(())
}

/// Time from asking for a new thread (with a session's stack size) until it
/// runs, p50 over `n`: the part of setup that a pool of parked session
/// threads would remove.
async fn thread_spawn_latency(n: usize) -> Res<f64> {
    tokio::task::spawn_blocking(move || {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let h = std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || t.elapsed())
                .ctx("spawn")?;
            v.push(micros(h.join().map_err(|_| "thread panicked")?));
        }
        Ok(percentile(&mut v, 50.0))
    })
    .await
    .ctx("spawn thread")?
}

/// Time from handing a job to an already running, parked thread until it
/// runs, p50 over `n`: what setup would pay instead with a thread pool.
async fn thread_handoff_latency(n: usize) -> Res<f64> {
    tokio::task::spawn_blocking(move || {
        let (job_tx, job_rx) = std::sync::mpsc::channel::<Instant>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Duration>();
        let worker = std::thread::spawn(move || {
            for t in job_rx {
                if done_tx.send(t.elapsed()).is_err() {
                    break;
                }
            }
        });
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            job_tx.send(Instant::now()).ctx("hand-off")?;
            v.push(micros(done_rx.recv().ctx("hand-off reply")?));
            // Let the worker park again, as an idle pool thread would be.
            std::thread::sleep(Duration::from_micros(50));
        }
        drop(job_tx);
        let _ = worker.join();
        Ok(percentile(&mut v, 50.0))
    })
    .await
    .ctx("hand-off thread")?
}

/// Time from a plain thread completing a oneshot until the task awaiting it
/// runs again, p50 over `n`: how a session reports "ready" to `dial`.
async fn wake_latency(n: usize) -> Res<f64> {
    let (req_tx, req_rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<Instant>>();
    let worker = std::thread::spawn(move || {
        for reply in req_rx {
            std::thread::sleep(Duration::from_micros(50));
            let _ = reply.send(Instant::now());
        }
    });
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = tokio::sync::oneshot::channel();
        req_tx.send(tx).ctx("wake request")?;
        let sent = rx.await.ctx("wake reply")?;
        v.push(micros(sent.elapsed()));
    }
    drop(req_tx);
    let _ = worker.join();
    Ok(percentile(&mut v, 50.0))
}

/// Phases 1 and 2: one-way bulk throughput, direct TCP vs plain dialer vs
/// plain dialer+listener pair, interleaved round by round. The ratio is the
/// median of the per-round ratios: on a shared machine the load drifts, and
/// runs next to each other see about the same load. CPU time per GiB (this
/// process, all threads) is reported too, since it moves less with load.
async fn throughput(rt: &Runtime, watm: &Arc<Watm>, plan: &Plan, report: &mut Report) -> Res<()> {
    let mut sink = Sink::start()?;
    let sink_addr = sink.addr;
    let dialer = Dialer::new(rt, watm.clone());
    let pair = PairListener::start(rt, watm, sink_addr).await?;
    let mut runs: [Vec<(f64, f64)>; 3] = Default::default();
    for _ in 0..plan.bulk_runs {
        runs[0].push(
            bulk(&mut sink, plan.bulk_bytes, async {
                let s = TcpStream::connect(sink_addr).await.ctx("direct connect")?;
                s.set_nodelay(true).ctx("nodelay")?;
                Ok(s)
            })
            .await?,
        );
        runs[1].push(
            bulk(&mut sink, plan.bulk_bytes, async {
                dialer
                    .dial("tcp", &sink_addr.to_string())
                    .await
                    .ctx("dial sink")
            })
            .await?,
        );
        runs[2].push(
            bulk(&mut sink, plan.bulk_bytes, async {
                dialer
                    .dial("tcp", &pair.addr.to_string())
                    .await
                    .ctx("dial pair listener")
            })
            .await?,
        );
    }
    pair.stop();
    bounded_idle(rt, Duration::from_secs(30)).await?;
    let gib = plan.bulk_bytes as f64 / (MIB * 1024.0);
    let speed = |i: usize| runs[i].iter().map(|r| r.0).collect::<Vec<f64>>();
    let cpu = |i: usize| {
        let mut v: Vec<f64> = runs[i].iter().map(|r| r.1 / gib).collect();
        percentile(&mut v, 50.0)
    };
    let ratio = |i: usize| {
        let mut v: Vec<f64> = runs[i]
            .iter()
            .zip(&runs[0])
            .map(|(w, d)| w.0 / d.0)
            .collect();
        percentile(&mut v, 50.0)
    };
    let (d, s, p) = (
        percentile(&mut speed(0), 50.0),
        percentile(&mut speed(1), 50.0),
        percentile(&mut speed(2), 50.0),
    );
    let size = format!("{} MiB one way, median", plan.bulk_bytes >> 20);
    report.row(
        Row::new("tput_direct_mibs", "throughput, direct TCP")
            .value(d, "MiB/s", 0)
            .baseline(size),
    );
    report.row(
        Row::new("tput_plain_mibs", "throughput, plain dialer")
            .value(s, "MiB/s", 0)
            .baseline(format!("direct {d:.0} MiB/s")),
    );
    report.row(
        Row::new("tput_plain_ratio", "  ratio plain dialer / direct")
            .value(ratio(1), "", 3)
            .baseline("reference runtime 0.066 (reverse)".into())
            .target(Op::AtLeast, 0.8),
    );
    report.row(
        Row::new("tput_pair_mibs", "throughput, plain dialer+listener")
            .value(p, "MiB/s", 0)
            .baseline(format!("direct {d:.0} MiB/s")),
    );
    report.row(
        Row::new("tput_pair_ratio", "  ratio pair / direct")
            .value(ratio(2), "", 3)
            .target(Op::AtLeast, 0.6),
    );
    let (cd, cs, cp) = (cpu(0), cpu(1), cpu(2));
    report.row(
        Row::new("cpu_per_gib_plain_s", "CPU per GiB, plain dialer / pair")
            .value(cs, "s", 2)
            .second(cp)
            .baseline(format!("direct TCP {cd:.2} s")),
    );
    report.figure("cpu_per_gib_direct_s", cd);
    report.figure("cpu_per_gib_pair_s", cp);
    report.figure("bulk_bytes", plan.bulk_bytes as f64);
    report.note(format!(
        "throughput rounds (MiB/s): direct {}; plain {}; pair {}",
        list(&speed(0)),
        list(&speed(1)),
        list(&speed(2))
    ));
    Ok(())
}

/// Phase 5: short connections per second through the pair, against direct
/// TCP short connections to the same echo server.
async fn short_connections(
    rt: &Runtime,
    watm: &Arc<Watm>,
    echo: SocketAddr,
    plan: &Plan,
    report: &mut Report,
) -> Res<()> {
    let (n, c) = (plan.short_conns, plan.short_concurrency);
    let msg: Arc<[u8]> = (0..1024).map(|i| i as u8).collect::<Vec<_>>().into();

    let m = msg.clone();
    let cpu0 = cpu_seconds();
    let direct = churn(n, c, move || {
        let m = m.clone();
        async move {
            let mut s = TcpStream::connect(echo).await.ctx("connect")?;
            s.set_nodelay(true).ctx("nodelay")?;
            check_echo(&mut s, &m).await
        }
    })
    .await;
    let direct_rate = direct.ok as f64 / direct.elapsed.as_secs_f64();
    let direct_cpu = (cpu_seconds() - cpu0) * 1e6 / n as f64;

    let pair = PairListener::start(rt, watm, echo).await?;
    let dialer = Dialer::new(rt, watm.clone());
    let addr = pair.addr.to_string();
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let water = churn(n, c, move || {
        let (dialer, addr, m) = (dialer.clone(), addr.clone(), msg.clone());
        async move {
            let mut s = dialer.dial("tcp", &addr).await.ctx("dial")?;
            check_echo(&mut s, &m).await
        }
    })
    .await;
    // Count the teardown too: an instance still ending holds its thread.
    bounded_idle(rt, Duration::from_secs(30)).await?;
    let elapsed = started.elapsed();
    let water_cpu = (cpu_seconds() - cpu0) * 1e6 / n as f64;
    let failed_setups = pair.failures.load(Ordering::SeqCst);
    pair.stop();
    let rate = water.ok as f64 / elapsed.as_secs_f64();
    report.row(
        Row::new(
            "short_conns_per_s",
            "short connections/s, pair (1 KiB echo)",
        )
        .value(rate, "/s", 0)
        .baseline(format!("direct TCP {direct_rate:.0}/s"))
        .target(Op::AtLeast, 3000.0),
    );
    report.row(
        Row::new("short_cpu_per_conn_us", "CPU per short connection, pair")
            .value(water_cpu, "µs", 0)
            .baseline(format!("direct TCP {direct_cpu:.0} µs")),
    );
    report.figure("short_cpu_per_conn_direct_us", direct_cpu);
    report.figure("short_conns_direct_per_s", direct_rate);
    report.figure("short_conns_errors", water.errors as f64);
    report.figure("short_conns", n as f64);
    report.figure("short_concurrency", c as f64);
    report.note(format!(
        "short connections: {n} at concurrency {c}; pair {} ok / {} failed ({} listener-side \
         setup failures), all instances ended {:.0} ms after the last echo; direct TCP {} ok \
         / {} failed",
        water.ok,
        water.errors,
        failed_setups,
        elapsed.saturating_sub(water.elapsed).as_secs_f64() * 1e3,
        direct.ok,
        direct.errors
    ));
    if let Some(e) = water.first_error.or(direct.first_error) {
        report.note(format!("short connections: first error: {e}"));
    }
    Ok(())
}

/// Phase 6: compile time without a cache, then the artifact cache: the
/// first runtime compiles and stores, later ones load what it stored.
fn compile_and_cache(wasm: &[u8], runs: usize, report: &mut Report) -> Res<()> {
    eprintln!("bench-runtime: compile and cache ...");
    let mut new_rt = Vec::new();
    let mut compile = Vec::new();
    let mut compile_cpu = 0.0;
    for _ in 0..runs {
        let t = Instant::now();
        let rt = Runtime::new(RuntimeConfig::default()).ctx("runtime")?;
        new_rt.push(millis(t.elapsed()));
        let (t, cpu0) = (Instant::now(), cpu_seconds());
        rt.load(wasm).ctx("compile")?;
        compile.push(millis(t.elapsed()));
        compile_cpu += cpu_seconds() - cpu0;
    }
    let dir = std::env::temp_dir().join(format!("water-pt-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cached = |dir: &PathBuf| -> Res<f64> {
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.clone()),
            ..RuntimeConfig::default()
        })
        .ctx("runtime with cache")?;
        let t = Instant::now();
        rt.load(wasm).ctx("load with cache")?;
        Ok(millis(t.elapsed()))
    };
    let result = (|| {
        let first = cached(&dir)?;
        let mut later = Vec::new();
        for _ in 0..runs {
            later.push(cached(&dir)?);
        }
        Ok::<_, String>((first, later))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let (first, mut later) = result?;
    let c = percentile(&mut compile, 50.0);
    let l = percentile(&mut later, 50.0);
    report.row(
        Row::new("runtime_new_ms", "Runtime::new (engine, pool, linker)").value(
            percentile(&mut new_rt, 50.0),
            "ms",
            2,
        ),
    );
    report.row(
        Row::new("compile_plain_ms", "load plain.wasm, no cache (compile)")
            .value(c, "ms", 2)
            .baseline(format!("{} bytes", wasm.len())),
    );
    report.row(
        Row::new("compile_cpu_ms", "  CPU per compile (all threads)")
            .value(compile_cpu * 1e3 / runs as f64, "ms", 0)
            .baseline("moves less with load than wall time".into()),
    );
    report.row(
        Row::new("cache_store_ms", "load, empty cache (compile + store)").value(first, "ms", 2),
    );
    report.row(
        Row::new("cache_load_ms", "load from artifact cache")
            .value(l, "ms", 2)
            .baseline(format!("compile {c:.2} ms")),
    );
    Ok(())
}

// ------------------------------------------------------ servers and helpers

/// A TCP server that reads every connection to its end and reports, per
/// connection, how many bytes arrived and when the last of them did. Plain
/// threads, so that its cost is the same for every kind of client.
struct Sink {
    addr: SocketAddr,
    done: mpsc::UnboundedReceiver<(u64, Instant)>,
}

impl Sink {
    fn start() -> Res<Self> {
        let listener = StdListener::bind("127.0.0.1:0").ctx("sink bind")?;
        let addr = listener.local_addr().ctx("sink address")?;
        let (tx, done) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("sink-accept".into())
            .spawn(move || loop {
                let mut conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 << 10];
                    let (mut total, mut last) = (0u64, Instant::now());
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        total += n as u64;
                        last = Instant::now();
                    }
                    let _ = tx.send((total, last));
                });
            })
            .ctx("sink thread")?;
        Ok(Self { addr, done })
    }
}

/// One bulk transfer of `bytes` on the stream `connect` opens; returns MiB/s
/// from the first write to the sink's last read, and the CPU seconds this
/// process used meanwhile. The stream is kept open
/// until the sink has everything, because dropping a `WaterStream` stops its
/// module, which might cut off bytes still in flight.
async fn bulk<S: AsyncWrite + Unpin>(
    sink: &mut Sink,
    bytes: u64,
    connect: impl Future<Output = Res<S>>,
) -> Res<(f64, f64)> {
    let mut s = connect.await?;
    let chunk = vec![0x5au8; 256 << 10];
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).await.ctx("bulk write")?;
        left -= n as u64;
    }
    s.shutdown().await.ctx("bulk shutdown")?;
    let (got, last) = tokio::time::timeout(Duration::from_secs(60), sink.done.recv())
        .await
        .ctx("waiting for the sink")?
        .ok_or("sink stopped")?;
    let cpu = cpu_seconds() - cpu0;
    drop(s);
    if got != bytes {
        return Err(format!("sink received {got} of {bytes} bytes"));
    }
    let speed = bytes as f64 / MIB / last.duration_since(start).as_secs_f64();
    Ok((speed, cpu))
}

/// The server half of the pair: a plain `Listener` whose decoded bytes go
/// to `upstream` through `Listener::serve`, as the bridge side runs it.
struct PairListener {
    addr: SocketAddr,
    failures: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PairListener {
    async fn start(rt: &Runtime, watm: &Arc<Watm>, upstream: SocketAddr) -> Res<Self> {
        let addr: SocketAddr = "127.0.0.1:0".parse().ctx("address")?;
        let listener = Arc::new(
            Listener::bind(rt, watm.clone(), addr)
                .await
                .ctx("listener bind")?,
        );
        let addr = listener.local_addr().ctx("listener address")?;
        let failures = Arc::new(AtomicU64::new(0));
        let f = failures.clone();
        let task = tokio::spawn(async move {
            loop {
                let tcp = match listener.accept_tcp().await {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (listener, f) = (listener.clone(), f.clone());
                tokio::spawn(async move {
                    let served = async {
                        let up = TcpStream::connect(upstream).await.ctx("upstream")?;
                        let (inbound, up) = (
                            into_fd(tcp).ctx("inbound fd")?,
                            into_fd(up).ctx("upstream fd")?,
                        );
                        listener.serve(inbound, up).await.ctx("serve")
                    };
                    if served.await.is_err() {
                        f.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Ok(Self {
            addr,
            failures,
            task,
        })
    }

    fn stop(&self) {
        self.task.abort();
    }
}

/// Outcome of a batch of short connections.
struct Churn {
    ok: usize,
    errors: usize,
    elapsed: Duration,
    first_error: Option<String>,
}

/// Runs `one` `n` times with `c` in flight at once, each try bounded.
async fn churn<F, Fut>(n: usize, c: usize, one: F) -> Churn
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Res<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..c)
        .map(|_| {
            let (next, one) = (next.clone(), one.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut first) = (0, 0, None);
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    match tokio::time::timeout(Duration::from_secs(10), one()).await {
                        Ok(Ok(())) => ok += 1,
                        Ok(Err(e)) => {
                            errors += 1;
                            first.get_or_insert(e);
                        }
                        Err(_) => {
                            errors += 1;
                            first.get_or_insert_with(|| "timed out".to_string());
                        }
                    }
                }
                (ok, errors, first)
            })
        })
        .collect();
    let mut out = Churn {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        first_error: None,
    };
    for w in workers {
        match w.await {
            Ok((ok, errors, first)) => {
                out.ok += ok;
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e.to_string());
            }
        }
    }
    out.elapsed = started.elapsed();
    out
}

async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) -> Res<Vec<u8>> {
    s.write_all(msg).await.ctx("echo write")?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.ctx("echo read")?;
    Ok(back)
}

async fn check_echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) -> Res<()> {
    if roundtrip(s, msg).await? == msg {
        Ok(())
    } else {
        Err("echo came back different".into())
    }
}

async fn bounded_idle(rt: &Runtime, limit: Duration) -> Res<()> {
    tokio::time::timeout(limit, rt.wait_idle())
        .await
        .map_err(|_| {
            format!(
                "{} instances still running after {limit:?}",
                rt.live_connections()
            )
        })
}

/// Lets threads finish starting or ending before memory is read.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The echo server the connections of phases 3-5 talk to, in a child
/// process so that its memory is not counted as the runtime's. The child
/// exits when its stdin closes, so it cannot outlive this process.
struct EchoChild {
    child: Child,
    addr: SocketAddr,
}

impl EchoChild {
    fn spawn() -> Res<Self> {
        let exe = std::env::current_exe().ctx("own path")?;
        let mut child = Command::new(exe)
            .arg("--echo-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .ctx("starting the echo server")?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("echo server has no stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .ctx("reading the echo server's address")?;
        match line.trim().parse() {
            Ok(addr) => Ok(Self { child, addr }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("echo server said {line:?} instead of its address"))
            }
        }
    }
}

impl Drop for EchoChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child side of [`EchoChild`]: a single-threaded tokio echo server.
fn echo_server_main() -> ExitCode {
    raise_nofile();
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        while let Ok(1..) = std::io::stdin().read(&mut buf) {}
        std::process::exit(0);
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo server: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo server: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Ok(addr) = listener.local_addr() else {
            return ExitCode::FAILURE;
        };
        println!("{addr}");
        let _ = std::io::stdout().flush();
        loop {
            match listener.accept().await {
                Ok((mut s, _)) => {
                    tokio::spawn(async move {
                        let _ = s.set_nodelay(true);
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
}

/// Raises the soft descriptor limit to the hard one (1,000 idle connections
/// need several thousand descriptors) and returns the limit now in force.
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.maximum.is_some() && lim.current != lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            eprintln!("bench-runtime: cannot raise RLIMIT_NOFILE: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn rss_kib() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ctx("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

fn module_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("watm/prebuilt")
        .join(format!("{name}.wasm"))
}

fn default_json_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench-runtime.json")
}

fn write_json(path: &PathBuf, json: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, json)
}

/// User plus system CPU time of this process (all threads, including ended
/// ones) from `/proc/self/stat`, in seconds. Its resolution is a clock tick
/// (USER_HZ, 100 on Linux), so it is only used over many connections or
/// seconds of work.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name, which may itself contain spaces:
    // state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// `/proc/loadavg`'s three averages: a busy machine explains noisy figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`th percentile (nearest rank) of `v`; NaN when empty.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

// ------------------------------------------------------------- reporting

/// What the run was measured on.
struct Machine {
    nproc: usize,
    cpu: String,
    kernel: String,
    rustc: String,
    nofile: u64,
}

impl Machine {
    fn probe(nofile: u64) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            rustc,
            nofile,
        }
    }

    fn describe(&self) -> String {
        format!(
            "machine: nproc {}, {}, Linux {}, {}, RLIMIT_NOFILE {}",
            self.nproc, self.cpu, self.kernel, self.rustc, self.nofile
        )
    }
}

#[derive(Clone, Copy)]
enum Op {
    AtLeast,
    AtMost,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::AtLeast => ">=",
            Op::AtMost => "<=",
        }
    }

    fn holds(self, value: f64, target: f64) -> bool {
        match self {
            Op::AtLeast => value >= target,
            Op::AtMost => value <= target,
        }
    }
}

/// One line of the table.
struct Row {
    key: &'static str,
    label: &'static str,
    value: f64,
    /// A second figure shown after a slash (p99 beside p50).
    second: Option<f64>,
    unit: &'static str,
    decimals: usize,
    baseline: String,
    target: Option<(Op, f64)>,
}

impl Row {
    fn new(key: &'static str, label: &'static str) -> Self {
        Self {
            key,
            label,
            value: f64::NAN,
            second: None,
            unit: "",
            decimals: 1,
            baseline: String::new(),
            target: None,
        }
    }

    fn value(mut self, value: f64, unit: &'static str, decimals: usize) -> Self {
        (self.value, self.unit, self.decimals) = (value, unit, decimals);
        self
    }

    fn second(mut self, v: f64) -> Self {
        self.second = Some(v);
        self
    }

    fn baseline(mut self, b: String) -> Self {
        self.baseline = b;
        self
    }

    fn target(mut self, op: Op, t: f64) -> Self {
        self.target = Some((op, t));
        self
    }

    fn measured(&self) -> String {
        let d = self.decimals;
        match self.second {
            Some(s) => format!("{:.d$} / {s:.d$} {}", self.value, self.unit),
            None => format!("{:.d$} {}", self.value, self.unit),
        }
    }

    fn verdict(&self) -> Option<bool> {
        self.target.map(|(op, t)| op.holds(self.value, t))
    }
}

/// Rows of the table, extra figures for the JSON, notes, and errors.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    extra: Vec<(&'static str, f64)>,
    notes: Vec<String>,
    errors: Vec<String>,
}

/// The targets of the brief, for reporting those a failed phase never got
/// to measure.
const TARGETS: [(&str, &str); 5] = [
    ("tput_plain_ratio", "ratio plain dialer / direct >= 0.8"),
    ("tput_pair_ratio", "ratio pair / direct >= 0.6"),
    (
        "setup_excl_dial_p50_us",
        "instance setup excl. dial p50 <= 100 µs",
    ),
    (
        "rss_per_idle_conn_kib",
        "RSS per idle connection <= 150 KiB",
    ),
    ("short_conns_per_s", "short connections/s >= 3000"),
];

impl Report {
    fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    fn figure(&mut self, key: &'static str, v: f64) {
        self.extra.push((key, v));
    }

    fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    fn misses(&self) -> usize {
        TARGETS
            .iter()
            .filter(|(key, _)| {
                self.rows
                    .iter()
                    .find(|r| r.key == *key)
                    .and_then(Row::verdict)
                    != Some(true)
            })
            .count()
    }

    fn print(&self) {
        let target = |r: &Row| {
            r.target
                .map(|(op, t)| format!("{} {t}", op.symbol()))
                .unwrap_or_default()
        };
        let verdict = |r: &Row| match r.verdict() {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "",
        };
        println!();
        println!(
            "{:<44} {:>22}  {:<36} {:<9} result",
            "figure", "measured", "baseline", "target"
        );
        println!("{}", "-".repeat(122));
        for r in &self.rows {
            println!(
                "{:<44} {:>22}  {:<36} {:<9} {}",
                r.label,
                r.measured(),
                r.baseline,
                target(r),
                verdict(r)
            );
        }
        println!();
        for n in &self.notes {
            println!("note: {n}");
        }
        for e in &self.errors {
            println!("error: {e}");
        }
        println!();
        for (key, what) in TARGETS {
            match self.rows.iter().find(|r| r.key == key) {
                Some(r) => println!(
                    "{} {what}: {}",
                    if r.verdict() == Some(true) {
                        "PASS"
                    } else {
                        "MISS"
                    },
                    r.measured().trim()
                ),
                None => println!("MISS {what}: not measured"),
            }
        }
    }

    fn to_json(&self, m: &Machine, plan: &Plan, quick: bool, took: Duration) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "null".into()
            }
        };
        let mut s = String::from("{\n");
        let _ = writeln!(
            s,
            "  \"machine\": {{\"nproc\": {}, \"cpu\": {}, \"kernel\": {}, \"rustc\": {}, \
             \"nofile\": {}}},",
            m.nproc,
            json_str(&m.cpu),
            json_str(&m.kernel),
            json_str(&m.rustc),
            m.nofile
        );
        let _ = writeln!(
            s,
            "  \"quick\": {quick},\n  \"plan\": {},\n  \"seconds\": {},",
            json_str(&format!("{plan:?}")),
            num(took.as_secs_f64())
        );
        s.push_str("  \"figures\": {\n");
        let mut figures: Vec<String> = Vec::new();
        for r in &self.rows {
            figures.push(format!("    \"{}\": {}", r.key, num(r.value)));
        }
        for (k, v) in &self.extra {
            figures.push(format!("    \"{k}\": {}", num(*v)));
        }
        s.push_str(&figures.join(",\n"));
        s.push_str("\n  },\n  \"targets\": [\n");
        let targets: Vec<String> = TARGETS
            .iter()
            .map(|(key, what)| {
                let row = self.rows.iter().find(|r| r.key == *key);
                let (value, target, pass) = match row {
                    Some(r) => (
                        num(r.value),
                        r.target.map_or("null".into(), |(_, t)| num(t)),
                        r.verdict() == Some(true),
                    ),
                    None => ("null".into(), "null".into(), false),
                };
                format!(
                    "    {{\"key\": \"{key}\", \"what\": {}, \"value\": {value}, \"target\": \
                     {target}, \"pass\": {pass}}}",
                    json_str(what)
                )
            })
            .collect();
        s.push_str(&targets.join(",\n"));
        s.push_str("\n  ],\n  \"notes\": [");
        let notes: Vec<String> = self
            .notes
            .iter()
            .chain(&self.errors)
            .map(|n| format!("\n    {}", json_str(n)))
            .collect();
        s.push_str(&notes.join(","));
        s.push_str("\n  ]\n}\n");
        s
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
