//! The WASI harness: a real instance of a small dialer module whose host calls, arguments and
//! guest memory all come from the fuzz input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::runtime::{AllowList, Connector, Dialer, NetPolicy, SessionEnd, Watm};
use crate::sys::Waker;
use crate::{Limits, Runtime, RuntimeConfig};

/// The size of one call record of the WASI harness program (see [`WasiHarness`]).
pub const WASI_RECORD_SIZE: usize = 48;
/// Most bytes of guest memory the harness fills from its input.
pub const WASI_IMAGE_MAX: usize = 65472;
/// Most call records one run executes.
pub const WASI_MAX_CALLS: usize = 256;

/// The operations of the harness program, by record `op % WASI_OPS.len()`, with the arguments
/// each takes from the record's eleven `u32` words (`a0`..`a10`).
pub const WASI_OPS: &[&str] = &[
    "fd_write(a0, a1, a2, a3)",
    "fd_read(a0, a1, a2, a3)",
    "poll_oneoff(a0, a1, a2, a3)",
    "path_open(a0, a1, a2, a3, a4, a5|a6<<32, a7, a8, a9)",
    "fd_prestat_dir_name(a0, a1, a2)",
    "fd_seek(a0, a1|a2<<32, a3, a4)",
    "random_get(a0, a1)",
    "water_dial(a0, a1, a2, a3)",
    "fd_prestat_get(a0, a1)",
    "fd_tell(a0, a1)",
    "fd_filestat_get(a0, a1)",
    "path_filestat_get(a0, a1, a2, a3, a4)",
    "fd_fdstat_get(a0, a1)",
    "sock_send(a0, a1, a2, a3, a4)",
    "sock_recv(a0, a1, a2, a3, a4, a5)",
    "fd_close(a0)",
    "clock_time_get(a0, a1, a2)",
    "sock_shutdown(a0, a1)",
    "fd_fdstat_set_flags(a0, a1)",
    "water_dial_fixed()",
    "water_accept()",
    "proc_exit(a0)",
];

/// The address `water_dial` may reach in the harness (it leads to the harness's listener).
pub const WASI_DIAL_OK: &str = "water.fuzz:7";
/// An allowed address whose dial fails (connection refused).
pub const WASI_DIAL_REFUSED: &str = "refused.fuzz:1";

