use super::*;
use crate::pt::args::{parse_socks_args, split_for_socks};

const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const FP: &str = "0123456789abcdef0123456789ABCDEF01234567";

fn pin() -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(HEX, &mut out).unwrap();
    out
}

fn from(pairs: &[(&str, &str)]) -> Result<BridgeArgs, BridgeArgsError> {
    BridgeArgs::from_pairs(pairs)
}

#[test]
fn empty_and_foreign_keys() {
    assert_eq!(from(&[]), Ok(BridgeArgs::default()));
    // Other transports' keys, and duplicates of them, are not ours to judge.
    assert_eq!(
        from(&[
            ("cert", "x"),
            ("cert", "y"),
            ("iat-mode", "0"),
            ("waterwasm", "z")
        ]),
        Ok(BridgeArgs::default())
    );
}

#[test]
fn all_three_keys() {
    let args = from(&[
        ("water-wasm", "a.wasm"),
        ("water-sha256", HEX),
        ("water-config", "eyJrIjoxfQ"),
    ])
    .unwrap();
    assert_eq!(args.wasm, Some(ModuleRef::Name("a.wasm".into())));
    assert_eq!(args.sha256, Some(pin()));
    assert_eq!(args.config.as_deref(), Some(&b"{\"k\":1}"[..]));
}

#[test]
fn sha256_accepts_either_case() {
    let upper = HEX.to_ascii_uppercase();
    assert_eq!(
        from(&[("water-sha256", &upper)]).unwrap().sha256,
        Some(pin())
    );
}

#[test]
fn sha256_errors() {
    for bad in [
        "",
        "abc",
        &HEX[..63],
        &format!("{HEX}0"),
        &format!("{}g", &HEX[..63]),
    ] {
        let e = from(&[("water-sha256", bad)]).unwrap_err();
        assert!(matches!(e, BridgeArgsError::Sha256(_)), "{bad}: {e:?}");
        assert!(e.to_string().starts_with("bridge argument water-sha256: "));
    }
    // 64 bytes but not 64 ASCII characters: never panics on slicing.
    let wide = "é".repeat(32);
    assert!(matches!(
        from(&[("water-sha256", &wide)]),
        Err(BridgeArgsError::Sha256(_))
    ));
}

#[test]
fn config_padding_optional() {
    // base64's "indifferent" mode: full, partial or no padding are all accepted.
    for v in ["YWJjZA", "YWJjZA==", "YWJjZA="] {
        let got = from(&[("water-config", v)]).unwrap();
        assert_eq!(got.config.as_deref(), Some(&b"abcd"[..]), "{v}");
    }
    for bad in ["YWJjZA===", "YW=JjZA", "=YWJjZA"] {
        assert!(
            matches!(
                from(&[("water-config", bad)]),
                Err(BridgeArgsError::Config(_))
            ),
            "{bad}"
        );
    }
    assert_eq!(
        from(&[("water-config", "")]).unwrap().config,
        Some(Vec::new())
    );
}

