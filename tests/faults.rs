//! Faults around a running transport, with real processes and sockets: the bridge's PT killed
//! mid-transfer, tor's ORPort / Extended ORPort going away and coming back, a module that
//! traps in the middle of a connection, tor's upstream proxy dying, a bridge that stops
//! reading. In each case the affected connections must end within a bounded time, and
//! everything else must go on being served. (tor exiting is in `stdin_close.rs`.)

mod common;

use base64::Engine as _;
use common::extor_server::{self, CookieFile, Server, COOKIE_A, OKAY};
use common::pt::*;
use common::test_proxies::{socks5_server, BANNER, BND_V4};
use common::{echo_server, module_path, random_bytes, roundtrip};
use rustix::process::{kill_process, Pid, Signal};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long an affected connection may take to be closed. Far above what it takes (the
/// failure is seen by the kernel at once); a hang shows as a failure, not a stuck test.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

fn sigkill(pid: u32) {
    kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::KILL).unwrap();
}

fn orport_env(dir: &TempDir, orport: SocketAddr) -> Vec<(&'static str, String)> {
    server_env(&dir.state(), &orport.to_string())
}

fn start_server(env: &[(&'static str, String)]) -> (PtChild, SocketAddr) {
    let mut pt = PtChild::spawn(&env_refs(env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let (addr, _) = pt.smethod();
    assert_eq!(pt.line(), "SMETHODS DONE");
    (pt, addr)
}

fn start_client(dir: &TempDir) -> (PtChild, SocketAddr) {
    let env = client_env(&dir.state());
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    let socks = pt.client_ready();
    (pt, socks)
}

/// A transfer kept running on a connection: a writer sending pseudo-random chunks and a
/// reader counting what comes back. Both stop at the first error or EOF.
struct Transfer {
    received: Arc<AtomicU64>,
    reader: JoinHandle<Instant>,
    writer: JoinHandle<()>,
}

impl Transfer {
    fn start(s: TcpStream) -> Self {
        let (mut r, mut w) = s.into_split();
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(n) => {
                        count.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        let writer = tokio::spawn(async move {
            let chunk = random_bytes(16 << 10, 3);
            while w.write_all(&chunk).await.is_ok() {}
        });
        Transfer {
            received,
            reader,
            writer,
        }
    }

    /// Waits (bounded) until at least `n` bytes came back.
    async fn until_received(&self, n: u64) {
        let deadline = Instant::now() + WAIT;
        while self.received.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "transfer stalled before {n} bytes"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the connection to be closed under the transfer and returns when the reader
    /// saw it (EOF or reset); panics after [`CLOSE_WITHIN`].
    async fn closed(self) -> Instant {
        let seen = tokio::time::timeout(CLOSE_WITHIN, self.reader)
            .await
            .expect("the connection was closed in time")
            .unwrap();
        // The writer ends too (EPIPE / reset) once the socket is gone.
        tokio::time::timeout(CLOSE_WITHIN, self.writer)
            .await
            .expect("writes fail once the connection is gone")
            .unwrap();
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_pt_killed_mid_transfer() {
    let orport = echo_server().await;
    let server_dir = TempDir::new("kill-server");
    let (bridge, bridge_addr) = start_server(&orport_env(&server_dir, orport));
    let client_dir = TempDir::new("kill-client");
    let (mut client, socks) = start_client(&client_dir);

    let s = socks_connect(socks, None, Target::Ip(bridge_addr))
        .await
        .stream();
    let transfer = Transfer::start(s);
    transfer.until_received(1 << 20).await;
    let killed = Instant::now();
    sigkill(bridge.pid());
    let seen = transfer.closed().await;
    eprintln!(
        "SOCKS connection closed {:?} after the bridge's SIGKILL",
        seen - killed
    );
    drop(bridge);

    // The client PT goes on: the dead bridge is refused with a SOCKS error (REP 5, refused),
    // and other destinations are served.
    let refused = socks_connect(socks, None, Target::Ip(bridge_addr)).await;
    assert!(matches!(refused, Socks::Refused(5)), "{refused:?}");
    let echo = echo_server().await;
    let mut s = socks_connect(socks, None, Target::Ip(echo)).await.stream();
    assert_eq!(roundtrip(&mut s, b"still serving").await, b"still serving");
    // tor exiting: its SOCKS connections close, then our stdin.
    drop(s);
    client.close_stdin();
    assert!(client.wait_exit().success());
}

/// Accepts on `l` (until dropped) and echoes; a stand-in ORPort that can be taken down.
fn serve_echo(l: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

/// Connects to the bridge, sends a few bytes (tor's side is opened only once the module has
/// something for it) and expects it to close the connection without a byte.
async fn expect_dropped(bridge: SocketAddr) {
    let mut s = TcpStream::connect(bridge).await.unwrap();
    s.write_all(b"for tor").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(CLOSE_WITHIN, s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "a connection with no ORPort behind it got bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orport_down_then_back() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let orport = l.local_addr().unwrap();
    let mut up = serve_echo(l);
    let dir = TempDir::new("orport-down");
    let (mut pt, bridge) = start_server(&orport_env(&dir, orport));
    let mut s = TcpStream::connect(bridge).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"up").await, b"up");

    // tor's ORPort goes away (listener closed): new connections are closed, with a log line.
    up.abort();
    let _ = (&mut up).await;
    expect_dropped(bridge).await;
    let line = pt.wait_stderr("inbound connection dropped");
    assert!(line.contains("ORPort"), "{line}");
    let log = pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains("ORPort"), "{log}");
    // The connection opened before the ORPort went down is untouched.
    assert_eq!(roundtrip(&mut s, b"old one").await, b"old one");

    // Back on the same port: served again by the same process.
    let _again = serve_echo(TcpListener::bind(orport).await.unwrap());
    let mut s = TcpStream::connect(bridge).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"back").await, b"back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_orport_down_then_back() {
    let cookie = CookieFile::new(&COOKIE_A);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ext = l.local_addr().unwrap();
    let serve_ext = |l: TcpListener| {
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(extor_server::handle(
                    s,
                    Server {
                        reply: OKAY.to_vec(),
                        echo: true,
                        ..Server::new(COOKIE_A)
                    },
                ));
            }
        })
    };
    let mut up = serve_ext(l);
    let dir = TempDir::new("extor-down");
    let mut env = server_env(&dir.state(), "127.0.0.1:9");
    set_var(&mut env, "TOR_PT_EXTENDED_SERVER_PORT", ext.to_string());
    env.push(("TOR_PT_AUTH_COOKIE_FILE", cookie.0.display().to_string()));
    let (mut pt, bridge) = start_server(&env);
    let mut s = TcpStream::connect(bridge).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"up").await, b"up");

    up.abort();
    let _ = (&mut up).await;
    for _ in 0..3 {
        expect_dropped(bridge).await;
    }
    let line = pt.wait_stderr("inbound connection dropped");
    assert!(line.contains("Extended ORPort"), "{line}");
    // Reported to tor once, not once per connection.
    let log = pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains("Extended ORPort"), "{log}");

    let _again = serve_ext(TcpListener::bind(ext).await.unwrap());
    let mut s2 = TcpStream::connect(bridge).await.unwrap();
    assert_eq!(roundtrip(&mut s2, b"back").await, b"back");
    assert_eq!(roundtrip(&mut s, b"old one").await, b"old one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_trapping_mid_connection_ends_only_that_connection() {
    const LIMIT: usize = 4000;
    let echo = echo_server().await;
    let dir = TempDir::new("faulty");
    let (mut pt, socks) = start_client(&dir);
    let faulty = module_path("faulty").display().to_string();
    let config =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("trap_after={LIMIT}"));
    let args = [("water-wasm", faulty.as_str()), ("water-config", &config)];

    // A healthy connection (built-in plain) open across the fault.
    let mut healthy = socks_connect(socks, None, Target::Ip(echo)).await.stream();
    assert_eq!(roundtrip(&mut healthy, b"before").await, b"before");

    // Below the limit (both directions counted: 2 x 1000) the faulty module is a passthrough.
    let mut bad = socks_with_args(socks, &args, echo).await.stream();
    let msg = random_bytes(1000, 21);
    assert_eq!(roundtrip(&mut bad, &msg).await, msg);
    // Past it the module panics, which is a trap: the connection ends, without the bytes.
    bad.write_all(&random_bytes(LIMIT, 22)).await.unwrap();
    let mut rest = Vec::new();
    let got = tokio::time::timeout(CLOSE_WITHIN, bad.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        got.is_err() || rest.len() < LIMIT,
        "{} bytes came back",
        rest.len()
    );
    pt.wait_stderr("faulty: trap_after=4000 reached");
    let ended = pt.wait_stderr("connection ended");
    assert!(
        ended.contains("trap") || ended.contains("unreachable"),
        "{ended}"
    );

    // Everything else is unaffected: the open connection, and new ones, faulty ones included.
    assert_eq!(roundtrip(&mut healthy, b"after").await, b"after");
    let mut again = socks_with_args(socks, &args, echo).await.stream();
    assert_eq!(
        roundtrip(&mut again, b"fresh instance").await,
        b"fresh instance"
    );
    assert!(pt.stderr().matches("trap_after=4000 reached").count() == 1);
}

