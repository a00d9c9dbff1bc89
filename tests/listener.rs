//! The listener and relay roles in-process, and hostile listener modules.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use water_pt::runtime::{into_fd, SessionEnd};
use water_pt::{Dialer, Listener, Relay, Runtime};

/// A WAT module whose `watm_accept_v1` body is `accept` and whose
/// `watm_start_v1` body is `start`.
fn listener_module(accept: &str, start: &str) -> Vec<u8> {
    listener_module_dialing(accept, start, "127.0.0.1:9")
}

fn listener_module_dialing(accept: &str, start: &str, dial_target: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "water_accept" (func $accept (result i32)))
  (import "env" "water_dial" (func $dial (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "tcp")
  (data (i32.const 80) "{dial_target}")
  (global $caller (mut i32) (i32.const -1))
  (func (export "watm_init_v1") (result i32) (i32.const 0))
  (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 0))
  (func (export "watm_accept_v1") (param i32) (result i32)
    (global.set $caller (local.get 0))
    {accept})
  (global $dial_len i32 (i32.const {dial_len}))
  (func (export "watm_start_v1") (result i32) {start})
)"#,
        dial_len = dial_target.len()
    );
    wat::parse_str(text).expect("valid WAT")
}

/// Serves one connection through `listener`; returns how it ended.
async fn one_connection(
    listener: &Listener,
    upstream: std::net::SocketAddr,
) -> Result<SessionEnd, String> {
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(b"probe").await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await;
    });
    let (inbound, _) = listener.accept_tcp().await.unwrap();
    let up = tokio::net::TcpStream::connect(upstream).await.unwrap();
    let result = listener
        .serve(into_fd(inbound).unwrap(), into_fd(up).unwrap())
        .await;
    let end = match result {
        Ok(session) => Ok(
            tokio::time::timeout(Duration::from_secs(10), session.finished())
                .await
                .expect("session ends in bounded time"),
        ),
        Err(e) => Err(e.to_string()),
    };
    client.abort();
    end
}

/// After a hostile connection, the same runtime still serves a healthy one.
async fn healthy_after(rt: &Runtime) {
    let echo = echo_server().await;
    let listener = Listener::bind(
        rt,
        rt.load(&module("plain")).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (inbound, _) = listener.accept_tcp().await.unwrap();
        let up = tokio::net::TcpStream::connect(echo).await.unwrap();
        listener
            .serve(into_fd(inbound).unwrap(), into_fd(up).unwrap())
            .await
            .unwrap()
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(roundtrip(&mut c, b"still serving").await, b"still serving");
    drop(task.await.unwrap());
}

async fn hostile_listener(accept: &str, start: &str) -> Result<SessionEnd, String> {
    hostile_listener_wasm(listener_module(accept, start)).await
}

async fn hostile_listener_wasm(wasm: Vec<u8>) -> Result<SessionEnd, String> {
    let rt = runtime();
    let echo = echo_server().await;
    let listener = Listener::bind(&rt, rt.load(&wasm).unwrap(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let end = one_connection(&listener, echo).await;
    healthy_after(&rt).await;
    end
}

#[tokio::test]
async fn listener_and_dialer_pair_round_trip() {
    let rt = runtime();
    let watm = rt.load(&module("plain")).unwrap();
    let listener = Listener::bind(&rt, watm.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _peer) = listener.accept().await.unwrap();
        let mut buf = [0u8; 11];
        s.read_exact(&mut buf).await.unwrap();
        buf.reverse();
        s.write_all(&buf).await.unwrap();
        s
    });
    let mut c = Dialer::new(&rt, watm)
        .dial("tcp", &addr.to_string())
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut c, b"hello water").await, b"retaw olleh");
    drop(server.await.unwrap());
}

#[tokio::test]
async fn relay_forwards_through_plain() {
    let rt = runtime();
    let echo = echo_server().await;
    let relay = Arc::new(
        Relay::new(
            &rt,
            rt.load(&module("plain")).unwrap(),
            "tcp",
            &echo.to_string(),
        )
        .unwrap(),
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (inbound, _) = tcp.accept().await.unwrap();
            let relay = relay.clone();
            tokio::spawn(async move {
                relay.serve(inbound).await.unwrap();
            });
        }
    });
    for i in 0..5u64 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let data = random_bytes(64 << 10, i + 7);
        assert_eq!(sha256(&roundtrip(&mut c, &data).await), sha256(&data));
    }
}

#[tokio::test]
async fn memory_grow_bomb_fails_only_its_connection() {
    let end = hostile_listener(
        "(call $accept)",
        "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
         (unreachable)",
    )
    .await;
    let Ok(SessionEnd::Failed(cause)) = end else {
        panic!("expected a failure, got {end:?}");
    };
    assert!(cause.contains("unreachable"), "{cause}");
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_compute_limit() {
    let end = hostile_listener("(call $accept)", "(loop $l (br $l)) (i32.const 0)").await;
    let Ok(SessionEnd::Failed(cause)) = end else {
        panic!("expected a failure, got {end:?}");
    };
    assert!(
        cause.contains("too long without waiting or moving data"),
        "{cause}"
    );
}

#[tokio::test]
async fn water_dial_to_a_disallowed_address_gets_eacces_and_dials_nothing() {
    // A real listener the module asks to reach; it is not on the allow-list,
    // so it must never see a connection.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let addr = target.local_addr().unwrap().to_string();
    let wasm = listener_module_dialing(
        "(drop (call $accept))
         (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 3))
         (i32.store (i32.const 8) (i32.const 80)) (i32.store (i32.const 12) (global.get $dial_len))
         (call $dial (i32.const 0) (i32.const 1) (i32.const 8) (i32.const 1))",
        "(i32.const 0)",
        &addr,
    );
    let end = hostile_listener_wasm(wasm).await;
    let Err(cause) = end else {
        panic!("expected a setup failure, got {end:?}");
    };
    assert!(cause.contains("watm_accept_v1 returned -EACCES"), "{cause}");
    let attempt = target.accept().map(|_| ()).map_err(|e| e.kind());
    assert_eq!(
        attempt,
        Err(std::io::ErrorKind::WouldBlock),
        "nothing was dialed"
    );
}

#[tokio::test]
async fn water_accept_twice_gets_enotconn() {
    let end = hostile_listener("(drop (call $accept)) (call $accept)", "(i32.const 0)").await;
    let Err(cause) = end else {
        panic!("expected a setup failure, got {end:?}");
    };
    assert!(
        cause.contains("watm_accept_v1 returned -ENOTCONN"),
        "{cause}"
    );
}

#[tokio::test]
async fn bogus_network_fd_is_refused() {
    let end = hostile_listener("(drop (call $accept)) (i32.const 1234)", "(i32.const 0)").await;
    let Err(cause) = end else {
        panic!("expected a setup failure, got {end:?}");
    };
    assert!(cause.contains("fd 1234"), "{cause}");
}

#[tokio::test]
async fn connection_limit_refuses_at_once() {
    let rt = runtime_with(|l| l.max_connections = 2);
    let echo = echo_server().await;
    let dialer = Dialer::new(&rt, rt.load(&module("plain")).unwrap());
    let a = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    let _b = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    let err = dialer
        .dial("tcp", &echo.to_string())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("connection limit"), "{err}");
    let session = a.session().clone();
    drop(a);
    session.finished().await;
    let mut c = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    assert_eq!(roundtrip(&mut c, b"freed").await, b"freed");
}
