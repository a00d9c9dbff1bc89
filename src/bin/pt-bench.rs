//! pt-bench: measures water-pt against direct TCP and obfs4proxy, with every transport
//! launched and driven the way tor drives a managed pluggable transport.
//!
//! For each subject the tool starts the server transport (plain ORPort pointing at a stand-in
//! ORPort it runs itself), then the client transport, reads their stdout protocol lines, and
//! talks SOCKS5 with bridge arguments to the client exactly as tor's client does. Then it runs,
//! in this order: setup latency, idle connections (memory), short connections per second, four
//! bulk tests (1 and 8 streams, upload and download), and stalled readers (CPU while the far
//! end does not read). See README "Benchmarks".

// A binary's root file resolves `mod x;` next to itself (src/bin/x.rs), so the modules in
// src/bin/pt-bench/ are named by path; a bare `src/bin/pt-bench/` directory with a main.rs
// would instead become a second binary.
#[path = "pt-bench/chart.rs"]
mod chart;
#[path = "pt-bench/idle.rs"]
mod idle;
#[path = "pt-bench/launch.rs"]
mod launch;
#[path = "pt-bench/measure.rs"]
mod measure;
#[path = "pt-bench/procfs.rs"]
mod procfs;
#[path = "pt-bench/relay.rs"]
mod relay;
#[path = "pt-bench/report.rs"]
mod report;
#[path = "pt-bench/route.rs"]
mod route;
#[path = "pt-bench/stalled.rs"]
mod stalled;
#[path = "pt-bench/subject_run.rs"]
mod subject_run;
#[path = "pt-bench/subjects.rs"]
mod subjects;
#[path = "pt-bench/target.rs"]
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use serde_json::json;

use report::STREAMS_N;
use target::Target;

/// Benchmark water-pt against direct TCP and obfs4proxy, as tor would run them.
#[derive(Parser, Debug)]
#[command(name = "pt-bench")]
struct Cli {
    /// Internal: run as the stand-in ORPort child.
    #[arg(long, hide = true)]
    serve_target: bool,
    /// Internal: run as one hop of a native relay chain, relaying to this address, or with
    /// `socks` as the SOCKS5 front of the SOCKS relay chain.
    #[arg(long, hide = true, value_name = "UPSTREAM")]
    relay_hop: Option<relay::Upstream>,
    /// Short run (well under a minute) with fewer connections and 1 s tests, e.g. for CI.
    #[arg(long)]
    quick: bool,
    /// Idle connections held open for the memory test (default 1000; quick: 200).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    idle: Option<u64>,
    /// Connections in the setup-latency test (default 1000; quick: 200).
    #[arg(long, value_name = "N")]
    latency_conns: Option<usize>,
    /// Seconds to hold the idle connections before reading memory (default 2; quick: 0.5);
    /// longer leaves time to inspect the processes by hand.
    #[arg(long, value_name = "SECS")]
    idle_settle: Option<f64>,
    /// Seconds each bulk test measures (default 5; quick: 1).
    #[arg(long, value_name = "SECS")]
    bulk_secs: Option<f64>,
    /// Seconds of the short-connection test (default 5; quick: 1).
    #[arg(long, value_name = "SECS")]
    cps_secs: Option<f64>,
    /// Concurrent workers in the short-connection test.
    #[arg(long, default_value_t = 16)]
    cps_concurrency: usize,
    /// Connections held stalled (far end not reading) in the stalled-reader test.
    #[arg(long, default_value_t = 20, value_name = "N")]
    stalled: usize,
    /// Seconds the stalled-reader test measures CPU over (default 10; quick: 2).
    #[arg(long, value_name = "SECS")]
    stalled_secs: Option<f64>,
    /// Only these tests (comma list; default all).
    #[arg(long, value_delimiter = ',', value_enum, value_name = "TESTS")]
    tests: Vec<Test>,
    /// The water-pt binary (default: next to this one).
    #[arg(long, value_name = "PATH")]
    water_pt: Option<PathBuf>,
    /// The obfs4proxy binary, by path or name in PATH.
    #[arg(long, default_value = "obfs4proxy", value_name = "PATH")]
    obfs4proxy: String,
    /// Directory of WATM modules; every one with dialer and listener roles is a subject.
    #[arg(long, default_value = "watm/prebuilt", value_name = "DIR")]
    modules: PathBuf,
    /// Configuration file for a module, given to both sides as water-config (otherwise
    /// NAME.json, or NAME.client.json / NAME.server.json, next to the module is used).
    #[arg(long = "config", value_name = "NAME=FILE")]
    configs: Vec<String>,
    /// Only these subjects (comma list of: direct, socat, relay, obfs4, module names).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<String>,
    /// `plain`'s PT CPU s/GiB to judge against (target: 0.8x this); the default was measured
    /// on the 2-core benchmark machine before the work on issue #16.
    #[arg(long, default_value_t = report::PLAIN_CPU_S_PER_GIB_BASELINE, value_name = "S")]
    plain_cpu_baseline: f64,
    /// Where results.json, chart.svg and the transports' logs go.
    #[arg(long, default_value = "target/pt-bench", value_name = "DIR")]
    out_dir: PathBuf,
}