/// Env vars that turn the ignored test `socks5_proxy_process` into a SOCKS5 proxy, run as a
/// child process so that a test can SIGKILL it: where to relay, and the file in which to
/// leave the proxy's address (libtest captures a test's stdout, so it cannot be printed).
const PROXY_UPSTREAM: &str = "WATER_PT_FAULTS_PROXY_UPSTREAM";
const PROXY_ADDR_FILE: &str = "WATER_PT_FAULTS_PROXY_ADDR_FILE";

/// Not a test: the body of a child process (see [`spawn_proxy_process`]). Ignored, so it runs
/// only when asked for by name.
#[test]
#[ignore = "helper process for upstream_proxy_killed_mid_transfer"]
fn socks5_proxy_process() {
    let upstream: SocketAddr = std::env::var(PROXY_UPSTREAM)
        .expect("run by upstream_proxy_killed_mid_transfer")
        .parse()
        .unwrap();
    let file = std::path::PathBuf::from(std::env::var_os(PROXY_ADDR_FILE).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Written whole, then renamed: the parent never reads half an address.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, listener.local_addr().unwrap().to_string()).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    for conn in listener.incoming() {
        let Ok(mut client) = conn else { continue };
        std::thread::spawn(move || {
            if socks5_server(None, 0, BND_V4.to_vec())(&mut client).is_err() {
                return;
            }
            let Ok(mut up) = std::net::TcpStream::connect(upstream) else {
                return;
            };
            let (Ok(mut up_r), Ok(mut client_w)) = (up.try_clone(), client.try_clone()) else {
                return;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up_r, &mut client_w);
            });
            let _ = std::io::copy(&mut client, &mut up);
        });
    }
}

