//! Dialing tests against the proxies in `test_proxies`, each forwarding to a loopback echo
//! server and reporting what it saw.

use super::test_proxies::*;
use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

fn opts(proxy: Option<ProxyUrl>) -> DialOptions {
    DialOptions {
        timeout: Duration::from_secs(10),
        bind_v4: None,
        bind_v6: None,
        proxy,
    }
}

/// Checks that `stream` starts with the proxy's banner and then echoes.
fn assert_tunnel(mut stream: TcpStream, banner: bool) {
    if banner {
        let mut got = vec![0u8; BANNER.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(got, BANNER);
    }
    stream.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    stream.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"ping");
    assert_eq!(
        stream.read_timeout().unwrap(),
        None,
        "handshake timeouts must be cleared"
    );
}

// ---- SOCKS5 ------------------------------------------------------------------------------

#[test]
fn socks5_no_auth_ip_target() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, socks5_server(None, 0, BND_V4.to_vec()));
    let url = ProxyUrl::parse(&format!("socks5://{paddr}")).unwrap();
    let stream = dial(&opts(Some(url)), "tcp", &echo.to_string()).unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        Ok(format!("socks5 method=0 atyp=1 target={echo}"))
    );
    assert_tunnel(stream, true);
}

#[test]
fn socks5_userpass_hostname_goes_unresolved() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(
        echo,
        socks5_server(Some(("user", "p@ss:w%rd")), 0, BND_V4.to_vec()),
    );
    // Raw credentials exactly as tor writes them into TOR_PT_PROXY.
    let url = ProxyUrl::parse(&format!("socks5://user:p@ss:w%rd@{paddr}")).unwrap();
    // `.invalid` never resolves (RFC 6761): this only works if the name reaches the proxy.
    let stream = dial(&opts(Some(url)), "tcp4", "echo.invalid:7").unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        Ok("socks5 method=2 atyp=3 target=echo.invalid:7".into())
    );
    assert_tunnel(stream, true);
}

#[test]
fn socks5_ipv6_target_and_variable_bound_addresses() {
    let mut bnd_name = vec![3, 4];
    bnd_name.extend_from_slice(b"bind");
    bnd_name.extend_from_slice(&[0, 1]);
    let mut bnd_v6 = vec![4];
    bnd_v6.extend_from_slice(&[0xfe; 16]);
    bnd_v6.extend_from_slice(&[0, 2]);
    for bnd in [bnd_name, bnd_v6] {
        let echo = echo_server();
        let (paddr, rx) = spawn_proxy(echo, socks5_server(None, 0, bnd.clone()));
        let url = ProxyUrl::Socks5 {
            addr: paddr,
            auth: None,
        };
        let stream = dial(&opts(Some(url)), "tcp6", "[2001:db8::5]:443").unwrap();
        assert_eq!(
            rx.recv().unwrap(),
            Ok("socks5 method=0 atyp=4 target=[2001:db8::5]:443".into())
        );
        assert_tunnel(stream, true);
    }
}

#[test]
fn socks5_bad_credentials_fail() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(
        echo,
        socks5_server(Some(("user", "right")), 0, BND_V4.to_vec()),
    );
    let url = ProxyUrl::Socks5 {
        addr: paddr,
        auth: Some(("user".into(), "wrong".into())),
    };
    let err = dial(&opts(Some(url)), "tcp", &echo.to_string()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("socks5 proxy {paddr}")), "{msg}");
    assert!(
        msg.contains("authentication rejected (status 0x01)"),
        "{msg}"
    );
    assert_eq!(rx.recv().unwrap(), Err("bad credentials".into()));
}

#[test]
fn socks5_proxy_wanting_credentials_we_lack() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, socks5_server(Some(("u", "p")), 0, BND_V4.to_vec()));
    let err = dial(
        &opts(Some(ProxyUrl::Socks5 {
            addr: paddr,
            auth: None,
        })),
        "tcp",
        &echo.to_string(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("reply 0xff"), "{err}");
    assert!(rx.recv().unwrap().is_err());
}

#[test]
fn socks5_connect_failure_reports_reply_code() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, socks5_server(None, 5, BND_V4.to_vec()));
    let err = dial(
        &opts(Some(ProxyUrl::Socks5 {
            addr: paddr,
            auth: None,
        })),
        "tcp",
        "example.com:443",
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("CONNECT to example.com:443 failed: reply 0x05 (connection refused)"),
        "{msg}"
    );
    assert_eq!(rx.recv().unwrap(), Err("refused with 5".into()));
}

#[test]
fn socks5_reply_codes_map_to_error_kinds() {
    use io::ErrorKind as K;
    let table = [
        (1, K::Other),
        (2, K::PermissionDenied),
        (3, K::NetworkUnreachable),
        (4, K::HostUnreachable),
        (5, K::ConnectionRefused),
        (6, K::TimedOut),
        (7, K::Unsupported),
        (8, K::Unsupported),
        (9, K::Other),
    ];
    for (code, kind) in table {
        assert_eq!(handshake_reply_kind(code), kind, "code {code}");
    }
}