/// The tests a subject goes through, in the order they run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Latency,
    Idle,
    Cps,
    Bulk,
    Stalled,
}

/// The run's parameters with defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub idle: usize,
    pub latency_conns: usize,
    pub bulk: Duration,
    pub bulk_warmup: Duration,
    pub cps: Duration,
    pub cps_concurrency: usize,
    pub cps_payload: usize,
    pub idle_settle: Duration,
    pub stalled: usize,
    pub stalled_secs: Duration,
    pub tests: Vec<Test>,
    pub water_pt: PathBuf,
    pub obfs4proxy: String,
    pub modules: PathBuf,
    pub configs: Vec<(String, PathBuf)>,
    pub only: Vec<String>,
    pub plain_cpu_baseline: f64,
    pub out_dir: PathBuf,
}

impl Settings {
    fn from_cli(cli: Cli) -> Result<Self, String> {
        let q = cli.quick;
        let secs = |v: Option<f64>, full: f64, quick: f64| {
            let s = v.unwrap_or(if q { quick } else { full });
            if s.is_finite() && s > 0.0 && s <= 600.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(format!("{s} s is not a usable duration (0 < s <= 600)"))
            }
        };
        let water_pt = match cli.water_pt {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| format!("cannot locate this executable: {e}"))?
                .with_file_name("water-pt"),
        };
        let configs = cli
            .configs
            .iter()
            .map(|c| {
                c.split_once('=')
                    .map(|(n, f)| (n.to_string(), PathBuf::from(f)))
                    .ok_or_else(|| format!("--config {c:?}: expected NAME=FILE"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Settings {
            quick: q,
            idle: cli.idle.map_or(if q { 200 } else { 1000 }, |n| n as usize),
            latency_conns: cli
                .latency_conns
                .unwrap_or(if q { 200 } else { 1000 })
                .clamp(1, 100_000),
            bulk: secs(cli.bulk_secs, 5.0, 1.0)?,
            bulk_warmup: if q {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(1)
            },
            cps: secs(cli.cps_secs, 5.0, 1.0)?,
            cps_concurrency: cli.cps_concurrency.clamp(1, 1024),
            cps_payload: 1024,
            idle_settle: secs(cli.idle_settle, 2.0, 0.5)?,
            stalled: cli.stalled.clamp(1, 1000),
            stalled_secs: secs(cli.stalled_secs, 10.0, 2.0)?,
            tests: cli.tests,
            water_pt,
            obfs4proxy: cli.obfs4proxy,
            modules: cli.modules,
            configs,
            only: cli.only,
            plain_cpu_baseline: if cli.plain_cpu_baseline.is_finite()
                && cli.plain_cpu_baseline > 0.0
            {
                cli.plain_cpu_baseline
            } else {
                return Err(format!(
                    "--plain-cpu-baseline {}: expected a positive number of seconds",
                    cli.plain_cpu_baseline
                ));
            },
            out_dir: cli.out_dir,
        })
    }

    /// Whether `test` is part of this run.
    pub fn runs(&self, test: Test) -> bool {
        self.tests.is_empty() || self.tests.contains(&test)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "quick": self.quick,
            "idle_connections": self.idle,
            "latency_connections": self.latency_conns,
            "bulk_secs": self.bulk.as_secs_f64(),
            "bulk_warmup_secs": self.bulk_warmup.as_secs_f64(),
            "bulk_streams": [1, STREAMS_N],
            "cps_secs": self.cps.as_secs_f64(),
            "cps_concurrency": self.cps_concurrency,
            "cps_payload_bytes": self.cps_payload,
            "stalled_connections": self.stalled,
            "stalled_secs": self.stalled_secs.as_secs_f64(),
            "water_pt": self.water_pt,
            "modules": self.modules,
            "plain_cpu_s_per_gib_baseline": self.plain_cpu_baseline,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.serve_target {
        return match target::serve_child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pt-bench --serve-target: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(upstream) = cli.relay_hop {
        return match relay::serve_hop(upstream) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pt-bench --relay-hop: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::from_cli(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pt-bench: {e}");
            return ExitCode::from(2);
        }
    };
    // The transports are started from blocking-pool threads, and water-pt exits when the
    // thread that started it ends (PR_SET_PDEATHSIG): keep those threads for the whole run.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pt-bench: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(&settings) => r,
            // Dropping `run` drops every transport guard, which stops the children.
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("pt-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises RLIMIT_NOFILE (hard too, when permitted) so the tool and the transports it starts,
/// which inherit it, can hold `idle` connections: each one costs the tool two descriptors
/// (its end and the stand-in ORPort's), and each transport two plus whatever it keeps per
/// connection.
fn raise_nofile(idle: usize) -> Result<u64, String> {
    let want = (idle as u64 * 8).max(65_536);
    let want = procfs::sysctl("fs/nr_open").map_or(want, |max| want.min(max));
    let cur = getrlimit(Resource::Nofile);
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: Some(cur.maximum.map_or(want, |m| m.max(want))),
        },
    );
    if raised.is_err() {
        // Not allowed to raise the hard limit: go as far as it permits.
        let hard = cur.maximum.unwrap_or(want);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want.min(hard)),
                maximum: cur.maximum,
            },
        )
        .map_err(|e| format!("setrlimit(RLIMIT_NOFILE): {e}"))?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// Runs every subject; returns whether every subject completed.
async fn run(settings: &Settings) -> Result<bool, String> {
    let out = &settings.out_dir;
    let work = out.join("run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let nofile = raise_nofile(settings.idle)?;
    let load_start = loadavg();
    if let Some(one) = load_start
        .as_deref()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
    {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if one > cpus / 2.0 {
            eprintln!(
                "pt-bench: warning: load average {one:.1} on {cpus} CPUs before starting; \
                 rates and latencies will be noisy (CPU per GiB and per connection much less so)"
            );
        }
    }
    if !settings.water_pt.is_file() {
        return Err(format!(
            "no water-pt binary at {} (cargo build --release, or --water-pt)",
            settings.water_pt.display()
        ));
    }
    let (subjects, notes) = {
        let s = settings.clone();
        tokio::task::spawn_blocking(move || subjects::discover(&s))
            .await
            .map_err(|e| e.to_string())?
    };
    for n in &notes {
        eprintln!("pt-bench: {n}");
    }
    let target = Target::start(&work.join("target.log"))
        .await
        .map_err(|e| format!("stand-in ORPort: {e}"))?;
    eprintln!(
        "pt-bench: {} subjects: {}; stand-in ORPort on {}; RLIMIT_NOFILE {nofile}",
        subjects.len(),
        subjects
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        target.addr
    );
    let mut results = Vec::new();
    for subject in &subjects {
        eprintln!("== {} ({})", subject.name, subject.label());
        let r = subject_run::run_subject(subject, settings, &target, &work).await;
        if let Some(e) = &r.error {
            eprintln!("   {}: stopped early: {e}", subject.name);
        }
        results.push(r);
        // Whatever the previous subject left open must not be counted against the next.
        target.drained(Duration::from_secs(30)).await;
    }

    let verdicts = report::verdicts(&results, settings.idle, settings.plain_cpu_baseline);
    println!("{}", report::render_tables(&results));
    println!("{}", report::render_verdicts(&verdicts));
    for r in &results {
        for n in &r.notes {
            println!("note: {}: {n}", r.name);
        }
    }
    let env = environment(nofile, load_start);
    let doc = report::results_json(settings.json(), env, &results, &verdicts, &notes);
    let json_path = out.join("results.json");
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let chart_path = out.join("chart.svg");
    chart::write_chart(&chart_path, &results)
        .map_err(|e| format!("{}: {e}", chart_path.display()))?;
    println!("wrote {} and {}", json_path.display(), chart_path.display());
    Ok(results.iter().all(|r| r.error.is_none()))
}

/// `/proc/loadavg`: other work on the machine competes with the transports for CPU.
fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The machine's limits that bound the idle test, for the JSON.
fn environment(nofile: u64, load_start: Option<String>) -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({
        "cpus": cpus,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "rlimit_nofile": nofile,
        "vm_max_map_count": procfs::sysctl("vm/max_map_count"),
        "kernel_threads_max": procfs::sysctl("kernel/threads-max"),
        "kernel_pid_max": procfs::sysctl("kernel/pid_max"),
        "rlimit_nproc": getrlimit(Resource::Nproc).current,
        "obfs4proxy_version": std::process::Command::new("obfs4proxy").arg("-version").output()
            .ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
    })
}
