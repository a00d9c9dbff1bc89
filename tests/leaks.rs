//! Hostile modules leave nothing behind: after each has failed beside a
//! healthy connection, the process's open descriptors and threads are back
//! to what they were; and a held connection costs its sockets and nothing
//! more. The tests take turns (`COUNTING`), so nothing else runs in the
//! process while one counts.

mod common;

use common::*;
use water_pt::runtime::SessionEnd;
use water_pt::{Limits, Runtime, RuntimeConfig};

/// Held by the test that is counting.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_leave_no_fd_or_thread_behind() {
    let _alone = COUNTING.lock().await;
    // No idle session threads kept: every session's thread must exit.
    let rt = Runtime::new(RuntimeConfig {
        limits: Limits {
            stop_grace: std::time::Duration::from_millis(300),
            max_compute: std::time::Duration::from_millis(500),
            ..Limits::default()
        },
        idle_threads: 0,
        ..RuntimeConfig::default()
    })
    .unwrap();
    // Warm up once, so threads the runtime starts lazily (its clock) exist
    // before counting.
    let echo = echo_server().await;
    beside_a_healthy_connection(&rt, echo, module("plain")).await;
    // The v0 modules are loaded and run once now, not first during the count: a
    // module's first instance creates its memory image (a memfd), which then lives
    // as long as the module and is not a leak.
    let v0_modules = ["plain-v0", "xor-v0"].map(|name| (name, rt.load(&module(name)).unwrap()));
    for (_, loaded) in &v0_modules {
        let dialer = water_pt::Dialer::new(&rt, loaded.clone());
        let mut warm = dialer.dial("tcp", &echo.to_string()).await.unwrap();
        assert_eq!(roundtrip(&mut warm, b"warm").await, b"warm");
    }
    rt.wait_idle().await;
    let base = settle_to(counts()).await;
    for (name, start) in [
        ("bad pointer", BAD_POINTER_START),
        ("iovec outside memory", OUTSIDE_IOVEC_START),
        ("trap", TRAP_START),
        ("spin", SPIN_START),
        ("sleep ignoring ctrl", SLEEP_IGNORING_CTRL_START),
    ] {
        // The same bodies as a v1 `watm_start_v1` and a v0 `_water_worker`.
        for wasm in [wat_module(start, ""), wat_module_v0(start, "")] {
            let end = beside_a_healthy_connection(&rt, echo, wasm).await;
            assert!(matches!(end, SessionEnd::Failed(_)), "{name}: {end:?}");
            let after = settle_to(base).await;
            assert!(
                after.0 <= base.0 && after.1 <= base.1,
                "{name}: fds/threads before {base:?}, after {after:?}"
            );
        }
    }
    // Healthy v0 connections, closed by the caller and stopped by the
    // runtime, leave nothing behind either.
    for (name, loaded) in v0_modules {
        let dialer = water_pt::Dialer::new(&rt, loaded);
        let mut closed = dialer.dial("tcp", &echo.to_string()).await.unwrap();
        assert_eq!(roundtrip(&mut closed, b"v0").await, b"v0");
        let stopped = dialer.dial("tcp", &echo.to_string()).await.unwrap();
        stopped.session().stop();
        assert_eq!(stopped.session().finished().await, SessionEnd::Cancelled);
        drop((closed, stopped));
        rt.wait_idle().await;
        let after = settle_to(base).await;
        assert!(
            after.0 <= base.0 && after.1 <= base.1,
            "{name}: fds/threads before {base:?}, after {after:?}"
        );
    }
}

/// A session holds no descriptor of its own: stopping it interrupts its
/// thread with a signal (Linux and Android; other systems keep a wake-up
/// descriptor per session), so a connection costs a bridge its two sockets.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_costs_only_its_sockets() {
    const HELD: usize = 20;
    let _alone = COUNTING.lock().await;
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let echo = echo_server().await;
    let dialer = water_pt::Dialer::new(&rt, rt.load(&module("plain")).unwrap());
    let mut warm = dialer.dial("tcp", &echo.to_string()).await.unwrap();
    assert_eq!(roundtrip(&mut warm, b"warm").await, b"warm");
    drop(warm);
    rt.wait_idle().await;
    let base = settle_to(counts()).await;
    let mut held = Vec::new();
    for _ in 0..HELD {
        let mut conn = dialer.dial("tcp", &echo.to_string()).await.unwrap();
        assert_eq!(roundtrip(&mut conn, b"held").await, b"held");
        held.push(conn);
    }
    let (fds, _) = counts();
    // Each connection, every end of it in this process: the two ends of the
    // caller socket pair, the module's network socket and the echo server's
    // end of that connection.
    assert!(
        fds <= base.0 + 4 * HELD,
        "{HELD} connections took {} descriptors (base {})",
        fds - base.0,
        base.0
    );
    for conn in &held {
        conn.session().stop();
    }
    for conn in &held {
        assert_eq!(conn.session().finished().await, SessionEnd::Cancelled);
    }
}
