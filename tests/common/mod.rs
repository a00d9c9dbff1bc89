//! Shared helpers for the integration tests: loopback servers, modules,
//! and resource counting.
#![allow(dead_code)]

pub mod extor_server;
pub mod pt;
pub mod test_proxies;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use water_pt::{Limits, Runtime, RuntimeConfig};

/// Path of a committed prebuilt module.
pub fn module_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("watm/prebuilt")
        .join(format!("{name}.wasm"))
}

/// Bytes of a committed prebuilt module.
pub fn module(name: &str) -> Vec<u8> {
    std::fs::read(module_path(name)).expect("prebuilt module")
}

/// A runtime with short grace and compute limits, so hostile-module tests
/// finish quickly.
pub fn runtime() -> Runtime {
    runtime_with(|_| {})
}

pub fn runtime_with(f: impl FnOnce(&mut Limits)) -> Runtime {
    let mut limits = Limits {
        stop_grace: Duration::from_millis(300),
        max_compute: Duration::from_millis(500),
        max_connections: 1000,
        ..Limits::default()
    };
    f(&mut limits);
    Runtime::new(RuntimeConfig {
        limits,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

/// A TCP echo server on loopback; runs until the test's runtime ends.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Writes `msg`, reads the same number of bytes back.
pub async fn roundtrip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    msg: &[u8],
) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    back
}

/// Open file descriptors and threads of this process.
pub fn counts() -> (usize, usize) {
    water_pt::sys::process_counts().expect("/proc is available")
}

/// Waits (bounded) until the process's fd and thread counts are back to
/// `base`, and returns the counts seen last. Descriptors are released by
/// other tasks (the echo server closes its side only once it has read the
/// end of the stream), so on a loaded machine this can take a while; the
/// bound (10 s) only limits how long a real leak takes to report.
pub async fn settle_to(base: (usize, usize)) -> (usize, usize) {
    let mut now = counts();
    for _ in 0..1000 {
        if now.0 <= base.0 && now.1 <= base.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        now = counts();
    }
    now
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    water_pt::runtime::sha256(b)
}

/// A WAT module with the WATM v1 exports, whose `watm_start_v1` body is
/// `start` (and extra items are spliced in). Globals `$caller`, `$net` and
/// `$ctrl` hold the fds the runtime handed over.
pub fn wat_module(start: &str, extra: &str) -> Vec<u8> {
    wat_module_with_locals("", start, extra)
}

/// Like [`wat_module`], with local declarations for `watm_start_v1`.
pub fn wat_module_with_locals(locals: &str, start: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "water_dial_fixed" (func $dial_fixed (result i32)))
  (import "env" "water_accept" (func $accept (result i32)))
  (import "env" "water_dial" (func $dial (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $caller (mut i32) (i32.const -1))
  (global $net (mut i32) (i32.const -1))
  (global $ctrl (mut i32) (i32.const -1))
  (func (export "watm_init_v1") (result i32) (i32.const 0))
  (func (export "watm_dial_v1") (param i32) (result i32)
    (global.set $caller (local.get 0))
    (global.set $net (call $dial_fixed))
    (global.get $net))
  (func (export "watm_accept_v1") (param i32) (result i32)
    (global.set $caller (local.get 0))
    (global.set $net (call $accept))
    (global.get $net))
  (func (export "watm_ctrlpipe_v1") (param i32) (result i32)
    (global.set $ctrl (local.get 0))
    (i32.const 0))
  (func (export "watm_start_v1") (result i32) {locals}
    {start})
  {extra}
)"#
    );
    wat::parse_str(&text).expect("valid WAT")
}

/// A WAT module with the WATM v0 exports (TinyGo style: `_water_v0` and
/// `_start` are functions), whose `_water_worker` body is `worker` (and extra
/// items are spliced in). Globals and imported functions carry the names of
/// [`wat_module`]'s (`$caller`, `$net`, `$ctrl` for the cancel fd,
/// `$fd_write`, `$fd_read`, `$poll`), so the same hostile bodies run under
/// both ABIs; the v0 imports are `$host_dial`, `$host_accept`,
/// `$host_defer` and `$pull_config`.
pub fn wat_module_v0(worker: &str, extra: &str) -> Vec<u8> {
    // Like TinyGo's, the init fails unless `_start` ran first.
    let init =
        "(if (result i32) (global.get $started) (then (i32.const 0)) (else (i32.const -53)))";
    wat_module_v0_with_init(init, worker, extra)
}

/// Like [`wat_module_v0`], with `init` as the body of `_water_init`.
pub fn wat_module_v0_with_init(init: &str, worker: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "host_dial" (func $host_dial (result i32)))
  (import "env" "host_accept" (func $host_accept (result i32)))
  (import "env" "host_defer" (func $host_defer))
  (import "env" "pull_config" (func $pull_config (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $caller (mut i32) (i32.const -1))
  (global $net (mut i32) (i32.const -1))
  (global $ctrl (mut i32) (i32.const -1))
  (global $started (mut i32) (i32.const 0))
  (func (export "_water_v0"))
  (func (export "_start") (global.set $started (i32.const 1)))
  (func (export "_water_init") (result i32)
    {init})
  (func (export "_water_dial") (param i32) (result i32)
    (global.set $caller (local.get 0))
    (global.set $net (call $host_dial))
    (global.get $net))
  (func (export "_water_accept") (param i32) (result i32)
    (global.set $caller (local.get 0))
    (global.set $net (call $host_accept))
    (global.get $net))
  (func (export "_water_cancel_with") (param i32) (result i32)
    (global.set $ctrl (local.get 0))
    (i32.const 0))
  (func (export "_water_worker") (result i32)
    {worker})
  {extra}
)"#
    );
    wat::parse_str(&text).expect("valid WAT")
}

