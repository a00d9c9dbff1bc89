//! The standalone commands as real processes: `water-pt client` in front of
//! `water-pt server`, `water-pt relay`, graceful shutdown, the connection
//! limit and running out of file descriptors.

mod common;

use common::*;
use rustix::process::Signal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn wasm(name: &str) -> String {
    module_path(name).display().to_string()
}

/// `water-pt server` running `module`, forwarding to `forward`.
fn spawn_server(module: &str, forward: SocketAddr, extra: &[&str]) -> Child {
    Child::standalone("server", module, forward, extra)
}

/// A server forwarding to `forward` and a client in front of it, both
/// running `module`.
fn pair(module: &str, forward: SocketAddr, extra: &[&str]) -> (Child, Child, SocketAddr) {
    let mut server = spawn_server(module, forward, extra);
    let server_addr = server.listening_addr();
    let mut client = Child::standalone("client", module, server_addr, extra);
    let client_addr = client.listening_addr();
    (client, server, client_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_server_pair_plain_200_connections_of_one_mib() {
    let echo = echo_server().await;
    let (_client, _server, addr) = pair("plain", echo, &[]);
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(1 << 20, 1000 + i);
            let expected = sha256(&data);
            let s = TcpStream::connect(addr).await.unwrap();
            let (mut r, mut w) = s.into_split();
            let writer = tokio::spawn(async move { w.write_all(&data).await.map(|_| w) });
            let mut back = vec![0u8; 1 << 20];
            r.read_exact(&mut back).await.unwrap();
            writer.await.unwrap().unwrap();
            assert_eq!(sha256(&back), expected, "connection {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn client_server_pair_reverse_round_trips_messages() {
    let echo = echo_server().await;
    let (_client, _server, addr) = pair("reverse", echo, &[]);
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Each message fits in one read at every hop, so each reversal is undone
    // by the next one.
    for i in 0..50u64 {
        let msg = random_bytes(100, i + 1);
        assert_eq!(roundtrip(&mut s, &msg).await, msg);
    }
}

#[tokio::test]
async fn relay_command_forwards_through_plain() {
    let echo = echo_server().await;
    let w = wasm("plain");
    let e = echo.to_string();
    let mut relay = Child::spawn(&[
        "relay",
        "--no-cache",
        "--wasm",
        &w,
        "--listen",
        "127.0.0.1:0",
        "--remote",
        &e,
    ]);
    let addr = relay.listening_addr();
    let data = random_bytes(256 << 10, 5);
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(sha256(&roundtrip(&mut s, &data).await), sha256(&data));
}

/// A served connection through `server`, checked with one echo.
async fn open_connection(server: &mut Child) -> (SocketAddr, TcpStream) {
    let addr = server.listening_addr();
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(roundtrip(&mut open, b"one").await, b"one");
    (addr, open)
}

#[tokio::test]
async fn first_sigint_drains_second_exits() {
    let echo = echo_server().await;
    let mut server = spawn_server("plain", echo, &[]);
    let (addr, mut open) = open_connection(&mut server).await;

    server.signal(Signal::INT);
    server.wait_for_line("no longer accepting");
    // New connections are no longer served...
    let refused = match TcpStream::connect(addr).await {
        Err(_) => true,
        Ok(mut s) => {
            let mut b = [0u8; 1];
            let _ = s.write_all(b"x").await;
            matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
    };
    assert!(refused, "a new connection was served while draining");
    // ...while the open one still works.
    assert_eq!(roundtrip(&mut open, b"two").await, b"two");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "exited while a connection was open"
    );
    drop(open);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");

    // With a connection open, a second SIGINT exits at once.
    let mut server = spawn_server("plain", echo, &[]);
    let (_addr, _open) = open_connection(&mut server).await;
    server.signal(Signal::INT);
    server.wait_for_line("no longer accepting");
    server.signal(Signal::INT);
    server.wait_exit(Duration::from_secs(5));

    // SIGTERM exits at once too.
    let mut server = spawn_server("plain", echo, &[]);
    let (_addr, _open) = open_connection(&mut server).await;
    server.signal(Signal::TERM);
    server.wait_exit(Duration::from_secs(5));
}

/// A listener module that greets its peer with one byte and then waits in
/// `poll_oneoff` on an hour-long clock, again and again, never looking at its
/// control pipe: it never ends on its own, nor when asked to stop.
fn never_ends() -> Vec<u8> {
    wat_module(
        r#"(i32.store (i32.const 0) (i32.const 512))
    (i32.store (i32.const 4) (i32.const 1))
    (i32.store8 (i32.const 512) (i32.const 33))
    (drop (call $fd_write (global.get $net) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store8 (i32.const 72) (i32.const 0))
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (i64.const 3600000000000))
    (loop $forever
      (drop (call $poll (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 192)))
      (br $forever))
    (i32.const 0)"#,
        "",
    )
}

/// Reads until end of stream (or a reset), bounded; panics if the peer keeps it open.
async fn closed_within(s: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 64];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("the connection was closed");
}

/// The first SIGINT's drain is bounded: an idle connection keeps working while
/// it lasts, and neither it nor a module that ignores every stop keeps the
/// process alive past the drain time (plus the stop grace); the process then
/// exits with status 0 and the connections closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_after_first_sigint_is_bounded() {
    const DRAIN: Duration = Duration::from_secs(2);
    const GRACE_MS: &str = "300";
    let echo = echo_server().await;
    let dir = common::pt::TempDir::new("drain");
    let stuck = dir.path().join("never-ends.wasm");
    std::fs::write(&stuck, never_ends()).unwrap();
    let stuck = stuck.display().to_string();
    let drain = DRAIN.as_secs().to_string();
    let extra = [
        "--shutdown-timeout-secs",
        &drain,
        "--stop-grace-ms",
        GRACE_MS,
    ];
    for module in [wasm("plain"), stuck] {
        let mut server = Child::standalone_wasm("server", &module, echo, &extra);
        let addr = server.listening_addr();
        let mut open = TcpStream::connect(addr).await.unwrap();
        let plain = module.ends_with("plain.wasm");
        if plain {
            assert_eq!(roundtrip(&mut open, b"one").await, b"one");
        } else {
            let mut greeting = [0u8; 1];
            open.read_exact(&mut greeting).await.unwrap();
            assert_eq!(&greeting, b"!");
        }

        let signalled = std::time::Instant::now();
        server.signal(Signal::INT);
        server.wait_for_line("no longer accepting");
        if plain {
            // Draining: the open connection still carries data.
            assert_eq!(roundtrip(&mut open, b"two").await, b"two");
        }
        server.wait_for_line_within("still open after", DRAIN + Duration::from_secs(10));
        let status = server.wait_exit(Duration::from_secs(10));
        let took = signalled.elapsed();
        eprintln!("{module}: exited {took:?} after SIGINT");
        assert!(status.success(), "{status:?}");
        assert!(
            took >= DRAIN,
            "exited after {took:?}, before the drain time"
        );
        closed_within(&mut open, Duration::from_secs(5)).await;
        if !plain {
            // The module ignored the stop; the forced stop ended its session, so the
            // process did not have to leave it behind.
            assert!(
                !server
                    .seen
                    .iter()
                    .any(|l| l.contains("did not end when stopped")),
                "the forced stop did not end the session: {:#?}",
                server.seen
            );
        }
    }
}

/// By default the upstream is connected to only once the module writes toward it, so an
/// upstream that speaks first (a banner) is not heard until the client speaks;
/// `--upstream-speaks-first` connects at accept, and the banner arrives unasked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_speaks_first() {
    const BANNER: &[u8] = b"SSH-2.0-test\r\n";
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                s.write_all(BANNER).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut banner = vec![0u8; BANNER.len()];

    let mut lazy = spawn_server("plain", upstream, &[]);
    let mut s = TcpStream::connect(lazy.listening_addr()).await.unwrap();
    let unasked = tokio::time::timeout(Duration::from_millis(500), s.read(&mut banner)).await;
    assert!(
        unasked.is_err(),
        "the upstream was connected before the module wrote to it"
    );
    s.write_all(b"hi").await.unwrap();
    s.read_exact(&mut banner).await.unwrap();
    assert_eq!(banner, BANNER);

    let mut eager = spawn_server("plain", upstream, &["--upstream-speaks-first"]);
    let mut s = TcpStream::connect(eager.listening_addr()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut banner))
        .await
        .expect("the banner arrives unasked")
        .unwrap();
    assert_eq!(banner, BANNER);
    assert_eq!(roundtrip(&mut s, b"echo").await, b"echo");
}

