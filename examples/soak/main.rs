//! Load and soak driver: a `water-pt client --remote` / `water-pt server --forward` pair in
//! front of an echo server, all on loopback, driven hard enough to expose lost bytes and slow
//! leaks.
//!
//! Phases:
//! 1. *short*: `--short` connections (connect, echo `--short-bytes`, close) at a fixed
//!    `--short-concurrency`. A leak of a few bytes or one descriptor per connection adds up
//!    over many connections, so this is where per-connection leaks show;
//! 2. *long*: `--long` connections open at once, each carrying `--long-bytes` of
//!    pseudo-random data each way. The SHA-256 of what was sent must equal the SHA-256 of
//!    what came back, so a lost, duplicated or reordered byte fails the run.
//!
//! Before the first phase (after a few warm-up connections) and after each phase (once its
//! connections closed, and after a bounded settling wait) the open descriptors, threads and RSS of both PT processes are read
//! from `/proc`. Descriptors and threads must come back to the baseline. Threads need the
//! wait: the runtime keeps up to 64 finished session threads parked for 10 s, so the settling
//! wait (`--settle-secs`) must outlast that. RSS cannot come back exactly: the instance pool
//! keeps up to `water_pt::runtime::RESIDENT_BUDGET` of its unused slots resident by design,
//! and the allocator keeps the top of each of its arenas. So it may exceed the baseline by
//! that budget plus `--rss-slack-mib`, however many connections the run opened; a
//! per-connection leak over a million connections does not fit in that.
//!
//! With `--flood-silent`/`--flood-noisy` it runs the flood mode instead (see `flood.rs`):
//! a Shadowsocks bridge held by many silent and noisy connections while a real client echoes
//! through it.
//!
//! `scripts/soak.sh` builds and runs it; `tests/soak_short.rs` runs it with small counts.

use clap::Parser;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident bytes the runtime's instance pool keeps per slot once used (linear memory and
/// table, 128 KiB each; see `KEEP_RESIDENT` in `src/runtime/mod.rs`).
mod flood;
mod load;
mod procs;

use load::*;
use procs::*;

/// What the instance pool may keep resident after any burst, in KiB.
pub(crate) const POOL_RESIDENT_KIB: u64 = (water_pt::runtime::RESIDENT_BUDGET >> 10) as u64;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "soak",
    about = "Load and soak a water-pt client/server pair on loopback"
)]
pub struct Opts {
    /// Short connections to make in phase 1 (0 skips the phase).
    #[arg(long, default_value_t = 1_000_000)]
    pub short: u64,
    /// Short connections in flight at once.
    #[arg(long, default_value_t = 64)]
    pub short_concurrency: usize,
    /// Bytes echoed on each short connection.
    #[arg(long, default_value_t = 32)]
    pub short_bytes: usize,
    /// Long connections open at once in phase 2 (0 skips the phase).
    #[arg(long, default_value_t = 1_000)]
    pub long: usize,
    /// Bytes carried each way on each long connection.
    #[arg(long, default_value_t = 64 << 20)]
    pub long_bytes: u64,
    /// Times to run the long phase. From the second round on, RSS must stay within
    /// `--rss-slack-mib` of what it was after the first: what a burst leaves resident is
    /// reused by the next one, while a leak would grow with every round.
    #[arg(long, default_value_t = 1)]
    pub long_rounds: u32,
    /// Longest wait, after a phase, for descriptors and threads to come back to the
    /// baseline. Must exceed the runtime's 10 s idle-thread keep-alive.
    #[arg(long, default_value_t = 20)]
    pub settle_secs: u64,
    /// RSS growth tolerated beyond the instance pool's resident budget, in MiB.
    #[arg(long, default_value_t = 32)]
    pub rss_slack_mib: u64,
    /// A single read or write (or connect) that makes no progress for this long fails its
    /// connection, so a stuck connection cannot hang the run.
    #[arg(long, default_value_t = 60)]
    pub io_timeout_secs: u64,
    /// Upper bound on each phase as a whole.
    #[arg(long, default_value_t = 3_600)]
    pub phase_timeout_secs: u64,
    /// The `water-pt` binary (default: next to this executable's directory, i.e. the
    /// `water-pt` of the same cargo profile).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// Module both PTs run (default: the built-in `plain`).
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// Fixed send and receive buffers, in KiB, for every socket of the run: the PTs' (their
    /// `--socket-buffer-kib`), the driver's and the echo server's. 0 leaves the kernel's
    /// autotuning everywhere. With autotuning, the long phase's 6,000 busy loopback sockets
    /// can outgrow the kernel's TCP memory (`net.ipv4.tcp_mem`); the kernel then drops
    /// packets, connections stall and the PTs' network stall limit fails them.
    #[arg(long, default_value_t = 64)]
    pub socket_buffer_kib: u32,
    /// Flood mode instead of the short and long phases: this many silent connections to a
    /// `water-pt server` running the Shadowsocks module (see `flood.rs`).
    #[arg(long, default_value_t = 0)]
    pub flood_silent: usize,
    /// Flood mode: this many connections sending a few hundred random bytes each.
    #[arg(long, default_value_t = 0)]
    pub flood_noisy: usize,
    /// Flood mode: bytes the real client echoes through the flooded bridge.
    #[arg(long, default_value_t = 1 << 20)]
    pub flood_echo_bytes: usize,
    /// Flood mode: how long the server keeps an unauthenticated connection (the module's
    /// `reject_timeout_secs` and the server's setup deadline), so that the flood outlives
    /// the measurement.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub flood_hold_secs: u64,
}

