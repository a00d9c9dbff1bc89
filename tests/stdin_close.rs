//! tor exiting: with `TOR_PT_EXIT_ON_STDIN_CLOSE=1`, stdin closing asks water-pt to stop, and
//! it must stop gracefully (drain, then end every session) and within a bounded time, with
//! real processes, sockets and modules.

mod common;

use common::pt::*;
use common::{echo_server, random_bytes, roundtrip};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long an open connection may take to be closed once the process stopped it.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// One process serving both sides, as a bridge that is also a client, with stdin closing
/// allowed `drain_secs` of drain time: the process, its SOCKS port and its bridge port.
fn start_both(
    dir: &TempDir,
    orport: SocketAddr,
    drain_secs: &str,
) -> (PtChild, SocketAddr, SocketAddr) {
    let mut env = server_env(&dir.state(), &orport.to_string());
    env.push(("TOR_PT_CLIENT_TRANSPORTS", "water".into()));
    let mut pt = PtChild::spawn(&env_refs(&env), &["--shutdown-timeout-secs", drain_secs]);
    assert_eq!(pt.line(), "VERSION 1");
    let socks = pt.cmethod();
    assert_eq!(pt.line(), "CMETHODS DONE");
    let (bridge, _) = pt.smethod();
    assert_eq!(pt.line(), "SMETHODS DONE");
    (pt, socks, bridge)
}

/// Asserts that the far end closes `s` (EOF or reset) within [`CLOSE_WITHIN`].
async fn assert_closed(s: &mut TcpStream) {
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(CLOSE_WITHIN, s.read(&mut b))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// Pids of every process below `pid`, from `/proc/PID/task/*/children`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// stdin closing (with `TOR_PT_EXIT_ON_STDIN_CLOSE=1`) asks for a graceful exit, like the
/// first SIGINT: nothing new is accepted, an open connection keeps working for the drain
/// time, then it is stopped and the process exits with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_close_drains_for_the_drain_time_then_stops() {
    const DRAIN: Duration = Duration::from_secs(2);
    let orport = echo_server().await;
    let dir = TempDir::new("stdin-drain");
    let drain = DRAIN.as_secs().to_string();
    let (mut pt, socks, bridge) = start_both(&dir, orport, &drain);
    let mut open = socks_connect(socks, None, Target::Ip(bridge))
        .await
        .stream();
    assert_eq!(roundtrip(&mut open, b"before").await, b"before");

    let closed = Instant::now();
    pt.close_stdin();
    pt.wait_stderr("stdin closed: no longer accepting");
    // Draining: the open connection still carries data, a new one is not served.
    assert_eq!(roundtrip(&mut open, b"during").await, b"during");
    for listener in [socks, bridge] {
        assert!(
            TcpStream::connect(listener).await.is_err(),
            "{listener} still accepting while draining"
        );
    }
    let status = pt.wait_exit();
    let took = closed.elapsed();
    eprintln!("exited {took:?} after stdin closed, with a connection open");
    assert!(status.success(), "{status:?}");
    assert!(
        took >= DRAIN,
        "exited after {took:?}, before the drain time"
    );
    assert!(
        took < DRAIN + Duration::from_secs(5),
        "took {took:?} to exit"
    );
    assert_closed(&mut open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdin_close_with_100_open_connections_exits_within_2s() {
    let orport = echo_server().await;
    let dir = TempDir::new("stdin-100");
    // Both sides in one process, as a bridge that is also a client: 100 connections are 200
    // sessions (and 200 session threads) in this process.
    // No time to drain: every open session is asked to stop as soon as stdin closes.
    let (mut pt, socks, bridge) = start_both(&dir, orport, "0");

    let mut open = Vec::new();
    for i in 0..100u64 {
        let mut s = socks_connect(socks, None, Target::Ip(bridge))
            .await
            .stream();
        let msg = random_bytes(100, i + 1);
        assert_eq!(roundtrip(&mut s, &msg).await, msg);
        open.push(s);
    }
    let pid = pt.pid();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(
        threads >= 200,
        "expected a thread per session, saw {threads}"
    );
    let children = descendants(pid);
    assert!(
        children.is_empty(),
        "water-pt started processes: {children:?}"
    );

    let closed = Instant::now();
    pt.close_stdin();
    let status = pt.wait_exit();
    let took = closed.elapsed();
    eprintln!("exited {took:?} after stdin closed, with 100 connections ({threads} threads)");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?} to exit");
    // Reaped: the process, and every thread of it, is gone.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    for c in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{c}")).exists(),
            "orphan {c}"
        );
    }
    // Every open connection is closed under its user.
    for mut s in open {
        assert_closed(&mut s).await;
    }
}
