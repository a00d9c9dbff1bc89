//! The dialer roles through real modules over loopback.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use water_pt::{AllowList, Dialer, NetPolicy, Role};

#[tokio::test]
async fn plain_echoes_through_dial() {
    let rt = runtime();
    let echo = echo_server().await;
    let watm = rt.load(&module("plain")).unwrap();
    assert!(watm.supports(Role::Dialer));
    let dialer = Dialer::new(&rt, watm);
    let mut s = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"hello water").await, b"hello water");
    assert_eq!(
        roundtrip(&mut s, b"second message").await,
        b"second message"
    );
}

#[tokio::test]
async fn reverse_reverses_each_read_both_ways() {
    let rt = runtime();
    let echo = echo_server().await;
    let dialer = Dialer::new(&rt, rt.load(&module("reverse")).unwrap());
    let mut s = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    // Reversed on the way out, reversed again on the way back: intact.
    assert_eq!(roundtrip(&mut s, b"hello").await, b"hello");

    // Against a server that does not reverse back, the bytes arrive reversed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut s = dialer.dial("tcp", &addr.to_string()).await.unwrap();
    let (mut server, _) = listener.accept().await.unwrap();
    s.write_all(b"abcdef").await.unwrap();
    let mut got = [0u8; 6];
    tokio::io::AsyncReadExt::read_exact(&mut server, &mut got)
        .await
        .unwrap();
    assert_eq!(&got, b"fedcba");
}

#[tokio::test]
async fn fixed_dialer_dials_the_configured_address_when_allowed() {
    let rt = runtime();
    let echo = echo_server().await;
    let cfg = format!("dial={echo}\n").into_bytes();
    let watm = rt.load(&module("plain")).unwrap();
    assert!(watm.supports(Role::FixedDialer));
    let dialer = Dialer::new(&rt, watm.clone())
        .with_config(Some(cfg.clone()))
        .with_policy(NetPolicy {
            allow: AllowList::new([echo.to_string()]),
            ..NetPolicy::default()
        });
    let mut s = dialer.dial_fixed().await.unwrap();
    assert_eq!(roundtrip(&mut s, b"fixed").await, b"fixed");

    // The same module without the allow-list entry is refused.
    let denied = Dialer::new(&rt, watm).with_config(Some(cfg));
    let err = denied.dial_fixed().await.unwrap_err().to_string();
    assert!(
        err.contains("watm_dial_fixed_v1") && err.contains("EACCES"),
        "{err}"
    );
}

#[tokio::test]
async fn config_is_visible_at_conf_watm_cfg() {
    let rt = runtime();
    let echo = echo_server().await;
    let watm = rt.load(&module("config-echo")).unwrap();
    let cfg = b"{\"any\": \"bytes\", \"n\": 1}\n".to_vec();
    let dialer = Dialer::new(&rt, watm.clone()).with_config(Some(cfg.clone()));
    let mut s = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    let mut got = vec![0u8; cfg.len()];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut got)
        .await
        .unwrap();
    assert_eq!(got, cfg);
    assert_eq!(roundtrip(&mut s, b"after config").await, b"after config");

    let dialer = Dialer::new(&rt, watm);
    let mut s = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    let mut got = [0u8; 6];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut got)
        .await
        .unwrap();
    assert_eq!(&got, b"<none>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_connections_carry_one_mib_each() {
    use tokio::io::AsyncReadExt;
    let rt = runtime();
    let echo = echo_server().await;
    let dialer = std::sync::Arc::new(Dialer::new(&rt, rt.load(&module("plain")).unwrap()));
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let dialer = dialer.clone();
        let addr = echo.to_string();
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(1 << 20, i + 1);
            let s = dialer.dial("tcp", &addr).await.unwrap();
            let (mut r, mut w) = tokio::io::split(s);
            let expected = sha256(&data);
            let writer = tokio::spawn(async move {
                w.write_all(&data).await.unwrap();
                w
            });
            let mut back = vec![0u8; 1 << 20];
            r.read_exact(&mut back).await.unwrap();
            let _w = writer.await.unwrap();
            assert_eq!(sha256(&back), expected, "connection {i} corrupted");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn stop_reaches_the_module_through_its_control_fd() {
    let rt = runtime();
    let echo = echo_server().await;
    let dialer = Dialer::new(&rt, rt.load(&module("plain")).unwrap());
    let mut s = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    assert_eq!(roundtrip(&mut s, b"open").await, b"open");
    let session = s.session().clone();
    // Both sides are still open: only the control fd can end the module.
    session.stop();
    assert_eq!(
        session.finished().await,
        water_pt::runtime::SessionEnd::Cancelled
    );
}

#[tokio::test]
async fn control_fd_reads_one_zero_byte_then_end_of_stream() {
    // After a stop request, watm_start_v1 reads the control fd twice
    // (blocking) and returns byte * 100 + first_len * 10 + second_len, so the
    // test sees exactly what it got: a 0x00 byte, then end-of-stream = 10
    // (negated: only a negative result is reported as a failure).
    let start = "
        (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 1))
        (i32.store8 (i32.const 64) (i32.const 7))
        (drop (call $fd_read (global.get $ctrl) (i32.const 0) (i32.const 1) (i32.const 16)))
        (local.set $byte (i32.load8_u (i32.const 64)))
        (drop (call $fd_read (global.get $ctrl) (i32.const 0) (i32.const 1) (i32.const 20)))
        (i32.sub (i32.const 0) (i32.add (i32.mul (local.get $byte) (i32.const 100))
          (i32.add (i32.mul (i32.load (i32.const 16)) (i32.const 10)) (i32.load (i32.const 20)))))";
    let wasm = wat_module_with_locals("(local $byte i32)", start, "");
    let rt = runtime();
    let echo = echo_server().await;
    let s = Dialer::new(&rt, rt.load(&wasm).unwrap())
        .dial("tcp", &echo.to_string())
        .await
        .unwrap();
    let session = s.session().clone();
    session.stop();
    assert_eq!(
        session.finished().await,
        water_pt::runtime::SessionEnd::Failed("watm_start_v1 returned -EBUSY(10)".into())
    );
    drop(s);
}

