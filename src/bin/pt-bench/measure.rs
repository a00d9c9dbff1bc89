//! The measurements. Each one takes a [`Route`] to the stand-in ORPort and, where it reads
//! process figures, the PIDs of the transport processes (none for direct TCP).
//!
//! Every wait is bounded: each connection step by [`OP_TIMEOUT`], each test by its duration or
//! count, and a test stops early once failures pile up instead of grinding through timeouts.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::procfs::{self, CpuMeter};
use crate::route::Route;
use crate::target::{Target, ACK, BULK_CHUNK, CMD_SINK, CMD_SOURCE, ECHO_BYTE, GO};

/// Longest any single connection step (open, echo) may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);
/// A test gives up after this many failed connections.
const MAX_ERRORS: usize = 50;

/// A transport process being measured: which side, and its PID.
#[derive(Debug, Clone)]
pub struct Proc {
    pub side: &'static str,
    pub pid: u32,
}

/// Counts failures and keeps the first message, which is usually the informative one.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    count: AtomicUsize,
    first: Mutex<Option<String>>,
}

impl Failures {
    pub(crate) fn record(&self, what: impl std::fmt::Display) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(what.to_string());
        }
    }
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
    pub(crate) fn too_many(&self) -> bool {
        self.count() >= MAX_ERRORS
    }
    pub(crate) fn first(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs `fut` with [`OP_TIMEOUT`].
pub(crate) async fn bounded<T>(
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(OP_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
}

/// Opens a connection, echoes `len` bytes through it and checks them. Returns the connection
/// (still open) and two durations to the first echoed byte: from the request (SOCKS CONNECT, or
/// TCP connect for direct) and from the start of the TCP connect to the proxy.
pub(crate) async fn echo_once(
    route: &Route,
    len: usize,
) -> io::Result<(TcpStream, Duration, Duration)> {
    let opened = route.open().await?;
    let mut stream = opened.stream;
    stream.write_all(&vec![ECHO_BYTE; len]).await?;
    let mut buf = vec![0u8; len.min(16 << 10)];
    let mut got = 0;
    let mut first_at = None;
    while got < len {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {got} of {len} echoed bytes"),
            ));
        }
        first_at.get_or_insert_with(Instant::now);
        if buf[..n].iter().any(|&b| b != ECHO_BYTE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "echo came back altered",
            ));
        }
        got += n;
    }
    let first = first_at.unwrap_or_else(Instant::now);
    Ok((stream, first - opened.request_sent, first - opened.began))
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The value at quantile `q` of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    ms(&sorted[rank - 1])
}

/// Connection setup latency, one connection at a time.
#[derive(Debug, Clone)]
pub struct Latency {
    pub samples: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Request (SOCKS CONNECT) sent -> first echoed byte back, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    /// Same, from the start of the TCP connect to the SOCKS port (adds the SOCKS greeting and
    /// authentication round trips), ms.
    pub full_p50_ms: f64,
    pub full_p99_ms: f64,
}

pub async fn latency(route: &Route, n: usize) -> Latency {
    let fails = Failures::default();
    let (mut setup, mut full) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        if fails.too_many() {
            break;
        }
        match bounded(echo_once(route, 1)).await {
            Ok((stream, s, f)) => {
                drop(stream);
                setup.push(s);
                full.push(f);
            }
            Err(e) => fails.record(e),
        }
    }
    setup.sort();
    full.sort();
    let mean = if setup.is_empty() {
        f64::NAN
    } else {
        setup.iter().map(ms).sum::<f64>() / setup.len() as f64
    };
    Latency {
        samples: setup.len(),
        errors: fails.count(),
        first_error: fails.first(),
        p50_ms: quantile(&setup, 0.5),
        p99_ms: quantile(&setup, 0.99),
        mean_ms: mean,
        max_ms: setup.last().map(ms).unwrap_or(f64::NAN),
        full_p50_ms: quantile(&full, 0.5),
        full_p99_ms: quantile(&full, 0.99),
    }
}

impl Latency {
    pub fn json(&self) -> Value {
        json!({
            "what": "SOCKS CONNECT sent (direct: TCP connect started) -> first echoed byte back; one connection at a time",
            "samples": self.samples, "errors": self.errors, "first_error": self.first_error,
            "p50_ms": finite(self.p50_ms), "p99_ms": finite(self.p99_ms),
            "mean_ms": finite(self.mean_ms), "max_ms": finite(self.max_ms),
            "from_tcp_connect_p50_ms": finite(self.full_p50_ms),
            "from_tcp_connect_p99_ms": finite(self.full_p99_ms),
        })
    }
}

