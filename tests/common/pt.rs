//! Drives the real `water-pt` binary the way tor does: environment in, protocol lines out on
//! stdout, SOCKS5 on the announced port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound on any single wait, so a broken build fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(60);

/// A temporary directory removed at drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "water-pt-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `TOR_PT_STATE_LOCATION` as tor sends it: `<DataDirectory>/pt_state/`, not yet created.
    pub fn state(&self) -> String {
        format!("{}/pt_state/", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary under test: cargo's `water-pt`, or `WATER_PT_BIN` when set. The override exists
/// for worktrees sharing one `CARGO_TARGET_DIR`, where `target/debug/water-pt` is whichever
/// checkout was built last; point it at a copy of this checkout's build.
pub fn binary() -> PathBuf {
    std::env::var_os("WATER_PT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_water-pt")))
}

/// A running `water-pt`; killed and reaped on drop (every test path).
pub struct PtChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    err_lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Every stdout line read so far (for failure messages).
    pub transcript: Vec<String>,
}

impl PtChild {
    /// Starts the binary with exactly `env` for its `TOR_PT_*` variables (the test process's own
    /// ones are removed) and `args` on the command line.
    pub fn spawn(env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut cmd = Command::new(binary());
        for (k, _) in std::env::vars() {
            if k.starts_with("TOR_PT_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn water-pt");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let (err_tx, err_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { return };
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                // The receiver may be gone; the text is kept for failure messages anyway.
                let _ = err_tx.send(line);
            }
        });
        PtChild {
            stdin: child.stdin.take(),
            child,
            lines,
            err_lines,
            stderr,
            transcript: Vec::new(),
        }
    }

    /// The next stdout line; `None` at EOF. Panics after [`WAIT`]. The `STATUS TYPE=version`
    /// line right after `VERSION 1` is kept in the transcript but not returned, so that tests
    /// can read the protocol lines that matter to them in order.
    pub fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => {
                let after_version = self.transcript.last().is_some_and(|l| l == "VERSION 1");
                self.transcript.push(line.clone());
                if after_version && line.starts_with("STATUS TYPE=version ") {
                    return self.next_line();
                }
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "no stdout line within {WAIT:?}; so far {:?}\nstderr:\n{}",
                self.transcript,
                self.stderr()
            ),
        }
    }

    /// The next line, which must exist.
    pub fn line(&mut self) -> String {
        match self.next_line() {
            Some(l) => l,
            None => panic!(
                "stdout closed; so far {:?}\nstderr:\n{}",
                self.transcript,
                self.stderr()
            ),
        }
    }

    /// Reads lines until one starts with `prefix` (skipping LOG/STATUS lines only).
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        loop {
            let l = self.line();
            if l.starts_with(prefix) {
                return l;
            }
            assert!(
                l.starts_with("LOG ") || l.starts_with("STATUS "),
                "expected {prefix:?}, got {l:?}; so far {:?}\nstderr:\n{}",
                self.transcript,
                self.stderr()
            );
        }
    }

    /// Reads the `ENV-ERROR` line of a configuration the process cannot start with, checks that
    /// nothing follows it and that the process exits with a failure; returns the line.
    pub fn env_error(&mut self) -> String {
        let l = self.line();
        assert!(l.starts_with("ENV-ERROR "), "{l}");
        assert_eq!(self.next_line(), None, "nothing after ENV-ERROR");
        assert!(!self.wait_exit().success());
        l
    }

    /// Reads `VERSION 1`, `CMETHOD water socks5 ...` and `CMETHODS DONE`; returns the port.
    pub fn client_ready(&mut self) -> SocketAddr {
        assert_eq!(self.line(), "VERSION 1");
        let socks = self.cmethod();
        assert_eq!(self.line(), "CMETHODS DONE");
        socks
    }

    /// Parses the next line as `CMETHOD water socks5 127.0.0.1:PORT`.
    pub fn cmethod(&mut self) -> SocketAddr {
        let l = self.line();
        let addr = l
            .strip_prefix("CMETHOD water socks5 ")
            .unwrap_or_else(|| panic!("not a CMETHOD line: {l:?}"));
        let addr: SocketAddr = addr.parse().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{l}");
        addr
    }

    /// Parses the next line as `SMETHOD water IP:PORT ARGS:...`; returns address and ARGS.
    pub fn smethod(&mut self) -> (SocketAddr, String) {
        let l = self.line();
        let rest = l
            .strip_prefix("SMETHOD water ")
            .unwrap_or_else(|| panic!("not an SMETHOD line: {l:?}\nstderr:\n{}", self.stderr()));
        let (addr, args) = rest.split_once(' ').expect("ARGS after the address");
        let args = args.strip_prefix("ARGS:").expect("ARGS:").to_owned();
        (addr.parse().unwrap(), args)
    }

    /// The next stderr (log) line containing `needle`. Panics after [`WAIT`] or at EOF.
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        loop {
            match self.err_lines.recv_timeout(WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!(
                    "no log line with {needle:?} ({e})\nstderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Closes the child's stdin (what tor's exit does).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the child to exit. stdout EOF comes first, then the status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        while self.next_line().is_some() {}
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "water-pt did not exit\nstderr:\n{}",
                self.stderr()
            );
            // Polling for a process that already closed its stdout: it is exiting.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for PtChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- water-pt stdout {:?}\n--- water-pt stderr:\n{}",
                self.transcript,
                self.stderr()
            );
        }
    }
}

