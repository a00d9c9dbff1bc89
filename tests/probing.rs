//! Probing resistance of the bridge side, through the real binary in managed server mode.
//!
//! A censor probing a suspected bridge connects and sends something (random bytes, an HTTP
//! request, a TLS ClientHello) or nothing at all, and watches what comes back and when the
//! connection closes. With the `shadowsocks` module the bridge must look like a silent
//! service: not one byte back (neither the module nor the host adds a banner or an error
//! text), a close at the module's reject deadline whatever was sent, and nothing of the probe
//! handed to tor's ORPort. With `plain` there is nothing to hide, but water-pt itself must
//! still add nothing: the probe sees exactly what the ORPort sent.

mod common;

use base64::Engine as _;
use common::extor_server::{self, CookieFile, Server, COOKIE_A, OKAY};
use common::pt::*;
use common::{module_path, random_bytes};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The shadowsocks server's `reject_timeout_secs` in these tests.
const REJECT_SECS: u64 = 2;
/// How much later than the reject deadline a close may come (scheduling, the runtime's
/// tick, a loaded machine).
const MARGIN: Duration = Duration::from_secs(3);

/// What a recording ORPort saw on one connection, reported when the PT closed it.
#[derive(Debug)]
struct OrConn {
    received: Vec<u8>,
}

/// A test ORPort: sends `greeting` on accept, records every byte until EOF, then reports.
async fn recording_orport(
    greeting: &'static [u8],
) -> (SocketAddr, mpsc::UnboundedReceiver<OrConn>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = s.write_all(greeting).await;
                let mut received = Vec::new();
                let _ = s.read_to_end(&mut received).await;
                let _ = tx.send(OrConn { received });
            });
        }
    });
    (addr, rx)
}

/// Starts a server PT in front of `orport`, with `options` as its transport options.
fn server(dir: &TempDir, orport: SocketAddr, options: Option<String>) -> (PtChild, SocketAddr) {
    let mut env = server_env(&dir.state(), &orport.to_string());
    if let Some(o) = options {
        env.push(("TOR_PT_SERVER_TRANSPORT_OPTIONS", o));
    }
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let (addr, _) = pt.smethod();
    assert_eq!(pt.line(), "SMETHODS DONE");
    (pt, addr)
}

fn shadowsocks_options() -> String {
    let config = format!(
        r#"{{"method":"chacha20-ietf-poly1305","password":"probing test secret","reject_timeout_secs":{REJECT_SECS}}}"#
    );
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(config);
    format!(
        "water:water-wasm={};water:water-config={b64}",
        module_path("shadowsocks").display()
    )
}

/// A TLS 1.3 ClientHello as a browser sends it: record header, SNI, ALPN, supported groups,
/// signature algorithms, supported versions and an X25519 key share.
fn client_hello() -> Vec<u8> {
    fn ext(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }
    fn vec16(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }
    let host = b"www.example.com";
    let mut sni = vec![0u8];
    sni.extend_from_slice(&vec16(host));
    let mut alpn = vec![2];
    alpn.extend_from_slice(b"h2");
    alpn.push(8);
    alpn.extend_from_slice(b"http/1.1");
    let mut key_share = vec![0x00, 0x1d, 0x00, 0x20];
    key_share.extend_from_slice(&random_bytes(32, 11));
    let extensions = [
        ext(0x0000, &vec16(&sni)),
        ext(0x0017, &[]),  // extended master secret
        ext(0xff01, &[0]), // renegotiation info
        ext(0x000a, &vec16(&[0x00, 0x1d, 0x00, 0x17, 0x00, 0x18])), // groups
        ext(0x000b, &[1, 0]), // point formats
        ext(0x0010, &vec16(&alpn)), // ALPN
        ext(0x000d, &vec16(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01])), // signature algorithms
        ext(0x0033, &vec16(&key_share)), // key share
        ext(0x002d, &[1, 1]), // PSK modes
        ext(0x002b, &[4, 0x03, 0x04, 0x03, 0x03]), // supported versions
    ]
    .concat();
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&random_bytes(32, 12));
    hello.push(32);
    hello.extend_from_slice(&random_bytes(32, 13));
    hello.extend_from_slice(&vec16(&[
        0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f, 0xcc, 0xa9, 0xcc, 0xa8,
    ]));
    hello.extend_from_slice(&[1, 0]);
    hello.extend_from_slice(&vec16(&extensions));
    let mut handshake = vec![1, 0];
    handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