#[test]
fn config_url_safe_alphabet() {
    // 0xfb 0xff encodes as "-_8" in the URL-safe alphabet and "+/8" in the standard one.
    assert_eq!(
        from(&[("water-config", "-_8")]).unwrap().config,
        Some(vec![0xfb, 0xff])
    );
    let e = from(&[("water-config", "+/8")]).unwrap_err();
    assert!(e.to_string().contains("URL-safe"), "{e}");
    for bad in ["@@@@", "Y", "YW Jj"] {
        assert!(
            matches!(
                from(&[("water-config", bad)]),
                Err(BridgeArgsError::Config(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn unknown_water_key_is_named() {
    for key in ["water-foo", "Water-Wasm", "WATER-sha256", "water-"] {
        let e = from(&[(key, "x")]).unwrap_err();
        assert_eq!(e, BridgeArgsError::UnknownKey(key.into()));
        assert!(e.to_string().contains(&format!("{key:?}")), "{e}");
    }
}

#[test]
fn duplicate_key_is_named() {
    for key in KNOWN_KEYS {
        let v = match *key {
            KEY_SHA256 => HEX,
            KEY_FETCH => "443",
            KEY_FETCH_KEY => KEY,
            _ => "YQ",
        };
        let e = from(&[(key, v), ("other", "x"), (key, v)]).unwrap_err();
        assert_eq!(e, BridgeArgsError::DuplicateKey(key.to_string()));
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn wasm_errors_pass_through() {
    let e = from(&[("water-wasm", "https://x/y.wasm")]).unwrap_err();
    assert!(matches!(
        e,
        BridgeArgsError::Wasm(ModuleRefError::UnsupportedScheme { .. })
    ));
    assert!(
        e.to_string().starts_with("bridge argument water-wasm: "),
        "{e}"
    );
    assert!(matches!(
        from(&[("water-wasm", "../x.wasm")]),
        Err(BridgeArgsError::Wasm(ModuleRefError::ParentDir(_)))
    ));
}

#[test]
fn module_path_rules() {
    let dir = Path::new("/state/modules");
    let by_name = from(&[("water-wasm", "a.wasm"), ("water-sha256", HEX)]).unwrap();
    assert_eq!(by_name.module_path(dir), Some(dir.join("a.wasm")));
    // A file: URL names a path the platform's way (with a drive on Windows).
    let (url, path) = if cfg!(windows) {
        ("file:///C:/opt/b.wasm", r"C:\opt\b.wasm")
    } else {
        ("file:///opt/b.wasm", "/opt/b.wasm")
    };
    let by_path = from(&[("water-wasm", url)]).unwrap();
    assert_eq!(by_path.module_path(dir), Some(PathBuf::from(path)));
    let pinned = from(&[("water-sha256", &HEX.to_ascii_uppercase())]).unwrap();
    assert_eq!(
        pinned.module_path(dir),
        Some(dir.join(format!("{HEX}.wasm")))
    );
    assert_eq!(BridgeArgs::default().module_path(dir), None);
}

#[test]
fn to_pairs_is_canonical_and_round_trips() {
    let args = BridgeArgs {
        wasm: Some(ModuleRef::Path("/opt/m.wasm".into())),
        sha256: Some(pin()),
        config: Some(vec![0xfb, 0xff, 0x00]),
        fetch: Some(FetchArgs {
            port: 8443,
            key: KEY.into(),
        }),
    };
    let pairs = args.to_pairs();
    assert_eq!(
        pairs,
        vec![
            ("water-wasm".to_string(), "/opt/m.wasm".to_string()),
            ("water-sha256".to_string(), HEX.to_string()),
            ("water-config".to_string(), "-_8A".to_string()),
            ("water-fetch".to_string(), "8443".to_string()),
            ("water-fetch-key".to_string(), KEY.to_string()),
        ]
    );
    assert_eq!(BridgeArgs::from_pairs(&pairs), Ok(args));
    assert!(BridgeArgs::default().to_pairs().is_empty());
}

/// 32 bytes as unpadded base64url, as a bridge generates its delivery key.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

#[test]
fn fetch_keys_come_in_pairs_and_are_checked() {
    let args = from(&[("water-fetch", "8443"), ("water-fetch-key", KEY)]).unwrap();
    assert_eq!(
        args.fetch,
        Some(FetchArgs {
            port: 8443,
            key: KEY.into()
        })
    );
    let err = |pairs: &[(&str, &str)]| from(pairs).unwrap_err().to_string();
    assert!(err(&[("water-fetch", "8443")]).contains("needs water-fetch-key"));
    assert!(err(&[("water-fetch-key", KEY)]).contains("needs water-fetch too"));
    for port in ["0", "65536", "+80", "-1", "", "80a"] {
        let e = err(&[("water-fetch", port), ("water-fetch-key", KEY)]);
        assert!(e.contains("is not a port"), "{port}: {e}");
    }
    let e = err(&[("water-fetch", "1"), ("water-fetch-key", "AAEC")]);
    assert!(e.contains("3 bytes"), "{e}");
    let e = err(&[("water-fetch", "1"), ("water-fetch-key", "a+b/")]);
    assert!(e.contains("base64"), "{e}");
}

#[test]
fn through_socks_end_to_end() {
    // What a client PT sees for `Bridge water ... water-wasm=a;b.wasm water-config=eyJ9`.
    let (u, p) = split_for_socks(br"water-wasm=a\;b.wasm;water-config=eyJ9").unwrap();
    let pairs = parse_socks_args(&u, &p).unwrap();
    let args = BridgeArgs::from_pairs(&pairs).unwrap();
    assert_eq!(args.wasm, Some(ModuleRef::Name("a;b.wasm".into())));
    assert_eq!(args.config.as_deref(), Some(&b"{\"}"[..]));
}

#[test]
fn bridge_line_vectors() {
    let addr: SocketAddr = "192.0.2.1:443".parse().unwrap();
    assert_eq!(
        bridge_line::<&str, &str>(addr, Some(FP), &[]).unwrap(),
        "Bridge water 192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567"
    );
    assert_eq!(
        bridge_line(
            "[2001:db8::1]:9".parse().unwrap(),
            None,
            &[("water-sha256", HEX), ("water-config", "e30")]
        )
        .unwrap(),
        format!("Bridge water [2001:db8::1]:9 water-sha256={HEX} water-config=e30")
    );
    let args = BridgeArgs {
        wasm: Some(ModuleRef::Name("m.wasm".into())),
        sha256: None,
        config: Some(b"{}".to_vec()),
        fetch: None,
    };
    assert_eq!(
        bridge_line(addr, Some(FP), &args.to_pairs()).unwrap(),
        format!(
            "Bridge water 192.0.2.1:443 {} water-wasm=m.wasm water-config=e30",
            FP.to_ascii_uppercase()
        )
    );
}

#[test]
fn bridge_line_errors() {
    let addr: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let none: &[(&str, &str)] = &[];
    for fp in [
        "",
        "0123",
        &format!("{FP}0"),
        &FP.replace('0', "g"),
        &FP.replace('A', " "),
    ] {
        assert!(
            matches!(
                bridge_line(addr, Some(fp), none),
                Err(BridgeLineError::Fingerprint(_))
            ),
            "{fp}"
        );
    }
    for (k, v) in [
        ("", "v"),
        ("a=b", "v"),
        ("k", "a b"),
        ("k", "a\nb"),
        ("k k", "v"),
    ] {
        let e = bridge_line(addr, None, &[(k, v)]).unwrap_err();
        assert!(matches!(e, BridgeLineError::Arg { .. }), "{k}={v}: {e:?}");
    }
    let e = bridge_line(addr, None, &[("water-config", "a b")]).unwrap_err();
    assert!(e.to_string().contains("\"water-config\""), "{e}");
    // Fits: 2 + 508 bytes. Too long: one more.
    let ok = "x".repeat(508);
    assert!(bridge_line(addr, None, &[("k", ok.as_str())]).is_ok());
    let long = "x".repeat(509);
    assert_eq!(
        bridge_line(addr, None, &[("k", long.as_str())]),
        Err(BridgeLineError::Socks(ArgsError::TooLong { len: 511 }))
    );
    // Escaping counts: each ';' costs two bytes once tor escapes it.
    let semis = ";".repeat(255);
    assert!(matches!(
        bridge_line(addr, None, &[("k", semis.as_str())]),
        Err(BridgeLineError::Socks(ArgsError::TooLong { .. }))
    ));
}
