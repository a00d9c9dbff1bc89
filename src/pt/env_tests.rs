use super::*;
use std::collections::HashMap;

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse_pairs(pairs: &[(&str, &str)]) -> Result<ManagedEnv, EnvError> {
    let map = env_of(pairs);
    parse(|k| map.get(k).cloned())
}

const CLIENT: &[(&str, &str)] = &[
    ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
    ("TOR_PT_STATE_LOCATION", "/var/lib/tor/pt_state/"),
    ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1"),
    ("TOR_PT_CLIENT_TRANSPORTS", "water"),
];

/// What tor 0.4.9 sends to a bridge with `ExtORPort auto`.
const SERVER: &[(&str, &str)] = &[
    ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
    ("TOR_PT_STATE_LOCATION", "/var/lib/tor/pt_state/"),
    ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1"),
    ("TOR_PT_SERVER_TRANSPORTS", "water"),
    ("TOR_PT_SERVER_BINDADDR", "water-127.0.0.1:4433"),
    ("TOR_PT_ORPORT", "127.0.0.1:9001"),
    ("TOR_PT_EXTENDED_SERVER_PORT", "127.0.0.1:37011"),
    (
        "TOR_PT_AUTH_COOKIE_FILE",
        "/var/lib/tor/extended_orport_auth_cookie",
    ),
];

fn with(base: &[(&str, &str)], changes: &[(&str, Option<&str>)]) -> Result<ManagedEnv, EnvError> {
    let mut map = env_of(base);
    for (k, v) in changes {
        match v {
            Some(v) => map.insert(k.to_string(), v.to_string()),
            None => map.remove(*k),
        };
    }
    parse(|k| map.get(k).cloned())
}

