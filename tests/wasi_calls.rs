//! Edge cases of single preview1 calls, each through a real module on real
//! loopback sockets: what a call checks first, what it must not lose, what
//! counts as the module leaving wasm.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use water_pt::runtime::SessionEnd;
use water_pt::{Dialer, Runtime};

/// A dialer module with `pages` pages of memory whose `watm_start_v1` body
/// is `start`. Globals `$caller`, `$net` and `$ctrl` hold the fds the
/// runtime handed over.
fn module(pages: u32, start: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "water_dial_fixed" (func $dial_fixed (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (memory (export "memory") {pages})
  (global $caller (mut i32) (i32.const -1))
  (global $net (mut i32) (i32.const -1))
  (global $ctrl (mut i32) (i32.const -1))
  (func (export "watm_init_v1") (result i32) (i32.const 0))
  (func (export "watm_dial_v1") (param i32) (result i32)
    (global.set $caller (local.get 0))
    (global.set $net (call $dial_fixed))
    (global.get $net))
  (func (export "watm_ctrlpipe_v1") (param i32) (result i32)
    (global.set $ctrl (local.get 0))
    (i32.const 0))
  ;; Writes memory[ptr..ptr+len] to the caller fd (iovec at 32, count at 48).
  (func $to_caller (param $ptr i32) (param $len i32)
    (i32.store (i32.const 32) (local.get $ptr))
    (i32.store (i32.const 36) (local.get $len))
    (drop (call $fd_write (global.get $caller) (i32.const 32) (i32.const 1) (i32.const 48))))
  (func (export "watm_start_v1") (result i32) (local $r i32)
    {start})
)"#
    );
    wat::parse_str(&text).expect("valid WAT")
}

/// Dials an echo server through `wasm`; returns the caller's stream.
async fn dial(rt: &Runtime, wasm: &[u8], config: Option<Vec<u8>>) -> water_pt::WaterStream {
    let echo = echo_server().await;
    Dialer::new(rt, rt.load(wasm).unwrap())
        .with_config(config)
        .dial("tcp", &echo.to_string())
        .await
        .unwrap()
}

/// How the session of a module whose `watm_start_v1` returns on its own
/// ended (the caller stays open, so nothing asks it to stop).
async fn end_of(rt: &Runtime, wasm: &[u8], config: Option<Vec<u8>>) -> SessionEnd {
    let s = dial(rt, wasm, config).await;
    tokio::time::timeout(Duration::from_secs(10), s.session().finished())
        .await
        .expect("the module returns")
}

#[tokio::test]
async fn fd_read_without_buffers_still_checks_the_descriptor() {
    let start = "(i32.sub (i32.const 0)
        (call $fd_read (i32.const 99) (i32.const 0) (i32.const 0) (i32.const 16)))";
    let end = end_of(&runtime(), &module(1, start), None).await;
    assert_eq!(
        end,
        SessionEnd::Failed("watm_start_v1 returned -EBADF(8)".into())
    );
}

/// A module that first reads from the caller with a bad output pointer
/// (`bad_read`, which must fail with EFAULT), then reads properly and echoes
/// what it got back to the caller.
fn read_after_bad_pointer(bad_read: &str) -> Vec<u8> {
    let start = format!(
        "(i32.store (i32.const 0) (i32.const 1024))
         (i32.store (i32.const 4) (i32.const 64))
         (local.set $r {bad_read})
         (if (i32.ne (local.get $r) (i32.const 21))
           (then (return (i32.sub (i32.const 0) (local.get $r)))))
         (drop (call $fd_read (global.get $caller) (i32.const 0) (i32.const 1) (i32.const 16)))
         (call $to_caller (i32.const 1024) (i32.load (i32.const 16)))
         (i32.const 0)"
    );
    module(1, &start)
}

async fn bytes_survive(wasm: Vec<u8>) {
    let rt = runtime();
    let mut s = dial(&rt, &wasm, None).await;
    s.write_all(b"not lost").await.unwrap();
    let mut back = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("the bytes come back")
        .unwrap();
    assert_eq!(&back, b"not lost");
}

#[tokio::test]
async fn fd_read_with_a_bad_count_pointer_loses_no_bytes() {
    bytes_survive(read_after_bad_pointer(
        "(call $fd_read (global.get $caller) (i32.const 0) (i32.const 1) (i32.const 0xFFFFFFF0))",
    ))
    .await;
}

