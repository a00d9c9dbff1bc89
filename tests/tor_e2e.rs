//! A real tor on each side, on loopback: the client's tor reaches the
//! bridge's tor through `water-pt` and a module on both ends, and fetches the
//! bridge's descriptor (TLS and a BEGIN_DIR request across both modules).
//! The work is done by `scripts/tor-e2e.sh`; these tests run it with the
//! binary under test and check its verdict.

use std::process::Command;

fn b64url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn run_e2e(args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/tor-e2e.sh"))
        .args(args)
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
    assert!(stdout.contains("tor-e2e: OK"), "{stdout}");
}

#[test]
fn tor_through_plain() {
    run_e2e(&["plain"]);
}

#[test]
fn tor_through_reverse() {
    run_e2e(&["reverse"]);
}

#[test]
fn tor_through_shadowsocks() {
    let server = b64url(r#"{"method":"chacha20-ietf-poly1305","password":"tor e2e secret"}"#);
    let client = b64url(
        r#"{"method":"chacha20-ietf-poly1305","password":"tor e2e secret","target":"127.0.0.1:9"}"#,
    );
    run_e2e(&["shadowsocks", &server, &client]);
}
