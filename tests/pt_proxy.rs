//! `TOR_PT_PROXY`: the module's connection to the bridge goes through tor's upstream proxy.
//!
//! The test proxies (shared with `src/proxy`'s unit tests) put a banner on the stream right
//! after their success reply, so bytes that arrive through the SOCKS connection prove the
//! connection really went through the proxy; each proxy also reports what it was asked.

mod common;

use common::pt::*;
use common::test_proxies::{echo_server, http_server, socks5_server, spawn_proxy, BANNER, BND_V4};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client_with_proxy(dir: &TempDir, proxy: &str) -> (PtChild, SocketAddr) {
    let mut env = client_env(&dir.state());
    env.push(("TOR_PT_PROXY", proxy.into()));
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    assert_eq!(pt.line(), "PROXY DONE");
    let socks = pt.cmethod();
    assert_eq!(pt.line(), "CMETHODS DONE");
    (pt, socks)
}

/// CONNECTs to `target` through the PT and checks that `prefix` (what the proxy injected)
/// comes first, then an echo.
async fn through(socks: SocketAddr, target: SocketAddr, prefix: &[u8]) {
    let mut s = socks_connect(socks, None, Target::Ip(target))
        .await
        .stream();
    let mut first = vec![0u8; prefix.len()];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(first, prefix);
    s.write_all(b"proxied echo").await.unwrap();
    let mut back = [0u8; 12];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"proxied echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connect_proxy_without_and_with_credentials() {
    let echo = echo_server();
    let dir = TempDir::new("http");
    let (proxy, seen) = spawn_proxy(echo, http_server(None));
    let (_pt, socks) = client_with_proxy(&dir, &format!("http://{proxy}"));
    through(socks, echo, BANNER).await;
    assert_eq!(
        seen.recv().unwrap().unwrap(),
        format!("CONNECT {echo} HTTP/1.1 auth=None")
    );

    let dir = TempDir::new("http-auth");
    let (proxy, seen) = spawn_proxy(echo, http_server(Some(("alice", "s3cret"))));
    let (_pt, socks) = client_with_proxy(&dir, &format!("http://alice:s3cret@{proxy}"));
    through(socks, echo, BANNER).await;
    assert_eq!(
        seen.recv().unwrap().unwrap(),
        format!("CONNECT {echo} HTTP/1.1 auth=Some(\"alice:s3cret\")")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_proxy_without_and_with_credentials() {
    let echo = echo_server();
    let dir = TempDir::new("socks");
    let (proxy, seen) = spawn_proxy(echo, socks5_server(None, 0, BND_V4.to_vec()));
    let (_pt, socks) = client_with_proxy(&dir, &format!("socks5://{proxy}"));
    through(socks, echo, BANNER).await;
    assert_eq!(
        seen.recv().unwrap().unwrap(),
        format!("socks5 method=0 atyp=1 target={echo}")
    );

    let dir = TempDir::new("socks-auth");
    let (proxy, seen) = spawn_proxy(
        echo,
        socks5_server(Some(("bob", "hunter2")), 0, BND_V4.to_vec()),
    );
    let (_pt, socks) = client_with_proxy(&dir, &format!("socks5://bob:hunter2@{proxy}"));
    through(socks, echo, BANNER).await;
    assert_eq!(
        seen.recv().unwrap().unwrap(),
        format!("socks5 method=2 atyp=1 target={echo}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_refusing_credentials_fails_the_connect() {
    let echo = echo_server();
    let dir = TempDir::new("socks-bad");
    let (proxy, seen) = spawn_proxy(
        echo,
        socks5_server(Some(("bob", "hunter2")), 0, BND_V4.to_vec()),
    );
    let (_pt, socks) = client_with_proxy(&dir, &format!("socks5://bob:wrong@{proxy}"));
    let got = socks_connect(socks, None, Target::Ip(echo)).await;
    assert!(matches!(got, Socks::Refused(1)), "{got:?}");
    assert_eq!(seen.recv().unwrap(), Err("bad credentials".into()));
}

/// Debian's tinyproxy, killed on drop.
struct Tinyproxy {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tinyproxy {
    /// Next log line containing `needle` (bounded by the log's end).
    fn wait_for(&self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(WAIT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("tinyproxy never logged {needle:?}: {e}"),
            }
        }
    }
}

fn tinyproxy_binary() -> Option<&'static str> {
    ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

fn start_tinyproxy(dir: &TempDir, connect_port: u16) -> Option<(Tinyproxy, SocketAddr)> {
    let bin = tinyproxy_binary()?;
    // tinyproxy cannot report a port it chose itself; take a free one and hand it over.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n\
             ConnectPort {connect_port}\nLogLevel Info\nMaxClients 10\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let tp = Tinyproxy { child, log };
    tp.wait_for("Accepting connections");
    Some((tp, SocketAddr::from(([127, 0, 0, 1], port))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_tinyproxy_http_connect() {
    let echo = echo_server();
    let dir = TempDir::new("tinyproxy");
    let Some((tinyproxy, proxy)) = start_tinyproxy(&dir, echo.port()) else {
        eprintln!("tinyproxy is not installed (Debian package tinyproxy); skipping");
        return;
    };
    let (_pt, socks) = client_with_proxy(&dir, &format!("http://{proxy}"));
    // A real proxy adds nothing to the stream: the echo comes straight back.
    through(socks, echo, b"").await;
    // tinyproxy logs the request line it served.
    let line = tinyproxy.wait_for(&format!("CONNECT {echo}"));
    assert!(line.contains("Request"), "{line}");
}
