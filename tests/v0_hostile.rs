//! Broken and hostile WATM v0 modules: load errors that name the cause,
//! setup failures, workers that fault, spin, sleep or ignore their cancel
//! fd, and the limits. Each fails only its own connection, and a healthy
//! connection beside it keeps working. (Nothing left behind: `leaks.rs`.)

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use water_pt::runtime::{Generation, SessionEnd};
use water_pt::{Dialer, Error, Listener};

#[tokio::test]
async fn bad_pointers_are_efault() {
    fails_beside_a_healthy_connection(
        wat_module_v0(BAD_POINTER_START, ""),
        &["_water_worker", "EFAULT"],
    )
    .await;
    fails_beside_a_healthy_connection(
        wat_module_v0(OUTSIDE_IOVEC_START, ""),
        &["_water_worker", "EFAULT"],
    )
    .await;
}

#[tokio::test]
async fn trapping_worker_fails_only_its_connection() {
    fails_beside_a_healthy_connection(
        wat_module_v0(TRAP_START, ""),
        &["_water_worker", "trapped", "unreachable"],
    )
    .await;
}

#[tokio::test]
async fn worker_that_never_returns_is_stopped() {
    // Spinning without calling the host: the compute limit.
    fails_beside_a_healthy_connection(wat_module_v0(SPIN_START, ""), &["_water_worker", "trapped"])
        .await;
    // Calling a host function that neither waits nor moves data does not
    // restart the compute budget.
    fails_beside_a_healthy_connection(
        wat_module_v0(
            "(loop $spin (call $host_defer) (drop (call $pull_config)) (br $spin)) (i32.const 0)",
            "",
        ),
        &["_water_worker", "trapped"],
    )
    .await;
    // Sleeping in poll_oneoff without watching the cancel fd: the forced
    // stop after the grace period.
    fails_beside_a_healthy_connection(
        wat_module_v0(SLEEP_IGNORING_CTRL_START, ""),
        &["_water_worker", "stopped by the runtime"],
    )
    .await;
}

#[tokio::test]
async fn memory_bomb_fails_only_its_connection() {
    fails_beside_a_healthy_connection(
        wat_module_v0(
            "(loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
             (unreachable)",
            "",
        ),
        &["unreachable"],
    )
    .await;
}

#[tokio::test]
async fn generation_markers_and_exports_are_checked_at_load() {
    let rt = runtime();
    let v1_exports = r#"(func (export "watm_init_v1") (result i32) (i32.const 0))
        (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 0))
        (func (export "watm_start_v1") (result i32) (i32.const 0))"#;
    let both = wat_module_v0("(i32.const 0)", v1_exports);
    let err = rt.load(&both).unwrap_err().to_string();
    assert!(
        err.contains("both") && err.contains("_water_v0") && err.contains("watm_init_v1"),
        "{err}"
    );

    let neither = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let err = rt.load(&neither).unwrap_err().to_string();
    assert!(
        err.contains("neither") && err.contains("_water_v0") && err.contains("watm_init_v1"),
        "{err}"
    );

    // The marker alone does not make a module.
    let marker_only = wat::parse_str(
        r#"(module (memory (export "memory") 1) (global (export "_water_v0") i32 (i32.const 0)))"#,
    )
    .unwrap();
    let err = rt.load(&marker_only).unwrap_err().to_string();
    assert!(
        err.contains("not a WATM v0 module") && err.contains("_water_init"),
        "{err}"
    );

    let wrong_type = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "_water_v0"))
            (func (export "_water_init") (param i32) (result i32) (i32.const 0))
            (func (export "_water_cancel_with") (param i32) (result i32) (i32.const 0))
            (func (export "_water_worker") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let err = rt.load(&wrong_type).unwrap_err().to_string();
    assert!(
        err.contains("_water_init") && err.contains("func() -> i32"),
        "{err}"
    );
}

