//! The shadowsocks WATM against the real thing: shadowsocks-rust's `ssserver`
//! and `sslocal`, installed by `scripts/install-shadowsocks.sh` (or named by
//! the `SSSERVER` / `SSLOCAL` environment variables).
//!
//! Without the binaries these tests print a notice and pass, except under CI
//! (`CI` set), where a missing peer is a failure: an interop test that
//! silently stops running is worse than none.
//!
//! Everything runs on loopback with ports picked by the kernel; readiness is
//! awaited by polling connect with a deadline.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use water_pt::runtime::{into_fd, SessionEnd};
use water_pt::{Dialer, Listener};

const METHODS: [&str; 2] = ["chacha20-ietf-poly1305", "aes-256-gcm"];
const MIB: usize = 1 << 20;
const INSTALL: &str = "scripts/install-shadowsocks.sh";

/// The path of `ssserver` or `sslocal`, or `None` (after a notice) when it is
/// not installed and this is not CI.
fn peer_binary(name: &str, env: &str) -> Option<PathBuf> {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        let dir = std::env::var_os("WATER_PT_SS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/water-pt/shadowsocks-rust")
            });
        dir.join("bin").join(name)
    });
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "{name} not found at {} (set {env}, or run {INSTALL})",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("NOTICE: skipping shadowsocks interop test: {msg}");
    None
}

/// A port that was free a moment ago (for the peers, which want a port on
/// their command line).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls connect until `addr` accepts, for at most 20 s.
async fn wait_ready(addr: SocketAddr, peer: &mut Peer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Some(status) = peer.child.try_wait().unwrap() {
            panic!("{} exited with {status}: {}", peer.name, peer.output());
        }
        assert!(
            Instant::now() < deadline,
            "{} not listening on {addr} after 20 s: {}",
            peer.name,
            peer.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running `ssserver` / `sslocal`, killed when dropped; its output goes to
/// a file that failures print.
struct Peer {
    name: &'static str,
    child: std::process::Child,
    log: PathBuf,
}

impl Peer {
    fn spawn(name: &'static str, binary: &PathBuf, args: &[&str]) -> Peer {
        let log = std::env::temp_dir().join(format!(
            "water-pt-{name}-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        Peer { name, child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `ssserver` on a fresh loopback port.
async fn ssserver(method: &str, password: &str) -> Option<(Peer, SocketAddr)> {
    let binary = peer_binary("ssserver", "SSSERVER")?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut peer = Peer::spawn(
        "ssserver",
        &binary,
        &["-s", &addr.to_string(), "-m", method, "-k", password],
    );
    wait_ready(addr, &mut peer).await;
    Some((peer, addr))
}

/// `sslocal` as a SOCKS5 front end for the Shadowsocks server at `server`.
async fn sslocal(server: SocketAddr, method: &str, password: &str) -> Option<(Peer, SocketAddr)> {
    let binary = peer_binary("sslocal", "SSLOCAL")?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut peer = Peer::spawn(
        "sslocal",
        &binary,
        &[
            "-b",
            &addr.to_string(),
            "--protocol",
            "socks",
            "-s",
            &server.to_string(),
            "-m",
            method,
            "-k",
            password,
        ],
    );
    wait_ready(addr, &mut peer).await;
    Some((peer, addr))
}

/// An echo server that counts the connections it accepted and the bytes it
/// received, to show that nothing got through.
struct CountingEcho {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

async fn counting_echo() -> CountingEcho {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let (a, b) = (accepted.clone(), bytes.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let b = b.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            b.fetch_add(n, Ordering::SeqCst);
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    CountingEcho {
        addr,
        accepted,
        bytes,
    }
}

fn client_config(method: &str, password: &str, target: SocketAddr) -> Vec<u8> {
    format!(r#"{{"method":"{method}","password":"{password}","target":"{target}"}}"#).into_bytes()
}

fn server_config(
    method: &str,
    password: &str,
    expect: Option<SocketAddr>,
    timeout: u64,
) -> Vec<u8> {
    let expect = expect.map_or("null".to_owned(), |a| format!("\"{a}\""));
    format!(
        r#"{{"method":"{method}","password":"{password}","expect_target":{expect},"reject_timeout_secs":{timeout}}}"#
    )
    .into_bytes()
}

/// Sends 1 MiB of random bytes while reading the echo, and checks the hash.
async fn echo_one_mib<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, seed: u64) {
    let data = random_bytes(MIB, seed);
    let expected = sha256(&data);
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w
    });
    let mut back = vec![0u8; MIB];
    tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut back))
        .await
        .expect("1 MiB echoed within 60 s")
        .unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(sha256(&back), expected, "payload corrupted");
}

/// Reads until the peer closes (EOF or reset), for at most `limit`; returns
/// the bytes received and how long the close took.
async fn read_until_closed<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}; received {got:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, start.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A SOCKS5 CONNECT to `target` through the proxy at `proxy`, no auth.
async fn socks5_connect(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = target else {
        panic!("IPv4 targets only")
    };
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0], "SOCKS5 no-auth accepted");
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&v4.ip().octets());
    req.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[..2], [5, 0], "SOCKS5 CONNECT succeeded");
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await.unwrap();
            usize::from(len[0]) + 2
        }
        other => panic!("bad ATYP {other} in SOCKS5 reply"),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await.unwrap();
    s
}