impl Opts {
    /// Whether this is a flood run.
    pub fn flood(&self) -> bool {
        self.flood_silent + self.flood_noisy > 0
    }
}

impl Opts {
    /// The socket buffer size in bytes, if fixed.
    pub fn socket_buffer(&self) -> Option<u32> {
        (self.socket_buffer_kib > 0).then(|| self.socket_buffer_kib.saturating_mul(1024))
    }
}

/// What one phase did.
#[derive(Debug, Default, Clone)]
pub struct PhaseResult {
    pub name: &'static str,
    pub connections: u64,
    pub failures: u64,
    pub bytes_each_way: u64,
    pub elapsed: Duration,
    /// The first few failure messages.
    pub errors: Vec<String>,
}

/// `/proc` figures of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub fds: usize,
    pub threads: usize,
    pub rss_kib: u64,
}

/// The whole run: per phase results, and snapshots of (client, server) usage.
#[derive(Debug, Default)]
pub struct Report {
    pub phases: Vec<PhaseResult>,
    /// What a flood run measured.
    pub flood: Option<flood::FloodResult>,
    /// (label, client, server, rss allowance in KiB for that snapshot)
    pub snapshots: Vec<(String, Usage, Usage, u64)>,
    pub problems: Vec<String>,
    /// Abnormal connection ends the PTs logged ("client 3 x connection ended: ...").
    pub pt_log: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        if let Some(f) = &self.flood {
            t.push_str(&f.table());
            t.push('\n');
        }
        if !self.phases.is_empty() {
            t.push_str(&format!(
                "{:<8} {:>12} {:>9} {:>10} {:>10} {:>12}\n",
                "phase", "connections", "failures", "MiB/way", "seconds", "conn/s"
            ));
        }
        for p in &self.phases {
            let secs = p.elapsed.as_secs_f64();
            t.push_str(&format!(
                "{:<8} {:>12} {:>9} {:>10.1} {:>10.1} {:>12.0}\n",
                p.name,
                p.connections,
                p.failures,
                p.bytes_each_way as f64 / (1u64 << 20) as f64,
                secs,
                p.connections as f64 / secs.max(1e-9),
            ));
            if secs > 0.0 && p.bytes_each_way > 0 {
                t.push_str(&format!(
                    "{:<8} {:>12.1} MiB/s each way (aggregate)\n",
                    "",
                    p.bytes_each_way as f64 / (1u64 << 20) as f64 / secs
                ));
            }
        }
        t.push('\n');
        t.push_str(&format!(
            "{:<14} {:>9} {:>9} {:>11} {:>9} {:>9} {:>11}\n",
            "snapshot", "cli fds", "cli thr", "cli RSS KiB", "srv fds", "srv thr", "srv RSS KiB"
        ));
        for (label, c, s, allow) in &self.snapshots {
            t.push_str(&format!(
                "{:<14} {:>9} {:>9} {:>11} {:>9} {:>9} {:>11}{}\n",
                label,
                c.fds,
                c.threads,
                c.rss_kib,
                s.fds,
                s.threads,
                s.rss_kib,
                if *allow > 0 {
                    format!("  (RSS allowance +{allow} KiB)")
                } else {
                    String::new()
                }
            ));
        }
        if !self.pt_log.is_empty() {
            t.push_str("\nabnormal connection ends logged by the PTs:\n");
            for l in &self.pt_log {
                t.push_str(&format!("  {l}\n"));
            }
        }
        if self.problems.is_empty() {
            t.push_str("\nOK: no lost bytes, no leaked descriptors or threads\n");
        } else {
            t.push_str("\nFAILED:\n");
            for p in &self.problems {
                t.push_str(&format!("  {p}\n"));
            }
        }
        t
    }
}

