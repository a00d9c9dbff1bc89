//! The server side through the spawned binary: inbound transport connections decoded by a
//! module and handed to an Extended ORPort (the test server shared with `src/extor`) or a plain
//! ORPort; and client PT -> server PT -> ORPort end to end.

mod common;

use common::extor_server::{self, CookieFile, Server, COOKIE_A, DENY, OKAY};
use common::pt::*;
use common::{echo_server, module, module_path, roundtrip, sha256};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Launches a server PT and returns it with its transport address.
fn start_server(env: Vec<(&'static str, String)>) -> (PtChild, SocketAddr, String) {
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let (addr, args) = pt.smethod();
    assert_eq!(pt.line(), "SMETHODS DONE");
    (pt, addr, args)
}

fn with_ext_orport(
    dir: &TempDir,
    ext: SocketAddr,
    cookie: &CookieFile,
) -> Vec<(&'static str, String)> {
    let mut env = server_env(&dir.state(), "127.0.0.1:9");
    set_var(&mut env, "TOR_PT_EXTENDED_SERVER_PORT", ext.to_string());
    env.push(("TOR_PT_AUTH_COOKIE_FILE", cookie.0.display().to_string()));
    env
}

fn with_orport(dir: &TempDir, orport: SocketAddr) -> Vec<(&'static str, String)> {
    server_env(&dir.state(), &orport.to_string())
}

fn okay_then_echo() -> Server {
    Server {
        reply: OKAY.to_vec(),
        echo: true,
        ..Server::new(COOKIE_A)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_orport_gets_useraddr_transport_then_the_bytes() {
    let cookie = CookieFile::new(&COOKIE_A);
    let (ext, seen) = extor_server::spawn(okay_then_echo()).await;
    let dir = TempDir::new("extor");
    let (_pt, addr, _) = start_server(with_ext_orport(&dir, ext, &cookie));

    let mut s = TcpStream::connect(addr).await.unwrap();
    let me = s.local_addr().unwrap();
    assert_eq!(
        roundtrip(&mut s, b"decoded by plain").await,
        b"decoded by plain"
    );
    drop(s);
    let seen = seen.await.unwrap().unwrap();
    assert_eq!(seen.chosen, 1, "SAFE_COOKIE");
    assert!(seen.client_hash_ok);
    assert_eq!(
        seen.commands,
        vec![
            (1, me.to_string().into_bytes()),
            (2, b"water".to_vec()),
            (0, vec![])
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_orport_without_extended_orport() {
    let orport = echo_server().await;
    let dir = TempDir::new("orport");
    let (_pt, addr, _) = start_server(with_orport(&dir, orport));
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"to the orport").await, b"to the orport");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_closes_that_connection_and_the_next_one_works() {
    let cookie = CookieFile::new(&COOKIE_A);
    let ext = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ext_addr = ext.local_addr().unwrap();
    let (tx, mut results) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let deny = Server {
            reply: DENY.to_vec(),
            echo: false,
            ..Server::new(COOKIE_A)
        };
        for server in [deny, okay_then_echo()] {
            let (s, _) = ext.accept().await.unwrap();
            let _ = tx.send(extor_server::handle(s, server).await);
        }
    });
    let dir = TempDir::new("deny");
    let (mut pt, addr, _) = start_server(with_ext_orport(&dir, ext_addr, &cookie));

    // tor's side is opened once the module has bytes for it.
    let mut denied = TcpStream::connect(addr).await.unwrap();
    denied.write_all(b"for tor").await.unwrap();
    let mut buf = [0u8; 1];
    let n = denied.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "a denied connection is closed");
    assert!(results.recv().await.unwrap().is_ok());
    let log = pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains("denied"), "{log}");

    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"still serving").await, b"still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_orport_is_logged_and_serving_continues() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TempDir::new("noorport");
    let (mut pt, addr, _) = start_server(with_orport(&dir, closed));
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"for tor").await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
    }
    let log = pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains("ORPort"), "{log}");
}