fn handshake_reply_kind(code: u8) -> io::ErrorKind {
    let echo = echo_server();
    let (paddr, _rx) = spawn_proxy(echo, socks5_server(None, code, BND_V4.to_vec()));
    dial(
        &opts(Some(ProxyUrl::Socks5 {
            addr: paddr,
            auth: None,
        })),
        "tcp",
        "10.1.2.3:80",
    )
    .unwrap_err()
    .kind()
}

// ---- SOCKS4a -----------------------------------------------------------------------------

#[test]
fn socks4a_hostname_form() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, socks4a_server(90));
    let url = ProxyUrl::parse(&format!("socks4a://{paddr}")).unwrap();
    let stream = dial(&opts(Some(url)), "tcp", "echo.invalid:7").unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        Ok("socks4a ip=0.0.0.1 user=[] target=echo.invalid:7".into())
    );
    assert_tunnel(stream, true);
}

#[test]
fn socks4a_ip_form() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, socks4a_server(90));
    let stream = dial(
        &opts(Some(ProxyUrl::Socks4a { addr: paddr })),
        "tcp",
        &echo.to_string(),
    )
    .unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        Ok(format!("socks4a ip=127.0.0.1 user=[] target={echo}"))
    );
    assert_tunnel(stream, true);
}

#[test]
fn socks4a_rejection_reports_code() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, socks4a_server(91));
    let err = dial(
        &opts(Some(ProxyUrl::Socks4a { addr: paddr })),
        "tcp",
        "echo.invalid:7",
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        err.to_string()
            .contains("reply 0x5b (request rejected or failed)"),
        "{err}"
    );
    assert!(rx.recv().unwrap().is_err());
}

#[test]
fn socks4a_refuses_ipv6_before_connecting() {
    // Nothing listens on the proxy address: a connection attempt would give ConnectionRefused.
    let url = ProxyUrl::Socks4a {
        addr: unused_addr(),
    };
    let err = dial(&opts(Some(url)), "tcp", "[::1]:80").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}

// ---- HTTP CONNECT ------------------------------------------------------------------------

#[test]
fn http_connect_with_basic_auth() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, http_server(Some(("bob", "pa:ss@%20"))));
    let url = ProxyUrl::parse(&format!("http://bob:pa:ss@%20@{paddr}")).unwrap();
    let stream = dial(&opts(Some(url)), "tcp", "echo.invalid:7").unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        Ok("CONNECT echo.invalid:7 HTTP/1.1 auth=Some(\"bob:pa:ss@%20\")".into())
    );
    assert_tunnel(stream, true);
}

#[test]
fn http_connect_ipv6_target_without_auth() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, http_server(None));
    let stream = dial(
        &opts(Some(ProxyUrl::Http {
            addr: paddr,
            auth: None,
        })),
        "tcp",
        "[::1]:8443",
    )
    .unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        Ok("CONNECT [::1]:8443 HTTP/1.1 auth=None".into())
    );
    assert_tunnel(stream, true);
}

#[test]
fn http_connect_bad_credentials_fail() {
    let echo = echo_server();
    let (paddr, rx) = spawn_proxy(echo, http_server(Some(("bob", "secret"))));
    let url = ProxyUrl::Http {
        addr: paddr,
        auth: Some(("bob".into(), "nope".into())),
    };
    let err = dial(&opts(Some(url)), "tcp", "echo.invalid:7").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("http proxy {paddr}")), "{msg}");
    assert!(msg.contains("407 Proxy Authentication Required"), "{msg}");
    assert!(rx.recv().unwrap().is_err());
}

#[test]
fn http_malformed_status_line() {
    let echo = echo_server();
    let (paddr, _rx) = spawn_proxy(echo, |s: &mut TcpStream| {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.extend(read_n(s, 1)?);
        }
        s.write_all(b"SSH-2.0-nope\r\n\r\n").unwrap();
        Err("sent garbage".into())
    });
    let err = dial(
        &opts(Some(ProxyUrl::Http {
            addr: paddr,
            auth: None,
        })),
        "tcp",
        "a.invalid:1",
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(
        err.to_string().contains("malformed CONNECT response"),
        "{err}"
    );
}

// ---- timeouts and unreachable proxies ------------------------------------------------------