fn probes() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("random 64", random_bytes(64, 1)),
        ("random 4096", random_bytes(4096, 2)),
        (
            "http",
            b"GET / HTTP/1.1\r\nHost: 192.0.2.1\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
                .to_vec(),
        ),
        ("tls", client_hello()),
        ("half-open", Vec::new()),
    ]
}

/// Reads until EOF, reset or `limit`; returns the bytes, how long it took and whether the
/// connection was closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration, bool) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, start.elapsed(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, start.elapsed(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowsocks_bridge_is_silent_and_closes_at_the_deadline() {
    let (orport, mut at_orport) = recording_orport(b"").await;
    let dir = TempDir::new("probe-ss");
    let (_pt, addr) = server(&dir, orport, Some(shadowsocks_options()));

    let limit = Duration::from_secs(REJECT_SECS) + MARGIN;
    let mut probing = Vec::new();
    for (name, bytes) in probes() {
        probing.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if !bytes.is_empty() {
                s.write_all(&bytes).await.unwrap();
            }
            let (got, took, closed) = read_until_closed(&mut s, limit).await;
            (name, got, took, closed)
        }));
    }
    for p in probing {
        let (name, got, took, closed) = p.await.unwrap();
        assert!(got.is_empty(), "{name}: the bridge answered {got:?}");
        assert!(closed, "{name}: still open after {took:?}");
        // Closed at the deadline, not at once: a judged probe and one still waiting for more
        // bytes look the same.
        assert!(
            took >= Duration::from_millis(REJECT_SECS * 1000 - 500),
            "{name}: closed after only {took:?}"
        );
    }
    // tor's side of a connection is opened only once the module writes toward it, which a
    // rejected probe never makes it do.
    assert!(
        at_orport.try_recv().is_err(),
        "a probe became a connection to the ORPort"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bridge_adds_nothing_of_its_own() {
    const GREETING: &[u8] = b"orport speaks first\n";
    let (orport, mut at_orport) = recording_orport(GREETING).await;
    let dir = TempDir::new("probe-plain");
    let (_pt, addr) = server(&dir, orport, None);

    for (name, bytes) in probes() {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if bytes.is_empty() {
            // Half-open: nothing arrives while the probe stays silent (tor's side is opened
            // only once the module has something for it).
            let (got, _, closed) = read_until_closed(&mut s, Duration::from_millis(500)).await;
            assert!(got.is_empty() && !closed, "{name}: {got:?} closed={closed}");
            continue;
        }
        s.write_all(&bytes).await.unwrap();
        // First what the ORPort sent (on accepting the connection the probe's bytes made),
        // byte for byte and nothing before it...
        let mut first = vec![0u8; GREETING.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut first))
            .await
            .expect("greeting in time")
            .unwrap();
        assert_eq!(first, GREETING, "{name}");
        // ...then, after the probe ends its side, nothing more: no trailer, no error text.
        s.shutdown().await.unwrap();
        let (got, took, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(closed, "{name}: not closed after {took:?}");
        assert!(got.is_empty(), "{name}: water-pt added {got:?}");
        let conn = tokio::time::timeout(Duration::from_secs(10), at_orport.recv())
            .await
            .expect("ORPort connection closed")
            .unwrap();
        assert_eq!(
            conn.received, bytes,
            "{name}: the ORPort got exactly the probe"
        );
    }
}

/// A loopback listener that counts the connections it accepted and hands each to `serve`.
async fn counting<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, accepted)
}

