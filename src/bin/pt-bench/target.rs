//! The stand-in for tor's ORPort that the server transports forward to.
//!
//! It runs in a child process (`pt-bench --serve-target`), not in the benchmark's own: holding
//! 10,000 idle connections costs one descriptor per connection at each end, and both ends in one
//! process would need twice what an unprivileged RLIMIT_NOFILE hard limit may allow. The
//! benchmark reads the counters over a small control connection.
//!
//! Each connection picks its behaviour with its first byte:
//! - `S`: sink. Acknowledged with one `K`, then everything is read and counted.
//! - `D`: source. Acknowledged with one `K`; after one more byte from the peer ("go"), data is
//!   written until the peer goes away.
//! - anything else: echo, starting with that byte.
//!
//! The command is a single byte sent alone and acknowledged before any payload, and the echo
//! payloads are one repeated byte, because a transport may re-chunk or permute bytes within a
//! read: `reverse` reverses each read, and two reads on the server need not line up with two
//! writes on the client. A lone byte survives any such transform, and so does a count of bytes.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::launch::{self, ManagedPt};

pub const CMD_SINK: u8 = b'S';
pub const CMD_SOURCE: u8 = b'D';
pub const ACK: u8 = b'K';
/// The client's go-ahead for a source, sent after the acknowledgement arrived.
pub const GO: u8 = b'G';
/// The byte echo payloads are made of.
pub const ECHO_BYTE: u8 = b'E';
/// Read and write size of the bulk paths.
pub const BULK_CHUNK: usize = 256 << 10;

/// The child's counters.
#[derive(Debug, Default)]
struct Stats {
    /// Bytes the sink has read, over all connections.
    sunk: AtomicU64,
    /// Connections open now.
    active: AtomicUsize,
}

/// The stand-in ORPort, serving in this process (the `--serve-target` child).
#[derive(Debug)]
struct Serving {
    addr: SocketAddr,
    stats: Arc<Stats>,
    _task: JoinHandle<()>,
}

impl Serving {
    async fn start() -> io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse().expect("literal address"))?;
        // The idle test opens thousands of connections at once; a short backlog would turn a
        // burst into SYN retries and distort the timings.
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let task_stats = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, task_stats.clone()));
                    }
                    // Out of descriptors or similar: wait for connections to close.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Ok(Self {
            addr,
            stats,
            _task: task,
        })
    }
}

/// The `--serve-target` child: serves the stand-in ORPort and a control port, prints
/// `TARGET <addr> <control addr>` on stdout, and exits when stdin reaches EOF (its parent
/// gone or done), like the transports do with TOR_PT_EXIT_ON_STDIN_CLOSE.
pub fn serve_child() -> io::Result<()> {
    launch::helper_runtime()?.block_on(async {
        let serving = Serving::start().await?;
        let control = TcpListener::bind("127.0.0.1:0").await?;
        println!("TARGET {} {}", serving.addr, control.local_addr()?);
        loop {
            let (mut c, _) = control.accept().await?;
            let stats = serving.stats.clone();
            tokio::spawn(async move {
                let mut q = [0u8; 1];
                while c.read_exact(&mut q).await.is_ok() {
                    let line = format!(
                        "{} {}\n",
                        stats.sunk.load(Ordering::Relaxed),
                        stats.active.load(Ordering::Relaxed),
                    );
                    if c.write_all(line.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// A snapshot of the child's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub sunk: u64,
    pub active: usize,
}

/// The benchmark's handle on the stand-in ORPort child. Dropping it stops the child.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    control: Mutex<BufReader<TcpStream>>,
    process: ManagedPt,
}

impl Target {
    /// Starts `pt-bench --serve-target` and connects to its control port.
    pub async fn start(log: &Path) -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        let log = log.to_owned();
        let (process, line) = tokio::task::spawn_blocking(move || {
            launch::helper(&exe, &["--serve-target"], &log, "stand-in ORPort", "TARGET")
        })
        .await
        .map_err(io::Error::other)??;
        let words: Vec<&str> = line.split_whitespace().collect();
        let parse = |i: usize| -> io::Result<SocketAddr> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad line from the target: {line:?}")))
        };
        let (addr, control) = (parse(1)?, parse(2)?);
        let control = TcpStream::connect(control).await?;
        Ok(Self {
            addr,
            control: Mutex::new(BufReader::new(control)),
            process,
        })
    }

    /// The child's process ID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Reads the child's counters.
    pub async fn counters(&self) -> io::Result<Counters> {
        let mut c = self.control.lock().await;
        c.get_mut().write_all(b"?").await?;
        let mut line = String::new();
        c.read_line(&mut line).await?;
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match v[..] {
            [sunk, active] => Ok(Counters {
                sunk,
                active: active as usize,
            }),
            _ => Err(io::Error::other(format!("bad counters {line:?}"))),
        }
    }

    /// Waits until no connection is open (or `limit` passes); returns whether it drained. Used
    /// between tests so one test's teardown does not run into the next one's figures.
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            match self.counters().await {
                Ok(c) if c.active == 0 => return true,
                Err(_) => return false,
                Ok(_) => {}
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Decrements the open-connection count however the connection ends.
struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(mut stream: TcpStream, stats: Arc<Stats>) {
    stats.active.fetch_add(1, Ordering::Relaxed);
    let _guard = ActiveGuard(stats.clone());
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    if stream.read_exact(&mut first).await.is_err() {
        return;
    }
    let _ = match first[0] {
        CMD_SINK => sink(stream, &stats).await,
        CMD_SOURCE => source(stream).await,
        b => echo(stream, b).await,
    };
}

async fn sink(mut stream: TcpStream, stats: &Stats) -> io::Result<()> {
    stream.write_all(&[ACK]).await?;
    let mut buf = vec![0u8; BULK_CHUNK];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stats.sunk.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn source(mut stream: TcpStream) -> io::Result<()> {
    stream.write_all(&[ACK]).await?;
    // Wait for the client's go byte, so the acknowledgement travels alone: a transform that
    // reverses each read would otherwise move it behind the data.
    let mut go = [0u8; 1];
    stream.read_exact(&mut go).await?;
    let buf = vec![CMD_SOURCE; BULK_CHUNK];
    loop {
        stream.write_all(&buf).await?;
    }
}

async fn echo(mut stream: TcpStream, first: u8) -> io::Result<()> {
    stream.write_all(&[first]).await?;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}