/// The basic client-side environment tor would set.
pub fn client_env(state: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TOR_PT_MANAGED_TRANSPORT_VER", "1".into()),
        ("TOR_PT_STATE_LOCATION", state.into()),
        ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1".into()),
        ("TOR_PT_CLIENT_TRANSPORTS", "water".into()),
    ]
}

/// The basic server-side environment tor would set for a bridge on an ephemeral loopback
/// port in front of `orport`, without an Extended ORPort (which tor says with an empty value).
pub fn server_env(state: &str, orport: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TOR_PT_MANAGED_TRANSPORT_VER", "1".into()),
        ("TOR_PT_STATE_LOCATION", state.into()),
        ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1".into()),
        ("TOR_PT_SERVER_TRANSPORTS", "water".into()),
        ("TOR_PT_SERVER_BINDADDR", "water-127.0.0.1:0".into()),
        ("TOR_PT_ORPORT", orport.into()),
        ("TOR_PT_EXTENDED_SERVER_PORT", String::new()),
    ]
}

/// Sets `key` in `env` to `value`, replacing the value it had if any.
pub fn set_var(env: &mut Vec<(&'static str, String)>, key: &'static str, value: impl Into<String>) {
    let value = value.into();
    match env.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => *v = value,
        None => env.push((key, value)),
    }
}

/// Borrowed form of an owned environment list, for [`PtChild::spawn`].
pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// What a SOCKS5 CONNECT through the PT came to.
#[derive(Debug)]
pub enum Socks {
    /// REP 0: the stream carries the connection.
    Connected(TcpStream),
    /// RFC 1929 status 1 (`01 01`).
    AuthFailed,
    /// A non-zero REP.
    Refused(u8),
}

impl Socks {
    pub fn stream(self) -> TcpStream {
        match self {
            Socks::Connected(s) => s,
            other => panic!("SOCKS CONNECT failed: {other:?}"),
        }
    }
}

/// The CONNECT target as the SOCKS request encodes it.
pub enum Target<'a> {
    Ip(SocketAddr),
    Host(&'a str, u16),
}

/// A SOCKS5 client that behaves like tor's: offers `00 02` when there are arguments, sends
/// them with RFC 1929, then CONNECT. `creds` are the raw (username, password) fields.
pub async fn socks_connect(
    socks: SocketAddr,
    creds: Option<(&[u8], &[u8])>,
    target: Target<'_>,
) -> Socks {
    let mut s = TcpStream::connect(socks).await.unwrap();
    let greeting: &[u8] = if creds.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    s.write_all(greeting).await.unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.unwrap();
    if let Some((user, pass)) = creds {
        assert_eq!(choice, [5, 2], "method 0x02 must win when offered");
        let mut msg = vec![1, user.len() as u8];
        msg.extend_from_slice(user);
        msg.push(pass.len() as u8);
        msg.extend_from_slice(pass);
        s.write_all(&msg).await.unwrap();
        let mut status = [0u8; 2];
        s.read_exact(&mut status).await.unwrap();
        if status != [1, 0] {
            assert_eq!(status, [1, 1]);
            return Socks::AuthFailed;
        }
    } else {
        assert_eq!(choice, [5, 0]);
    }
    let mut req = vec![5, 1, 0];
    let port = match target {
        Target::Ip(SocketAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Ip(SocketAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Host(h, port) => {
            req.push(3);
            req.push(h.len() as u8);
            req.extend_from_slice(h.as_bytes());
            port
        }
    };
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[0], 5);
    assert_eq!(&reply[2..4], &[0, 1], "a complete IPv4 BND address");
    if reply[1] == 0 {
        Socks::Connected(s)
    } else {
        Socks::Refused(reply[1])
    }
}

/// CONNECT with bridge-line arguments encoded and split the way tor does it.
pub async fn socks_with_args(
    socks: SocketAddr,
    args: &[(&str, &str)],
    target: SocketAddr,
) -> Socks {
    let encoded = water_pt::pt::args::encode_socks_args(args).unwrap();
    let (user, pass) = water_pt::pt::args::split_for_socks(encoded.as_bytes()).unwrap();
    socks_connect(socks, Some((&user, &pass)), Target::Ip(target)).await
}
