//! Tests against an Extended ORPort server written from the spec, independently of the client
//! code (its own HMAC computation and command parsing). The server lives with the integration
//! tests, which drive it through the whole transport as well.

use super::*;
use tokio::net::TcpListener;

#[path = "../../tests/common/extor_server.rs"]
mod server;
use server::*;

fn client_v4() -> SocketAddr {
    "1.2.3.4:5678".parse().unwrap()
}

#[tokio::test]
async fn full_exchange_then_payload() {
    let cookie = CookieFile::new(&COOKIE_A);
    let (addr, server) = spawn(Server::new(COOKIE_A)).await;
    let mut stream = connect(addr, &cookie.0, client_v4(), "water")
        .await
        .unwrap();

    let mut hello = [0u8; 5];
    stream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    stream.write_all(b"echo me").await.unwrap();
    let mut back = [0u8; 7];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"echo me");
    drop(stream);

    let seen = server.await.unwrap().unwrap();
    assert_eq!(seen.chosen, 1);
    assert!(seen.client_hash_ok);
    assert_eq!(
        seen.commands,
        vec![
            (1, b"1.2.3.4:5678".to_vec()),
            (2, b"water".to_vec()),
            (0, vec![])
        ]
    );
    assert_eq!(
        seen.raw_commands,
        b"\x00\x01\x00\x0c1.2.3.4:5678\x00\x02\x00\x05water\x00\x00\x00\x00"
    );
}

#[tokio::test]
async fn ipv6_client_address() {
    let cookie = CookieFile::new(&COOKIE_A);
    let (addr, server) = spawn(Server::okay_only(COOKIE_A)).await;
    let stream = connect(addr, &cookie.0, "[::1]:5678".parse().unwrap(), "water")
        .await
        .unwrap();
    drop(stream);
    let seen = server.await.unwrap().unwrap();
    assert_eq!(seen.commands[0], (1, b"[::1]:5678".to_vec()));
}

#[tokio::test]
async fn cookie_is_reread_on_every_call() {
    let cookie = CookieFile::new(&COOKIE_A);
    let (addr, server) = spawn(Server::okay_only(COOKIE_A)).await;
    drop(
        connect(addr, &cookie.0, client_v4(), "water")
            .await
            .unwrap(),
    );
    assert!(server.await.unwrap().unwrap().client_hash_ok);

    // tor restarted and wrote a new cookie to the same path.
    std::fs::write(&cookie.0, [HEADER, &COOKIE_B[..]].concat()).unwrap();
    let (addr, server) = spawn(Server::okay_only(COOKIE_B)).await;
    drop(
        connect(addr, &cookie.0, client_v4(), "water")
            .await
            .unwrap(),
    );
    assert!(server.await.unwrap().unwrap().client_hash_ok);
}

#[tokio::test]
async fn wrong_cookie_is_detected_from_server_hash() {
    let cookie = CookieFile::new(&COOKIE_B);
    let (addr, server) = spawn(Server::new(COOKIE_A)).await;
    let err = connect(addr, &cookie.0, client_v4(), "water")
        .await
        .unwrap_err();
    assert!(matches!(err, ExtOrError::ServerHashMismatch), "{err}");
    // The client gave up before sending its own hash: the server hit EOF there.
    assert!(server.await.unwrap().is_err());
}

/// Several tor instances behind one port: the cookie whose ServerHash matches is used, in any
/// position, and an unreadable file (a stopped instance deletes its cookie) is skipped.
#[tokio::test]
async fn any_of_several_cookies_is_used_when_tor_proves_it() {
    let (a, b) = (CookieFile::new(&COOKIE_A), CookieFile::new(&COOKIE_B));
    let gone = std::env::temp_dir().join(format!("extor-gone-{}", std::process::id()));
    for (cookie, files) in [
        (COOKIE_A, vec![a.0.clone(), b.0.clone()]),
        (COOKIE_B, vec![a.0.clone(), b.0.clone()]),
        (COOKIE_B, vec![gone.clone(), b.0.clone()]),
    ] {
        let (addr, server) = spawn(Server::okay_only(cookie)).await;
        let stream = connect_any(addr, &files, client_v4(), "water", HANDSHAKE_TIMEOUT)
            .await
            .unwrap();
        drop(stream);
        let seen = server.await.unwrap().unwrap();
        assert!(seen.client_hash_ok);
        assert_eq!(seen.commands[1], (2, b"water".to_vec()));
    }
}

#[tokio::test]
async fn several_cookies_none_held_by_tor_or_none_readable() {
    let b = CookieFile::new(&COOKIE_B);
    let (addr, server) = spawn(Server::new(COOKIE_A)).await;
    let err = connect_any(
        addr,
        &[b.0.clone(), b.0.clone()],
        client_v4(),
        "water",
        HANDSHAKE_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ExtOrError::ServerHashMismatch), "{err}");
    assert!(server.await.unwrap().is_err());

    // Nothing readable fails before connecting, naming the first file.
    let gone = std::env::temp_dir().join(format!("extor-none-{}", std::process::id()));
    let closed: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = connect_any(
        closed,
        std::slice::from_ref(&gone),
        client_v4(),
        "water",
        HANDSHAKE_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ExtOrError::Cookie { path, .. } if *path == gone),
        "{err}"
    );
    let err = connect_any(closed, &[], client_v4(), "water", HANDSHAKE_TIMEOUT)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no cookie file"), "{err}");
}

