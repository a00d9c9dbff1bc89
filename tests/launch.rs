//! Sessions started without waiting (`Dialer::launch_with_caller`,
//! `Dialer::launch_fixed_with_caller`, `Server::launch_opening_caller`): the setup hook is
//! called exactly once, with the session or with why it failed, and the session runs on
//! regardless of who started it.

mod common;

use common::*;
use std::sync::mpsc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use water_pt::runtime::{
    into_fd, open_direct, AllowList, NetPolicy, Replies, Server, SessionEnd, SessionHandle,
    SetupHook,
};
use water_pt::{Dialer, Error};

const READY: &[u8] = b"ready\n";
const FAILED: &[u8] = b"failed\n";

fn replies() -> Replies {
    Replies {
        ready: READY.to_vec(),
        failed: Box::new(|_| FAILED.to_vec()),
    }
}

/// What one call of a setup hook saw.
#[derive(Debug)]
struct Heard {
    /// The session's id, or why setup failed.
    outcome: Result<u64, String>,
    /// The name of the thread the hook ran on.
    thread: Option<String>,
}

/// A hook that reports each call on the returned channel and, on success, also sends the
/// session's end there once it has finished.
fn hook() -> (SetupHook, mpsc::Receiver<Heard>, mpsc::Receiver<SessionEnd>) {
    let (tx, rx) = mpsc::channel();
    let (end_tx, end_rx) = mpsc::channel();
    let hook: SetupHook = Box::new(move |setup: Result<&SessionHandle, Error>| {
        let thread = std::thread::current().name().map(str::to_owned);
        let outcome = match setup {
            Ok(session) => {
                session.when_finished(move |end, _| {
                    let _ = end_tx.send(end.clone());
                });
                Ok(session.id())
            }
            Err(e) => Err(e.to_string()),
        };
        tx.send(Heard { outcome, thread }).unwrap();
    });
    (hook, rx, end_rx)
}

/// Waits for the hook's report on a blocking thread, so the runtime's tasks keep running.
async fn heard(rx: mpsc::Receiver<Heard>) -> (Heard, mpsc::Receiver<Heard>) {
    tokio::task::spawn_blocking(move || {
        let heard = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("hook called");
        (heard, rx)
    })
    .await
    .unwrap()
}

/// A connected TCP pair: the application's end and the end the module gets.
async fn caller_pair() -> (TcpStream, TcpStream) {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TcpStream::connect(front.local_addr().unwrap());
    let (app, accepted) = tokio::join!(app, front.accept());
    (app.unwrap(), accepted.unwrap().0)
}

/// Launches a `plain` dial to `remote` whose caller is a fresh TCP connection with the SOCKS-like
/// `replies()`; returns the application's end and the hook's channels.
async fn launch_plain_dial(
    rt: &water_pt::Runtime,
    remote: &str,
) -> (TcpStream, mpsc::Receiver<Heard>, mpsc::Receiver<SessionEnd>) {
    let dialer = Dialer::new(rt, rt.load(&module("plain")).unwrap());
    let (app, caller) = caller_pair().await;
    let (on_setup, rx, ends) = hook();
    dialer.launch_with_caller(
        into_fd(caller).unwrap(),
        "tcp",
        remote,
        Some(replies()),
        on_setup,
    );
    (app, rx, ends)
}

/// Checks that setup succeeded, as told on the session's own thread.
async fn heard_ready_on_the_session_thread(rx: mpsc::Receiver<Heard>) -> mpsc::Receiver<Heard> {
    let (heard_once, rx) = heard(rx).await;
    assert!(heard_once.outcome.is_ok(), "{heard_once:?}");
    assert_eq!(heard_once.thread.as_deref(), Some("watm-session"));
    rx
}