/// The error of dialing `echo` through `wasm`, which must fail.
async fn dial_error(rt: &water_pt::Runtime, wasm: &[u8], echo: &str) -> String {
    Dialer::new(rt, rt.load(wasm).unwrap())
        .dial("tcp", echo)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn setup_errors_name_their_cause() {
    let rt = runtime();
    let echo = echo_server().await.to_string();

    let m = wat_module_v0_with_init("(i32.const -28)", "(i32.const 0)", "");
    let err = dial_error(&rt, &m, &echo).await;
    assert!(err.contains("_water_init returned -EINVAL"), "{err}");

    // The role call must return the fd `host_dial` gave, not its caller fd
    // or a made-up number.
    for (fake, fd) in [("(local.get 0)", None), ("(i32.const 77)", Some("fd 77"))] {
        let m = wat::parse_str(format!(
            r#"(module (import "env" "host_dial" (func $host_dial (result i32)))
                (memory (export "memory") 1)
                (func (export "_water_v0"))
                (func (export "_water_init") (result i32) (i32.const 0))
                (func (export "_water_dial") (param i32) (result i32) (drop (call $host_dial)) {fake})
                (func (export "_water_cancel_with") (param i32) (result i32) (i32.const 0))
                (func (export "_water_worker") (result i32) (i32.const 0)))"#
        ))
        .unwrap();
        let err = dial_error(&rt, &m, &echo).await;
        assert!(
            err.contains("_water_dial")
                && err.contains("not a network socket")
                && fd.is_none_or(|f| err.contains(f)),
            "{err}"
        );
    }

    // A `_water_cancel_with` that fails ends setup.
    let m = wat::parse_str(
        r#"(module (import "env" "host_dial" (func $host_dial (result i32)))
            (memory (export "memory") 1)
            (func (export "_water_v0"))
            (func (export "_water_init") (result i32) (i32.const 0))
            (func (export "_water_dial") (param i32) (result i32) (call $host_dial))
            (func (export "_water_cancel_with") (param i32) (result i32) (i32.const -8))
            (func (export "_water_worker") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let err = dial_error(&rt, &m, &echo).await;
    assert!(err.contains("_water_cancel_with returned -EBADF"), "{err}");

    // `host_accept` in a dialer has nothing to accept: -ENODEV (as in the
    // reference runtime), which the module passes back.
    let m = wat::parse_str(
        r#"(module (import "env" "host_accept" (func $host_accept (result i32)))
            (memory (export "memory") 1)
            (global (export "_water_v0") i32 (i32.const 0))
            (func (export "_water_init") (result i32) (i32.const 0))
            (func (export "_water_dial") (param i32) (result i32) (call $host_accept))
            (func (export "_water_cancel_with") (param i32) (result i32) (i32.const 0))
            (func (export "_water_worker") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let err = dial_error(&rt, &m, &echo).await;
    assert!(err.contains("_water_dial returned -ENODEV"), "{err}");
}

#[tokio::test]
async fn config_reaches_the_module_through_pull_config() {
    let rt = runtime();
    let echo = echo_server().await.to_string();
    // `_water_init` pulls the config into memory (or notes there is none:
    // -EACCES); the worker writes it, or "none", to the caller and ends.
    let init = "(local $fd i32)
        (local.set $fd (call $pull_config))
        (if (i32.lt_s (local.get $fd) (i32.const 0))
          (then
            (global.set $cfg_len (i32.const 0))
            (return (i32.eq (local.get $fd) (i32.const -2)))))
        (i32.store (i32.const 512) (i32.const 1024))
        (i32.store (i32.const 516) (i32.const 256))
        (drop (call $fd_read (local.get $fd) (i32.const 512) (i32.const 1) (i32.const 520)))
        (global.set $cfg_len (i32.load (i32.const 520)))
        (i32.const 0)";
    let worker = "(if (i32.eqz (global.get $cfg_len))
          (then
            (i32.store (i32.const 1024) (i32.const 0x656e6f6e))
            (global.set $cfg_len (i32.const 4))))
        (i32.store (i32.const 512) (i32.const 1024))
        (i32.store (i32.const 516) (global.get $cfg_len))
        (drop (call $fd_write (global.get $caller) (i32.const 512) (i32.const 1) (i32.const 520)))
        (i32.const 0)";
    let extra = "(global $cfg_len (mut i32) (i32.const -1))";
    let watm = rt
        .load(&wat_module_v0_with_init(init, worker, extra))
        .unwrap();
    for (config, expect) in [
        (
            Some(b"key=value; v0 config".to_vec()),
            &b"key=value; v0 config"[..],
        ),
        (None, &b"none"[..]),
    ] {
        let dialer = Dialer::new(&rt, watm.clone()).with_config(config);
        let mut s = dialer.dial("tcp", &echo).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .expect("the worker ends")
            .unwrap();
        assert_eq!(got, expect);
        assert_eq!(s.session().finished().await, SessionEnd::Closed);
    }
}

#[tokio::test]
async fn tinygo_style_epipe_at_end_of_stream_is_a_normal_end() {
    let rt = runtime();
    let echo = echo_server().await.to_string();
    for (ret, end) in [
        ("(i32.const -64)", SessionEnd::Closed),
        ("(i32.const -11)", SessionEnd::Cancelled),
        (
            "(i32.const -29)",
            SessionEnd::Failed("_water_worker returned -EIO(29)".into()),
        ),
    ] {
        let watm = rt
            .load(&wat_module_v0(&format!("(call $host_defer) {ret}"), ""))
            .unwrap();
        let s = Dialer::new(&rt, watm).dial("tcp", &echo).await.unwrap();
        assert_eq!(s.session().finished().await, end, "{ret}");
    }
}

#[tokio::test]
async fn connection_limit_and_setup_deadline_hold_for_v0() {
    let deadline = Duration::from_millis(500);
    let rt = runtime_with(|l| {
        l.max_connections = 1;
        l.setup_timeout = deadline;
    });
    let echo = echo_server().await.to_string();

    // A v0 dialer stuck an hour in poll_oneoff inside `_water_dial`, its
    // marker a global as in Rust-built v0 modules.
    let stuck = wat::parse_str(
        r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global (export "_water_v0") i32 (i32.const 0))
  (func (export "_water_init") (result i32) (i32.const 0))
  (func (export "_water_dial") (param i32) (result i32)
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (i32.const -1))
  (func (export "_water_cancel_with") (param i32) (result i32) (i32.const 0))
  (func (export "_water_worker") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let stuck = rt.load(&stuck).unwrap();
    assert_eq!(stuck.generation(), Generation::V0);
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        Dialer::new(&rt, stuck).dial("tcp", &echo),
    )
    .await
    .expect("the deadline ends the dial")
    .unwrap_err();
    assert!(
        matches!(err, Error::SetupTimeout(d) if d == deadline),
        "{err}"
    );
    assert!(started.elapsed() >= deadline);
    tokio::time::timeout(Duration::from_secs(5), rt.wait_idle())
        .await
        .expect("the stopped session released its slot");

    // One v0 connection fills the only slot; the next is refused.
    let plain = Dialer::new(&rt, rt.load(&module("plain-v0")).unwrap());
    let mut open = plain.dial("tcp", &echo).await.unwrap();
    assert_eq!(roundtrip(&mut open, b"one").await, b"one");
    let err = plain.dial("tcp", &echo).await.unwrap_err();
    assert!(matches!(err, Error::TooManyConnections(1)), "{err}");
    assert_eq!(roundtrip(&mut open, b"still").await, b"still");
}

#[tokio::test]
async fn listener_module_dialing_instead_of_accepting_gets_enodev() {
    let rt = runtime();
    // `_water_accept` calling `host_dial`: a listener has no remote.
    let m = wat::parse_str(
        r#"(module (import "env" "host_dial" (func $host_dial (result i32)))
            (memory (export "memory") 1)
            (func (export "_water_v0"))
            (func (export "_water_init") (result i32) (i32.const 0))
            (func (export "_water_accept") (param i32) (result i32) (call $host_dial))
            (func (export "_water_cancel_with") (param i32) (result i32) (i32.const 0))
            (func (export "_water_worker") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let listener = Listener::bind(&rt, rt.load(&m).unwrap(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (_client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let err = accepted.unwrap_err().to_string();
    assert!(err.contains("_water_accept returned -ENODEV"), "{err}");
}
