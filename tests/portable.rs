//! What every platform's binary must do, driven from outside as separate processes:
//! `water-pt server` + `water-pt client` carrying 1 MiB hash-checked through `plain` and
//! `shadowsocks`, and a managed client's transcript (VERSION, CMETHOD, a SOCKS request with
//! bridge arguments, exit on stdin close).
//!
//! Here they run against this build's binary. `scripts/windows-test.sh` runs the same file
//! against `water-pt.exe` under wine (through `WATER_PT_BIN`, see [`common::pt::binary`]), so
//! the Windows port is checked by the tests the Linux build passes. Paths handed to the binary
//! are Unix absolute paths; under wine they resolve on drive Z:, which maps `/`.

mod common;

use common::pt::*;
use common::{module_path, random_bytes, sha256, Child};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;
/// How long a process may take to compile its module and listen. Generous: under wine an
/// unoptimised build of the Windows binary takes tens of seconds to compile `shadowsocks`.
const STARTUP: Duration = Duration::from_secs(180);

fn arg(p: &Path) -> String {
    p.display().to_string()
}

/// `water-pt server` decoding `module` and forwarding to `forward`, and `water-pt client` in
/// front of it; returns both and the client's listening address.
fn pair(
    module: &str,
    config: Option<(&Path, &Path)>,
    forward: SocketAddr,
) -> (Child, Child, SocketAddr) {
    let wasm = arg(&module_path(module));
    let (client_cfg, server_cfg) =
        config.map_or((None, None), |(c, s)| (Some(arg(c)), Some(arg(s))));
    let forward = forward.to_string();
    let mut args = vec![
        "server",
        "--no-cache",
        "--wasm",
        &wasm,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(["--forward", &forward]);
    if let Some(c) = &server_cfg {
        args.extend(["--config", c]);
    }
    let mut server = Child::spawn(&args);
    let remote = server.listening_addr_within(STARTUP).to_string();
    let mut args = vec![
        "client",
        "--no-cache",
        "--wasm",
        &wasm,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(["--remote", &remote]);
    if let Some(c) = &client_cfg {
        args.extend(["--config", c]);
    }
    let mut client = Child::spawn(&args);
    let addr = client.listening_addr_within(STARTUP);
    (client, server, addr)
}

/// A TCP echo server on loopback.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Writes 1 MiB of random bytes while reading the echo; checks the echo's SHA-256.
async fn echo_one_mib<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S, seed: u64) {
    let data = random_bytes(MIB, seed);
    let expected = sha256(&data);
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move { w.write_all(&data).await });
    let mut back = vec![0u8; MIB];
    tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut back))
        .await
        .expect("1 MiB echoed within 60 s")
        .unwrap();
    writer.await.unwrap().unwrap();
    assert_eq!(
        sha256(&back),
        expected,
        "the echo differs from what was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_carry_one_mib_through_plain() {
    let echo = echo_server().await;
    let (_client, _server, addr) = pair("plain", None, echo);
    echo_one_mib(TcpStream::connect(addr).await.unwrap(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_carry_one_mib_through_shadowsocks() {
    let echo = echo_server().await;
    let dir = TempDir::new("portable-ss");
    let (client_cfg, server_cfg) = (
        dir.path().join("client.json"),
        dir.path().join("server.json"),
    );
    let secret = r#""method":"chacha20-ietf-poly1305","password":"portable test""#;
    std::fs::write(&client_cfg, format!(r#"{{{secret},"target":"{echo}"}}"#)).unwrap();
    std::fs::write(&server_cfg, format!(r#"{{{secret}}}"#)).unwrap();
    let (_client, _server, addr) = pair("shadowsocks", Some((&client_cfg, &server_cfg)), echo);
    echo_one_mib(TcpStream::connect(addr).await.unwrap(), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_client_transcript_socks_args_and_stdin_close() {
    let dir = TempDir::new("portable-managed");
    let env = client_env(&dir.state());
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    let socks = pt.client_ready();

    // A server that reads six bytes: the `reverse` module named in the bridge arguments
    // (not the default `plain`) must deliver them reversed.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let reverse = arg(&module_path("reverse"));
    let mut s = socks_with_args(socks, &[("water-wasm", &reverse)], target)
        .await
        .stream();
    let (mut bridge, _) = l.accept().await.unwrap();
    s.write_all(b"abcdef").await.unwrap();
    let mut got = [0u8; 6];
    bridge.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"fedcba");
    // The bridge's address is scrubbed (no --unsafe-logging).
    assert_eq!(
        pt.expect_prefix("STATUS "),
        "STATUS TRANSPORT=water ADDRESS=[scrubbed] CONNECT=Success"
    );

    // tor exiting closes its SOCKS connections and our stdin; with
    // TOR_PT_EXIT_ON_STDIN_CLOSE=1 that ends the process.
    drop(s);
    pt.close_stdin();
    assert!(pt.wait_exit().success(), "{}", pt.stderr());
}