/// The test binary itself, re-run as a SOCKS5 proxy relaying to `upstream`; killed on drop.
struct ProxyProcess {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

fn spawn_proxy_process(upstream: SocketAddr) -> ProxyProcess {
    let dir = TempDir::new("proxy-process");
    let file = dir.path().join("addr");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["socks5_proxy_process", "--exact", "--ignored"])
        .env(PROXY_UPSTREAM, upstream.to_string())
        .env(PROXY_ADDR_FILE, &file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut proxy = ProxyProcess {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
        _dir: dir,
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            proxy.addr = text.parse().unwrap();
            return proxy;
        }
        assert!(
            proxy.child.try_wait().unwrap().is_none(),
            "the proxy helper process exited"
        );
        assert!(Instant::now() < deadline, "the proxy helper never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_proxy_killed_mid_transfer() {
    let echo = echo_server().await;
    let mut proxy = spawn_proxy_process(echo);
    let dir = TempDir::new("proxy-dies");
    let mut env = client_env(&dir.state());
    env.push(("TOR_PT_PROXY", format!("socks5://{}", proxy.addr)));
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    assert_eq!(pt.line(), "PROXY DONE");
    let socks = pt.cmethod();
    assert_eq!(pt.line(), "CMETHODS DONE");

    let mut s = socks_connect(socks, None, Target::Ip(echo)).await.stream();
    let mut banner = vec![0u8; BANNER.len()];
    s.read_exact(&mut banner).await.unwrap();
    assert_eq!(banner, BANNER, "the connection goes through the proxy");
    let transfer = Transfer::start(s);
    transfer.until_received(1 << 20).await;
    let killed = Instant::now();
    proxy.child.kill().unwrap();
    proxy.child.wait().unwrap();
    let seen = transfer.closed().await;
    eprintln!(
        "SOCKS connection closed {:?} after the proxy's SIGKILL",
        seen - killed
    );

    // With the proxy gone, requests fail with a non-zero REP, and the PT keeps answering.
    for _ in 0..3 {
        let got = socks_connect(socks, None, Target::Ip(echo)).await;
        match got {
            Socks::Refused(rep) => assert_ne!(rep, 0),
            other => panic!("expected a SOCKS error, got {other:?}"),
        }
    }
    assert!(pt
        .next_line()
        .is_some_and(|l| l.starts_with("STATUS ") || l.starts_with("LOG ")));
    pt.close_stdin();
    assert!(pt.wait_exit().success());
}

/// The sockets process `pid` holds. Only sockets: the first connection also compiles the
/// module, which keeps a memory-image descriptor for the process's lifetime.
fn socket_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// tor closes a SOCKS connection whose bridge stopped reading (a stalled or hostile bridge).
/// The caller's FIN is queued behind the data the module has not read yet (backpressure keeps
/// the caller's receive window closed), so no poll can see the close; what ends the session is
/// the network stall limit (`TCP_USER_TIMEOUT`, 120 s by default), here set to 1 s from the
/// command line the way a torrc's `ClientTransportPlugin ... exec water-pt --network-stall-ms`
/// line would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_closed_while_the_bridge_does_not_read_ends_the_session() {
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = sink.local_addr().unwrap();
    let dir = TempDir::new("stalled-bridge");
    let env = client_env(&dir.state());
    let mut pt = PtChild::spawn(&env_refs(&env), &["--network-stall-ms", "1000"]);
    let socks = pt.client_ready();
    let base = socket_count(pt.pid());

    let mut s = socks_connect(socks, None, Target::Ip(bridge))
        .await
        .stream();
    // The bridge accepts and never reads.
    let (_held, _) = sink.accept().await.unwrap();
    let chunk = vec![0u8; 64 << 10];
    // Until a write makes no progress for 500 ms; a failed write fails the test.
    while let Ok(written) =
        tokio::time::timeout(Duration::from_millis(500), s.write_all(&chunk)).await
    {
        written.expect("the SOCKS connection stays open while buffers fill");
    }
    assert_eq!(
        socket_count(pt.pid()),
        base + 2,
        "caller and bridge sockets"
    );
    drop(s);

    let deadline = Instant::now() + CLOSE_WITHIN;
    while socket_count(pt.pid()) > base {
        assert!(
            Instant::now() < deadline,
            "the session outlived its closed SOCKS connection by {CLOSE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The log names the cause: the bridge socket timed out.
    pt.wait_stderr("connection ended: watm_start_v1 returned -ETIMEDOUT");
}
