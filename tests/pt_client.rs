//! The client side through the spawned binary: SOCKS5 requests with bridge arguments as tor
//! encodes them, carried by real modules to loopback servers.

mod common;

use common::pt::*;
use common::{echo_server, module, module_path, roundtrip, sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use water_pt::pt::args::{encode_socks_args, split_for_socks};

/// A launched client PT and its directories.
struct Client {
    dir: TempDir,
    pt: PtChild,
    socks: SocketAddr,
}

impl Client {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// With these options on the command line (tor's `ClientTransportPlugin` line).
    fn start_with(args: &[&str]) -> Self {
        let dir = TempDir::new("client");
        // tor creates nothing; the test pre-creates the module directory inside the state
        // directory, as a user installing modules would.
        std::fs::create_dir_all(dir.path().join("pt_state/watm")).unwrap();
        let env = client_env(&dir.state());
        let mut pt = PtChild::spawn(&env_refs(&env), args);
        let socks = pt.client_ready();
        Client { dir, pt, socks }
    }

    fn module_dir(&self) -> PathBuf {
        self.dir.path().join("pt_state/watm")
    }
}

/// A server that reads exactly `n` bytes of one connection and hands them over.
async fn recorder(n: usize) -> (SocketAddr, oneshot::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await.unwrap();
        let _ = tx.send(buf);
    });
    (addr, rx)
}

/// Connects with `args` and checks the bytes reach the server reversed: proof that the
/// `reverse` module, not the default `plain`, carried them.
async fn assert_reverse_module(socks: SocketAddr, args: &[(&str, &str)]) {
    let (target, got) = recorder(6).await;
    let mut s = socks_with_args(socks, args, target).await.stream();
    s.write_all(b"abcdef").await.unwrap();
    assert_eq!(got.await.unwrap(), b"fedcba", "args {args:?}");
}