/// Our server module behind a loopback listener: every accepted connection
/// gets an upstream connection to `upstream` (as the runtime's `server`
/// command does) and a module instance. Session ends are sent on the channel.
async fn module_server(
    config: Vec<u8>,
    upstream: SocketAddr,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<SessionEnd>) {
    let rt = runtime_with(|l| l.max_compute = Duration::from_secs(5));
    let watm = rt.load(&module("shadowsocks")).unwrap();
    let listener = Listener::bind(&rt, watm, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_config(Some(config));
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _rt = rt;
        while let Ok((inbound, _)) = listener.accept_tcp().await {
            let up = TcpStream::connect(upstream).await.unwrap();
            let session = listener
                .serve(into_fd(inbound).unwrap(), into_fd(up).unwrap())
                .await
                .unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(session.finished().await);
            });
        }
    });
    (addr, rx)
}

/// A dialer running our client module.
fn module_client(config: Vec<u8>) -> (water_pt::Runtime, Dialer) {
    let rt = runtime_with(|l| l.max_compute = Duration::from_secs(5));
    let watm = rt.load(&module("shadowsocks")).unwrap();
    let dialer = Dialer::new(&rt, watm).with_config(Some(config));
    (rt, dialer)
}

/// (a) our client module -> ssserver -> echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_module_through_ssserver() {
    for (i, method) in METHODS.into_iter().enumerate() {
        let Some((_peer, server)) = ssserver(method, "interop-pw").await else {
            return;
        };
        let echo = counting_echo().await;
        let (_rt, dialer) = module_client(client_config(method, "interop-pw", echo.addr));
        let s = dialer.dial("tcp", &server.to_string()).await.unwrap();
        echo_one_mib(s, 11 + i as u64).await;
        assert_eq!(echo.bytes.load(Ordering::SeqCst), MIB, "{method}");
    }
}

/// (b) sslocal (SOCKS5) -> our server module -> echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslocal_through_server_module() {
    for (i, method) in METHODS.into_iter().enumerate() {
        let echo = counting_echo().await;
        let (server, mut ends) = module_server(
            server_config(method, "interop-pw", Some(echo.addr), 5),
            echo.addr,
        )
        .await;
        let Some((_peer, socks)) = sslocal(server, method, "interop-pw").await else {
            return;
        };
        let s = socks5_connect(socks, echo.addr).await;
        echo_one_mib(s, 21 + i as u64).await;
        assert_eq!(echo.bytes.load(Ordering::SeqCst), MIB, "{method}");
        // The session ends cleanly once the SOCKS client is gone.
        let end = tokio::time::timeout(Duration::from_secs(10), ends.recv())
            .await
            .expect("session ends")
            .unwrap();
        assert!(matches!(end, SessionEnd::Closed), "{method}: {end:?}");
    }
}

/// (c) our client with the wrong password: ssserver forwards nothing, and the
/// connection closes once the application closes its side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_module_wrong_password_is_refused_by_ssserver() {
    for method in METHODS {
        let Some((_peer, server)) = ssserver(method, "server-pw").await else {
            return;
        };
        let echo = counting_echo().await;
        let (_rt, dialer) = module_client(client_config(method, "client-pw", echo.addr));
        let mut s = dialer.dial("tcp", &server.to_string()).await.unwrap();
        s.write_all(&random_bytes(64 * 1024, 3)).await.unwrap();
        s.shutdown().await.unwrap();
        let (got, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(got.is_empty(), "{method}: got {} bytes back", got.len());
        assert_eq!(echo.accepted.load(Ordering::SeqCst), 0, "{method}");
        assert_eq!(echo.bytes.load(Ordering::SeqCst), 0, "{method}");
    }
}

/// (c) sslocal with the wrong password: our server module forwards nothing,
/// replies nothing, and closes after its reject timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslocal_wrong_password_is_discarded_by_server_module() {
    for method in METHODS {
        let echo = counting_echo().await;
        let (server, mut ends) =
            module_server(server_config(method, "server-pw", None, 1), echo.addr).await;
        let Some((_peer, socks)) = sslocal(server, method, "client-pw").await else {
            return;
        };
        let mut s = socks5_connect(socks, echo.addr).await;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let (got, took) = read_until_closed(&mut s, Duration::from_secs(15)).await;
        assert!(got.is_empty(), "{method}: got {got:?}");
        assert!(
            took >= Duration::from_millis(500),
            "{method}: closed after {took:?}"
        );
        let end = tokio::time::timeout(Duration::from_secs(10), ends.recv())
            .await
            .expect("session ends")
            .unwrap();
        assert!(
            matches!(&end, SessionEnd::Failed(why) if why.contains("TIMEDOUT")),
            "{method}: {end:?}"
        );
        assert_eq!(echo.bytes.load(Ordering::SeqCst), 0, "{method}");
    }
}