/// The harness module, as WAT text (the fuzz crate and the tests compile it with `wat`, which
/// the host crate does not depend on). It plays the dialer role; `watm_start_v1` opens `/conf/watm.cfg` (the
/// fuzz input), copies its image into linear memory, then executes its call records. Each
/// record is re-read from the config file just before it runs, so a host call that scribbles
/// over guest memory (which is the point) cannot change the program, only its data.
///
/// Two adjustments keep every run short without hiding host behaviour: the caller and network
/// sockets are switched to non-blocking, and clock subscriptions of `poll_oneoff` have their
/// timeout cut to at most ~1 ms before the call. The control pipe is closed by the module so a
/// fuzzed `poll_oneoff` cannot wait on it; the harness stops runs by force instead.
pub const WASI_HARNESS_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "env" "water_dial" (func $dial (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_tell" (func $fd_tell (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fd_filestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $sock_shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $set_flags (param i32 i32) (result i32)))
  (import "env" "water_dial_fixed" (func $dial_fixed (result i32)))
  (import "env" "water_accept" (func $accept (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; Scratch area at the top of memory: iovec at 65472, result at 65480, record at 65488.
  (data (i32.const 65520) "watm.cfg")
  (global $caller (mut i32) (i32.const -1))
  (global $net (mut i32) (i32.const -1))
  (global $conf (mut i32) (i32.const -1))
  (func (export "watm_init_v1") (result i32) (i32.const 0))
  (func (export "watm_dial_v1") (param i32) (result i32)
    (global.set $caller (local.get 0))
    (global.set $net (call $dial_fixed))
    (global.get $net))
  (func (export "watm_ctrlpipe_v1") (param i32) (result i32)
    (drop (call $fd_close (local.get 0)))
    (i32.const 0))
  ;; Cuts the timeout of every clock subscription in subs[0..n] that lies in memory.
  (func $clamp (param $subs i32) (param $n i32)
    (local $k i32) (local $at i32)
    (if (i32.gt_u (local.get $n) (i32.const 4096)) (then (return)))
    (block $out (loop $l
      (br_if $out (i32.ge_u (local.get $k) (local.get $n)))
      (local.set $at (i32.add (local.get $subs) (i32.mul (local.get $k) (i32.const 48))))
      (br_if $out (i32.lt_u (local.get $at) (local.get $subs)))
      (br_if $out (i32.gt_u (local.get $at) (i32.const 65488)))
      (if (i32.eqz (i32.load8_u offset=8 (local.get $at)))
        (then (i64.store offset=24 (local.get $at)
                (i64.and (i64.load offset=24 (local.get $at)) (i64.const 0xfffff)))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $l))))
  ;; Reads `len` bytes of the config at `offset` into `dst`; returns how many arrived.
  (func $conf_read (param $offset i32) (param $dst i32) (param $len i32) (result i32)
    (drop (call $fd_seek (global.get $conf) (i64.extend_i32_u (local.get $offset)) (i32.const 0) (i32.const 65480)))
    (i32.store (i32.const 65472) (local.get $dst))
    (i32.store (i32.const 65476) (local.get $len))
    (i32.store (i32.const 65480) (i32.const 0))
    (drop (call $fd_read (global.get $conf) (i32.const 65472) (i32.const 1) (i32.const 65480)))
    (i32.load (i32.const 65480)))
  (func (export "watm_start_v1") (result i32)
    (local $n i32) (local $base i32) (local $i i32) (local $op i32)
    (local $a0 i32) (local $a1 i32) (local $a2 i32) (local $a3 i32) (local $a4 i32) (local $a5 i32)
    (local $a6 i32) (local $a7 i32) (local $a8 i32) (local $a9 i32)
    (drop (call $set_flags (global.get $caller) (i32.const 4)))
    (drop (call $set_flags (global.get $net) (i32.const 4)))
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 65520) (i32.const 8) (i32.const 0)
          (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 65516))
      (then (return (i32.const -5))))
    (global.set $conf (i32.load (i32.const 65516)))
    ;; Header: the image length (u16, little endian).
    (i32.store (i32.const 65488) (i32.const 0))
    (drop (call $conf_read (i32.const 0) (i32.const 65488) (i32.const 2)))
    (local.set $n (i32.load16_u (i32.const 65488)))
    (if (i32.gt_u (local.get $n) (i32.const 65472)) (then (local.set $n (i32.const 65472))))
    (local.set $base (i32.add (i32.const 2) (call $conf_read (i32.const 2) (i32.const 0) (local.get $n))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const 256)))
      (br_if $done (i32.lt_u
        (call $conf_read (i32.add (local.get $base) (i32.mul (local.get $i) (i32.const 48))) (i32.const 65488) (i32.const 48))
        (i32.const 48)))
      (local.set $op (i32.rem_u (i32.load (i32.const 65488)) (i32.const 22)))
      (local.set $a0 (i32.load (i32.const 65492)))
      (local.set $a1 (i32.load (i32.const 65496)))
      (local.set $a2 (i32.load (i32.const 65500)))
      (local.set $a3 (i32.load (i32.const 65504)))
      (local.set $a4 (i32.load (i32.const 65508)))
      (local.set $a5 (i32.load (i32.const 65512)))
      (local.set $a6 (i32.load (i32.const 65516)))
      (local.set $a7 (i32.load (i32.const 65520)))
      (local.set $a8 (i32.load (i32.const 65524)))
      (local.set $a9 (i32.load (i32.const 65528)))
      (block $end
      (block $o21 (block $o20 (block $o19 (block $o18 (block $o17 (block $o16 (block $o15 (block $o14
      (block $o13 (block $o12 (block $o11 (block $o10 (block $o9 (block $o8 (block $o7 (block $o6
      (block $o5 (block $o4 (block $o3 (block $o2 (block $o1 (block $o0
        (br_table $o0 $o1 $o2 $o3 $o4 $o5 $o6 $o7 $o8 $o9 $o10 $o11 $o12 $o13 $o14 $o15 $o16 $o17
                  $o18 $o19 $o20 $o21 (local.get $op)))
        (drop (call $fd_write (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3))) (br $end))
        (drop (call $fd_read (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3))) (br $end))
        (call $clamp (local.get $a0) (local.get $a2))
        (drop (call $poll (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3))) (br $end))
        (drop (call $path_open (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3) (local.get $a4)
          (i64.or (i64.extend_i32_u (local.get $a5)) (i64.shl (i64.extend_i32_u (local.get $a6)) (i64.const 32)))
          (i64.extend_i32_u (local.get $a7)) (local.get $a8) (local.get $a9))) (br $end))
        (drop (call $prestat_dir_name (local.get $a0) (local.get $a1) (local.get $a2))) (br $end))
        (drop (call $fd_seek (local.get $a0)
          (i64.or (i64.extend_i32_u (local.get $a1)) (i64.shl (i64.extend_i32_u (local.get $a2)) (i64.const 32)))
          (local.get $a3) (local.get $a4))) (br $end))
        (drop (call $random_get (local.get $a0) (local.get $a1))) (br $end))
        (drop (call $dial (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3))) (br $end))
        (drop (call $prestat_get (local.get $a0) (local.get $a1))) (br $end))
        (drop (call $fd_tell (local.get $a0) (local.get $a1))) (br $end))
        (drop (call $fd_filestat_get (local.get $a0) (local.get $a1))) (br $end))
        (drop (call $path_filestat_get (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3) (local.get $a4))) (br $end))
        (drop (call $fd_fdstat_get (local.get $a0) (local.get $a1))) (br $end))
        (drop (call $sock_send (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3) (local.get $a4))) (br $end))
        (drop (call $sock_recv (local.get $a0) (local.get $a1) (local.get $a2) (local.get $a3) (local.get $a4) (local.get $a5))) (br $end))
        ;; The program's own config descriptor stays open.
        (if (i32.ne (local.get $a0) (global.get $conf))
          (then (drop (call $fd_close (local.get $a0))))) (br $end))
        (drop (call $clock_time_get (local.get $a0) (i64.extend_i32_u (local.get $a1)) (local.get $a2))) (br $end))
        (drop (call $sock_shutdown (local.get $a0) (local.get $a1))) (br $end))
        (drop (call $set_flags (local.get $a0) (local.get $a1))) (br $end))
        (drop (call $dial_fixed)) (br $end))
        (drop (call $accept)) (br $end))
        (call $proc_exit (local.get $a0)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.const 0))
)"#;

/// How long a run may take before the harness stops it. Runs normally take well under a
/// millisecond; only a host call that blocks despite the adjustments above gets near this.
const RUN_LIMIT: Duration = Duration::from_secs(2);
/// How long a stopped run may take to end. Every host wait includes the instance's stop signal,
/// so a run still going after this is a hang in the host: the harness panics.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Connections made by the harness's connector, as the runtime's `Connector` sees them.
struct FuzzConnector {
    target: SocketAddr,
}

impl Connector for FuzzConnector {
    fn connect(
        &self,
        _network: &str,
        address: &str,
        _cancel: &Waker,
    ) -> std::io::Result<std::net::TcpStream> {
        if address == WASI_DIAL_REFUSED {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        std::net::TcpStream::connect_timeout(&self.target, Duration::from_secs(5))
    }
}

/// What one harness run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasiRun {
    /// How the session ended (a trap or `proc_exit` shows as `Failed`).
    pub end: SessionEnd,
    /// Whether the harness had to stop the run after [`RUN_LIMIT`].
    pub stopped: bool,
}

/// Runs a WATM against the real WASI host with fuzzer-chosen memory and calls.
///
/// The input is the module's config: `[u16 LE image length][image][48-byte records]`, each
/// record an `op: u32` and eleven `u32` arguments (see [`WASI_OPS`]). The instance holds real
/// sockets: the caller end of a socket pair, a TCP connection to a loopback listener (from
/// `water_dial_fixed`), and whatever `water_dial` opens. The peers of those sockets send a few
/// bytes, then close their sending side and read (and discard) everything, so guest reads find
/// data or EOF and guest writes always drain.
pub struct WasiHarness {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    watm: Arc<Watm>,
    policy: NetPolicy,
    /// Keeps SIGPIPE handled (so a write to a closed socket is `EPIPE`, as in the real binary,
    /// where Rust's start-up code ignores SIGPIPE; libFuzzer's `main` does not).
    _sigpipe: tokio::signal::unix::Signal,
    /// Whether [`WasiHarness::run`] checks that each run released its thread and sockets.
    check_resources: bool,
}

impl WasiHarness {
    /// Builds the runtime, loads `wasm` (the compiled [`WASI_HARNESS_WAT`]) and starts the
    /// loopback listener.
    pub fn new(wasm: &[u8]) -> Self {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (listener, sigpipe) = tokio.block_on(async {
            let sigpipe = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe())
                .expect("SIGPIPE");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("listener");
            (listener, sigpipe)
        });
        let target = listener.local_addr().expect("listener address");
        tokio.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(peer(stream, b"network"));
            }
        });
        let runtime = Runtime::new(RuntimeConfig {
            limits: Limits {
                max_memory: 1 << 20,
                max_connections: 4,
                stop_grace: Duration::from_millis(20),
                max_compute: Duration::from_secs(5),
                ..Limits::default()
            },
            // Every run's thread must exit, so the leak check sees the
            // process as it was.
            idle_threads: 0,
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        let watm = runtime.load(wasm).expect("harness module loads");
        let policy = NetPolicy {
            allow: AllowList::new([WASI_DIAL_OK, WASI_DIAL_REFUSED]),
            connector: Arc::new(FuzzConnector { target }),
        };
        let harness = Self {
            tokio,
            runtime,
            watm,
            policy,
            _sigpipe: sigpipe,
            check_resources: false,
        };
        // The first instance makes some lazily created, long-lived descriptors; one run up
        // front keeps them out of the per-run resource check.
        harness.run(&wasi_input(b"", &[]));
        Self {
            check_resources: true,
            ..harness
        }
    }

    /// Runs one input. Panics if the run cannot be set up, or if a stopped run does not end:
    /// both mean the host misbehaved.
    pub fn run(&self, input: &[u8]) -> WasiRun {
        let dialer = Dialer::new(&self.runtime, self.watm.clone())
            .with_config(Some(input.to_vec()))
            .with_policy(self.policy.clone());
        let before = crate::sys::process_counts().filter(|_| self.check_resources);
        self.tokio.block_on(async {
            let mut stream = dialer
                .dial("tcp", WASI_DIAL_OK)
                .await
                .expect("the harness module sets up its connection");
            let session = stream.session().clone();
            let wait = async {
                match tokio::time::timeout(RUN_LIMIT, session.finished()).await {
                    Ok(end) => (end, false),
                    Err(_) => {
                        session.stop();
                        match tokio::time::timeout(STOP_LIMIT, session.finished()).await {
                            Ok(end) => (end, true),
                            Err(_) => panic!("a WASI host call did not return after a forced stop"),
                        }
                    }
                }
            };
            // The caller's peer ends at EOF, which comes when the session's store (holding every
            // guest socket) is dropped; the stream itself stays ours until then, because dropping
            // it would ask the session to stop.
            let caller = tokio::time::timeout(RUN_LIMIT + STOP_LIMIT, peer(&mut stream, b"caller"));
            let ((end, stopped), _) = tokio::join!(wait, caller);
            // Our handles keep the session's stop signal open.
            drop(stream);
            drop(session);
            // The session thread and every socket of the run must go away. Waiting for that
            // also keeps a thread that is still exiting from looking like a leak to
            // LeakSanitizer when the run returns.
            if let Some(before) = before {
                let deadline = tokio::time::Instant::now() + STOP_LIMIT;
                let mut now = crate::sys::process_counts().unwrap_or(before);
                while (now.0 > before.0 || now.1 > before.1)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    now = crate::sys::process_counts().unwrap_or(before);
                }
                assert!(
                    now.0 <= before.0 && now.1 <= before.1,
                    "a run left descriptors or threads behind: (fds, threads) {before:?} -> {now:?}"
                );
            }
            WasiRun { end, stopped }
        })
    }
}

/// The far end of a guest socket: says `hello`, closes its sending side, then reads until EOF.
async fn peer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, hello: &'static [u8]) {
    let _ = stream.write_all(hello).await;
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Builds a harness input from an image and `(op, args)` records (for seeds and tests).
pub fn wasi_input(image: &[u8], calls: &[(u32, [u32; 11])]) -> Vec<u8> {
    let image = &image[..image.len().min(WASI_IMAGE_MAX)];
    let mut out = Vec::with_capacity(2 + image.len() + calls.len() * WASI_RECORD_SIZE);
    out.extend_from_slice(&(image.len() as u16).to_le_bytes());
    out.extend_from_slice(image);
    for (op, args) in calls {
        out.extend_from_slice(&op.to_le_bytes());
        for a in args {
            out.extend_from_slice(&a.to_le_bytes());
        }
    }
    out
}
