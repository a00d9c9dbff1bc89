//! The processes under test (and the echo server) and how their resources are read.

use super::*;
/// A spawned PT process whose stderr is drained on a thread (a full pipe would block its
/// logging); killed and reaped on drop, so every exit path of the driver cleans up.
pub(crate) struct Pt {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
    pub(crate) lines: mpsc::Receiver<String>,
    pub(crate) warnings: Arc<Mutex<Vec<String>>>,
    /// Why connections ended abnormally, as the PT logged it, with counts.
    pub(crate) abnormal_ends: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Pt {
    pub(crate) fn spawn(name: &'static str, bin: &PathBuf, args: &[String]) -> Result<Pt, String> {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let sink = warnings.clone();
        let abnormal_ends = Arc::new(Mutex::new(BTreeMap::new()));
        let ends = abnormal_ends.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // A connection that ends abnormally is logged at info level; tally why, with
                // the connection id left out so that kinds add up.
                if let Some(i) = line
                    .find("connection ended")
                    .or_else(|| line.find("connection setup failed"))
                {
                    let kind = line[i..].split(" conn=").next().unwrap_or_default();
                    *ends.lock().unwrap().entry(kind.to_owned()).or_insert(0) += 1;
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    let mut w = sink.lock().unwrap();
                    if w.len() < 20 {
                        w.push(line.clone());
                    }
                }
                // After start-up nobody listens; the line is dropped.
                let _ = tx.send(line);
            }
        });
        Ok(Pt {
            name,
            child,
            lines,
            warnings,
            abnormal_ends,
        })
    }

    /// Waits (bounded) for the `listening on ADDR` line.
    pub(crate) fn listening_addr(&mut self) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|e| format!("{}: no 'listening on' line ({e})", self.name))?;
            if let Some(i) = line.find("listening on ") {
                let rest = &line[i + "listening on ".len()..];
                let addr = rest.split([',', ' ']).next().unwrap_or_default();
                return addr
                    .parse()
                    .map_err(|_| format!("{}: no address in {line:?}", self.name));
            }
        }
    }

    pub(crate) fn usage(&mut self) -> Result<Usage, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("{} exited: {status}", self.name));
        }
        usage(self.child.id()).map_err(|e| format!("{}: /proc: {e}", self.name))
    }
}

impl Drop for Pt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new IPv4 TCP socket with fixed send and receive buffers of `buffer` bytes if given (the
/// soak's own sockets, sized like the PTs' `--socket-buffer-kib`).
pub(crate) fn sized_socket(buffer: Option<u32>) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(bytes) = buffer {
        socket.set_send_buffer_size(bytes)?;
        socket.set_recv_buffer_size(bytes)?;
    }
    Ok(socket)
}

/// An echo server on loopback with a 64 KiB copy buffer per connection, and fixed socket
/// buffers of `buffer` bytes if given (accepted sockets inherit them from the listener).
pub(crate) async fn echo_server(buffer: Option<u32>) -> std::io::Result<SocketAddr> {
    let socket = sized_socket(buffer)?;
    socket.bind("127.0.0.1:0".parse().expect("address"))?;
    let listener = socket.listen(1024)?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// xorshift64: deterministic pseudo-random bytes, cheap enough for gigabytes.
pub(crate) struct Stream(pub(crate) u64);

impl Stream {
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}
