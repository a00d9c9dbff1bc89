//! Broken and hostile modules fail their own connection, with a cause that
//! names what went wrong, while a healthy connection beside them keeps
//! working. (That nothing is left behind is checked in `leaks.rs`, alone in
//! its process so other tests' sockets and threads do not blur the count.)

mod common;

use common::*;
use water_pt::runtime::SessionEnd;
use water_pt::Dialer;

#[tokio::test]
async fn bad_pointer_to_fd_write_is_efault() {
    // fd_write on the caller fd with an iovec array outside memory; the
    // module returns the errno it got, negated.
    let m = wat_module(BAD_POINTER_START, "");
    fails_beside_a_healthy_connection(m, &["watm_start_v1", "EFAULT"]).await;
}

#[tokio::test]
async fn iovec_pointing_outside_memory_is_efault() {
    // A valid iovec array whose buffer runs past the end of memory.
    let m = wat_module(OUTSIDE_IOVEC_START, "");
    fails_beside_a_healthy_connection(m, &["EFAULT"]).await;
}

#[tokio::test]
async fn trap_in_start_fails_only_its_connection() {
    fails_beside_a_healthy_connection(
        wat_module(TRAP_START, ""),
        &["watm_start_v1", "trapped", "unreachable"],
    )
    .await;
}

#[tokio::test]
async fn module_spinning_forever_is_stopped() {
    fails_beside_a_healthy_connection(wat_module(SPIN_START, ""), &["watm_start_v1", "trapped"])
        .await;
}

#[tokio::test]
async fn module_sleeping_in_poll_and_ignoring_ctrl_is_stopped() {
    // One clock subscription of an hour, never looking at the control pipe.
    let m = wat_module(SLEEP_IGNORING_CTRL_START, "");
    fails_beside_a_healthy_connection(m, &["stopped by the runtime"]).await;
}

/// A module with the three required exports, `watm_init_v1` being
/// `(func (export "watm_init_v1") INIT)`, plus `extra` items.
fn tiny_watm(init: &str, extra: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1)
            (func (export "watm_init_v1") {init})
            (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 0))
            (func (export "watm_start_v1") (result i32) (i32.const 0))
            {extra})"#
    ))
    .unwrap()
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

    // Not wasm at all.
    let err = rt.load(b"not a module").unwrap_err().to_string();
    assert!(err.contains("invalid WebAssembly module"), "{err}");

    // Missing a required export.
    let m = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let err = rt.load(&m).unwrap_err().to_string();
    assert!(err.contains("watm_init_v1"), "{err}");

    // A module that is a listener only cannot dial.
    let m = tiny_watm(
        "(result i32) (i32.const 0)",
        r#"(func (export "watm_accept_v1") (param i32) (result i32) (i32.const 0))"#,
    );
    let err = dial_error(&rt, &m, &echo).await;
    assert!(
        err.contains("dialer") && err.contains("watm_dial_v1"),
        "{err}"
    );

    // An export with the wrong type.
    let m = tiny_watm("(param i32) (result i32) (i32.const 0)", "");
    let err = rt.load(&m).unwrap_err().to_string();
    assert!(
        err.contains("watm_init_v1") && err.contains("func() -> i32"),
        "{err}"
    );

    // init failing with an errno.
    let m = tiny_watm(
        "(result i32) (i32.const -28)",
        r#"(func (export "watm_dial_v1") (param i32) (result i32) (i32.const 0))"#,
    );
    let err = dial_error(&rt, &m, &echo).await;
    assert!(err.contains("watm_init_v1 returned -EINVAL"), "{err}");

    // A role function returning a bogus fd.
    let m = tiny_watm(
        "(result i32) (i32.const 0)",
        r#"(func (export "watm_dial_v1") (param i32) (result i32) (i32.const 77))"#,
    );
    let err = dial_error(&rt, &m, &echo).await;
    assert!(
        err.contains("fd 77") && err.contains("watm_dial_v1"),
        "{err}"
    );

    // A dial that fails: the cause names the address.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = Dialer::new(&rt, rt.load(&module("plain")).unwrap())
        .dial("tcp", &closed.to_string())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&closed.to_string()) && err.contains("refused"),
        "{err}"
    );

    // Importing a memory instead of defining one.
    let m = wat::parse_str(r#"(module (import "env" "mem" (memory 1)))"#).unwrap();
    let err = rt.load(&m).unwrap_err().to_string();
    assert!(
        err.contains("env::mem") && err.contains("not a function"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_imports_link_to_enosys_stubs() {
    // A module importing preview1 functions the runtime does not implement
    // still instantiates; calling one returns ENOSYS (52), which this module
    // passes back negated from watm_start_v1.
    let rt = runtime();
    let echo = echo_server().await;
    let text = r#"(module
      (import "env" "water_dial_fixed" (func $dial_fixed (result i32)))
      (import "wasi_snapshot_preview1" "fd_readdir" (func $readdir (param i32 i32 i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_unlink_file" (func $unlink (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "watm_init_v1") (result i32) (i32.const 0))
      (func (export "watm_dial_v1") (param i32) (result i32) (call $dial_fixed))
      (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 0))
      (func (export "watm_start_v1") (result i32)
        (i32.sub (i32.const 0) (call $readdir (i32.const 3) (i32.const 0) (i32.const 0) (i64.const 0) (i32.const 0)))))"#;
    let watm = rt.load(&wat::parse_str(text).unwrap()).unwrap();
    let s = Dialer::new(&rt, watm)
        .dial("tcp", &echo.to_string())
        .await
        .unwrap();
    let end = s.session().finished().await;
    assert_eq!(
        end,
        SessionEnd::Failed("watm_start_v1 returned -ENOSYS(52)".into())
    );
}

#[tokio::test]
async fn positive_results_are_success_as_in_the_reference_runtime() {
    // init, ctrlpipe and start all return positive values; only negative ones are errors.
    let text = r#"(module
      (import "env" "water_dial_fixed" (func $dial_fixed (result i32)))
      (memory (export "memory") 1)
      (func (export "watm_init_v1") (result i32) (i32.const 7))
      (func (export "watm_dial_v1") (param i32) (result i32) (call $dial_fixed))
      (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 3))
      (func (export "watm_start_v1") (result i32) (i32.const 5)))"#;
    let rt = runtime();
    let echo = echo_server().await;
    let watm = rt.load(&wat::parse_str(text).unwrap()).unwrap();
    let s = Dialer::new(&rt, watm)
        .dial("tcp", &echo.to_string())
        .await
        .expect("positive init and ctrlpipe results are success");
    assert_eq!(s.session().finished().await, SessionEnd::Closed);
}
