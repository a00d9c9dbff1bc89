//! A real tor on each side, on loopback: the client's tor reaches the
//! bridge's tor through `water-pt` and a module on both ends, and fetches the
//! bridge's descriptor (TLS and a BEGIN_DIR request across both modules).
//! The work is done by `scripts/tor-e2e.sh`; these tests run it with the
//! binary under test and check its verdict. Every run also checks every line
//! the transports wrote to either tor's log for an IP address or port.

use std::process::Command;

fn run_e2e(args: &[&str]) -> String {
    run_e2e_with(args, &[])
}

fn run_e2e_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/tor-e2e.sh"))
        .args(args)
        .envs(env.iter().copied())
        .env("WATER_PT", env!("CARGO_BIN_EXE_water-pt"))
        .output()
        .expect("run scripts/tor-e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tor-e2e {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("new bridge descriptor"), "{stdout}");
    assert!(stdout.contains("none with an address"), "{stdout}");
    assert!(stdout.contains("tor-e2e: OK"), "{stdout}");
    stdout.into_owned()
}

/// A bridge with no options at all (the built-in `plain`), and a client given
/// only the line from the bridge's `water_bridgeline.txt`.
#[test]
fn tor_through_plain_bridge_line() {
    let out = run_e2e(&["--bridge-line"]);
    let plain = water_pt::pt::catalogue::by_name("plain").unwrap();
    assert!(
        out.contains(&format!("water-sha256={}", plain.sha256_hex())),
        "{out}"
    );
}

/// A bridge told only `water-wasm=shadowsocks` keys itself; a client given only
/// its line (the client config with the bridge's secret inside) gets through;
/// after a restart the bridge publishes the same line, which still works.
#[test]
fn tor_through_self_keyed_shadowsocks_and_a_restart() {
    let out = run_e2e_with(
        &["--bridge-line", "water-wasm=shadowsocks"],
        &[("E2E_RESTART", "1")],
    );
    assert!(out.contains("water-config="), "{out}");
    assert!(out.contains("restarted bridge, same line"), "{out}");
    assert_eq!(out.matches("new bridge descriptor").count(), 2, "{out}");
}

#[test]
fn tor_through_reverse() {
    run_e2e(&["reverse"]);
}

/// A WATM v0 module on both sides (the XOR transport, whose wire bytes
/// differ from tor's): tor's TLS crosses the v0 dialer and listener.
#[test]
fn tor_through_a_v0_module() {
    let out = run_e2e(&["xor-v0"]);
    assert!(out.contains("OK (xor-v0.wasm)"), "{out}");
}

/// A bridge running a module of its own (`rot`, not built in) and a client with an empty
/// state directory and only the bridge's line: the client downloads the module from the
/// bridge (module delivery), checks it against the pin and gets through; it is then cached,
/// and the restarted client gets through again without a second download.
#[test]
fn tor_through_a_module_delivered_by_the_bridge() {
    let root = env!("CARGO_MANIFEST_DIR");
    let rot = format!("{root}/watm/prebuilt/rot.wasm");
    let pin = water_pt::runtime::sha256(&std::fs::read(&rot).unwrap());
    assert!(
        water_pt::pt::catalogue::by_sha256(&pin).is_none(),
        "the test module must not be built in"
    );
    let digest = hex::encode(pin);
    let out = run_e2e_with(
        &["--bridge-line", &format!("water-wasm={rot}")],
        &[("E2E_CLIENT_RESTART", "1")],
    );
    assert!(out.contains(&format!("water-sha256={digest}")), "{out}");
    assert!(out.contains(" water-fetch="), "{out}");
    assert!(out.contains(" water-fetch-key="), "{out}");
    assert!(
        out.contains("client run 1: 1 module download(s) from the bridge, 1 module(s) cached"),
        "{out}"
    );
    assert!(out.contains("client run 2: no download (still 1)"), "{out}");
}
