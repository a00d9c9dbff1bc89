//! Byte-vector tests of the SOCKS5 front end over real loopback sockets.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the test `parse_auth` records: the raw credentials, or `None` for method 0x00.
type Creds = Option<(Vec<u8>, Vec<u8>)>;

fn record(creds: Option<(&[u8], &[u8])>) -> Result<Creds, String> {
    Ok(creds.map(|(u, p)| (u.to_vec(), p.to_vec())))
}

const NO_AUTH: &[u8] = &[5, 1, 0];
const BOTH: &[u8] = &[5, 2, 0, 2];
const SEL_NONE: &[u8] = &[5, 0];
const SEL_USERPASS: &[u8] = &[5, 2];
const AUTH_OK: &[u8] = &[1, 0];
const CONNECT_V4: &[u8] = &[5, 1, 0, 1, 192, 0, 2, 7, 0x23, 0x28]; // 192.0.2.7:9000
const OK_REPLY: &[u8] = &[5, 0, 0, 1, 0, 0, 0, 0, 0, 0];

fn rep(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// `01 ULEN user PLEN pass`.
fn userpass(user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut v = vec![1, user.len() as u8];
    v.extend_from_slice(user);
    v.push(pass.len() as u8);
    v.extend_from_slice(pass);
    v
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// Writes `input`, half-closes (so a truncated input ends in EOF), and runs `accept`.
async fn handshake_with<A>(
    input: &[u8],
    parse_auth: impl FnOnce(Option<(&[u8], &[u8])>) -> Result<A, String>,
) -> (Result<SocksRequest<A>, SocksError>, TcpStream) {
    let (mut client, server) = pair().await;
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let res = accept_with_timeout(server, Duration::from_secs(10), parse_auth).await;
    (res, client)
}

async fn handshake(input: &[u8]) -> (Result<SocksRequest<Creds>, SocksError>, TcpStream) {
    handshake_with(input, record).await
}

async fn read_all(mut client: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    out
}

/// Runs a handshake expected to fail; returns the error and everything the client received.
async fn failing(input: &[u8]) -> (SocksError, Vec<u8>) {
    let (res, client) = handshake(input).await;
    let err = res.expect_err("handshake should fail");
    (err, read_all(client).await)
}

/// Runs a handshake expected to succeed, replies success, and returns the request's auth and
/// target plus everything the client received.
async fn succeeding(input: &[u8]) -> (Creds, TargetAddr, Vec<u8>) {
    let (res, client) = handshake(input).await;
    let req = res.expect("handshake should succeed");
    let target = req.target.clone();
    let (stream, auth) = req.reply_success().await.unwrap();
    drop(stream);
    (auth, target, read_all(client).await)
}

// ---- greetings -------------------------------------------------------------------------

#[tokio::test]
async fn greeting_no_auth_only_selects_00() {
    let (auth, target, out) = succeeding(&cat(&[NO_AUTH, CONNECT_V4])).await;
    assert_eq!(auth, None);
    assert_eq!(target, TargetAddr::Ip("192.0.2.7:9000".parse().unwrap()));
    assert_eq!(out, cat(&[SEL_NONE, OK_REPLY]));
}

#[tokio::test]
async fn greeting_tor_with_args_selects_02() {
    // tor's exact greeting when the bridge line has arguments.
    let input = cat(&[BOTH, &userpass(b"k=v;x=y", &[0]), CONNECT_V4]);
    let (auth, _, out) = succeeding(&input).await;
    assert_eq!(auth, Some((b"k=v;x=y".to_vec(), vec![0])));
    assert_eq!(out, cat(&[SEL_USERPASS, AUTH_OK, OK_REPLY]));
}

#[tokio::test]
async fn greeting_02_preferred_regardless_of_order() {
    for greeting in [
        &[5u8, 2, 2, 0][..],
        &[5, 1, 2],
        &[5, 4, 0x80, 1, 0, 2],
        &[5, 3, 2, 2, 2],
    ] {
        let input = cat(&[greeting, &userpass(b"a", b"b"), CONNECT_V4]);
        let (auth, _, out) = succeeding(&input).await;
        assert_eq!(auth, Some((b"a".to_vec(), b"b".to_vec())), "{greeting:?}");
        assert_eq!(out, cat(&[SEL_USERPASS, AUTH_OK, OK_REPLY]), "{greeting:?}");
    }
}

#[tokio::test]
async fn greeting_00_among_unknown_methods() {
    let (auth, _, out) = succeeding(&cat(&[&[5, 3, 1, 0x80, 0], CONNECT_V4])).await;
    assert_eq!(auth, None);
    assert_eq!(out, cat(&[SEL_NONE, OK_REPLY]));
}

#[tokio::test]
async fn greeting_without_usable_method_gets_ff() {
    for greeting in [&[5u8, 1, 1][..], &[5, 2, 1, 3], &[5, 0]] {
        let (err, out) = failing(greeting).await;
        assert!(
            matches!(err, SocksError::NoAcceptableMethod(_)),
            "{greeting:?}: {err}"
        );
        assert_eq!(out, [5, 0xff], "{greeting:?}");
    }
}

#[tokio::test]
async fn greeting_wrong_version_gets_no_reply() {
    // A SOCKS4 client: the server reads VER and NMETHODS only, then closes without replying.
    let (err, out) = failing(&[4, 1]).await;
    assert!(matches!(err, SocksError::BadVersion(4)), "{err}");
    assert!(out.is_empty());
}

#[tokio::test]
async fn greeting_truncated_or_empty() {
    for input in [&[][..], &[5], &[5, 2], &[5, 2, 0]] {
        let (err, out) = failing(input).await;
        match err {
            SocksError::Io(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{input:?}"),
            other => panic!("{input:?}: unexpected {other}"),
        }
        assert!(out.is_empty(), "{input:?}");
    }
}

// ---- RFC 1929 sub-negotiation ------------------------------------------------------------

#[tokio::test]
async fn auth_hands_over_raw_non_utf8_bytes() {
    // tor splits long argument strings at byte 255, which may cut a UTF-8 sequence.
    let user = [b'k', b'=', 0xe2, 0x82];
    let pass = [0xac, 0xff, 0x00];
    let input = cat(&[BOTH, &userpass(&user, &pass), CONNECT_V4]);
    let (auth, _, out) = succeeding(&input).await;
    assert_eq!(auth, Some((user.to_vec(), pass.to_vec())));
    assert_eq!(out, cat(&[SEL_USERPASS, AUTH_OK, OK_REPLY]));
}

#[tokio::test]
async fn auth_full_255_byte_fields() {
    let user = vec![b'u'; 255];
    let pass = vec![b'p'; 255];
    let (auth, _, _) = succeeding(&cat(&[BOTH, &userpass(&user, &pass), CONNECT_V4])).await;
    assert_eq!(auth, Some((user, pass)));
}

#[tokio::test]
async fn auth_empty_fields_reach_parse_auth() {
    let (auth, _, out) = succeeding(&cat(&[BOTH, &userpass(b"", b""), CONNECT_V4])).await;
    assert_eq!(auth, Some((vec![], vec![])));
    assert_eq!(out, cat(&[SEL_USERPASS, AUTH_OK, OK_REPLY]));
}

#[tokio::test]
async fn auth_rejected_by_parser_gets_0101() {
    let input = cat(&[BOTH, &userpass(b"novalue", &[0])]);
    let (res, client) = handshake_with(&input, |creds| -> Result<(), String> {
        assert_eq!(creds, Some((&b"novalue"[..], &[0u8][..])));
        Err("missing '=' in argument".into())
    })
    .await;
    match res {
        Err(SocksError::AuthRejected(msg)) => assert_eq!(msg, "missing '=' in argument"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(read_all(client).await, cat(&[SEL_USERPASS, &[1, 1]]));
}

#[tokio::test]
async fn no_auth_rejected_by_parser_closes_silently() {
    let (res, client) = handshake_with(NO_AUTH, |creds| -> Result<(), String> {
        assert!(creds.is_none());
        Err("arguments required".into())
    })
    .await;
    assert!(matches!(res, Err(SocksError::AuthRejected(_))));
    assert_eq!(read_all(client).await, SEL_NONE);
}

#[tokio::test]
async fn auth_wrong_subnegotiation_version_gets_0101() {
    let (err, out) = failing(&cat(&[BOTH, &[5]])).await;
    assert!(matches!(err, SocksError::BadAuthVersion(5)), "{err}");
    assert_eq!(out, cat(&[SEL_USERPASS, &[1, 1]]));
}

#[tokio::test]
async fn auth_truncated() {
    for auth in [
        &[][..],
        &[1],
        &[1, 10, b'a', b'b', b'c'],
        &[1, 1, b'a'],
        &[1, 1, b'a', 3, 0],
    ] {
        let (err, out) = failing(&cat(&[BOTH, auth])).await;
        assert!(matches!(err, SocksError::Io(_)), "{auth:?}: {err}");
        assert_eq!(out, SEL_USERPASS, "{auth:?}");
    }
}

// ---- requests ----------------------------------------------------------------------------

#[tokio::test]
async fn connect_ipv6() {
    let req = [
        5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0xbb,
    ];
    let (_, target, out) = succeeding(&cat(&[NO_AUTH, &req])).await;
    let ip: Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        target,
        TargetAddr::Ip(SocketAddr::V6(SocketAddrV6::new(ip, 443, 0, 0)))
    );
    assert_eq!(target.to_string(), "[2001:db8::1]:443");
    assert_eq!(out, cat(&[SEL_NONE, OK_REPLY]));
}

#[tokio::test]
async fn connect_ipv4_display() {
    let (_, target, _) = succeeding(&cat(&[NO_AUTH, &[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]])).await;
    assert_eq!(target, TargetAddr::Ip((Ipv4Addr::LOCALHOST, 80).into()));
    assert_eq!(target.to_string(), "127.0.0.1:80");
}

#[tokio::test]
async fn connect_hostname_is_not_resolved() {
    let mut req = vec![5, 1, 0, 3, 12];
    req.extend_from_slice(b"bridge.onion");
    req.extend_from_slice(&[0x01, 0xbb]);
    let (_, target, out) = succeeding(&cat(&[NO_AUTH, &req])).await;
    assert_eq!(target, TargetAddr::Domain("bridge.onion".into(), 443));
    assert_eq!(target.to_string(), "bridge.onion:443");
    assert_eq!(out, cat(&[SEL_NONE, OK_REPLY]));
}

#[test]
fn domain_with_colon_is_bracketed() {
    assert_eq!(TargetAddr::Domain("::1".into(), 9).to_string(), "[::1]:9");
}

#[tokio::test]
async fn non_connect_commands_get_rep_7() {
    for cmd in [2u8, 3, 0, 9, 0xff] {
        let (err, out) = failing(&cat(&[NO_AUTH, &[5, cmd, 0, 1, 10, 0, 0, 1, 0, 80]])).await;
        assert!(
            matches!(err, SocksError::UnsupportedCommand(c) if c == cmd),
            "{cmd}: {err}"
        );
        assert_eq!(out, cat(&[SEL_NONE, &rep(7)]), "cmd {cmd}");
    }
}

#[tokio::test]
async fn unknown_address_type_gets_rep_8() {
    for atyp in [0u8, 2, 5, 0xff] {
        let (err, out) = failing(&cat(&[NO_AUTH, &[5, 1, 0, atyp]])).await;
        assert!(
            matches!(err, SocksError::UnsupportedAddressType),
            "{atyp}: {err}"
        );
        assert_eq!(out, cat(&[SEL_NONE, &rep(8)]), "atyp {atyp}");
    }
}

#[tokio::test]
async fn request_wrong_version_fails_without_success() {
    let (err, out) = failing(&cat(&[NO_AUTH, &[4, 1, 0, 1]])).await;
    assert!(matches!(err, SocksError::BadVersion(4)), "{err}");
    assert_eq!(out, SEL_NONE);
}

#[tokio::test]
async fn request_truncated_never_succeeds() {
    let cases: [&[u8]; 7] = [
        &[],
        &[5, 1, 0],
        &[5, 1, 0, 1, 10, 0],
        &[5, 1, 0, 1, 10, 0, 0, 1, 0],
        &[5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0],
        &[5, 1, 0, 3],
        &[5, 1, 0, 3, 5, b'a', b'b'],
    ];
    for req in cases {
        let (err, out) = failing(&cat(&[NO_AUTH, req])).await;
        assert!(matches!(err, SocksError::Io(_)), "{req:?}: {err}");
        assert!(out.starts_with(SEL_NONE), "{req:?}");
        // Whatever fast-socks5 sends on EOF, it is never a success reply.
        assert_ne!(out.get(3), Some(&0), "{req:?}: {out:?}");
        assert!(out.len() == 2 || out[2..] == rep(5)[..], "{req:?}: {out:?}");
    }
}

#[tokio::test]
async fn hostname_not_utf8_or_empty_is_refused() {
    // fast-socks5 stops reading after the hostname when it is not UTF-8, so the port bytes are
    // left out here: unread bytes at close would turn the FIN into an RST and hide the reply.
    let (err, out) = failing(&cat(&[NO_AUTH, &[5, 1, 0, 3, 2, 0xff, 0xfe]])).await;
    assert!(matches!(err, SocksError::BadAddress(_)), "{err}");
    assert_eq!(out, cat(&[SEL_NONE, &rep(5)]));

    let (err, out) = failing(&cat(&[NO_AUTH, &[5, 1, 0, 3, 0, 0, 80]])).await;
    assert!(
        matches!(err, SocksError::BadAddress("empty hostname")),
        "{err}"
    );
    assert_eq!(out, cat(&[SEL_NONE, &rep(1)]));
}

// ---- replies and stream hand-over ---------------------------------------------------------

#[tokio::test]
async fn reply_is_deferred_and_nothing_past_request_is_read() {
    let (mut client, server) = pair().await;
    let payload = b"first bytes of the tunnel";
    client
        .write_all(&cat(&[BOTH, &userpass(b"a=b", &[0]), CONNECT_V4, payload]))
        .await
        .unwrap();
    let req = accept_with_timeout(server, Duration::from_secs(10), record)
        .await
        .unwrap();

    // Before reply_success the client has only the method and auth replies.
    let mut early = [0u8; 4];
    client.read_exact(&mut early).await.unwrap();
    assert_eq!(early, [5, 2, 1, 0]);

    let (mut stream, auth) = req.reply_success().await.unwrap();
    assert_eq!(auth, Some((b"a=b".to_vec(), vec![0])));
    let mut got = vec![0u8; payload.len()];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, payload);

    let mut reply = [0u8; 10];
    client.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, OK_REPLY);
    // The stream still works both ways after the hand-over.
    stream.write_all(b"pong").await.unwrap();
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
}

#[tokio::test]
async fn reply_failure_sends_code_and_closes() {
    for reply in [
        Reply::ConnectionRefused,
        Reply::GeneralFailure,
        Reply::HostUnreachable,
    ] {
        let (res, client) = handshake(&cat(&[NO_AUTH, CONNECT_V4])).await;
        res.unwrap().reply_failure(reply).await.unwrap();
        assert_eq!(read_all(client).await, cat(&[SEL_NONE, &rep(reply.code())]));
    }
}

#[tokio::test]
async fn handshake_times_out() {
    let (mut client, server) = pair().await;
    client.write_all(&[5, 2]).await.unwrap(); // greeting never completed, socket kept open
    let err = accept_with_timeout(server, Duration::from_millis(100), record)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SocksError::Timeout(d) if d == Duration::from_millis(100)),
        "{err}"
    );
    // The server side was dropped: the client sees EOF and no bytes.
    assert!(read_all(client).await.is_empty());
}

#[tokio::test]
async fn accept_future_is_send() {
    let (mut client, server) = pair().await;
    let task = tokio::spawn(accept(server, record));
    client
        .write_all(&cat(&[NO_AUTH, CONNECT_V4]))
        .await
        .unwrap();
    let req = task.await.unwrap().unwrap();
    assert_eq!(req.target.to_string(), "192.0.2.7:9000");
}