fn invalid_msg(r: Result<ManagedEnv, EnvError>) -> String {
    match r {
        Err(EnvError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn client_minimal() {
    let env = parse_pairs(CLIENT).unwrap();
    assert_eq!(env.state_location, PathBuf::from("/var/lib/tor/pt_state/"));
    assert!(env.exit_on_stdin_close);
    assert_eq!(env.outbound_bind_v4, None);
    assert_eq!(env.outbound_bind_v6, None);
    assert_eq!(
        env.client,
        Some(ClientEnv {
            transports: vec!["water".into()],
            proxy: None
        })
    );
    assert_eq!(env.server, None);
}

#[test]
fn client_keeps_proxy_raw_even_when_bogus_or_empty() {
    for raw in ["socks5://u:p@127.0.0.1:1080", "gopher://x", ""] {
        let env = with(CLIENT, &[("TOR_PT_PROXY", Some(raw))]).unwrap();
        assert_eq!(env.client.unwrap().proxy.as_deref(), Some(raw));
    }
}

#[test]
fn client_transport_list_order_and_empty_items() {
    let env = with(
        CLIENT,
        &[("TOR_PT_CLIENT_TRANSPORTS", Some("obfs4,water,,snowflake"))],
    )
    .unwrap();
    assert_eq!(
        env.client.unwrap().transports,
        vec!["obfs4", "water", "snowflake"]
    );
    let env = with(CLIENT, &[("TOR_PT_CLIENT_TRANSPORTS", Some(""))]).unwrap();
    assert_eq!(env.client.unwrap().transports, Vec::<String>::new());
}

#[test]
fn version_must_list_1() {
    for v in ["1", "2,1", "1,2", " 1 ", "3, 1"] {
        assert!(
            with(CLIENT, &[("TOR_PT_MANAGED_TRANSPORT_VER", Some(v))]).is_ok(),
            "{v}"
        );
    }
    for v in ["", "2", "11", "1.0", "2,3", "v1"] {
        assert_eq!(
            with(CLIENT, &[("TOR_PT_MANAGED_TRANSPORT_VER", Some(v))]),
            Err(EnvError::NoVersion),
            "{v}"
        );
    }
    assert_eq!(
        with(CLIENT, &[("TOR_PT_MANAGED_TRANSPORT_VER", None)]),
        Err(EnvError::NoVersion)
    );
    assert_eq!(EnvError::NoVersion.to_string(), "no-version");
}

#[test]
fn version_error_wins_over_other_errors() {
    assert_eq!(
        parse_pairs(&[("TOR_PT_MANAGED_TRANSPORT_VER", "2")]),
        Err(EnvError::NoVersion)
    );
}

#[test]
fn state_location_required() {
    let m = invalid_msg(with(CLIENT, &[("TOR_PT_STATE_LOCATION", None)]));
    assert_eq!(m, "TOR_PT_STATE_LOCATION: is not set");
    let m = invalid_msg(with(CLIENT, &[("TOR_PT_STATE_LOCATION", Some(""))]));
    assert_eq!(m, "TOR_PT_STATE_LOCATION: is empty");
}

#[test]
fn exit_on_stdin_close_values() {
    let get = |v: Option<&str>| {
        with(CLIENT, &[("TOR_PT_EXIT_ON_STDIN_CLOSE", v)]).map(|e| e.exit_on_stdin_close)
    };
    assert_eq!(get(Some("1")), Ok(true));
    assert_eq!(get(Some("0")), Ok(false));
    assert_eq!(get(Some("")), Ok(false));
    assert_eq!(get(None), Ok(false));
    // Anything but `1` means "don't exit", as in goptlib; never an ENV-ERROR.
    for other in ["yes", "true", "2", " 1", "1\n2"] {
        assert_eq!(get(Some(other)), Ok(false), "{other:?}");
    }
}

#[test]
fn path_variables_may_be_non_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let state = std::ffi::OsStr::from_bytes(b"/var/lib/tor-\xff/pt_state/").to_os_string();
    let cookie = std::ffi::OsStr::from_bytes(b"/var/lib/tor-\xff/cookie").to_os_string();
    let map = env_of(SERVER);
    let env = parse_with_paths(
        |k| map.get(k).cloned(),
        |k| match k {
            "TOR_PT_STATE_LOCATION" => Some(state.clone()),
            "TOR_PT_AUTH_COOKIE_FILE" => Some(cookie.clone()),
            _ => map.get(k).map(Into::into),
        },
    )
    .unwrap();
    assert_eq!(env.state_location.as_os_str(), state);
    assert_eq!(
        env.server.unwrap().auth_cookie_file.unwrap().as_os_str(),
        cookie
    );
}

#[test]
fn outbound_bind_addresses() {
    let env = with(
        CLIENT,
        &[
            ("TOR_PT_OUTBOUND_BIND_ADDRESS_V4", Some("192.0.2.7")),
            ("TOR_PT_OUTBOUND_BIND_ADDRESS_V6", Some("[2001:db8::7]")),
        ],
    )
    .unwrap();
    assert_eq!(env.outbound_bind_v4, Some(Ipv4Addr::new(192, 0, 2, 7)));
    assert_eq!(env.outbound_bind_v6, Some("2001:db8::7".parse().unwrap()));

    let env = with(CLIENT, &[("TOR_PT_OUTBOUND_BIND_ADDRESS_V6", Some("::1"))]).unwrap();
    assert_eq!(env.outbound_bind_v6, Some(Ipv6Addr::LOCALHOST));
    let env = with(CLIENT, &[("TOR_PT_OUTBOUND_BIND_ADDRESS_V4", Some(""))]).unwrap();
    assert_eq!(env.outbound_bind_v4, None);

    for (var, bad) in [
        ("TOR_PT_OUTBOUND_BIND_ADDRESS_V4", "::1"),
        ("TOR_PT_OUTBOUND_BIND_ADDRESS_V4", "1.2.3.4:5"),
        ("TOR_PT_OUTBOUND_BIND_ADDRESS_V6", "[::1"),
        ("TOR_PT_OUTBOUND_BIND_ADDRESS_V6", "[1.2.3.4]"),
        ("TOR_PT_OUTBOUND_BIND_ADDRESS_V6", "[::1]:5"),
    ] {
        let m = invalid_msg(with(CLIENT, &[(var, Some(bad))]));
        assert!(m.starts_with(var), "{m}");
    }
}

#[test]
fn neither_client_nor_server() {
    let m = invalid_msg(with(CLIENT, &[("TOR_PT_CLIENT_TRANSPORTS", None)]));
    assert!(m.contains("TOR_PT_CLIENT_TRANSPORTS"), "{m}");
    assert!(m.contains("TOR_PT_SERVER_TRANSPORTS"), "{m}");
}

#[test]
fn server_with_ext_orport() {
    let env = parse_pairs(SERVER).unwrap();
    assert_eq!(env.client, None);
    let s = env.server.unwrap();
    assert_eq!(s.transports, vec!["water"]);
    assert_eq!(
        s.bind_addrs,
        vec![("water".to_string(), "127.0.0.1:4433".parse().unwrap())]
    );
    assert_eq!(s.bind_addr("water"), "127.0.0.1:4433".parse().unwrap());
    assert_eq!(s.bind_addr("obfs4"), "0.0.0.0:0".parse().unwrap());
    assert_eq!(s.orport, Some("127.0.0.1:9001".parse().unwrap()));
    assert_eq!(s.ext_orport, Some("127.0.0.1:37011".parse().unwrap()));
    assert_eq!(
        s.auth_cookie_file,
        Some(PathBuf::from("/var/lib/tor/extended_orport_auth_cookie"))
    );
    assert!(s.options.is_empty());
    assert!(s.options_for("water").is_empty());
}

#[test]
fn server_with_plain_orport_and_empty_extended_port() {
    let env = with(
        SERVER,
        &[
            ("TOR_PT_EXTENDED_SERVER_PORT", Some("")),
            ("TOR_PT_AUTH_COOKIE_FILE", None),
        ],
    )
    .unwrap();
    let s = env.server.unwrap();
    assert_eq!(s.ext_orport, None);
    assert_eq!(s.auth_cookie_file, None);
    assert_eq!(s.orport, Some("127.0.0.1:9001".parse().unwrap()));
}

#[test]
fn server_ext_orport_only() {
    let env = with(SERVER, &[("TOR_PT_ORPORT", None)]).unwrap();
    assert_eq!(env.server.unwrap().orport, None);
}

#[test]
fn server_ext_orport_needs_cookie() {
    for cookie in [None, Some("")] {
        let m = invalid_msg(with(SERVER, &[("TOR_PT_AUTH_COOKIE_FILE", cookie)]));
        assert!(m.contains("TOR_PT_AUTH_COOKIE_FILE"), "{m}");
    }
}

#[test]
fn server_needs_some_orport() {
    let m = invalid_msg(with(
        SERVER,
        &[
            ("TOR_PT_ORPORT", None),
            ("TOR_PT_EXTENDED_SERVER_PORT", Some("")),
        ],
    ));
    assert!(m.contains("TOR_PT_ORPORT"), "{m}");
    assert!(m.contains("TOR_PT_EXTENDED_SERVER_PORT"), "{m}");
}

#[test]
fn server_bad_ports() {
    for (var, bad) in [
        ("TOR_PT_ORPORT", "localhost:9001"),
        ("TOR_PT_ORPORT", "9001"),
        ("TOR_PT_EXTENDED_SERVER_PORT", "::1:5"),
        ("TOR_PT_EXTENDED_SERVER_PORT", "127.0.0.1:70000"),
    ] {
        let m = invalid_msg(with(SERVER, &[(var, Some(bad))]));
        assert!(m.starts_with(&format!("{var}: ")), "{m}");
        assert!(m.contains(&format!("{bad:?}")), "{m}");
    }
    let env = with(SERVER, &[("TOR_PT_EXTENDED_SERVER_PORT", Some("[::1]:5"))]).unwrap();
    assert_eq!(
        env.server.unwrap().ext_orport,
        Some("[::1]:5".parse().unwrap())
    );
}

#[test]
fn client_and_server_together() {
    let env = with(SERVER, &[("TOR_PT_CLIENT_TRANSPORTS", Some("water"))]).unwrap();
    assert!(env.client.is_some() && env.server.is_some());
}

#[test]
fn bindaddr_absent_or_empty_uses_default() {
    for v in [None, Some("")] {
        let s = with(SERVER, &[("TOR_PT_SERVER_BINDADDR", v)])
            .unwrap()
            .server
            .unwrap();
        assert!(s.bind_addrs.is_empty());
        assert_eq!(s.bind_addr("water"), "0.0.0.0:0".parse().unwrap());
    }
}

#[test]
fn bindaddr_vectors() {
    let got = parse_bindaddr("water-0.0.0.0:0,obfs4-[::1]:443,w_2-[2001:db8::1]:65535").unwrap();
    assert_eq!(
        got,
        vec![
            ("water".to_string(), "0.0.0.0:0".parse().unwrap()),
            ("obfs4".to_string(), "[::1]:443".parse().unwrap()),
            ("w_2".to_string(), "[2001:db8::1]:65535".parse().unwrap()),
        ]
    );
    for (bad, needle) in [
        ("water", "transport-IP:PORT"),
        ("water:127.0.0.1:1", "transport-IP:PORT"),
        ("-127.0.0.1:1", "not a valid transport name"),
        ("9x-127.0.0.1:1", "not a valid transport name"),
        ("water-::1:5", "not an IP:PORT"),
        ("water-host.example:5", "not an IP:PORT"),
        ("water-127.0.0.1", "not an IP:PORT"),
        ("water-127.0.0.1:1,", "transport-IP:PORT"),
        ("water-127.0.0.1:1,water-127.0.0.1:2", "listed twice"),
    ] {
        let e = parse_bindaddr(bad).unwrap_err();
        assert!(e.contains(needle), "{bad}: {e}");
    }
    let m = invalid_msg(with(SERVER, &[("TOR_PT_SERVER_BINDADDR", Some("water"))]));
    assert!(m.starts_with("TOR_PT_SERVER_BINDADDR: "), "{m}");
}

#[test]
fn server_options_vectors() {
    let got = parse_server_transport_options(
        "water:water-wasm=a.wasm;obfs4:iat-mode=1;water:water-config=YWJj==",
    )
    .unwrap();
    assert_eq!(
        got.get("water").unwrap(),
        &vec![
            ("water-wasm".to_string(), "a.wasm".to_string()),
            ("water-config".to_string(), "YWJj==".to_string()),
        ]
    );
    assert_eq!(
        got.get("obfs4").unwrap(),
        &vec![("iat-mode".to_string(), "1".to_string())]
    );
    assert!(parse_server_transport_options("").unwrap().is_empty());
}

#[test]
fn server_options_escapes() {
    // tor escapes `:` `;` `\` but not `=`.
    let got =
        parse_server_transport_options(r"water:url=http\://x\;y;water:path=C\:\\dir;water:k=a=b")
            .unwrap();
    assert_eq!(
        got["water"],
        vec![
            ("url".to_string(), "http://x;y".to_string()),
            ("path".to_string(), r"C:\dir".to_string()),
            ("k".to_string(), "a=b".to_string()),
        ]
    );
    // Unescaped ':' after the name is literal; empty values are allowed; duplicates kept.
    let got = parse_server_transport_options("water:u=a:b;water:e=;water:e=2").unwrap();
    assert_eq!(
        got["water"],
        vec![
            ("u".to_string(), "a:b".to_string()),
            ("e".to_string(), String::new()),
            ("e".to_string(), "2".to_string()),
        ]
    );
}

#[test]
fn server_options_errors() {
    for (bad, needle) in [
        ("water", "no ':'"),
        ("water:k", "no '='"),
        ("water:=v", "empty key"),
        (":k=v", "not a valid transport name"),
        ("wa-ter:k=v", "not a valid transport name"),
        ("water:k=v;", "item 2 is empty"),
        ("water:k=v;;water:a=b", "item 2 is empty"),
        (r"water:k=v\", "lone backslash"),
        (r"water\:k=v", "no ':'"),
    ] {
        let e = parse_server_transport_options(bad).unwrap_err();
        assert!(e.contains(needle), "{bad}: {e}");
    }
    let m = invalid_msg(with(
        SERVER,
        &[("TOR_PT_SERVER_TRANSPORT_OPTIONS", Some("water:k"))],
    ));
    assert!(m.starts_with("TOR_PT_SERVER_TRANSPORT_OPTIONS: "), "{m}");
}

#[test]
fn server_options_in_env() {
    let s = with(
        SERVER,
        &[(
            "TOR_PT_SERVER_TRANSPORT_OPTIONS",
            Some("water:a=1;water:b=2"),
        )],
    )
    .unwrap()
    .server
    .unwrap();
    assert_eq!(
        s.options_for("water"),
        &[
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string())
        ]
    );
    assert!(s.options_for("obfs4").is_empty());
}

#[test]
fn transport_names() {
    for ok in ["water", "_x", "obfs4", "A_b_9"] {
        assert!(is_transport_name(ok), "{ok}");
    }
    for bad in ["", "9water", "wa-ter", "wa ter", "wäter", "water\n"] {
        assert!(!is_transport_name(bad), "{bad}");
    }
}

#[test]
fn supported_picks_water_only_once() {
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        supported_transports(&list(&["obfs4", "water", "water"])),
        vec!["water"]
    );
    assert!(supported_transports(&list(&["obfs4", "Water", "*"])).is_empty());
    assert!(supported_transports(&[]).is_empty());
}

#[test]
fn messages_are_single_line() {
    let m = invalid_msg(with(
        CLIENT,
        &[("TOR_PT_OUTBOUND_BIND_ADDRESS_V4", Some("1\n2"))],
    ));
    assert!(!m.contains('\n'), "{m}");
    let e = parse_bindaddr("water-\n").unwrap_err();
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn from_process_env_reads_real_environment() {
    // Only checks the wrapper is wired up: the test runner is not a managed proxy, so unless
    // someone runs the tests under tor this is NoVersion.
    if std::env::var_os("TOR_PT_MANAGED_TRANSPORT_VER").is_none() {
        assert_eq!(from_process_env(), Err(EnvError::NoVersion));
    }
}

#[test]
fn sweep_never_panics() {
    const ALPHABET: &[char] = &['w', '-', ':', ';', '=', '\\', '[', ']', '1', '.', ',', 'é'];
    let mut seed = 11u64;
    for _ in 0..20_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut x = seed;
        let len = (x % 20) as usize;
        let s: String = (0..len)
            .map(|_| {
                x = x.rotate_left(7) ^ 0x9e37_79b9_7f4a_7c15;
                ALPHABET[(x % ALPHABET.len() as u64) as usize]
            })
            .collect();
        let _ = parse_bindaddr(&s);
        let _ = parse_server_transport_options(&s);
        let _ = with(SERVER, &[("TOR_PT_SERVER_BINDADDR", Some(&s))]);
    }
}
