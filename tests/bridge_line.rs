//! A bridge line is all a client needs: the built-in catalogue, self-keyed bridges, errors at
//! start that say what to fix. Both sides are the real binary, launched as tor launches it.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::pt::*;
use common::{echo_server, roundtrip};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// A bridge forwarding to `orport` with `options` (`TOR_PT_SERVER_TRANSPORT_OPTIONS`).
fn bridge_env(dir: &TempDir, orport: &str, options: &str) -> Vec<(&'static str, String)> {
    let mut env = server_env(&dir.state(), orport);
    if !options.is_empty() {
        env.push(("TOR_PT_SERVER_TRANSPORT_OPTIONS", options.into()));
    }
    env
}

/// The `k=v` arguments of the line in `water_bridgeline.txt`.
fn bridge_line_args(dir: &TempDir) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.path().join("pt_state/water_bridgeline.txt")).unwrap();
    let line = text.lines().find(|l| l.starts_with("Bridge ")).unwrap();
    line.split(' ')
        .skip(4)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A launched bridge, its transport address, its `ARGS:` and the `LOG` lines before them.
struct Bridge {
    pt: PtChild,
    addr: std::net::SocketAddr,
    args: String,
    logs: Vec<String>,
}

fn start_bridge(dir: &TempDir, orport: &str, options: &str, args: &[&str]) -> Bridge {
    let mut pt = PtChild::spawn(&env_refs(&bridge_env(dir, orport, options)), args);
    assert_eq!(pt.line(), "VERSION 1");
    let mut logs = Vec::new();
    let smethod = loop {
        let l = pt.line();
        match l.strip_prefix("SMETHOD water ") {
            Some(rest) => break rest.to_owned(),
            None if l.starts_with("LOG ") => logs.push(l),
            None => panic!("expected SMETHOD, got {l}"),
        }
    };
    assert_eq!(pt.line(), "SMETHODS DONE");
    let (addr, args) = smethod.split_once(" ARGS:").unwrap();
    Bridge {
        pt,
        addr: addr.parse().unwrap(),
        args: args.to_owned(),
        logs,
    }
}