fn copy_module(name: &str, to: &Path) {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::copy(module_path(name), to).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_args_uses_the_default_module_and_reports_success() {
    let mut c = Client::start();
    let echo = echo_server().await;
    let mut s = socks_connect(c.socks, None, Target::Ip(echo))
        .await
        .stream();
    assert_eq!(roundtrip(&mut s, b"through plain").await, b"through plain");
    assert_eq!(
        c.pt.line(),
        "STATUS TRANSPORT=water ADDRESS=[scrubbed] CONNECT=Success",
        "the bridge address {echo} is scrubbed"
    );
    // A second connection to the same bridge is served too (and not re-announced).
    let mut s2 = socks_connect(c.socks, None, Target::Ip(echo))
        .await
        .stream();
    assert_eq!(roundtrip(&mut s2, b"again").await, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn water_wasm_absolute_path_file_url_and_bare_name() {
    let c = Client::start();
    let abs = c.dir.path().join("mods/reverse.wasm");
    copy_module("reverse", &abs);
    let abs_text = abs.to_str().unwrap();
    assert_reverse_module(c.socks, &[("water-wasm", abs_text)]).await;
    let url = format!("file://{abs_text}");
    assert_reverse_module(c.socks, &[("water-wasm", &url)]).await;
    copy_module("reverse", &c.module_dir().join("rev.wasm"));
    assert_reverse_module(c.socks, &[("water-wasm", "rev.wasm")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_pin_match_pin_only_and_mismatch() {
    let mut c = Client::start();
    let hex = hex::encode(sha256(&module("reverse")));
    let abs = c.dir.path().join("reverse.wasm");
    copy_module("reverse", &abs);
    let abs_text = abs.to_str().unwrap();
    assert_reverse_module(c.socks, &[("water-wasm", abs_text), ("water-sha256", &hex)]).await;

    // A pin alone names MODULEDIR/HEX.wasm.
    copy_module("reverse", &c.module_dir().join(format!("{hex}.wasm")));
    assert_reverse_module(c.socks, &[("water-sha256", &hex)]).await;

    // The plain module under a reverse pin is refused at CONNECT time.
    let plain = c.dir.path().join("plain.wasm");
    copy_module("plain", &plain);
    let echo = echo_server().await;
    let refused = socks_with_args(
        c.socks,
        &[
            ("water-wasm", plain.to_str().unwrap()),
            ("water-sha256", &hex),
        ],
        echo,
    )
    .await;
    assert!(matches!(refused, Socks::Refused(1)), "{refused:?}");
    let log = c.pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains("water-sha256") && log.contains(&hex), "{log}");
    let status = c.pt.expect_prefix("STATUS ");
    assert!(
        status.starts_with("STATUS TRANSPORT=water ADDRESS=[scrubbed] CONNECT=Failed ERRSTR="),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_arguments_get_a_non_zero_reply() {
    let c = Client::start();
    let echo = echo_server().await;
    for args in [
        &[("water-wasm", "missing.wasm")][..],
        &[("water-colour", "red")],
        &[("water-config", "not base64!")],
        &[("water-wasm", "https://example.org/x.wasm")],
        &[("water-sha256", "1234")],
    ] {
        let got = socks_with_args(c.socks, args, echo).await;
        assert!(matches!(got, Socks::Refused(1)), "{args:?}: {got:?}");
    }
    // Keys that are not ours are ignored (tor may pass other arguments).
    let mut s = socks_with_args(c.socks, &[("cert", "abc"), ("iat-mode", "0")], echo)
        .await
        .stream();
    assert_eq!(roundtrip(&mut s, b"ok").await, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn water_config_reaches_the_module() {
    let c = Client::start();
    let abs = c.dir.path().join("config-echo.wasm");
    copy_module("config-echo", &abs);
    let echo = echo_server().await;
    let cfg = "aGVsbG8gY29uZmln"; // "hello config"
    let mut s = socks_with_args(
        c.socks,
        &[("water-wasm", abs.to_str().unwrap()), ("water-config", cfg)],
        echo,
    )
    .await
    .stream();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"hello config");
    assert_eq!(roundtrip(&mut s, b"then data").await, b"then data");

    let mut s = socks_with_args(c.socks, &[("water-wasm", abs.to_str().unwrap())], echo)
        .await
        .stream();
    let mut first = [0u8; 6];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"<none>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_arguments_fail_authentication() {
    let mut c = Client::start();
    let echo = echo_server().await;
    for (user, pass) in [
        (&b"novalue"[..], &[0u8][..]),
        (b"=v", &[0]),
        (b"a=b;;c=d", &[0]),
        (b"a=b\\", &[0]),
        (&[b'a', b'=', 0xff], &[0]),
    ] {
        let got = socks_connect(c.socks, Some((user, pass)), Target::Ip(echo)).await;
        assert!(matches!(got, Socks::AuthFailed), "{user:?}: {got:?}");
    }
    let log = c.pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains("malformed bridge arguments"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_separators_in_values() {
    let c = Client::start();
    // A path with `;`, `=` and `\` in it: tor escapes `;` and `\`, not `=`.
    let abs = c.dir.path().join("we;ird=dir\\x/re;v=.wasm");
    copy_module("reverse", &abs);
    let text = abs.to_str().unwrap();
    let encoded = encode_socks_args(&[("water-wasm", text)]).unwrap();
    assert!(
        encoded.contains("\\;") && encoded.contains("\\\\"),
        "{encoded}"
    );
    assert_reverse_module(c.socks, &[("water-wasm", text)]).await;
}

/// A module path in nested directories, `len` bytes long in total.
fn long_path(base: &Path, len: usize, filler: &str) -> PathBuf {
    let mut p = base.to_path_buf();
    let fixed = base.to_str().unwrap().len() + "/m.wasm".len();
    assert!(len > fixed + 2);
    let mut left = len - fixed;
    while left > 0 {
        // Each component plus its `/` separator, at most 200 bytes.
        let take = left.min(200);
        let part: String = filler.chars().cycle().take(take - 1).collect();
        p.push(part);
        left -= take;
    }
    p.push("m.wasm");
    assert_eq!(p.to_str().unwrap().len(), len);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_split_across_username_and_password() {
    let c = Client::start();
    // Longer than 255: tor moves the rest into the password.
    let abs = long_path(c.dir.path(), 300, "d");
    copy_module("reverse", &abs);
    let text = abs.to_str().unwrap();
    let encoded = encode_socks_args(&[("water-wasm", text)]).unwrap();
    let (user, pass) = split_for_socks(encoded.as_bytes()).unwrap();
    assert_eq!((user.len(), pass.len()), (255, encoded.len() - 255));
    assert_reverse_module(c.socks, &[("water-wasm", text)]).await;

    // The cut at byte 255 falls right after an escaping backslash: put a `;` where its
    // escape lands on the last byte of the username.
    let prefix = "water-wasm=".len() + c.dir.path().to_str().unwrap().len() + 1;
    let pad = "p".repeat(254 - prefix);
    let abs = c.dir.path().join(format!("{pad};x")).join("m.wasm");
    let enc = encode_socks_args(&[("water-wasm", abs.to_str().unwrap())]).unwrap();
    assert_eq!(&enc.as_bytes()[254..256], b"\\;");
    copy_module("reverse", &abs);
    assert_reverse_module(c.socks, &[("water-wasm", abs.to_str().unwrap())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_510_bytes_fit_and_511_do_not() {
    let c = Client::start();
    let path_len = 510 - "water-wasm=".len();
    let abs = long_path(c.dir.path(), path_len, "e");
    copy_module("reverse", &abs);
    let text = abs.to_str().unwrap();
    let encoded = encode_socks_args(&[("water-wasm", text)]).unwrap();
    assert_eq!(encoded.len(), 510);
    let (user, pass) = split_for_socks(encoded.as_bytes()).unwrap();
    assert_eq!((user.len(), pass.len()), (255, 255));
    assert_reverse_module(c.socks, &[("water-wasm", text)]).await;
    // tor cannot send more: RFC 1929 has two 255-byte fields.
    let longer = format!("{encoded}e");
    assert!(split_for_socks(longer.as_bytes()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_hostname_targets() {
    let c = Client::start();
    let l6 = TcpListener::bind("[::1]:0").await.unwrap();
    let addr6 = l6.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l6.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let mut s = socks_connect(c.socks, None, Target::Ip(addr6))
        .await
        .stream();
    assert_eq!(roundtrip(&mut s, b"over v6").await, b"over v6");

    let echo = echo_server().await;
    let mut s = socks_connect(c.socks, None, Target::Host("localhost", echo.port()))
        .await
        .stream();
    assert_eq!(roundtrip(&mut s, b"by name").await, b"by name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bridge_is_rep_5() {
    // Addresses are logged only when the operator asks for it.
    let mut c = Client::start_with(&["--unsafe-logging"]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let got = socks_connect(c.socks, None, Target::Ip(closed)).await;
    assert!(matches!(got, Socks::Refused(5)), "{got:?}");
    let log = c.pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains(&closed.to_string()), "{log}");
    let status = c.pt.expect_prefix("STATUS ");
    assert!(status.contains("CONNECT=Failed"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_its_connection_limit_answers_socks_with_a_failure() {
    // The refusal comes before a session thread exists; tor still gets a SOCKS reply (REP 1),
    // not a connection closed without a word.
    let mut c = Client::start_with(&["--max-connections", "1"]);
    let echo = echo_server().await;
    let mut held = socks_connect(c.socks, None, Target::Ip(echo))
        .await
        .stream();
    assert_eq!(roundtrip(&mut held, b"first").await, b"first");

    let got = socks_connect(c.socks, None, Target::Ip(echo)).await;
    assert!(matches!(got, Socks::Refused(1)), "{got:?}");
    // The first connection's success is reported too, before or after.
    let statuses = [c.pt.expect_prefix("STATUS "), c.pt.expect_prefix("STATUS ")];
    let failed = statuses
        .iter()
        .filter(|s| s.contains("CONNECT=Failed"))
        .count();
    assert_eq!(failed, 1, "{statuses:?}");
    // The held connection was not disturbed.
    assert_eq!(roundtrip(&mut held, b"still").await, b"still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_socks_client_with_module_dir() {
    let dir = TempDir::new("standalone");
    copy_module("reverse", &dir.path().join("rev.wasm"));
    let mut pt = PtChild::spawn(
        &[],
        &[
            "client",
            "--listen",
            "127.0.0.1:0",
            "--no-cache",
            "--module-dir",
            dir.path().to_str().unwrap(),
        ],
    );
    let line = pt.wait_stderr("SOCKS5 client listening on ");
    let socks: SocketAddr = line
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    assert_reverse_module(socks, &[("water-wasm", "rev.wasm")]).await;
    let echo = echo_server().await;
    let mut s = socks_connect(socks, None, Target::Ip(echo)).await.stream();
    assert_eq!(roundtrip(&mut s, b"standalone").await, b"standalone");
}

/// A dialer module whose `_start` traps before `watm_init_v1` is ever called.
fn trapping_start_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (unreachable))
  (func (export "watm_init_v1") (result i32) (i32.const 0))
  (func (export "watm_dial_v1") (param i32) (result i32) (i32.const -1))
  (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 0))
  (func (export "watm_start_v1") (result i32) (i32.const 0)))"#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_failures_get_general_failure_and_one_log_line() {
    let mut c = Client::start();
    let echo = echo_server().await;
    let ss = module_path("shadowsocks");
    // Valid base64 of a config the module refuses: watm_init_v1 fails.
    let bad_config = [
        ("water-wasm", ss.to_str().unwrap()),
        ("water-config", "e30"),
    ];
    for _ in 0..2 {
        let got = socks_with_args(c.socks, &bad_config, echo).await;
        assert!(matches!(got, Socks::Refused(1)), "{got:?}");
    }
    let log = c.pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains("watm_init_v1 returned -EINVAL"), "{log}");
    let status = c.pt.expect_prefix("STATUS ");
    assert!(status.contains("CONNECT=Failed"), "{status}");
    // The second failure of the same kind added no line: the next one is the success.
    let mut s = socks_connect(c.socks, None, Target::Ip(echo))
        .await
        .stream();
    assert_eq!(roundtrip(&mut s, b"ok").await, b"ok");
    let next = c.pt.line();
    assert!(
        next.starts_with("STATUS ") && next.contains("CONNECT=Success"),
        "{next}"
    );

    // A module trapping in `_start`, before it could be given the caller socket.
    let trap = c.dir.path().join("trap.wasm");
    std::fs::write(&trap, trapping_start_module()).unwrap();
    let got = socks_with_args(c.socks, &[("water-wasm", trap.to_str().unwrap())], echo).await;
    assert!(matches!(got, Socks::Refused(1)), "{got:?}");
    let log = c.pt.expect_prefix("LOG SEVERITY=warning");
    assert!(log.contains("_start trapped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_socks_client_answers_a_failed_init() {
    let dir = TempDir::new("standalone-init");
    let trap = dir.path().join("trap.wasm");
    std::fs::write(&trap, trapping_start_module()).unwrap();
    let mut pt = PtChild::spawn(
        &[],
        &[
            "client",
            "--listen",
            "127.0.0.1:0",
            "--no-cache",
            "--wasm",
            trap.to_str().unwrap(),
        ],
    );
    let line = pt.wait_stderr("SOCKS5 client listening on ");
    let socks: SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
    let echo = echo_server().await;
    let got = socks_connect(socks, None, Target::Ip(echo)).await;
    assert!(matches!(got, Socks::Refused(1)), "{got:?}");
    pt.wait_stderr("_start trapped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_reply_never_goes_to_a_socket_that_took_the_callers_number() {
    // `watm_dial_v1` closes its caller fd and dials the bridge, which gets the same number.
    let module = wat::parse_str(
        r#"(module
  (import "env" "water_dial_fixed" (func $dial_fixed (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "watm_init_v1") (result i32) (i32.const 0))
  (func (export "watm_dial_v1") (param i32) (result i32)
    (drop (call $close (local.get 0)))
    (call $dial_fixed))
  (func (export "watm_ctrlpipe_v1") (param i32) (result i32) (i32.const 0))
  (func (export "watm_start_v1") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let c = Client::start();
    let path = c.dir.path().join("renumber.wasm");
    std::fs::write(&path, module).unwrap();
    let bridge = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = bridge.local_addr().unwrap();
    let got = socks_with_args(c.socks, &[("water-wasm", path.to_str().unwrap())], target).await;
    assert!(matches!(got, Socks::Refused(1)), "{got:?}");
    let (mut s, _) = bridge.accept().await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut seen))
        .await
        .expect("the failed session closes the bridge connection")
        .unwrap();
    assert!(seen.is_empty(), "the bridge got {seen:?}");
}