#[test]
fn silent_proxy_times_out_naming_the_step() {
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    let (paddr, rx) = spawn_proxy(unused_addr(), move |s: &mut TcpStream| {
        let _greeting = read_n(s, 3)?;
        let _ = hold_rx.recv(); // keep the connection open, silent, until the test is done
        Err("held".into())
    });
    let mut o = opts(Some(ProxyUrl::Socks5 {
        addr: paddr,
        auth: None,
    }));
    o.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = dial(&o, "tcp", "10.0.0.1:80").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(
        err.to_string()
            .contains("reading method selection: timed out"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(hold_tx);
    assert_eq!(rx.recv().unwrap(), Err("held".into()));
}

#[test]
fn unreachable_proxy_is_named() {
    let paddr = unused_addr();
    let err = dial(
        &opts(Some(ProxyUrl::Http {
            addr: paddr,
            auth: None,
        })),
        "tcp",
        "a.invalid:1",
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("http proxy {paddr}: connecting")),
        "{err}"
    );
}

#[test]
fn zero_timeout_fails_at_once() {
    let mut o = opts(None);
    o.timeout = Duration::ZERO;
    let err = dial(&o, "tcp", &echo_server().to_string()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
}

/// A loopback address on which nothing listens (the port was just released).
fn unused_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

// ---- direct dialing ----------------------------------------------------------------------

#[test]
fn direct_ip_and_hostname() {
    let echo = echo_server();
    assert_tunnel(dial(&opts(None), "tcp", &echo.to_string()).unwrap(), false);
    let by_name = format!("localhost:{}", echo.port());
    assert_tunnel(dial(&opts(None), "tcp4", &by_name).unwrap(), false);
}

#[test]
fn direct_connection_refused() {
    let addr = unused_addr();
    let err = dial(&opts(None), "tcp", &addr.to_string()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        err.to_string().contains(&format!("connecting to {addr}")),
        "{err}"
    );
}

#[test]
fn bind_address_is_skipped_for_loopback() {
    // 192.0.2.1 (TEST-NET-1) is not a local address: binding to it would fail.
    let echo = echo_server();
    let mut o = opts(None);
    o.bind_v4 = Some(Ipv4Addr::new(192, 0, 2, 1));
    assert_tunnel(dial(&o, "tcp", &echo.to_string()).unwrap(), false);
}

#[test]
fn bind_address_is_used_for_other_destinations() {
    // The bind fails (the address is not local) before any packet is sent, which proves it
    // was attempted for a non-loopback destination.
    let mut o = opts(None);
    o.bind_v4 = Some(Ipv4Addr::new(192, 0, 2, 99));
    let err = dial(&o, "tcp", "192.0.2.1:9").unwrap_err();
    assert!(
        err.to_string()
            .contains("binding to outbound address 192.0.2.99"),
        "{err}"
    );
}

#[test]
fn bind_address_choice() {
    let o = DialOptions {
        timeout: Duration::from_secs(1),
        bind_v4: Some(Ipv4Addr::new(198, 51, 100, 1)),
        bind_v6: Some("2001:db8::1".parse().unwrap()),
        proxy: None,
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        bind_addr_for(&o, ip("203.0.113.5")),
        Some(ip("198.51.100.1"))
    );
    assert_eq!(
        bind_addr_for(&o, ip("2001:db8::99")),
        Some(ip("2001:db8::1"))
    );
    assert_eq!(bind_addr_for(&o, ip("127.0.0.1")), None);
    assert_eq!(bind_addr_for(&o, ip("127.8.9.10")), None);
    assert_eq!(bind_addr_for(&o, ip("::1")), None);
    assert_eq!(bind_addr_for(&o, ip("::ffff:127.0.0.1")), None);
    assert_eq!(bind_addr_for(&opts(None), ip("203.0.113.5")), None);
}

#[test]
fn rejects_bad_networks_and_addresses() {
    let table = [
        ("udp", "127.0.0.1:1"),
        ("tcp6", "127.0.0.1:1"),
        ("tcp4", "[::1]:1"),
        ("tcp", "nohost"),
        ("tcp", "host:"),
        ("tcp", ":80"),
        ("tcp", "[::1"),
        ("tcp", "[::1]"),
        ("tcp", "::1:80"),
        ("tcp", "host:99999"),
        ("tcp", "host:0"),
        ("tcp", "bad host:80"),
        ("tcp", "bad\r\nhost:80"),
    ];
    for (network, address) in table {
        let err = dial(&opts(None), network, address).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "{network} {address}: {err}"
        );
    }
    let long = format!("{}:80", "a".repeat(256));
    assert_eq!(
        dial(&opts(None), "tcp", &long).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn split_host_port_vectors() {
    assert_eq!(
        split_host_port("1.2.3.4:5").unwrap(),
        (Host::Ip("1.2.3.4".parse().unwrap()), 5)
    );
    assert_eq!(
        split_host_port("[::1]:443").unwrap(),
        (Host::Ip("::1".parse().unwrap()), 443)
    );
    assert_eq!(
        split_host_port("example.org:80").unwrap(),
        (Host::Name("example.org".into()), 80)
    );
    assert_eq!(
        HostPort(&Host::Ip("::1".parse().unwrap()), 9).to_string(),
        "[::1]:9"
    );
}

#[test]
fn options_can_be_shared_with_module_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<DialOptions>();
    assert_send_sync::<ProxyUrl>();
}
