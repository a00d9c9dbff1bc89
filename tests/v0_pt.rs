//! WATM v0 modules through the real binary: the standalone `client`,
//! `server` and `relay` subcommands, and managed mode (a tor-style SOCKS5
//! client with `water-wasm=` on the bridge line, a managed bridge whose
//! `water-wasm=` option names a v0 module). Each connection carries 1 MiB
//! each way to a checking server, so a hop that did not undo its peer's
//! transform would fail the hash.

mod common;

use common::pt::*;
use common::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;
/// The bytes the checking server sends back after the upload.
const DOWNLOAD_SEED: u64 = 0xd0;

fn wasm(name: &str) -> String {
    module_path(name).display().to_string()
}

/// Stands in for the application server (or tor's ORPort): reads 1 MiB,
/// answers with its SHA-256, then sends 1 MiB of its own.
async fn checking_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut upload = vec![0u8; MIB];
                if s.read_exact(&mut upload).await.is_err() {
                    return;
                }
                let _ = s.write_all(&sha256(&upload)).await;
                let _ = s.write_all(&random_bytes(MIB, DOWNLOAD_SEED)).await;
            });
        }
    });
    addr
}

/// Uploads 1 MiB on `s` and checks what the checking server saw and sent.
async fn one_mib_each_way(mut s: TcpStream, what: &str) {
    let upload = random_bytes(MIB, 0x0a);
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&upload).await.unwrap();
    };
    let mut seen = [0u8; 32];
    let mut download = vec![0u8; MIB];
    let recv = async {
        r.read_exact(&mut seen).await.unwrap();
        r.read_exact(&mut download).await.unwrap();
    };
    tokio::join!(send, recv);
    assert_eq!(seen, sha256(&upload), "{what}: upload");
    assert_eq!(
        sha256(&download),
        sha256(&random_bytes(MIB, DOWNLOAD_SEED)),
        "{what}: download"
    );
}

fn spawn_server(module: &str, forward: SocketAddr) -> Child {
    Child::standalone("server", module, forward, &[])
}

fn spawn_client(module: &str, remote: SocketAddr) -> Child {
    Child::standalone("client", module, remote, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_client_and_server_run_v0_modules() {
    let target = checking_server().await;
    for (client, server) in [
        ("plain-v0", "plain-v0"),
        ("xor-v0", "xor-v0"),
        // A mixed pair: a v0 client in front of a v1 server of the same
        // transport.
        ("xor-v0", "xor"),
    ] {
        let mut srv = spawn_server(server, target);
        let server_addr = srv.listening_addr();
        let mut cli = spawn_client(client, server_addr);
        let addr = cli.listening_addr();
        let s = TcpStream::connect(addr).await.unwrap();
        one_mib_each_way(s, &format!("{client} -> {server}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_relay_runs_a_v0_module() {
    // relay (xor-v0) -> server (xor-v0) -> checking server: the relay's
    // encoding must be what the server decodes.
    let target = checking_server().await;
    let mut srv = spawn_server("xor-v0", target);
    let server_addr = srv.listening_addr().to_string();
    let w = wasm("xor-v0");
    let mut relay = Child::spawn(&[
        "relay",
        "--no-cache",
        "--wasm",
        &w,
        "--listen",
        "127.0.0.1:0",
        "--remote",
        &server_addr,
    ]);
    let addr = relay.listening_addr();
    one_mib_each_way(TcpStream::connect(addr).await.unwrap(), "relay").await;
}

/// A managed bridge (server side, as tor launches it) running `module` in
/// front of `orport`; returns it with its transport address.
fn managed_bridge(dir: &TempDir, module: &str, orport: SocketAddr) -> (PtChild, SocketAddr) {
    let mut env = server_env(&dir.state(), &orport.to_string());
    env.push((
        "TOR_PT_SERVER_TRANSPORT_OPTIONS",
        format!("water:water-wasm={}", wasm(module)),
    ));
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let (addr, args) = pt.smethod();
    let sha = hex::encode(sha256(&common::module(module)));
    assert!(
        args.starts_with(&format!("water-sha256={sha},")),
        "the bridge line pins the module: {args}"
    );
    (pt, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_socks_client_and_bridge_run_v0_modules() {
    let orport = checking_server().await;
    let client_dir = TempDir::new("v0-client");
    let mut client = PtChild::spawn(&env_refs(&client_env(&client_dir.state())), &[]);
    let socks = client.client_ready();
    for (client_module, bridge_module) in [
        ("plain-v0", "plain-v0"),
        ("xor-v0", "xor-v0"),
        ("xor-v0", "xor"),
    ] {
        let bridge_dir = TempDir::new("v0-bridge");
        let (_bridge, addr) = managed_bridge(&bridge_dir, bridge_module, orport);
        // What tor sends for `Bridge water ADDR water-wasm=PATH`.
        let path = wasm(client_module);
        let s = socks_with_args(socks, &[("water-wasm", &path)], addr)
            .await
            .stream();
        one_mib_each_way(s, &format!("managed {client_module} -> {bridge_module}")).await;
    }
}