/// A bridge told only `water-wasm=shadowsocks` keys itself: a private secret file, a line with
/// the built-in module's digest and the client config; a client with no module files at all
/// (a `water-sha256` pin of a built-in module) connects with exactly that line; a restart keeps
/// the secret, so the old line still works.
#[tokio::test(flavor = "multi_thread")]
async fn self_keyed_bridge_line_works_from_the_catalogue_and_survives_a_restart() {
    let orport = echo_server().await.to_string();
    let bridge_dir = TempDir::new("keyed-bridge");
    let mut bridge = start_bridge(&bridge_dir, &orport, "water:water-wasm=shadowsocks", &[]);
    let (addr, published) = (bridge.addr, bridge.args.clone());
    assert!(
        bridge
            .logs
            .iter()
            .any(|l| l.contains("new per-bridge secret")),
        "{:?}",
        bridge.logs
    );
    assert_eq!(
        bridge.pt.transcript[1],
        format!(
            "STATUS TYPE=version IMPLEMENTATION=water-pt VERSION={}",
            env!("CARGO_PKG_VERSION")
        )
    );
    let ss = water_pt::pt::catalogue::by_name("shadowsocks").unwrap();
    let args = bridge_line_args(&bridge_dir);
    assert_eq!(args[0], ("water-sha256".into(), ss.sha256_hex()));
    assert_eq!(args[1].0, "water-config");
    assert_eq!(
        published,
        format!("water-sha256={},water-config={}", args[0].1, args[1].1)
    );
    let client_config = String::from_utf8(URL_SAFE_NO_PAD.decode(&args[1].1).unwrap()).unwrap();
    let secrets = bridge_dir.path().join("pt_state/water_secrets");
    let secret_text = std::fs::read_to_string(&secrets).unwrap();
    let password = secret_text
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(password).unwrap().len(), 32);
    assert!(client_config.contains(password), "{client_config}");
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The client: a fresh state directory, no module files anywhere.
    let client_dir = TempDir::new("keyed-client");
    let mut client = PtChild::spawn(&env_refs(&client_env(&client_dir.state())), &[]);
    let socks = client.client_ready();
    let pairs: Vec<(&str, &str)> = args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut s = socks_with_args(socks, &pairs, addr).await.stream();
    assert_eq!(
        roundtrip(&mut s, b"through shadowsocks").await,
        b"through shadowsocks"
    );
    drop(s);
    let watm_dir = client_dir.path().join("pt_state/watm");
    assert!(watm_dir.is_dir(), "the module directory is created");
    assert_eq!(
        std::fs::read_dir(&watm_dir).unwrap().count(),
        0,
        "no module file needed"
    );

    // Restart: same secret, same line; the client's old line still works.
    bridge.pt.close_stdin();
    assert!(bridge.pt.wait_exit().success());
    // At exit, the statistics: one line per module, no address.
    let stats = bridge
        .pt
        .transcript
        .iter()
        .find(|l| l.contains("water stats (at exit)"))
        .unwrap_or_else(|| panic!("{:?}", bridge.pt.transcript));
    assert!(
        stats.starts_with(
            "LOG SEVERITY=notice MESSAGE=\"water stats (at exit): bridge shadowsocks: 1 accepted"
        ),
        "{stats}"
    );
    let metrics = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().to_string()
    };
    let mut again = start_bridge(
        &bridge_dir,
        &orport,
        "water:water-wasm=shadowsocks",
        &["--stats-interval-secs", "1", "--metrics-listen", &metrics],
    );
    let addr2 = again.addr;
    assert_eq!(
        again.args, published,
        "the restarted bridge publishes the same line"
    );
    assert!(again.logs.is_empty(), "no new secret: {:?}", again.logs);
    assert_eq!(std::fs::read_to_string(&secrets).unwrap(), secret_text);
    let mut s = socks_with_args(socks, &pairs, addr2).await.stream();
    assert_eq!(
        roundtrip(&mut s, b"after a restart").await,
        b"after a restart"
    );
    // The periodic report, here every second.
    let periodic = again
        .pt
        .expect_prefix("LOG SEVERITY=notice MESSAGE=\"water stats (last 1s)");
    assert!(
        periodic.contains("bridge shadowsocks: 1 accepted"),
        "{periodic}"
    );
    // Once the connection is over, a report counts it completed, with the bytes the module
    // moved each way on the network (the message and Shadowsocks' framing around it).
    drop(s);
    let done = loop {
        let l = again
            .pt
            .expect_prefix("LOG SEVERITY=notice MESSAGE=\"water stats (last 1s)");
        if l.contains("1 completed") {
            break l;
        }
    };
    let count = |unit: &str| -> u64 {
        let head = &done[..done.find(unit).unwrap_or_else(|| panic!("{done}"))];
        head.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(
        count(" bytes in") > 15 && count(" bytes out") > 15,
        "{done}"
    );
}