#[tokio::test]
async fn connection_limit_refuses_promptly_with_a_log_line() {
    let echo = echo_server().await;
    let (mut client, _server, addr) = pair("plain", echo, &["--max-connections", "2"]);
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert_eq!(roundtrip(&mut a, b"a").await, b"a");
    assert_eq!(roundtrip(&mut b, b"b").await, b"b");
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("refused promptly, not queued")
        .unwrap_or(0);
    assert_eq!(n, 0);
    client.wait_for_line("connection limit reached");
    drop(a);
    // Once a slot is free, connections are served again (the client's slot
    // frees as soon as its module sees the close).
    let mut served = false;
    for _ in 0..100 {
        let mut d = TcpStream::connect(addr).await.unwrap();
        let _ = d.write_all(b"d").await;
        let mut one = [0u8; 1];
        if let Ok(Ok(1)) = tokio::time::timeout(Duration::from_secs(5), d.read(&mut one)).await {
            served = true;
            break;
        }
    }
    assert!(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_fds_backs_off_and_recovers() {
    let echo = echo_server().await;
    let w = wasm("plain");
    let e = echo.to_string();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--nofile=48:48")
        .arg(env!("CARGO_BIN_EXE_water-pt"));
    let mut server = Child::spawn_with(
        cmd,
        &[
            "server",
            "--no-cache",
            "--wasm",
            &w,
            "--listen",
            "127.0.0.1:0",
            "--forward",
            &e,
        ],
    );
    let addr = server.listening_addr();
    // Each served connection holds about four descriptors in the server;
    // forty connections exhaust 48.
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    server.wait_for_line("pausing accepts");
    assert!(server.child.try_wait().unwrap().is_none(), "server crashed");
    drop(held);
    let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..200 {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        let _ = s.write_all(b"ok").await;
        let mut b = [0u8; 2];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b)).await
        {
            served.store(true, std::sync::atomic::Ordering::SeqCst);
            break;
        }
    }
    assert!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        "server recovered"
    );
}