/// Short connections per second at a fixed concurrency.
#[derive(Debug, Clone)]
pub struct Cps {
    pub concurrency: usize,
    pub payload: usize,
    pub secs: f64,
    pub completed: u64,
    pub errors: usize,
    pub first_error: Option<String>,
    pub per_sec: f64,
    /// CPU seconds of the transport processes during the test. Unlike the rate, this does not
    /// depend on how busy the rest of the machine is.
    pub cpu_secs: Option<f64>,
    /// CPU seconds of the benchmark's own side during the test: the workers in this process and
    /// the stand-in ORPort child. On a small machine they share the cores with the transports,
    /// so they bound the rate any transport can reach here.
    pub load_cpu_secs: Option<f64>,
    /// The share of the whole machine that was busy during the test.
    pub machine_busy: Option<f64>,
    /// The cores the machine has.
    pub cores: usize,
}

impl Cps {
    /// Transport CPU (both sides) per connection, ms.
    pub fn cpu_ms_per_conn(&self) -> Option<f64> {
        self.per_conn_ms(self.cpu_secs)
    }

    /// The benchmark's own CPU per connection, ms.
    pub fn load_ms_per_conn(&self) -> Option<f64> {
        self.per_conn_ms(self.load_cpu_secs)
    }

    fn per_conn_ms(&self, secs: Option<f64>) -> Option<f64> {
        secs.filter(|_| self.completed > 0)
            .map(|c| c * 1e3 / self.completed as f64)
    }

    /// The CPU a transport pair may spend per connection, in ms, for this machine to reach
    /// `rate` connections/s with the benchmark's own load beside it: every core's time divided
    /// among the connections, less what the load itself costs each one.
    pub fn pair_budget_ms(&self, rate: f64) -> Option<f64> {
        let load = self.load_ms_per_conn()?;
        (self.cores > 0 && rate > 0.0).then(|| self.cores as f64 * 1e3 / rate - load)
    }
}

/// `load`: the benchmark's own processes, whose CPU is reported beside the transports'.
pub async fn cps(
    route: &Route,
    concurrency: usize,
    payload: usize,
    dur: Duration,
    procs: &[Proc],
    load: &[u32],
) -> Cps {
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    let transports = CpuMeter::start(&pids, procfs::cpu_seconds);
    // Each process's own threads: the benchmark's children are the transports.
    let load = CpuMeter::start(load, procfs::own_cpu_seconds);
    let machine0 = procfs::machine_cpu();
    let started = Instant::now();
    let stop = started + dur;
    let done = Arc::new(AtomicU64::new(0));
    let fails = Arc::new(Failures::default());
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (route, done, fails) = (route.clone(), done.clone(), fails.clone());
        workers.spawn(async move {
            while Instant::now() < stop && !fails.too_many() {
                match bounded(echo_once(&route, payload)).await {
                    // Dropping the stream is the close.
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        fails.record(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    // Until the last in-flight connection finished, so every counted connection is inside
    // the measured time.
    let secs = started.elapsed().as_secs_f64();
    let completed = done.load(Ordering::Relaxed);
    let (cpu_secs, load_cpu_secs) = (transports.spent(), load.spent());
    let machine_busy = match (machine0, procfs::machine_cpu()) {
        (Ok(a), Ok(b)) => b.busy_since(&a),
        _ => None,
    };
    Cps {
        cpu_secs,
        load_cpu_secs,
        machine_busy,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        concurrency,
        payload,
        secs,
        completed,
        errors: fails.count(),
        first_error: fails.first(),
        per_sec: completed as f64 / secs,
    }
}

impl Cps {
    pub fn json(&self) -> Value {
        json!({
            "what": "open (SOCKS handshake + CONNECT), echo the payload, close; workers in a loop",
            "concurrency": self.concurrency, "payload_bytes": self.payload,
            "secs": self.secs, "completed": self.completed, "errors": self.errors,
            "first_error": self.first_error, "per_sec": self.per_sec,
            "pt_cpu_secs": self.cpu_secs, "pt_cpu_ms_per_conn": self.cpu_ms_per_conn(),
            "load_cpu_secs": self.load_cpu_secs, "load_cpu_ms_per_conn": self.load_ms_per_conn(),
            "machine_busy": self.machine_busy, "cores": self.cores,
        })
    }
}

/// Which way bulk data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client -> stand-in ORPort sink (counted by the sink).
    Up,
    /// Stand-in ORPort source -> client (counted by the client).
    Down,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "upload",
            Direction::Down => "download",
        }
    }
}

/// One bulk transfer test.
#[derive(Debug, Clone)]
pub struct Bulk {
    pub direction: Direction,
    pub streams: usize,
    pub secs: f64,
    pub bytes: u64,
    pub mib_per_s: f64,
    /// CPU seconds (user + system) of the transport processes during the measured window.
    pub cpu_secs: Option<f64>,
    pub error: Option<String>,
}

impl Bulk {
    pub fn cpu_s_per_gib(&self) -> Option<f64> {
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        self.cpu_secs.filter(|_| gib > 0.0).map(|c| c / gib)
    }

    pub fn json(&self) -> Value {
        json!({
            "direction": self.direction.name(),
            "what": match self.direction {
                Direction::Up => "one-way client -> sink behind the server transport; bytes counted at the sink",
                Direction::Down => "one-way source behind the server transport -> client; bytes counted at the client",
            },
            "streams": self.streams, "secs": self.secs, "bytes": self.bytes,
            "mib_per_s": self.mib_per_s, "pt_cpu_secs": self.cpu_secs,
            "pt_cpu_secs_per_gib": self.cpu_s_per_gib(), "error": self.error,
        })
    }
}

/// Opens a bulk connection: the command byte alone, then its acknowledgement.
pub(crate) async fn open_bulk(route: &Route, cmd: u8) -> io::Result<TcpStream> {
    let mut stream = route.open().await?.stream;
    stream.write_all(&[cmd]).await?;
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await?;
    if ack[0] != ACK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected ack, got {:?}", ack[0]),
        ));
    }
    Ok(stream)
}