/// A stand-in Extended ORPort that authenticates with [`COOKIE_A`], then echoes; counts the
/// connections it accepted.
async fn counting_extorport() -> (SocketAddr, Arc<AtomicUsize>) {
    counting(|s| {
        let server = Server {
            reply: OKAY.to_vec(),
            echo: true,
            ..Server::new(COOKIE_A)
        };
        async move {
            let _ = extor_server::handle(s, server).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_make_no_extended_orport_connection() {
    let (ext, accepted) = counting_extorport().await;
    let cookie = CookieFile::new(&COOKIE_A);
    let dir = TempDir::new("probe-extor");
    let mut env = server_env(&dir.state(), "127.0.0.1:1");
    env.extend([
        ("TOR_PT_EXTENDED_SERVER_PORT", ext.to_string()),
        ("TOR_PT_AUTH_COOKIE_FILE", cookie.0.display().to_string()),
        ("TOR_PT_SERVER_TRANSPORT_OPTIONS", shadowsocks_options()),
    ]);
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let (addr, _) = pt.smethod();

    // A silent probe and one sending random bytes, both rejected at the deadline.
    let limit = Duration::from_secs(REJECT_SECS) + MARGIN;
    let silent = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        read_until_closed(&mut s, limit).await
    };
    let garbage = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&random_bytes(300, 7)).await.unwrap();
        read_until_closed(&mut s, limit).await
    };
    let (silent, garbage) = tokio::join!(silent, garbage);
    assert!(
        silent.2 && garbage.2,
        "probes not closed: {silent:?} {garbage:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a probe reached tor");

    // A real client gets through, and its connection is the only one tor accepted (the
    // listener accepts in order, so a probe's connection would have come first).
    shadowsocks_client_echoes(addr).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A stand-in upstream for `water-pt server --forward`: echoes, and counts the connections
/// it accepted.
async fn counting_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    counting(|s| async move {
        let (mut r, mut w) = s.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await
}

/// The standalone server opens its `--forward` connection when the module first writes
/// toward it, as the managed bridge does with tor: probes cost the upstream nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_probes_make_no_forward_connection() {
    let (upstream, accepted) = counting_echo().await;
    let dir = TempDir::new("probe-forward");
    let config = dir.path().join("server.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"method":"chacha20-ietf-poly1305","password":"probing test secret","reject_timeout_secs":{REJECT_SECS}}}"#
        ),
    )
    .unwrap();
    let (ss, config, fwd) = (
        module_path("shadowsocks").display().to_string(),
        config.display().to_string(),
        upstream.to_string(),
    );
    let mut server = common::Child::spawn(&[
        "server",
        "--no-cache",
        "--wasm",
        &ss,
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--forward",
        &fwd,
    ]);
    let addr = server.listening_addr();

    // Silent probes and probes sending garbage, all rejected at the deadline.
    let limit = Duration::from_secs(REJECT_SECS) + MARGIN;
    let mut probing = Vec::new();
    for i in 0..6u64 {
        probing.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 1 {
                s.write_all(&random_bytes(100 + 50 * i as usize, i))
                    .await
                    .unwrap();
            }
            read_until_closed(&mut s, limit).await
        }));
    }
    for p in probing {
        let (got, took, closed) = p.await.unwrap();
        assert!(
            got.is_empty() && closed,
            "{got:?} closed={closed} after {took:?}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a probe reached the upstream"
    );

    // A real client gets through, on the one upstream connection made.
    shadowsocks_client_echoes(addr).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A real Shadowsocks client (the probing tests' key) echoes 64 KiB through
/// the server at `addr`, intact and in time.
async fn shadowsocks_client_echoes(addr: SocketAddr) {
    let rt = water_pt::Runtime::new(water_pt::RuntimeConfig::default()).unwrap();
    let config = br#"{"method":"chacha20-ietf-poly1305","password":"probing test secret","target":"127.0.0.1:9"}"#;
    let dialer = water_pt::Dialer::new(&rt, rt.load(&common::module("shadowsocks")).unwrap())
        .with_config(Some(config.to_vec()));
    let mut s = dialer.dial("tcp", &addr.to_string()).await.unwrap();
    let msg = random_bytes(64 << 10, 9);
    let back = tokio::time::timeout(Duration::from_secs(20), common::roundtrip(&mut s, &msg))
        .await
        .expect("echoed in time");
    assert!(back == msg, "the echo differs");
}