#[test]
fn help_documents_every_flag() {
    for (cmd, flags) in [
        (
            "client",
            &[
                "--wasm",
                "--config",
                "--listen",
                "--remote",
                "--fixed",
                "--allow-dial",
                "--max-connections",
                "--max-memory-mib",
                "--max-compute-ms",
                "--wasm-stack-kib",
                "--stop-grace-ms",
                "--cache-dir",
                "--no-cache",
            ][..],
        ),
        (
            "server",
            &[
                "--wasm",
                "--config",
                "--listen",
                "--forward",
                "--upstream-speaks-first",
                "--shutdown-timeout-secs",
                "--ext-orport",
                "--ext-orport-cookie",
            ][..],
        ),
        (
            "relay",
            &["--wasm", "--config", "--listen", "--remote", "--allow-dial"][..],
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_water-pt"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in flags {
            assert!(text.contains(flag), "{cmd} --help lacks {flag}");
        }
    }
}

#[test]
fn open_file_limit_is_raised_to_the_hard_limit_and_logged() {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .expect("a finite hard limit");
    if hard <= 512 {
        eprintln!("hard limit {hard} leaves nothing to raise; skipped");
        return;
    }
    // Started with a low soft limit, as from a default login shell.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "ulimit -Sn 512 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_water-pt"));
    let mut client = Child::spawn_with(
        cmd,
        &[
            "client",
            "--no-cache",
            "--listen",
            "127.0.0.1:0",
            "--remote",
            "127.0.0.1:9",
        ],
    );
    let line = client.wait_for_line("open-file limit");
    assert!(
        line.contains(&format!(
            "open-file limit {hard}: room for about {} connections ({} descriptors each)",
            hard / water_pt::sys::DESCRIPTORS_PER_CONNECTION,
            water_pt::sys::DESCRIPTORS_PER_CONNECTION
        )),
        "{line}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", client.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = open_files.split_whitespace().collect();
    assert_eq!(fields[3], hard.to_string(), "soft limit: {open_files}");
}
