//! A busy bridge: `water-pt server` as its own service in front of tor's
//! Extended ORPort, and in front of several tor instances behind HAProxy.
//!
//! The layout with real tor and HAProxy processes is set up, exercised and
//! torn down by `scripts/multi-tor-bridge.sh check`; the other tests run the
//! server command against the spec-written Extended ORPort of
//! `tests/common/extor_server.rs`.

mod common;

use common::extor_server::{self, CookieFile, Server, COOKIE_A, COOKIE_B};
use common::*;
use std::net::SocketAddr;
use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Clients through a water bridge served by two tor instances behind
/// HAProxy: connections reach both instances with USERADDR, and after one
/// instance is killed its sessions close and new clients get through the
/// other one.
#[test]
fn two_tor_instances_behind_haproxy() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/multi-tor-bridge.sh"))
        .arg("check")
        .env("WATER_PT", env!("CARGO_BIN_EXE_water-pt"))
        .output()
        .expect("run scripts/multi-tor-bridge.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "multi-tor-bridge.sh check failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for line in [
        "new bridge descriptor",
        "USERADDR taken by tor1",
        "no session left on tor1",
        "2 clients after the kill",
        "multi-tor: OK",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}

/// `water-pt server --ext-orport ADDR --ext-orport-cookie FILE...`.
fn spawn_server(ext_orport: SocketAddr, cookies: &[&CookieFile]) -> Child {
    let (plain, ext) = (module_path("plain"), ext_orport.to_string());
    let plain = plain.display().to_string();
    let mut args = vec![
        "server",
        "--no-cache",
        "--wasm",
        &plain,
        "--listen",
        "127.0.0.1:0",
        "--ext-orport",
        &ext,
    ];
    let paths: Vec<String> = cookies.iter().map(|c| c.0.display().to_string()).collect();
    for path in &paths {
        args.extend(["--ext-orport-cookie", path]);
    }
    Child::spawn(&args)
}

/// The server command hands each connection to the Extended ORPort with the
/// client's address and the transport name, using whichever of its cookies
/// the other end proves it holds; the client's bytes then flow both ways.
#[tokio::test]
async fn server_command_speaks_extorport_with_any_given_cookie() {
    let (a, b) = (CookieFile::new(&COOKIE_A), CookieFile::new(&COOKIE_B));
    for cookie in [COOKIE_A, COOKIE_B] {
        let (ext, seen) = extor_server::spawn(Server::new(cookie)).await;
        let mut server = spawn_server(ext, &[&a, &b]);
        let addr = server.listening_addr();

        let mut client = TcpStream::connect(addr).await.unwrap();
        let me = client.local_addr().unwrap();
        // tor is connected to when the module first writes toward it: the client speaks
        // first, as a tor client does.
        client.write_all(b"through tor").await.unwrap();
        let mut hello = [0u8; 5];
        client.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"hello");
        let mut echoed = [0u8; 11];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"through tor");
        drop(client);

        let seen = seen.await.unwrap().unwrap();
        assert!(seen.client_hash_ok);
        assert_eq!(seen.commands[0], (1, me.to_string().into_bytes()));
        assert_eq!(seen.commands[1], (2, b"water".to_vec()));
    }
}

/// Connections while the Extended ORPort is down are closed and the outage
/// is logged once, not once per connection; its end is logged too.
#[tokio::test]
async fn an_extorport_outage_is_logged_once() {
    let cookie = CookieFile::new(&COOKIE_A);
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ext = port.local_addr().unwrap();
    drop(port);
    let mut server = spawn_server(ext, &[&cookie]);
    let addr = server.listening_addr();

    for _ in 0..3 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Closed without a byte once the Extended ORPort refused (tried when the module
        // first writes toward it).
        client.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).await.unwrap_or(0), 0);
    }

    let listener = TcpListener::bind(ext).await.unwrap();
    let back = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        extor_server::handle(s, Server::new(COOKIE_A)).await
    });
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let mut hello = [0u8; 5];
    client.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    client.shutdown().await.unwrap();
    server.wait_for_line("taking connections again");
    assert!(back.await.unwrap().unwrap().client_hash_ok);

    let outages = server
        .seen
        .iter()
        .filter(|l| l.contains("is not taking connections"))
        .count();
    assert_eq!(outages, 1, "{:#?}", server.seen);
}
