//! The setup deadline: a connection whose module never becomes ready is
//! stopped, and its slot, thread and sockets go back to the runtime; so does
//! one whose starter stops waiting for it.

mod common;

use common::pt::{env_refs, server_env, PtChild, TempDir};
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use water_pt::{Dialer, Error};

/// A dialer module whose `watm_init_v1` waits an hour in `poll_oneoff` on
/// a clock, so it never becomes ready on its own.
fn stuck_in_init() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "watm_init_v1") (result i32)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (i32.const 0))
  (func (export "watm_dial_v1") (param i32) (result i32) (i32.const -1))
  (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 0))
  (func (export "watm_start_v1") (result i32) (i32.const 0)))"#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_stuck_in_poll_is_stopped_at_the_deadline_and_frees_its_slot() {
    let deadline = Duration::from_millis(500);
    let rt = runtime_with(|l| {
        l.max_connections = 1;
        l.setup_timeout = deadline;
    });
    let echo = echo_server().await.to_string();
    let stuck = Dialer::new(&rt, rt.load(&stuck_in_init()).unwrap());
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), stuck.dial("tcp", &echo))
        .await
        .expect("the deadline ends the dial")
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, Error::SetupTimeout(d) if d == deadline),
        "{err}"
    );
    assert!(err.to_string().contains("within 0.5 s"), "{err}");
    assert!(
        took >= deadline,
        "stopped after {took:?}, before the deadline"
    );

    // The only slot is free again: a healthy connection fits.
    tokio::time::timeout(Duration::from_secs(5), rt.wait_idle())
        .await
        .expect("the stopped session released its slot");
    let plain = Dialer::new(&rt, rt.load(&module("plain")).unwrap());
    let mut s = plain.dial("tcp", &echo).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"after").await, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pending_start_stops_its_session() {
    // A deadline far beyond the test: only the dropped future can end it.
    let rt = runtime_with(|l| {
        l.max_connections = 1;
        l.setup_timeout = Duration::from_secs(3600);
    });
    let echo = echo_server().await.to_string();
    let base = counts();
    let stuck = Dialer::new(&rt, rt.load(&stuck_in_init()).unwrap());
    let mut dial = Box::pin(stuck.dial("tcp", &echo));
    let gave_up = tokio::time::timeout(Duration::from_millis(300), &mut dial).await;
    assert!(gave_up.is_err(), "the stuck dial cannot have finished");
    // Checked while the future still exists: once it is dropped, the session may be gone
    // before the next line runs.
    assert_eq!(
        rt.live_connections(),
        1,
        "the pending dial's session is live"
    );
    drop(dial);
    tokio::time::timeout(Duration::from_secs(5), rt.wait_idle())
        .await
        .expect("dropping the pending dial stopped its session");
    let (fds, _) = settle_to(base).await;
    assert!(fds <= base.0, "descriptors left behind: {fds} > {}", base.0);

    let plain = Dialer::new(&rt, rt.load(&module("plain")).unwrap());
    let mut s = plain.dial("tcp", &echo).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"after").await, b"after");
}

/// A listener module that, inside `watm_accept_v1`, waits for the inbound
/// connection's first byte (a handshake from the peer), then in
/// `watm_start_v1` sends that byte back and ends.
fn waits_for_first_byte() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "env" "water_accept" (func $accept (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $net (mut i32) (i32.const -1))
  (func (export "watm_init_v1") (result i32) (i32.const 0))
  (func (export "watm_accept_v1") (param i32) (result i32)
    (local $err i32)
    (global.set $net (call $accept))
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 1))
    (local.set $err (call $fd_read (global.get $net) (i32.const 0) (i32.const 1) (i32.const 16)))
    (if (i32.or (local.get $err) (i32.eqz (i32.load (i32.const 16))))
      (then (return (i32.const -5))))
    (global.get $net))
  (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 0))
  (func (export "watm_start_v1") (result i32)
    (i32.sub (i32.const 0)
      (call $fd_write (global.get $net) (i32.const 0) (i32.const 1) (i32.const 16)))))"#,
    )
    .unwrap()
}

/// Reads until end of stream (or reset) and returns when that happened.
async fn closed_at(mut s: TcpStream) -> Instant {
    let mut buf = [0u8; 16];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_a_connection_stuck_in_setup_and_serves_the_next() {
    let dir = TempDir::new("setup-deadline");
    let wasm = dir.path().join("first-byte.wasm");
    std::fs::write(&wasm, waits_for_first_byte()).unwrap();
    let forward = holding_listener().await.to_string();
    let mut server = Child::spawn(&[
        "server",
        "--no-cache",
        "--wasm",
        wasm.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--forward",
        &forward,
        "--max-connections",
        "1",
        "--setup-timeout-secs",
        "1",
    ]);
    let addr = server.listening_addr();

    // Two silent connections at once: one takes the only slot and is stuck
    // in setup until the deadline, the other is refused at once.
    let opened = Instant::now();
    let a = TcpStream::connect(addr).await.unwrap();
    let b = TcpStream::connect(addr).await.unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(closed_at(a), closed_at(b))
    })
    .await
    .expect("both silent connections are closed");
    let (first, last) = (a.min(b) - opened, a.max(b) - opened);
    assert!(
        first < Duration::from_millis(900),
        "refused after {first:?}"
    );
    assert!(
        last >= Duration::from_secs(1),
        "stuck connection closed after {last:?}, before its deadline"
    );
    server.wait_for_line("connection limit reached");
    server.wait_for_line("did not finish connection setup within 1 s");

    // The slot is free again: a peer that sends its first byte is served. The
    // log line comes from the session thread just before it releases the
    // slot, so a connection right after it may still be refused: try again
    // until one is served (bounded).
    let tried = Instant::now();
    let served = loop {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut back = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut back)).await {
            Ok(Ok(_)) => break back,
            _ if tried.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("no connection served after the deadline: {other:?}"),
        }
    };
    assert_eq!(&served, b"x");
}

/// An ORPort stand-in that accepts and holds every connection.
async fn holding_listener() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_server_takes_the_setup_timeout_from_the_torrc_line() {
    let dir = TempDir::new("setup-deadline-managed");
    let wasm = dir.path().join("first-byte.wasm");
    std::fs::write(&wasm, waits_for_first_byte()).unwrap();
    let orport = holding_listener().await;
    let mut env = server_env(&dir.state(), &orport.to_string());
    env.push((
        "TOR_PT_SERVER_TRANSPORT_OPTIONS",
        format!("water:water-wasm={}", wasm.display()),
    ));
    let mut pt = PtChild::spawn(&env_refs(&env), &["--setup-timeout-secs", "1"]);
    assert_eq!(pt.line(), "VERSION 1");
    let (addr, _) = pt.smethod();
    let opened = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), closed_at(silent))
        .await
        .expect("the silent connection is closed at the deadline");
    assert!(closed - opened >= Duration::from_secs(1));
    pt.wait_stderr("did not finish connection setup within 1 s");
}