/// Checks that the session, its application side now closed, ended cleanly as heard by the end
/// hook registered from the setup hook, and that the setup hook was not called again.
async fn ended_closed_after_one_setup_call(
    ends: mpsc::Receiver<SessionEnd>,
    rx: mpsc::Receiver<Heard>,
) {
    let end = tokio::task::spawn_blocking(move || ends.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("end hook called");
    assert_eq!(end, SessionEnd::Closed);
    assert!(rx.try_recv().is_err(), "the setup hook is called once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_dial_reports_its_session_from_the_session_thread_then_carries_data() {
    let rt = runtime();
    let echo = echo_server().await;
    let (mut app, rx, ends) = launch_plain_dial(&rt, &echo.to_string()).await;

    let rx = heard_ready_on_the_session_thread(rx).await;
    let mut reply = [0u8; READY.len()];
    app.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, READY);
    assert_eq!(
        roundtrip(&mut app, b"through a launched session").await,
        b"through a launched session"
    );

    drop(app);
    ended_closed_after_one_setup_call(ends, rx).await;
    assert_eq!(rt.live_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_dial_that_fails_reports_why_and_answers_the_caller() {
    let rt = runtime();
    // A port nothing listens on: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (mut app, rx, _ends) = launch_plain_dial(&rt, &closed.to_string()).await;

    let (heard_once, rx) = heard(rx).await;
    let why = heard_once.outcome.expect_err("the dial fails");
    assert!(why.contains(&closed.to_string()), "{why}");
    let mut reply = Vec::new();
    app.read_to_end(&mut reply).await.unwrap();
    assert_eq!(
        reply, FAILED,
        "failure reply, then the caller socket closes"
    );
    assert!(rx.try_recv().is_err(), "the setup hook is called once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_refused_at_the_connection_limit_reports_before_returning() {
    let rt = runtime_with(|l| l.max_connections = 1);
    let echo = echo_server().await;
    let dialer = Dialer::new(&rt, rt.load(&module("plain")).unwrap());
    // One session holds the only slot.
    let mut held = dialer.dial("tcp", &echo.to_string()).await.unwrap();

    let me = std::thread::current().name().map(str::to_owned);
    let (mut app, rx, _ends) = launch_plain_dial(&rt, &echo.to_string()).await;
    // Heard already, on this thread: the session never reached one of its own.
    let heard_once = rx.try_recv().expect("called before launch returned");
    assert_eq!(heard_once.thread, me);
    let why = heard_once.outcome.expect_err("refused");
    assert!(why.contains("connection limit"), "{why}");
    let mut reply = Vec::new();
    app.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, FAILED);

    // The held session is untouched.
    assert_eq!(roundtrip(&mut held, b"still here").await, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_server_session_reports_once_and_relays_to_its_upstream() {
    let rt = runtime();
    let upstream = echo_server().await;
    let server = Server::new(&rt, rt.load(&module("plain")).unwrap()).unwrap();
    let (mut client, inbound) = caller_pair().await;
    let (on_setup, rx, ends) = hook();
    server.launch_opening_caller(
        into_fd(inbound).unwrap(),
        open_direct(upstream.to_string()),
        on_setup,
    );

    let rx = heard_ready_on_the_session_thread(rx).await;
    assert_eq!(
        roundtrip(&mut client, b"inbound bytes").await,
        b"inbound bytes"
    );
    drop(client);
    ended_closed_after_one_setup_call(ends, rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_fixed_dial_reaches_the_modules_own_remote_only_when_allowed() {
    let rt = runtime();
    let echo = echo_server().await;
    let cfg = format!("dial={echo}\n").into_bytes();
    let watm = rt.load(&module("plain")).unwrap();

    let allowed = Dialer::new(&rt, watm.clone())
        .with_config(Some(cfg.clone()))
        .with_policy(NetPolicy {
            allow: AllowList::new([echo.to_string()]),
            ..NetPolicy::default()
        });
    let (mut app, caller) = caller_pair().await;
    let (on_setup, rx, ends) = hook();
    allowed.launch_fixed_with_caller(into_fd(caller).unwrap(), on_setup);
    let rx = heard_ready_on_the_session_thread(rx).await;
    assert_eq!(roundtrip(&mut app, b"fixed").await, b"fixed");
    drop(app);
    ended_closed_after_one_setup_call(ends, rx).await;

    // Without the allow-list entry the module's dial is refused, and the hook says so.
    let denied = Dialer::new(&rt, watm).with_config(Some(cfg));
    let (mut app, caller) = caller_pair().await;
    let (on_setup, rx, _ends) = hook();
    denied.launch_fixed_with_caller(into_fd(caller).unwrap(), on_setup);
    let (heard_once, rx) = heard(rx).await;
    let why = heard_once.outcome.expect_err("the dial is refused");
    assert!(why.contains("EACCES"), "{why}");
    let mut rest = Vec::new();
    app.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "no replies were asked for: {rest:?}");
    assert!(rx.try_recv().is_err(), "the setup hook is called once");
}
