//! The managed-proxy protocol on stdout, against the real binary launched as tor launches it.

mod common;

use common::pt::*;

fn spawn_client(dir: &TempDir, extra: &[(&'static str, String)]) -> PtChild {
    let mut env = client_env(&dir.state());
    env.extend(extra.iter().cloned());
    PtChild::spawn(&env_refs(&env), &[])
}

#[test]
fn client_launch_transcript() {
    let dir = TempDir::new("launch");
    let mut pt = spawn_client(&dir, &[]);
    let socks = pt.client_ready();
    // The listener is real.
    std::net::TcpStream::connect(socks).unwrap();
    // The state directory was created, private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("pt_state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn no_supported_version() {
    let dir = TempDir::new("nover");
    let mut env = client_env(&dir.state());
    env[0].1 = "2,3".into();
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION-ERROR no-version");
    assert_eq!(pt.next_line(), None);
    assert!(!pt.wait_exit().success());
}

#[test]
fn version_list_containing_one_is_accepted() {
    let dir = TempDir::new("verlist");
    let mut env = client_env(&dir.state());
    env[0].1 = "3,1".into();
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    pt.client_ready();
}

#[test]
fn malformed_env_is_env_error() {
    let dir = TempDir::new("envbad");
    let mut pt = spawn_client(
        &dir,
        &[("TOR_PT_OUTBOUND_BIND_ADDRESS_V4", "not-an-address".into())],
    );
    let l = pt.env_error();
    assert!(l.contains("TOR_PT_OUTBOUND_BIND_ADDRESS_V4"), "{l}");
}

#[test]
fn malformed_option_on_the_torrc_line_is_env_error() {
    let dir = TempDir::new("argbad");
    let env = client_env(&dir.state());
    let mut pt = PtChild::spawn(&env_refs(&env), &["--network-stall-ms", "soon"]);
    let l = pt.env_error();
    assert!(
        l.starts_with("ENV-ERROR command line: ") && l.contains("--network-stall-ms"),
        "{l}"
    );
}

#[test]
fn limit_options_on_the_torrc_line_are_accepted() {
    let dir = TempDir::new("argok");
    let env = client_env(&dir.state());
    let mut pt = PtChild::spawn(
        &env_refs(&env),
        &["--network-stall-ms", "30000", "--max-connections", "5"],
    );
    pt.client_ready();
}

#[test]
fn missing_state_location_is_env_error() {
    let mut pt = PtChild::spawn(
        &[
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_CLIENT_TRANSPORTS", "water"),
        ],
        &[],
    );
    assert!(pt.line().starts_with("ENV-ERROR TOR_PT_STATE_LOCATION"));
    assert!(!pt.wait_exit().success());
}

#[test]
fn bad_proxy_is_proxy_error() {
    let dir = TempDir::new("badproxy");
    let mut pt = spawn_client(&dir, &[("TOR_PT_PROXY", "gopher://127.0.0.1:70".into())]);
    assert_eq!(pt.line(), "VERSION 1");
    let l = pt.line();
    assert!(l.starts_with("PROXY-ERROR "), "{l}");
    assert_eq!(pt.next_line(), None, "no CMETHOD after PROXY-ERROR");
    assert!(!pt.wait_exit().success());
}

#[test]
fn good_proxy_is_proxy_done_before_cmethod() {
    let dir = TempDir::new("goodproxy");
    let mut pt = spawn_client(
        &dir,
        &[("TOR_PT_PROXY", "socks5://user:pass@127.0.0.1:1080".into())],
    );
    assert_eq!(pt.line(), "VERSION 1");
    assert_eq!(pt.line(), "PROXY DONE");
    pt.cmethod();
    assert_eq!(pt.line(), "CMETHODS DONE");
}

#[test]
fn unknown_transports_only_done() {
    let dir = TempDir::new("unknown");
    let mut pt = spawn_client(
        &dir,
        &[("TOR_PT_CLIENT_TRANSPORTS", "obfs4,snowflake".into())],
    );
    assert_eq!(pt.line(), "VERSION 1");
    assert_eq!(pt.line(), "CMETHODS DONE");
    // Nothing to serve: the process ends (as obfs4proxy does).
    assert_eq!(pt.next_line(), None);
    assert!(!pt.wait_exit().success());
}

#[test]
fn water_among_other_transports() {
    let dir = TempDir::new("mixed");
    let mut pt = spawn_client(
        &dir,
        &[("TOR_PT_CLIENT_TRANSPORTS", "obfs4,water,meek".into())],
    );
    pt.client_ready();
}

#[test]
fn stdin_close_exits() {
    let dir = TempDir::new("stdin");
    let mut pt = spawn_client(&dir, &[]);
    pt.client_ready();
    pt.close_stdin();
    assert!(pt.wait_exit().success());
}

#[test]
fn stdin_close_ignored_without_the_flag() {
    // Anything but `1` means "don't exit" (never an ENV-ERROR).
    for value in ["0", "yes"] {
        let dir = TempDir::new("stdin0");
        let mut pt = spawn_client(&dir, &[("TOR_PT_EXIT_ON_STDIN_CLOSE", value.into())]);
        let socks = pt.client_ready();
        pt.close_stdin();
        // Still serving after stdin EOF: a SOCKS handshake gets its method reply.
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(socks).unwrap();
        s.write_all(&[5, 1, 0]).unwrap();
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply, [5, 0], "{value}");
        signal(&pt, rustix::process::Signal::TERM);
        assert!(pt.wait_exit().success());
    }
}

fn signal(pt: &PtChild, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pt.pid() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

#[test]
fn sigterm_exits() {
    let dir = TempDir::new("term");
    let mut pt = spawn_client(&dir, &[]);
    pt.client_ready();
    signal(&pt, rustix::process::Signal::TERM);
    assert!(pt.wait_exit().success());
}

#[test]
fn sigint_drains_then_exits_when_idle() {
    let dir = TempDir::new("int");
    let mut pt = spawn_client(&dir, &[]);
    pt.client_ready();
    signal(&pt, rustix::process::Signal::INT);
    assert!(pt.wait_exit().success());
}

fn bridge_env(dir: &TempDir, bind: &str) -> Vec<(&'static str, String)> {
    let mut env = server_env(&dir.state(), "127.0.0.1:9");
    set_var(&mut env, "TOR_PT_SERVER_BINDADDR", format!("water-{bind}"));
    env
}

fn plain_sha() -> String {
    hex::encode(common::sha256(&common::module("plain")))
}

#[test]
fn server_launch_transcript_and_bridge_line() {
    let dir = TempDir::new("srv");
    let mut pt = PtChild::spawn(&env_refs(&bridge_env(&dir, "127.0.0.1:0")), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let (addr, args) = pt.smethod();
    assert_eq!(pt.line(), "SMETHODS DONE");
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert_eq!(args, format!("water-sha256={}", plain_sha()));
    std::net::TcpStream::connect(addr).unwrap();

    let text = std::fs::read_to_string(dir.path().join("pt_state/water_bridgeline.txt")).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with('#'));
    let bridge = text.lines().find(|l| !l.starts_with('#')).unwrap();
    assert_eq!(
        bridge,
        format!(
            "Bridge water {addr} <FINGERPRINT> water-sha256={}",
            plain_sha()
        )
    );
}

#[test]
fn server_publishes_the_client_config_never_its_own() {
    // config-echo accepts any config (plain would refuse this one at start).
    let echo = common::module_path("config-echo");
    let echo = echo.display();
    let echo_sha = hex::encode(common::sha256(&common::module("config-echo")));
    let dir = TempDir::new("srvcfg");
    let mut env = bridge_env(&dir, "127.0.0.1:0");
    env.push((
        "TOR_PT_SERVER_TRANSPORT_OPTIONS",
        format!("water:water-wasm={echo};water:water-config=c2VydmVyLXNlY3JldA;water:water-client-config=aGVsbG8;water:water-fetch-port=off"),
    ));
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let (_, args) = pt.smethod();
    // Module delivery is off, so the line carries exactly the module's arguments.
    assert_eq!(
        args,
        format!("water-sha256={echo_sha},water-config=aGVsbG8")
    );

    // A server config alone is not published at all.
    let dir = TempDir::new("srvcfg2");
    let mut env = bridge_env(&dir, "127.0.0.1:0");
    env.push((
        "TOR_PT_SERVER_TRANSPORT_OPTIONS",
        format!("water:water-wasm={echo};water:water-config=c2VydmVyLXNlY3JldA"),
    ));
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let (_, args) = pt.smethod();
    // The module is not built in, so the bridge also offers it for download.
    assert!(
        args.starts_with(&format!("water-sha256={echo_sha},water-fetch=")),
        "{args}"
    );
    assert!(!args.contains("water-config"), "{args}");
}

#[test]
fn server_bind_failure_is_smethod_error() {
    let dir = TempDir::new("srvbind");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut pt = PtChild::spawn(&env_refs(&bridge_env(&dir, &addr)), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let l = pt.line();
    assert!(l.starts_with("SMETHOD-ERROR water "), "{l}");
    assert_eq!(pt.line(), "SMETHODS DONE");
    assert!(!pt.wait_exit().success());
}

#[test]
fn server_bad_options_are_smethod_errors() {
    for (options, needle) in [
        ("water:water-colour=red", "water-colour"),
        (
            "water:water-wasm=/nonexistent/x.wasm",
            "/nonexistent/x.wasm",
        ),
        ("water:water-wasm=relative/x.wasm", "relative"),
    ] {
        let dir = TempDir::new("srvopt");
        let mut env = bridge_env(&dir, "127.0.0.1:0");
        env.push(("TOR_PT_SERVER_TRANSPORT_OPTIONS", options.into()));
        let mut pt = PtChild::spawn(&env_refs(&env), &[]);
        assert_eq!(pt.line(), "VERSION 1");
        let l = pt.line();
        assert!(
            l.starts_with("SMETHOD-ERROR water ") && l.contains(needle),
            "{options}: {l}"
        );
        assert_eq!(pt.line(), "SMETHODS DONE");
    }
}

#[test]
fn server_module_without_listener_role_is_refused() {
    // A WATM exporting only the dialer role.
    let wasm = common::wat_module("(i32.const 0)", "");
    let dir = TempDir::new("srvrole");
    let stripped = dir.path().join("dialer-only.wasm");
    std::fs::write(&stripped, strip_accept(&wasm)).unwrap();
    let mut env = bridge_env(&dir, "127.0.0.1:0");
    env.push((
        "TOR_PT_SERVER_TRANSPORT_OPTIONS",
        format!("water:water-wasm={}", stripped.display()),
    ));
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let l = pt.line();
    assert!(
        l.starts_with("SMETHOD-ERROR water ") && l.contains("watm_accept_v1"),
        "{l}"
    );
}

/// The test WAT module exports every role; rename its `watm_accept_v1` export so the listener
/// role is missing (same length, so the binary stays valid).
fn strip_accept(wasm: &[u8]) -> Vec<u8> {
    let needle = b"watm_accept_v1";
    let at = wasm
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("export present");
    let mut out = wasm.to_vec();
    out[at..at + needle.len()].copy_from_slice(b"xxxx_accept_v1");
    out
}

#[test]
fn client_and_server_in_one_process() {
    let dir = TempDir::new("both");
    let mut env = bridge_env(&dir, "127.0.0.1:0");
    env.push(("TOR_PT_CLIENT_TRANSPORTS", "water".into()));
    let mut pt = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(pt.line(), "VERSION 1");
    let socks = pt.cmethod();
    assert_eq!(pt.line(), "CMETHODS DONE");
    let (addr, _) = pt.smethod();
    assert_eq!(pt.line(), "SMETHODS DONE");
    std::net::TcpStream::connect(socks).unwrap();
    std::net::TcpStream::connect(addr).unwrap();
    pt.close_stdin();
    assert!(pt.wait_exit().success());
}

/// Whether process `pid` is gone (or a zombie waiting for a reaper).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn transport_exits_when_tor_dies() {
    use std::io::BufRead;
    let dir = TempDir::new("orphan");
    // A stand-in tor: a shell that starts the transport, prints its pid, then waits. Killing
    // the shell outright gives the transport no signal and no stdin EOF (the test keeps the
    // pipe open); only the death signal can end it.
    let mut tor = std::process::Command::new("sh")
        .args(["-c", "\"$0\" & echo pid=$!; exec sleep 60"])
        .arg(binary())
        .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
        .env("TOR_PT_STATE_LOCATION", dir.state())
        .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "0")
        .env("TOR_PT_CLIENT_TRANSPORTS", "water")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(tor.stdout.take().unwrap()).lines();
    let mut pid = None;
    let mut ready = false;
    while pid.is_none() || !ready {
        let line = lines.next().expect("transport output").unwrap();
        if let Some(p) = line.strip_prefix("pid=") {
            pid = Some(p.parse::<u32>().unwrap());
        }
        ready |= line == "CMETHODS DONE";
    }
    let pid = pid.unwrap();
    assert!(!gone(pid));
    tor.kill().unwrap();
    tor.wait().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !gone(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the transport outlived tor"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