#[tokio::test]
async fn read_events_report_a_peer_that_closed_its_side_as_hang_up() {
    // watm_start_v1 waits for FD_READ on the network fd and returns the
    // event's fd_readwrite.flags (1 = hang-up) plus 10 * its error field,
    // negated (only a negative result is reported as a failure).
    let start = "
        (i64.store (i32.const 0) (i64.const 7))
        (i32.store8 (i32.const 8) (i32.const 1))
        (i32.store (i32.const 16) (global.get $net))
        (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
        (i32.sub (i32.const 0)
          (i32.add (i32.load16_u (i32.const 88)) (i32.mul (i32.load16_u (i32.const 72)) (i32.const 10))))";
    let rt = runtime();
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let dialer = Dialer::new(&rt, rt.load(&wat_module(start, "")).unwrap());
    let target = addr.to_string();
    let (s, accepted) = tokio::join!(dialer.dial("tcp", &target), server.accept());
    let s = s.unwrap();
    // The peer finishes sending (FIN) but keeps its socket open.
    let (mut peer, _) = accepted.unwrap();
    peer.shutdown().await.unwrap();
    assert_eq!(
        s.session().finished().await,
        water_pt::runtime::SessionEnd::Failed("watm_start_v1 returned -ETOOBIG(1)".into())
    );
}

/// A `plain` session whose caller is a real TCP connection, as tor's SOCKS connection would be,
/// dialing a remote that accepts and never reads.
struct TcpCallerSession {
    /// The application's end of the caller connection.
    app: tokio::net::TcpStream,
    /// A second descriptor of the caller socket the module holds.
    caller: std::net::TcpStream,
    session: water_pt::runtime::SessionHandle,
    /// The remote's end of the module's connection.
    _remote: tokio::net::TcpStream,
}

async fn dial_with_tcp_caller(rt: &water_pt::Runtime) -> TcpCallerSession {
    let remote = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote_addr = remote.local_addr().unwrap().to_string();
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = tokio::net::TcpStream::connect(front.local_addr().unwrap())
        .await
        .unwrap();
    let (caller, _) = front.accept().await.unwrap();
    let caller = caller.into_std().unwrap();
    let watch = caller.try_clone().unwrap();
    let dialer = Dialer::new(rt, rt.load(&module("plain")).unwrap());
    let (session, accepted) = tokio::join!(
        dialer.dial_with_caller(caller.into(), "tcp", &remote_addr, None),
        remote.accept()
    );
    TcpCallerSession {
        app,
        caller: watch,
        session: session.unwrap(),
        _remote: accepted.unwrap().0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_fails_the_connection_after_the_stall_limit() {
    use std::time::Duration;
    let rt = runtime_with(|l| l.network_stall = Duration::from_secs(1));
    // Bound whole: the remote's end must stay open (and unread) for the stall to happen.
    let TcpCallerSession {
        mut app,
        session,
        caller: _caller,
        _remote,
    } = dial_with_tcp_caller(&rt).await;
    // Fill every buffer on the way, then go away, as tor would.
    let chunk = vec![0u8; 64 << 10];
    // Until a write makes no progress for 300 ms; a failed write fails the test.
    while let Ok(written) =
        tokio::time::timeout(Duration::from_millis(300), app.write_all(&chunk)).await
    {
        written.expect("the caller connection stays open while buffers fill");
    }
    drop(app);
    let end = tokio::time::timeout(Duration::from_secs(30), session.finished())
        .await
        .expect("the stalled connection ends in bounded time");
    let water_pt::runtime::SessionEnd::Failed(cause) = end else {
        panic!("expected a failure, got {end:?}");
    };
    assert!(cause.contains("ETIMEDOUT"), "{cause}");
}

/// With `Limits::socket_buffer` set, the sockets a module is given have fixed kernel buffers:
/// checked on the caller socket, through a second descriptor of the same socket.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_buffer_limit_fixes_the_buffers_of_module_sockets() {
    const SIZE: usize = 24 << 10;
    let autotuned = dial_with_tcp_caller(&runtime_with(|_| {})).await;
    let before = socket2::SockRef::from(&autotuned.caller)
        .recv_buffer_size()
        .unwrap();
    assert_ne!(
        before,
        2 * SIZE,
        "the default must differ for this test to mean anything"
    );

    let fixed = dial_with_tcp_caller(&runtime_with(|l| l.socket_buffer = Some(SIZE))).await;
    // Linux doubles the requested size to leave room for its bookkeeping.
    let sock = socket2::SockRef::from(&fixed.caller);
    assert_eq!(sock.recv_buffer_size().unwrap(), 2 * SIZE);
    assert_eq!(sock.send_buffer_size().unwrap(), 2 * SIZE);
}

/// The same with the pool over its resident budget: 160 connections at once each write over
/// their whole memory (64 KiB) and wait for their caller to close, so once they end the unused
/// slots hold more than `RESIDENT_BUDGET` and the last to end give their pages back instead of
/// keeping them. Every later connection, in a kept slot or a released one, still starts from the
/// module's image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_past_the_resident_budget_start_from_the_module_image_too() {
    const AT_ONCE: usize = 160;
    const { assert!(AT_ONCE * 65536 > water_pt::runtime::RESIDENT_BUDGET) };
    let wasm = wat_module(
        r#"(i32.store8 (i32.const 304) (i32.load8_u (i32.const 60000)))
    (i32.store (i32.const 0) (i32.const 299))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (global.get $net) (i32.const 0) (i32.const 1) (i32.const 8)))
    (memory.fill (i32.const 0) (i32.const 0x55) (i32.const 65536))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_read (global.get $caller) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.const 0)"#,
        r#"(data (i32.const 300) "orig")"#,
    );
    let rt = runtime_with(|_| {});
    let dialer = Dialer::new(&rt, rt.load(&wasm).unwrap());
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap().to_string();
    for round in 0..3 {
        let mut open = Vec::with_capacity(AT_ONCE);
        for i in 0..AT_ONCE {
            let stream = dialer.dial("tcp", &addr).await.unwrap();
            let (mut s, _) = peer.accept().await.unwrap();
            let mut seen = [0u8; 6];
            s.read_exact(&mut seen).await.unwrap();
            assert_eq!(&seen, b"\0orig\0", "round {round}, connection {i}");
            open.push((stream, s));
        }
        assert_eq!(rt.live_connections(), AT_ONCE);
        drop(open);
        tokio::time::timeout(Duration::from_secs(30), rt.wait_idle())
            .await
            .expect("the connections ended");
    }
}