/// An ORPort that reports the first `n` bytes of each connection, then echoes everything.
async fn recording_orport(n: usize) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
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
                let mut first = vec![0u8; n];
                if s.read_exact(&mut first).await.is_err() {
                    return;
                }
                let _ = tx.send(first.clone());
                let _ = s.write_all(&first).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, rx)
}

/// The `k=v` arguments of the bridge line the server wrote for its users.
fn bridge_file_args(dir: &TempDir) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.path().join("pt_state/water_bridgeline.txt")).unwrap();
    let line = text.lines().find(|l| l.starts_with("Bridge ")).unwrap();
    line.split(' ')
        .skip(4) // Bridge water ADDR <FINGERPRINT>
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pt_to_server_pt_to_orport_through_plain_and_reverse() {
    let (orport, mut at_orport) = recording_orport(5).await;
    let client_dir = TempDir::new("e2e-client");
    let env = client_env(&client_dir.state());
    let mut client = PtChild::spawn(&env_refs(&env), &[]);
    let socks = client.client_ready();

    // Server with the built-in plain module; client with no arguments.
    let plain_dir = TempDir::new("e2e-plain");
    let (_plain_pt, plain_addr, plain_args) = start_server(with_orport(&plain_dir, orport));
    assert_eq!(
        plain_args,
        format!("water-sha256={}", hex::encode(sha256(&module("plain"))))
    );
    let mut s = socks_connect(socks, None, Target::Ip(plain_addr))
        .await
        .stream();
    assert_eq!(roundtrip(&mut s, b"hello").await, b"hello");
    assert_eq!(at_orport.recv().await.unwrap(), b"hello");

    // Server running `reverse`, client given the bridge line's arguments plus water-wasm.
    let rev_dir = TempDir::new("e2e-reverse");
    let reverse = module_path("reverse");
    let mut env = with_orport(&rev_dir, orport);
    env.push((
        "TOR_PT_SERVER_TRANSPORT_OPTIONS",
        format!("water:water-wasm={}", reverse.display()),
    ));
    let (_rev_pt, rev_addr, rev_args) = start_server(env);
    let hex = hex::encode(sha256(&module("reverse")));
    // Not built in: the bridge also offers it for download (module delivery).
    assert!(
        rev_args.starts_with(&format!("water-sha256={hex},water-fetch=")),
        "{rev_args}"
    );
    assert!(rev_args.contains(",water-fetch-key="), "{rev_args}");
    let mut args = bridge_file_args(&rev_dir);
    let keys: Vec<&str> = args.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["water-sha256", "water-fetch", "water-fetch-key"]);
    assert_eq!(args[0].1, hex);
    args.push(("water-wasm".into(), reverse.display().to_string()));
    let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut s = socks_with_args(socks, &args, rev_addr).await.stream();
    assert_eq!(roundtrip(&mut s, b"hello").await, b"hello");
    assert_eq!(
        at_orport.recv().await.unwrap(),
        b"hello",
        "reverse on both ends restores the bytes"
    );

    // The same server with a plain client: the server's decoding is visibly applied.
    let mut s = socks_connect(socks, None, Target::Ip(rev_addr))
        .await
        .stream();
    s.write_all(b"hello").await.unwrap();
    assert_eq!(at_orport.recv().await.unwrap(), b"olleh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_client_on_a_dual_stack_listener_is_reported_as_ipv4() {
    let cookie = CookieFile::new(&COOKIE_A);
    let (ext, seen) = extor_server::spawn(okay_then_echo()).await;
    let dir = TempDir::new("extor-dual");
    let mut env = with_ext_orport(&dir, ext, &cookie);
    for (k, v) in env.iter_mut() {
        if *k == "TOR_PT_SERVER_BINDADDR" {
            *v = "water-[::]:0".into();
        }
    }
    let (_pt, addr, _) = start_server(env);
    let mut s = TcpStream::connect(("127.0.0.1", addr.port()))
        .await
        .unwrap();
    let me = s.local_addr().unwrap();
    assert_eq!(roundtrip(&mut s, b"v4 user").await, b"v4 user");
    drop(s);
    let seen = seen.await.unwrap().unwrap();
    assert_eq!(seen.commands[0], (1, me.to_string().into_bytes()));
    assert!(me.is_ipv4());
}