#[tokio::test]
async fn client_hash_rejected_by_server() {
    let cookie = CookieFile::new(&COOKIE_A);
    let mut cfg = Server::new(COOKIE_A);
    cfg.check_cookie = COOKIE_B;
    let (addr, server) = spawn(cfg).await;
    let err = connect(addr, &cookie.0, client_v4(), "water")
        .await
        .unwrap_err();
    assert!(matches!(err, ExtOrError::AuthRejected(0)), "{err}");
    assert!(!server.await.unwrap().unwrap().client_hash_ok);
}

#[tokio::test]
async fn deny_is_reported() {
    let cookie = CookieFile::new(&COOKIE_A);
    let mut cfg = Server::new(COOKIE_A);
    cfg.reply = DENY.to_vec();
    cfg.echo = false;
    let (addr, server) = spawn(cfg).await;
    let err = connect(addr, &cookie.0, client_v4(), "water")
        .await
        .unwrap_err();
    assert!(matches!(err, ExtOrError::Denied), "{err}");
    assert_eq!(server.await.unwrap().unwrap().commands.len(), 3);
}

#[tokio::test]
async fn safe_cookie_not_offered() {
    let cookie = CookieFile::new(&COOKIE_A);
    let mut cfg = Server::new(COOKIE_A);
    cfg.auth_types = vec![2, 3, 0];
    let (addr, server) = spawn(cfg).await;
    let err = connect(addr, &cookie.0, client_v4(), "water")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExtOrError::NoSafeCookie(t) if t == &[2, 3]),
        "{err}"
    );
    // The client closed without choosing a type.
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn safe_cookie_among_others_is_chosen() {
    let cookie = CookieFile::new(&COOKIE_A);
    let mut cfg = Server::okay_only(COOKIE_A);
    cfg.auth_types = vec![7, 1, 0];
    let (addr, server) = spawn(cfg).await;
    drop(
        connect(addr, &cookie.0, client_v4(), "water")
            .await
            .unwrap(),
    );
    assert_eq!(server.await.unwrap().unwrap().chosen, 1);
}

/// Cookie problems are reported before any connection is made: nothing listens at `addr`.
async fn cookie_error(contents: Option<&[u8]>) -> (PathBuf, String) {
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let file = contents.map(CookieFile::with_contents);
    let path = match &file {
        Some(f) => f.0.clone(),
        None => std::env::temp_dir().join("extor-cookie-that-does-not-exist"),
    };
    let err = connect(addr, &path, client_v4(), "water")
        .await
        .unwrap_err();
    let msg = err.to_string();
    match err {
        ExtOrError::Cookie { path: p, .. } => assert_eq!(p, path),
        other => panic!("expected a cookie error, got {other}"),
    }
    (path, msg)
}

#[tokio::test]
async fn short_cookie_file() {
    let contents = [HEADER, &COOKIE_A[..31]].concat();
    let (path, msg) = cookie_error(Some(&contents)).await;
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("is 63 bytes long, expected exactly 64"),
        "{msg}"
    );
}

#[tokio::test]
async fn long_cookie_file() {
    let contents = [HEADER, &COOKIE_A[..], b"\n"].concat();
    let (_, msg) = cookie_error(Some(&contents)).await;
    assert!(msg.contains("longer than 64 bytes"), "{msg}");
}

#[tokio::test]
async fn cookie_file_with_bad_header() {
    let contents = [&b"! Extended ORPort Auth Cookie ?\n"[..], &COOKIE_A[..]].concat();
    let (_, msg) = cookie_error(Some(&contents)).await;
    assert!(msg.contains("does not start with the header"), "{msg}");
}

#[tokio::test]
async fn missing_cookie_file() {
    let (_, msg) = cookie_error(None).await;
    assert!(msg.contains("cannot open"), "{msg}");
}

#[tokio::test]
async fn invalid_transport_name_fails_before_connecting() {
    let cookie = CookieFile::new(&COOKIE_A);
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = connect(unused, &cookie.0, client_v4(), "wa ter")
        .await
        .unwrap_err();
    assert!(matches!(err, ExtOrError::InvalidTransport(_)), "{err}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let cookie = CookieFile::new(&COOKIE_A);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limit = Duration::from_millis(200);
    let (accepted, res) = tokio::join!(
        listener.accept(),
        connect_with_timeout(addr, &cookie.0, client_v4(), "water", limit)
    );
    assert!(
        matches!(res, Err(ExtOrError::Timeout(d)) if d == limit),
        "{res:?}"
    );
    // The connection was made and then dropped by the client on timeout.
    let (mut s, _) = accepted.unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test]
async fn server_closing_mid_handshake_is_an_io_error() {
    let cookie = CookieFile::new(&COOKIE_A);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&[1, 0]).await.unwrap();
        let mut hello = [0u8; 33];
        s.read_exact(&mut hello).await.unwrap();
        hello // then close without a server hash
    });
    let err = connect(addr, &cookie.0, client_v4(), "water")
        .await
        .unwrap_err();
    match err {
        ExtOrError::Io { step, source } => {
            assert_eq!(step, "reading server hash and nonce");
            assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof);
        }
        other => panic!("unexpected {other}"),
    }
    let hello = server.await.unwrap();
    assert_eq!(hello[0], 1, "SAFE_COOKIE chosen");
    assert_ne!(hello[1..], [0u8; 32], "client nonce is random, not zero");
}

#[test]
fn connect_future_is_send() {
    // The server side spawns one task per client on the multi-threaded runtime.
    fn assert_send<T: Send>(_: T) {}
    let path = PathBuf::from("/nonexistent");
    assert_send(connect(client_v4(), &path, client_v4(), "water"));
}