/// Reads descriptors, threads and RSS of `pid` from `/proc`.
pub fn usage(pid: u32) -> std::io::Result<Usage> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(Usage {
        fds,
        threads,
        rss_kib,
    })
}

/// Polls (bounded by `--settle-secs`) until both processes are back to `base` threads (and
/// descriptors, with `check_fds`), and returns what it saw last.
pub(crate) async fn settle(
    client: &mut Pt,
    server: &mut Pt,
    base: (Usage, Usage),
    check_fds: bool,
    o: &Opts,
) -> Result<(Usage, Usage), String> {
    let deadline = Instant::now() + Duration::from_secs(o.settle_secs);
    loop {
        let now = (client.usage()?, server.usage()?);
        let back = |u: &Usage, b: &Usage| (!check_fds || u.fds <= b.fds) && u.threads <= b.threads;
        if (back(&now.0, &base.0) && back(&now.1, &base.1)) || Instant::now() >= deadline {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn check(
    report: &mut Report,
    label: &str,
    name: &str,
    base: &Usage,
    now: &Usage,
    allow_kib: u64,
) {
    if now.fds > base.fds {
        report.problems.push(format!(
            "{label}: {name} has {} open descriptors, baseline {}",
            now.fds, base.fds
        ));
    }
    if now.threads > base.threads {
        report.problems.push(format!(
            "{label}: {name} has {} threads, baseline {}",
            now.threads, base.threads
        ));
    }
    if now.rss_kib > base.rss_kib + allow_kib {
        report.problems.push(format!(
            "{label}: {name} RSS {} KiB, baseline {} KiB + allowance {allow_kib} KiB",
            now.rss_kib, base.rss_kib
        ));
    }
}

/// Runs the whole soak. `Err` only when the set-up itself failed; leaks and lost bytes are
/// in the report's problems.
pub async fn run(o: &Opts) -> Result<Report, String> {
    let bin = match &o.bin {
        Some(b) => b.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // target/<profile>/examples/soak -> target/<profile>/water-pt
            exe.parent()
                .and_then(|p| p.parent())
                .map(|p| p.join("water-pt"))
                .ok_or("cannot locate water-pt; pass --bin")?
        }
    };
    if o.flood() {
        let mut report = Report::default();
        report.flood = Some(flood::run(o, &bin, &mut report).await?);
        return Ok(report);
    }
    let echo = echo_server(o.socket_buffer())
        .await
        .map_err(|e| e.to_string())?;
    let mut common: Vec<String> =
        vec!["--no-cache".into(), "--listen".into(), "127.0.0.1:0".into()];
    if let Some(w) = &o.wasm {
        common.push("--wasm".into());
        common.push(w.display().to_string());
    }
    let need = (o.long.max(o.short_concurrency) + 100).to_string();
    common.push("--max-connections".into());
    common.push(need);
    if o.socket_buffer_kib > 0 {
        common.push("--socket-buffer-kib".into());
        common.push(o.socket_buffer_kib.to_string());
    }

    let mut args = vec!["server".to_string(), "--forward".into(), echo.to_string()];
    args.extend(common.iter().cloned());
    let mut server = Pt::spawn("server", &bin, &args)?;
    let server_addr = server.listening_addr()?;
    let mut args = vec![
        "client".to_string(),
        "--remote".into(),
        server_addr.to_string(),
    ];
    args.extend(common.iter().cloned());
    let mut client = Pt::spawn("client", &bin, &args)?;
    let client_addr = client.listening_addr()?;

    let mut report = Report::default();
    // The baseline is taken after a few warm-up connections, once their threads are gone
    // again: the first connection creates what lives as long as the module does (wasmtime's
    // memory image, a memfd) and faults in code pages. Threads must come back to the count of
    // the freshly started processes: every thread a connection starts (session threads,
    // tokio's blocking pool) ends on its own after its keep-alive.
    let fresh = (client.usage()?, server.usage()?);
    for i in 0..4 {
        short_conn(
            client_addr,
            u64::MAX - i,
            16,
            Duration::from_secs(o.io_timeout_secs),
            o.socket_buffer(),
        )
        .await
        .map_err(|e| format!("warm-up connection: {e}"))?;
    }
    let warm = settle(&mut client, &mut server, fresh, false, o).await?;
    // Descriptors once the warm-up connections are closed; threads as started.
    let base = (
        Usage {
            threads: fresh.0.threads,
            ..warm.0
        },
        Usage {
            threads: fresh.1.threads,
            ..warm.1
        },
    );
    if warm.0.threads > base.0.threads || warm.1.threads > base.1.threads {
        report.problems.push(format!(
            "warm-up: threads did not come back to {} / {} within {} s: {} / {}",
            base.0.threads, base.1.threads, o.settle_secs, warm.0.threads, warm.1.threads
        ));
    }
    report.snapshots.push(("fresh".into(), fresh.0, fresh.1, 0));
    report
        .snapshots
        .push(("baseline".into(), base.0, base.1, 0));

    let slack = o.rss_slack_mib * 1024;
    let mut after_first_long: Option<(Usage, Usage)> = None;
    let rounds = std::iter::once(("short", 1)).chain((1..=o.long_rounds).map(|r| ("long", r)));
    for (phase, round) in rounds {
        let result = match phase {
            "short" if o.short > 0 => phase_short(client_addr, o).await,
            "long" if o.long > 0 => phase_long(client_addr, o).await,
            _ => continue,
        };
        if result.failures > 0 {
            report.problems.push(format!(
                "{phase}: {} of {} connections failed; first errors: {:?}",
                result.failures, result.connections, result.errors
            ));
        }
        report.phases.push(result);
        let allow = POOL_RESIDENT_KIB + slack;
        let now = settle(&mut client, &mut server, base, true, o).await?;
        let label = if round > 1 {
            format!("after {phase} {round}")
        } else {
            format!("after {phase}")
        };
        check(&mut report, &label, "client", &base.0, &now.0, allow);
        check(&mut report, &label, "server", &base.1, &now.1, allow);
        if phase == "long" {
            match after_first_long {
                None => after_first_long = Some(now),
                Some(first) => {
                    for (name, was, is) in [("client", first.0, now.0), ("server", first.1, now.1)]
                    {
                        if is.rss_kib > was.rss_kib + slack {
                            report.problems.push(format!(
                                "{label}: {name} RSS grew from {} KiB after the first round to {} KiB",
                                was.rss_kib, is.rss_kib
                            ));
                        }
                    }
                }
            }
        }
        report.snapshots.push((label, now.0, now.1, allow));
    }
    for pt in [&client, &server] {
        let w = pt.warnings.lock().unwrap();
        if !w.is_empty() {
            eprintln!("soak: {} logged warnings: {:#?}", pt.name, *w);
        }
        for (kind, n) in pt.abnormal_ends.lock().unwrap().iter() {
            report.pt_log.push(format!("{} {n} x {kind}", pt.name));
        }
    }
    Ok(report)
}

#[allow(dead_code)] // unused when the tests include this file as a module
fn main() -> std::process::ExitCode {
    let opts = Opts::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // SIGTERM (from `timeout` in scripts/soak.sh) or SIGINT drops the run, and with it the
    // PT processes, which are killed on drop rather than left behind.
    let outcome = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            r = run(&opts) => r,
            _ = term.recv() => Err("SIGTERM: stopped".to_string()),
            _ = tokio::signal::ctrl_c() => Err("SIGINT: stopped".to_string()),
        }
    });
    match outcome {
        Ok(report) => {
            println!("{}", report.table());
            if report.ok() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
