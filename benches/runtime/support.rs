//! Servers, counters and small helpers the phases share.

use super::*;
/// A TCP server that reads every connection to its end and reports, per
/// connection, how many bytes arrived and when the last of them did. Plain
/// threads, so that its cost is the same for every kind of client.
pub(crate) struct Sink {
    pub(crate) addr: SocketAddr,
    pub(crate) done: mpsc::UnboundedReceiver<(u64, Instant)>,
}

impl Sink {
    pub(crate) fn start() -> Res<Self> {
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
pub(crate) async fn bulk<S: AsyncWrite + Unpin>(
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
pub(crate) struct PairListener {
    pub(crate) addr: SocketAddr,
    pub(crate) failures: Arc<AtomicU64>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl PairListener {
    pub(crate) async fn start(rt: &Runtime, watm: &Arc<Watm>, upstream: SocketAddr) -> Res<Self> {
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

    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// Outcome of a batch of short connections.
pub(crate) struct Churn {
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) elapsed: Duration,
    pub(crate) first_error: Option<String>,
}

/// Runs `one` `n` times with `c` in flight at once, each try bounded.
pub(crate) async fn churn<F, Fut>(n: usize, c: usize, one: F) -> Churn
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

pub(crate) async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> Res<Vec<u8>> {
    s.write_all(msg).await.ctx("echo write")?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.ctx("echo read")?;
    Ok(back)
}

pub(crate) async fn check_echo<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> Res<()> {
    if roundtrip(s, msg).await? == msg {
        Ok(())
    } else {
        Err("echo came back different".into())
    }
}

pub(crate) async fn bounded_idle(rt: &Runtime, limit: Duration) -> Res<()> {
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
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The echo server the connections of phases 3-5 talk to, in a child
/// process so that its memory is not counted as the runtime's. The child
/// exits when its stdin closes, so it cannot outlive this process.
pub(crate) struct EchoChild {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl EchoChild {
    pub(crate) fn spawn() -> Res<Self> {
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
pub(crate) fn echo_server_main() -> ExitCode {
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
pub(crate) fn raise_nofile() -> u64 {
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

pub(crate) fn rss_kib() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ctx("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

pub(crate) fn module_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("watm/prebuilt")
        .join(format!("{name}.wasm"))
}

pub(crate) fn default_json_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench-runtime.json")
}

pub(crate) fn write_json(path: &PathBuf, json: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, json)
}

/// User plus system CPU time of this process (all threads, including ended
/// ones) from `/proc/self/stat`, in seconds. Its resolution is a clock tick
/// (USER_HZ, 100 on Linux), so it is only used over many connections or
/// seconds of work.
pub(crate) fn cpu_seconds() -> f64 {
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
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`th percentile (nearest rank) of `v`; NaN when empty.
pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub(crate) fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

// ------------------------------------------------------------- reporting