#[tokio::test]
async fn sock_recv_with_a_bad_output_pointer_loses_no_bytes() {
    // The byte count pointer, then the flags pointer.
    bytes_survive(read_after_bad_pointer(
        "(call $sock_recv (global.get $caller) (i32.const 0) (i32.const 1) (i32.const 0)
           (i32.const 0xFFFFFFF0) (i32.const 20))",
    ))
    .await;
    bytes_survive(read_after_bad_pointer(
        "(call $sock_recv (global.get $caller) (i32.const 0) (i32.const 1) (i32.const 0)
           (i32.const 16) (i32.const 0xFFFFFFFF))",
    ))
    .await;
}

#[tokio::test]
async fn control_fd_is_readable_but_never_writable_after_a_stop() {
    // Subscriptions at 0: FD_WRITE on ctrl (userdata 1), FD_READ on ctrl
    // (userdata 2). The module sends the caller the number of events and
    // the userdata of the first.
    let start = "(i64.store (i32.const 0) (i64.const 1))
         (i32.store8 (i32.const 8) (i32.const 2))
         (i32.store (i32.const 16) (global.get $ctrl))
         (i64.store (i32.const 48) (i64.const 2))
         (i32.store8 (i32.const 56) (i32.const 1))
         (i32.store (i32.const 64) (global.get $ctrl))
         (drop (call $poll (i32.const 0) (i32.const 256) (i32.const 2) (i32.const 512)))
         (i32.store8 (i32.const 600) (i32.load (i32.const 512)))
         (i32.store8 (i32.const 601) (i32.load8_u (i32.const 256)))
         (call $to_caller (i32.const 600) (i32.const 2))
         (i32.const -11)";
    let rt = runtime();
    let mut s = dial(&rt, &module(1, start), None).await;
    s.session().stop();
    let mut got = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
        .await
        .expect("the module answers")
        .unwrap();
    assert_eq!(got, [1, 2], "one event, the read subscription's");
}

#[tokio::test]
async fn prestat_at_the_top_of_a_4_gib_memory_is_efault() {
    // With 4 GiB of memory the name length's address would wrap to 0.
    let rt = runtime_with(|l| {
        l.max_memory = 4 << 30;
        l.max_connections = 2;
    });
    let start = "(i32.sub (i32.const 0) (call $prestat_get (i32.const 3) (i32.const 0xFFFFFFFC)))";
    let end = end_of(&rt, &module(65536, start), Some(b"cfg".to_vec())).await;
    assert_eq!(
        end,
        SessionEnd::Failed("watm_start_v1 returned -EFAULT(21)".into())
    );
}

/// The compute limit ends a module that loops on `body` (and never waits
/// or moves data); the caller stays open, so no stop request comes first.
async fn busy_loop_is_stopped(body: &str) {
    let start = format!("(loop $busy {body} (br $busy)) (i32.const 0)");
    let end = end_of(&runtime(), &module(1, &start), None).await;
    let SessionEnd::Failed(cause) = end else {
        panic!("a busy loop must fail, ended {end:?}");
    };
    assert!(cause.contains("too long"), "{cause}");
}

#[tokio::test]
async fn looping_on_sched_yield_counts_as_compute() {
    busy_loop_is_stopped("(drop (call $sched_yield))").await;
}

#[tokio::test]
async fn looping_on_clock_time_get_counts_as_compute() {
    busy_loop_is_stopped(
        "(drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 64)))",
    )
    .await;
}

#[tokio::test]
async fn looping_on_a_poll_that_is_always_ready_counts_as_compute() {
    // One FD_WRITE subscription on the network socket, which is always writable, so no call
    // ever waits.
    busy_loop_is_stopped(
        "(i64.store (i32.const 256) (i64.const 0))
         (i32.store8 (i32.const 264) (i32.const 2))
         (i32.store (i32.const 272) (global.get $net))
         (drop (call $poll (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600)))",
    )
    .await;
}

#[tokio::test]
async fn short_clock_waits_restart_the_compute_budget() {
    // 1,000 waits of 1 ms: together about twice the test runtime's compute limit, but each is
    // a wait, so the module runs to its end.
    let start = "(i64.store (i32.const 256) (i64.const 0))
         (i32.store8 (i32.const 264) (i32.const 0))
         (i32.store (i32.const 272) (i32.const 1))
         (i64.store (i32.const 280) (i64.const 1000000))
         (i64.store (i32.const 288) (i64.const 0))
         (i32.store16 (i32.const 296) (i32.const 0))
         (local.set $r (i32.const 1000))
         (loop $sleep
           (drop (call $poll (i32.const 256) (i32.const 512) (i32.const 1) (i32.const 600)))
           (local.set $r (i32.sub (local.get $r) (i32.const 1)))
           (br_if $sleep (local.get $r)))
         (i32.const 0)";
    let started = std::time::Instant::now();
    let end = end_of(&runtime(), &module(1, start), None).await;
    assert_eq!(end, SessionEnd::Closed);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "every wait waited"
    );
}