/// A spawned `water-pt` process, killed when dropped. Its stderr is read
/// line by line on a thread so tests can wait for log lines.
pub struct Child {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Child {
    /// A standalone `water-pt server` (when `side` is `"server"`, with `peer` as its
    /// `--forward`) or `water-pt client` (`"client"`, with `peer` as its `--remote`) running
    /// the test module `module` on an ephemeral loopback port, plus `extra` arguments.
    pub fn standalone(side: &str, module: &str, peer: SocketAddr, extra: &[&str]) -> Child {
        let w = module_path(module).display().to_string();
        Child::standalone_wasm(side, &w, peer, extra)
    }

    /// [`Child::standalone`] running the module file `w`.
    pub fn standalone_wasm(side: &str, w: &str, peer: SocketAddr, extra: &[&str]) -> Child {
        let peer_flag = match side {
            "server" => "--forward",
            "client" => "--remote",
            other => panic!("no standalone side {other}"),
        };
        let p = peer.to_string();
        let mut args = vec![
            side,
            "--no-cache",
            "--wasm",
            w,
            "--listen",
            "127.0.0.1:0",
            peer_flag,
            &p,
        ];
        args.extend_from_slice(extra);
        Child::spawn(&args)
    }

    /// Starts the binary under test ([`pt::binary`]) with `args`.
    pub fn spawn(args: &[&str]) -> Child {
        Self::spawn_with(std::process::Command::new(pt::binary()), args)
    }

    pub fn spawn_with(mut cmd: std::process::Command, args: &[&str]) -> Child {
        use std::io::BufRead;
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn water-pt");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Child {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 20 s) for a stderr line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_for_line_within(needle, Duration::from_secs(20))
    }

    /// Waits up to `limit` for a stderr line containing `needle`.
    pub fn wait_for_line_within(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line containing {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Waits for the "listening on ADDR" log line and returns ADDR.
    pub fn listening_addr(&mut self) -> SocketAddr {
        self.listening_addr_within(Duration::from_secs(20))
    }

    /// [`Child::listening_addr`], waiting up to `limit`.
    pub fn listening_addr_within(&mut self, limit: Duration) -> SocketAddr {
        let line = self.wait_for_line_within("listening on ", limit);
        let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
        let addr = rest.split([',', ' ']).next().unwrap();
        addr.parse()
            .unwrap_or_else(|_| panic!("no address in {line:?}"))
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `watm_start_v1` bodies of hostile modules (for [`wat_module`]).
///
/// fd_write on the caller fd with an iovec array outside memory; the module
/// returns the errno it got, negated.
pub const BAD_POINTER_START: &str = "(i32.sub (i32.const 0)
           (call $fd_write (global.get $caller) (i32.const 0xFFFFFF00) (i32.const 1) (i32.const 16)))";
/// A valid iovec array whose buffer runs past the end of memory.
pub const OUTSIDE_IOVEC_START: &str = "(i32.store (i32.const 0) (i32.const 65000))
         (i32.store (i32.const 4) (i32.const 4096))
         (i32.sub (i32.const 0)
           (call $fd_write (global.get $caller) (i32.const 0) (i32.const 1) (i32.const 16)))";
/// One clock subscription of an hour, never looking at the control pipe.
pub const SLEEP_IGNORING_CTRL_START: &str = "(i32.store8 (i32.const 8) (i32.const 0))
         (i32.store (i32.const 16) (i32.const 1))
         (i64.store (i32.const 24) (i64.const 3600000000000))
         (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
         (i32.const 0)";
pub const TRAP_START: &str = "(unreachable)";
pub const SPIN_START: &str = "(loop $spin (br $spin)) (i32.const 0)";

/// Runs `hostile_wasm` on a fresh runtime beside a healthy connection (see
/// [`beside_a_healthy_connection`]) and asserts that its connection failed with a cause
/// naming every word of `expect_in_cause`.
pub async fn fails_beside_a_healthy_connection(hostile_wasm: Vec<u8>, expect_in_cause: &[&str]) {
    let rt = runtime();
    let end = beside_a_healthy_connection(&rt, echo_server().await, hostile_wasm).await;
    let water_pt::runtime::SessionEnd::Failed(cause) = end else {
        panic!("hostile module should fail, ended {end:?}");
    };
    for word in expect_in_cause {
        assert!(
            cause.contains(word),
            "cause {cause:?} should mention {word:?}"
        );
    }
}

/// Starts a healthy `plain` connection, runs `hostile` (which returns how its
/// connection ended), then checks the healthy one still carries bytes.
pub async fn beside_a_healthy_connection(
    rt: &Runtime,
    echo: SocketAddr,
    hostile_wasm: Vec<u8>,
) -> water_pt::runtime::SessionEnd {
    let healthy = water_pt::Dialer::new(rt, rt.load(&module("plain")).unwrap());
    let mut good = healthy.dial("tcp", &echo.to_string()).await.unwrap();
    assert_eq!(roundtrip(&mut good, b"before").await, b"before");

    let bad = water_pt::Dialer::new(rt, rt.load(&hostile_wasm).unwrap());
    let stream = bad.dial("tcp", &echo.to_string()).await.unwrap();
    let session = stream.session().clone();
    // Dropping the caller side asks the module to stop; hostile modules
    // ignore that and must be stopped by force.
    drop(stream);
    let end = tokio::time::timeout(Duration::from_secs(10), session.finished())
        .await
        .expect("hostile session ends in bounded time");

    assert_eq!(roundtrip(&mut good, b"after").await, b"after");
    end
}
