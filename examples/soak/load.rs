//! The load: short and long connections, each checked end to end.

use super::*;
pub(crate) async fn timed<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress in {limit:?}")),
    }
}

/// Connects to `addr`, with fixed socket buffers of `buffer` bytes if given.
pub(crate) async fn connect(addr: SocketAddr, buffer: Option<u32>) -> std::io::Result<TcpStream> {
    sized_socket(buffer)?.connect(addr).await
}

pub(crate) async fn short_conn(
    addr: SocketAddr,
    i: u64,
    len: usize,
    limit: Duration,
    buffer: Option<u32>,
) -> Result<(), String> {
    let mut s = timed(limit, "connect", connect(addr, buffer)).await?;
    let mut msg = vec![0u8; len];
    Stream(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).fill(&mut msg);
    timed(limit, "write", s.write_all(&msg)).await?;
    let mut back = vec![0u8; len];
    timed(limit, "read", s.read_exact(&mut back)).await?;
    if back != msg {
        return Err(format!("connection {i}: echo differs"));
    }
    Ok(())
}

pub(crate) async fn long_conn(
    addr: SocketAddr,
    i: u64,
    total: u64,
    limit: Duration,
    buffer: Option<u32>,
) -> Result<(), String> {
    let s = timed(limit, "connect", connect(addr, buffer)).await?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut gen = Stream((i + 1).wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            gen.fill(&mut buf[..n]);
            hash.update(&buf[..n]);
            timed(limit, "write", w.write_all(&buf[..n])).await?;
            left -= n as u64;
        }
        // The write half stays open until the echo is read back: the module ends the whole
        // connection at the first EOF from either side.
        Ok::<_, String>((hash.finalize(), w))
    });
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u64;
    while got < total {
        let want = (total - got).min(buf.len() as u64) as usize;
        let n = timed(limit, "read", r.read(&mut buf[..want])).await?;
        if n == 0 {
            writer.abort();
            return Err(format!(
                "connection {i}: closed after {got} of {total} bytes"
            ));
        }
        hash.update(&buf[..n]);
        got += n as u64;
    }
    let (sent, _w) = writer.await.map_err(|e| e.to_string())??;
    if sent != hash.finalize() {
        return Err(format!("connection {i}: SHA-256 of the echo differs"));
    }
    Ok(())
}

pub(crate) async fn phase_short(addr: SocketAddr, o: &Opts) -> PhaseResult {
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let limit = Duration::from_secs(o.io_timeout_secs);
    let mut workers = Vec::new();
    for _ in 0..o.short_concurrency.max(1) {
        let (next, failures, errors) = (next.clone(), failures.clone(), errors.clone());
        let (n, len, buffer) = (o.short, o.short_bytes, o.socket_buffer());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                if let Err(e) = short_conn(addr, i, len, limit, buffer).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                    let mut errs = errors.lock().unwrap();
                    if errs.len() < 10 {
                        errs.push(e);
                    }
                }
            }
        }));
    }
    let progress = {
        let next = next.clone();
        let n = o.short;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let done = next.load(Ordering::Relaxed).min(n);
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "soak: short {done}/{n} after {secs:.0} s ({:.0}/s)",
                    done as f64 / secs
                );
            }
        })
    };
    let all = async {
        for w in workers {
            let _ = w.await;
        }
    };
    let timed_out = tokio::time::timeout(Duration::from_secs(o.phase_timeout_secs), all)
        .await
        .is_err();
    progress.abort();
    let mut errors = errors.lock().unwrap().clone();
    if timed_out {
        errors.push(format!("phase timed out after {} s", o.phase_timeout_secs));
    }
    PhaseResult {
        name: "short",
        connections: next.load(Ordering::Relaxed).min(o.short),
        failures: failures.load(Ordering::Relaxed) + u64::from(timed_out),
        bytes_each_way: o.short * o.short_bytes as u64,
        elapsed: started.elapsed(),
        errors,
    }
}

pub(crate) async fn phase_long(addr: SocketAddr, o: &Opts) -> PhaseResult {
    let started = Instant::now();
    let limit = Duration::from_secs(o.io_timeout_secs);
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..o.long as u64 {
        let (total, done, buffer) = (o.long_bytes, done.clone(), o.socket_buffer());
        tasks.push(tokio::spawn(async move {
            let r = long_conn(addr, i, total, limit, buffer).await;
            done.fetch_add(1, Ordering::Relaxed);
            r
        }));
    }
    let progress = {
        let (done, n) = (done.clone(), o.long);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                eprintln!(
                    "soak: long {}/{n} finished after {:.0} s",
                    done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut failures = 0;
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(o.phase_timeout_secs);
    for t in tasks {
        let outcome = match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("phase timed out".to_string()),
        };
        if let Err(e) = outcome {
            failures += 1;
            if errors.len() < 10 {
                errors.push(e);
            }
        }
    }
    progress.abort();
    PhaseResult {
        name: "long",
        connections: o.long as u64,
        failures,
        bytes_each_way: o.long as u64 * o.long_bytes,
        elapsed: started.elapsed(),
        errors,
    }
}
