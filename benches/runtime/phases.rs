//! The measurements, one function per phase.

use super::*;
/// Phase 4: VmRSS growth per connection with `n` connections open, each
/// after one 64-byte echo (so the guest's buffers and the socket paths have
/// been used once, as in real traffic), against the same for direct TCP.
pub(crate) async fn idle_memory(
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
pub(crate) struct TimedConnector {
    pub(crate) inner: DirectConnector,
    pub(crate) last_nanos: AtomicU64,
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
pub(crate) async fn setup_time(
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
pub(crate) async fn thread_spawn_latency(n: usize) -> Res<f64> {
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
pub(crate) async fn thread_handoff_latency(n: usize) -> Res<f64> {
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
pub(crate) async fn wake_latency(n: usize) -> Res<f64> {
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
pub(crate) async fn throughput(
    rt: &Runtime,
    watm: &Arc<Watm>,
    plan: &Plan,
    report: &mut Report,
) -> Res<()> {
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
pub(crate) async fn short_connections(
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
pub(crate) fn compile_and_cache(wasm: &[u8], runs: usize, report: &mut Report) -> Res<()> {
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