/// Runs `streams` parallel transfers one way; measures bytes and transport CPU over `dur`
/// after `warmup` (so slow start and first-use compilation stay out of the figure).
pub async fn bulk(
    route: &Route,
    target: &Target,
    direction: Direction,
    streams: usize,
    warmup: Duration,
    dur: Duration,
    procs: &[Proc],
) -> Bulk {
    let counter = match direction {
        Direction::Up => None,
        Direction::Down => Some(Arc::new(AtomicU64::new(0))),
    };
    let read_count = || async {
        match &counter {
            Some(c) => Ok(c.load(Ordering::Relaxed)),
            None => target.counters().await.map(|c| c.sunk),
        }
    };
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks: JoinSet<io::Result<()>> = JoinSet::new();
    for _ in 0..streams {
        let (route, ready, counter) = (route.clone(), ready.clone(), counter.clone());
        tasks.spawn(async move {
            let cmd = if counter.is_some() {
                CMD_SOURCE
            } else {
                CMD_SINK
            };
            let mut stream = bounded(open_bulk(&route, cmd)).await?;
            if cmd == CMD_SOURCE {
                stream.write_all(&[GO]).await?;
            }
            ready.fetch_add(1, Ordering::Relaxed);
            let mut buf = vec![ECHO_BYTE; BULK_CHUNK];
            loop {
                match &counter {
                    None => stream.write_all(&buf).await?,
                    Some(c) => {
                        let n = stream.read(&mut buf).await?;
                        if n == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "source closed",
                            ));
                        }
                        c.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let mut result = Bulk {
        direction,
        streams,
        secs: 0.0,
        bytes: 0,
        mib_per_s: 0.0,
        cpu_secs: None,
        error: None,
    };
    let deadline = Instant::now() + OP_TIMEOUT;
    while ready.load(Ordering::Relaxed) < streams {
        if Instant::now() >= deadline {
            result.error = Some("streams did not open in time".into());
            break;
        }
        if let Some(Ok(Err(e))) = tasks.try_join_next() {
            result.error = Some(format!("a stream failed to open: {e}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if result.error.is_none() {
        tokio::time::sleep(warmup).await;
        let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        let b0 = read_count().await;
        let (cpu, t0) = (CpuMeter::start(&pids, procfs::cpu_seconds), Instant::now());
        tokio::time::sleep(dur).await;
        let (b1, cpu_secs, t1) = (read_count().await, cpu.spent(), Instant::now());
        result.secs = (t1 - t0).as_secs_f64();
        result.bytes = match (b0, b1) {
            (Ok(b0), Ok(b1)) => b1.saturating_sub(b0),
            (Err(e), _) | (_, Err(e)) => {
                result.error = Some(format!("cannot read the sink's count: {e}"));
                0
            }
        };
        result.mib_per_s = result.bytes as f64 / (1 << 20) as f64 / result.secs;
        result.cpu_secs = cpu_secs;
        if let Some(Ok(Err(e))) = tasks.try_join_next() {
            result
                .error
                .get_or_insert(format!("a stream failed during the test: {e}"));
        }
    }
    tasks.shutdown().await;
    result
}

/// JSON has no NaN; absent figures are `null`.
pub fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}