/// A connection never sees what the one before it left in memory: with a single pool slot,
/// every connection runs in the same slot, and each finds its memory as the module's image
/// made it (zeros, and the data segment), though the one before wrote over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_slot_starts_from_the_module_image() {
    // Sends the bytes at 299..304 and at 60000 to the network peer, then overwrites them.
    let wasm = wat_module(
        r#"(i32.store8 (i32.const 304) (i32.load8_u (i32.const 60000)))
    (i32.store (i32.const 0) (i32.const 299))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (global.get $net) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store8 (i32.const 299) (i32.const 170))
    (i32.store (i32.const 300) (i32.const 0x58585858))
    (i32.store8 (i32.const 60000) (i32.const 171))
    (i32.const 0)"#,
        r#"(data (i32.const 300) "orig")"#,
    );
    let rt = runtime_with(|l| l.max_connections = 1);
    let dialer = Dialer::new(&rt, rt.load(&wasm).unwrap());
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap().to_string();
    for round in 0..3 {
        let _stream = dialer.dial("tcp", &addr).await.unwrap();
        let (mut s, _) = peer.accept().await.unwrap();
        let mut seen = [0u8; 6];
        s.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen, b"\0orig\0", "round {round}");
        drop(_stream);
        tokio::time::timeout(Duration::from_secs(10), rt.wait_idle())
            .await
            .expect("the connection ended");
    }
}