/// (c) garbage gets no reply at all: the server module reads it until the
/// reject timeout (counted from the connection's start), or closes early
/// once a random byte budget (64..128 KiB) is used up; nothing reaches the
/// upstream either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_module_does_not_answer_garbage() {
    for method in METHODS {
        let echo = counting_echo().await;
        let (server, _ends) = module_server(server_config(method, "pw", None, 1), echo.addr).await;

        // A little garbage: silence, then a close after about a second.
        let mut s = TcpStream::connect(server).await.unwrap();
        s.write_all(&random_bytes(600, 7)).await.unwrap();
        let (got, took) = read_until_closed(&mut s, Duration::from_secs(15)).await;
        assert!(got.is_empty(), "{method}: replied {got:?}");
        assert!(
            took >= Duration::from_millis(500),
            "{method}: closed after {took:?}"
        );

        // Too few bytes to judge (a partial salt), then silence: closed at
        // the same deadline, so waiting tells a prober nothing.
        let mut s = TcpStream::connect(server).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        let (got, _) = read_until_closed(&mut s, Duration::from_secs(15)).await;
        assert!(got.is_empty(), "{method}: replied {got:?}");
        assert_eq!(echo.bytes.load(Ordering::SeqCst), 0, "{method}");
    }

    // Lots of garbage with a long timeout: closed by the byte budget, still
    // without a reply.
    let echo = counting_echo().await;
    let (server, _ends) =
        module_server(server_config("aes-256-gcm", "pw", None, 600), echo.addr).await;
    let s = TcpStream::connect(server).await.unwrap();
    let (mut r, mut w) = s.into_split();
    // Bounded, but far beyond the budget plus what socket buffers absorb.
    const CAP: usize = 256 * MIB;
    let writer = tokio::spawn(async move {
        let junk = random_bytes(16 * 1024, 9);
        let mut sent = 0;
        while sent < CAP {
            if w.write_all(&junk).await.is_err() {
                break;
            }
            sent += junk.len();
        }
        sent
    });
    let (got, took) = read_until_closed(&mut r, Duration::from_secs(20)).await;
    assert!(got.is_empty(), "replied {got:?}");
    assert!(took < Duration::from_secs(20));
    let sent = writer.await.unwrap();
    assert!(sent < CAP, "server never closed; sent {sent}");
    assert_eq!(echo.bytes.load(Ordering::SeqCst), 0);
}

/// An upstream that speaks first (like SMTP): sends a banner on accept, then
/// echoes.
async fn banner_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if s.write_all(BANNER).await.is_ok() {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}

const BANNER: &[u8] = b"220 hello from upstream\r\n";

/// Reads the banner without having sent anything, then one echo.
async fn banner_then_echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let mut got = vec![0u8; BANNER.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
        .await
        .expect("banner arrives although the client said nothing")
        .unwrap();
    assert_eq!(got, BANNER);
    assert_eq!(roundtrip(s, b"EHLO").await, b"EHLO");
}

/// Server-speaks-first upstreams work both ways: our client sends the target
/// header on its own when the application stays silent (the SDK timer), and
/// our server holds the upstream's banner until the client authenticated,
/// then sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_speaks_first() {
    for method in METHODS {
        let upstream = banner_server().await;
        let Some((_ssserver, server)) = ssserver(method, "pw").await else {
            return;
        };
        let (_rt, dialer) = module_client(client_config(method, "pw", upstream));
        let mut s = dialer.dial("tcp", &server.to_string()).await.unwrap();
        banner_then_echo(&mut s).await;

        let (server, _ends) =
            module_server(server_config(method, "pw", Some(upstream), 5), upstream).await;
        let Some((_sslocal, socks)) = sslocal(server, method, "pw").await else {
            return;
        };
        let mut s = socks5_connect(socks, upstream).await;
        banner_then_echo(&mut s).await;
    }
}

/// A missing or malformed config fails `watm_init_v1` with EINVAL (no peer
/// binaries needed).
#[tokio::test]
async fn bad_config_fails_init() {
    let echo = echo_server().await;
    for config in [
        None,
        Some(b"{\"method\":\"aes-256-gcm\"}".to_vec()),
        Some(b"{\"method\":\"rc4\",\"password\":\"p\",\"target\":\"a:1\"}".to_vec()),
    ] {
        let rt = runtime();
        let dialer = Dialer::new(&rt, rt.load(&module("shadowsocks")).unwrap()).with_config(config);
        let err = dialer
            .dial("tcp", &echo.to_string())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("watm_init_v1") && err.contains("EINVAL"),
            "{err}"
        );
    }
}