/// Each bad input fails at start, naming what to fix.
#[test]
fn bad_bridge_options_fail_at_start_naming_the_fix() {
    let bad_config = URL_SAFE_NO_PAD.encode(r#"{"method":"rot13","password":"x"}"#);
    let unknown = "ab".repeat(32);
    for (options, needles) in [
        (
            format!("water:water-wasm=shadowsocks;water:water-config={bad_config}"),
            vec!["refused its configuration", "unsupported method", "rot13"],
        ),
        (
            format!("water:water-sha256={unknown}"),
            vec![
                "not built in",
                "plain, shadowsocks",
                &*format!("pt_state/watm/{unknown}.wasm"),
            ],
        ),
        (
            "water:water-wasm=nosuchmodule".into(),
            vec!["pt_state/watm/nosuchmodule", "put the module there"],
        ),
    ] {
        let dir = TempDir::new("badopt");
        let env = bridge_env(&dir, "127.0.0.1:9", &options);
        let mut pt = PtChild::spawn(&env_refs(&env), &[]);
        assert_eq!(pt.line(), "VERSION 1");
        let l = pt.line();
        assert!(l.starts_with("SMETHOD-ERROR water "), "{options}: {l}");
        for n in &needles {
            assert!(l.contains(n), "{options}: {l} lacks {n:?}");
        }
        assert_eq!(pt.line(), "SMETHODS DONE");
        assert!(dir.path().join("pt_state/watm").is_dir());
    }
}

fn water_pt(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The operator's commands: modules, check, bridge-line, encode-config; and standalone errors
/// at start.
#[test]
fn operator_commands() {
    let (ok, out, _) = water_pt(&["modules"]);
    assert!(ok);
    for b in water_pt::pt::catalogue::BUILTINS {
        let row = out.lines().find(|l| l.starts_with(b.name)).unwrap();
        assert!(
            row.contains(&b.sha256_hex()) && row.contains(&b.wasm.len().to_string()),
            "{row}"
        );
    }

    let dir = TempDir::new("ops");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"method":"rot13","password":"x"}"#).unwrap();
    let bad = bad.to_str().unwrap();
    let (ok, _, err) = water_pt(&["check", "--wasm", "shadowsocks", "--config", bad]);
    assert!(!ok);
    assert!(
        err.contains("unsupported method") && err.contains("rot13"),
        "{err}"
    );
    let (ok, out, _) = water_pt(&["check", "--wasm", "plain.wasm", "--role", "listener"]);
    assert!(ok && out.starts_with("ok: module "), "{out}");

    let (ok, out, _) = water_pt(&["encode-config", bad]);
    assert!(ok);
    let value = out.trim().strip_prefix("water-config=").unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(value).unwrap(),
        std::fs::read(bad).unwrap()
    );

    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let line = |extra: &[&str]| {
        let mut args = vec!["bridge-line", "--state-dir", state, "--wasm", "shadowsocks"];
        args.extend_from_slice(extra);
        let (ok, out, err) = water_pt(&args);
        assert!(ok, "{err}");
        out.trim().to_owned()
    };
    let first = line(&[]);
    assert!(
        first.starts_with("Bridge water <ADDRESS:PORT> <FINGERPRINT> water-sha256="),
        "{first}"
    );
    let fp = "0123456789ABCDEF0123456789ABCDEF01234567";
    let second = line(&["--addr", "192.0.2.1:443", "--fingerprint", fp]);
    assert_eq!(
        second,
        first.replace(
            "<ADDRESS:PORT> <FINGERPRINT>",
            &format!("192.0.2.1:443 {fp}")
        ),
        "the same secret both times"
    );

    // A module that is not built in: the line also says where to download it, once the
    // delivery port is known (a bridge remembers the one it chose in water_fetch_port).
    let rot = common::module_path("rot");
    let rot = rot.to_str().unwrap();
    let (ok, out, err) = water_pt(&["bridge-line", "--state-dir", state, "--wasm", rot]);
    assert!(ok, "{err}");
    assert!(!out.contains("water-fetch"), "{out}");
    assert!(err.contains("port chosen at its first start"), "{err}");
    std::fs::write(dir.path().join("state/water_fetch_port"), "40123\n").unwrap();
    let (ok, out, err) = water_pt(&["bridge-line", "--state-dir", state, "--wasm", rot]);
    assert!(ok, "{err}");
    assert!(out.contains(" water-fetch=40123 water-fetch-key="), "{out}");

    let (ok, _, err) = water_pt(&["server", "--listen", "127.0.0.1:0", "--forward", "nohost"]);
    assert!(!ok && err.contains("--forward nohost"), "{err}");
    let (ok, _, err) = water_pt(&["--max-connections", "1", "modules"]);
    assert!(
        !ok && err.contains("--max-connections does not apply"),
        "{err}"
    );
}

/// Under an address-space limit the runtime reserves fewer connection slots instead of not
/// starting, and says in one line which option trades capacity for address space.
#[test]
fn an_address_space_limit_shrinks_the_pool_with_one_line_naming_the_option() {
    let out = Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 4000000 && exec \"$0\" check --wasm plain")
        .arg(binary())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<_> = err
        .lines()
        .filter(|l| l.contains("could not reserve"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("--max-memory-mib"), "{err}");
}
