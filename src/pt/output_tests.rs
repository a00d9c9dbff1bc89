use super::*;
use std::sync::Arc;

fn writer() -> ProtocolWriter<Vec<u8>> {
    ProtocolWriter::new(Vec::new())
}

fn started() -> ProtocolWriter<Vec<u8>> {
    let w = writer();
    w.version().unwrap();
    w
}

fn text(w: ProtocolWriter<Vec<u8>>) -> String {
    String::from_utf8(w.into_inner()).unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn client_session() {
    let w = started();
    w.proxy_done().unwrap();
    w.cmethod("water", addr("127.0.0.1:40123")).unwrap();
    w.cmethods_done().unwrap();
    assert_eq!(
        text(w),
        "VERSION 1\nPROXY DONE\nCMETHOD water socks5 127.0.0.1:40123\nCMETHODS DONE\n"
    );
}

#[test]
fn server_session() {
    let w = started();
    w.smethod::<&str, &str>("water", addr("0.0.0.0:4433"), &[])
        .unwrap();
    w.smethod(
        "water",
        addr("[::1]:4434"),
        &[("water-sha256", "ab"), ("water-config", "e30")],
    )
    .unwrap();
    w.smethods_done().unwrap();
    assert_eq!(
        text(w),
        "VERSION 1\n\
         SMETHOD water 0.0.0.0:4433\n\
         SMETHOD water [::1]:4434 ARGS:water-sha256=ab,water-config=e30\n\
         SMETHODS DONE\n"
    );
}

#[test]
fn smethod_args_escaped() {
    let w = started();
    w.smethod("water", addr("1.2.3.4:5"), &[("k", r"a=b,c\d")])
        .unwrap();
    assert_eq!(
        text(w),
        "VERSION 1\nSMETHOD water 1.2.3.4:5 ARGS:k=a\\=b\\,c\\\\d\n"
    );
}

#[test]
fn smethod_args_with_space_refused_and_nothing_written() {
    let w = started();
    let e = w
        .smethod("water", addr("1.2.3.4:5"), &[("k", "a b")])
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(text(w), "VERSION 1\n");
}

#[test]
fn error_lines() {
    let w = writer();
    w.version_error().unwrap();
    w.env_error("TOR_PT_ORPORT: bad\nsecond line").unwrap();
    w.version().unwrap();
    w.proxy_error("socks4a is not supported").unwrap();
    w.cmethod_error("water", "module\r\nmissing").unwrap();
    w.smethod_error("water", "").unwrap();
    assert_eq!(
        text(w),
        "VERSION-ERROR no-version\n\
         ENV-ERROR TOR_PT_ORPORT: bad second line\n\
         VERSION 1\n\
         PROXY-ERROR socks4a is not supported\n\
         CMETHOD-ERROR water module  missing\n\
         SMETHOD-ERROR water unspecified error\n"
    );
}

#[test]
fn report_env_error_maps_variants() {
    let w = writer();
    w.report_env_error(&EnvError::NoVersion).unwrap();
    w.report_env_error(&EnvError::Invalid(
        "TOR_PT_STATE_LOCATION: is not set".into(),
    ))
    .unwrap();
    assert_eq!(
        text(w),
        "VERSION-ERROR no-version\nENV-ERROR TOR_PT_STATE_LOCATION: is not set\n"
    );
}

#[test]
fn ordering_rules() {
    let w = writer();
    assert!(!w.version_sent());
    let refused: Vec<io::Result<()>> = vec![
        w.proxy_done(),
        w.proxy_error("x"),
        w.cmethod("water", addr("127.0.0.1:1")),
        w.cmethod_error("water", "x"),
        w.cmethods_done(),
        w.smethod::<&str, &str>("water", addr("127.0.0.1:1"), &[]),
        w.smethod_error("water", "x"),
        w.smethods_done(),
    ];
    for r in refused {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("before VERSION"), "{e}");
    }
    // LOG and STATUS are fine before VERSION.
    w.log(Severity::Notice, "starting").unwrap();
    w.status("water", &[("STARTING", "1")]).unwrap();
    w.version().unwrap();
    assert!(w.version_sent());
    assert_eq!(w.version().unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        text(w),
        "LOG SEVERITY=notice MESSAGE=starting\nSTATUS TRANSPORT=water STARTING=1\nVERSION 1\n"
    );
}

#[test]
fn bad_names_and_ports_refused() {
    let w = started();
    for name in ["", "wa ter", "water\nCMETHODS", "9w"] {
        assert_eq!(
            w.cmethod(name, addr("127.0.0.1:1")).unwrap_err().kind(),
            io::ErrorKind::InvalidInput,
            "{name:?}"
        );
        assert!(w.cmethod_error(name, "m").is_err());
        assert!(w.smethod_error(name, "m").is_err());
        assert!(w.status::<&str, &str>(name, &[]).is_err());
    }
    assert!(w.cmethod("water", addr("127.0.0.1:0")).is_err());
    assert!(w
        .smethod::<&str, &str>("water", addr("0.0.0.0:0"), &[])
        .is_err());
    assert_eq!(text(w), "VERSION 1\n");
}

#[test]
fn log_severities() {
    let w = writer();
    for s in [
        Severity::Error,
        Severity::Warning,
        Severity::Notice,
        Severity::Info,
        Severity::Debug,
    ] {
        w.log(s, "x").unwrap();
    }
    assert_eq!(
        text(w),
        "LOG SEVERITY=error MESSAGE=x\nLOG SEVERITY=warning MESSAGE=x\n\
         LOG SEVERITY=notice MESSAGE=x\nLOG SEVERITY=info MESSAGE=x\nLOG SEVERITY=debug MESSAGE=x\n"
    );
}

#[test]
fn severity_from_tracing() {
    use tracing::Level;
    assert_eq!(Severity::from_tracing(Level::ERROR), Severity::Error);
    assert_eq!(Severity::from_tracing(Level::WARN), Severity::Warning);
    assert_eq!(Severity::from_tracing(Level::INFO), Severity::Info);
    assert_eq!(Severity::from_tracing(Level::DEBUG), Severity::Debug);
    assert_eq!(Severity::from_tracing(Level::TRACE), Severity::Debug);
}

#[test]
fn value_quoting_vectors() {
    for (raw, want) in [
        ("plain", "plain"),
        ("a-b_c.d:e/f", "a-b_c.d:e/f"),
        ("", "\"\""),
        ("two words", "\"two words\""),
        ("k=v", "\"k=v\""),
        ("say \"hi\"", "\"say 'hi'\""),
        (r"C:\dir", r#""C:\\dir""#),
        ("l1\nl2\r\tx", "\"l1\\nl2\\r\\tx\""),
        ("nul\0bell\x07del\x7f", "\"nul?bell?del?\""),
        ("c1\u{85}", "\"c1?\""),
        ("é", "\"é\""),
        ("\\101", "\"\\\\101\""),
    ] {
        let mut out = String::new();
        push_value(&mut out, raw);
        assert_eq!(out, want, "{raw:?}");
    }
}

#[test]
fn quoted_output_never_uses_octal_or_raw_newlines() {
    let all: String = (0u8..=0x7f).map(char::from).collect();
    let mut out = String::new();
    push_value(&mut out, &all);
    assert!(!out.contains('\n') && !out.contains('\r'));
    // The only backslash escapes are the four allowed ones, and no `"` inside the quotes
    // (arti would decode `\"` as `\`).
    let inner = &out[1..out.len() - 1];
    assert!(!inner.contains('"'), "{out}");
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let next = chars.next().unwrap();
            assert!(matches!(next, '\\' | 'n' | 'r' | 't'), "\\{next}");
        }
    }
}

#[test]
fn version_status_line() {
    let w = writer();
    w.version().unwrap();
    w.version_status("water-pt", "0.1.0").unwrap();
    assert_eq!(
        text(w),
        "VERSION 1\nSTATUS TYPE=version IMPLEMENTATION=water-pt VERSION=0.1.0\n"
    );
}

#[test]
fn log_and_status_lines() {
    let w = writer();
    w.log(Severity::Warning, "module a.wasm: trap\nat 0x1")
        .unwrap();
    w.status(
        "water",
        &[
            ("CONNECT", "Success"),
            ("ADDRESS", "192.0.2.1:443"),
            ("ERR", "a b"),
        ],
    )
    .unwrap();
    assert_eq!(
        text(w),
        "LOG SEVERITY=warning MESSAGE=\"module a.wasm: trap\\nat 0x1\"\n\
         STATUS TRANSPORT=water CONNECT=Success ADDRESS=192.0.2.1:443 ERR=\"a b\"\n"
    );
}

#[test]
fn status_keys_checked() {
    let w = writer();
    for k in ["", "A B", "A=B", "A\"", "A\\", "É"] {
        assert!(w.status("water", &[(k, "v")]).is_err(), "{k:?}");
    }
    assert_eq!(text(w), "");
}

#[test]
fn one_line_vectors() {
    assert_eq!(one_line("a\nb"), "a b");
    assert_eq!(one_line(" \n "), "unspecified error");
    assert_eq!(one_line("x\u{0}y\tz"), "x y z");
    assert_eq!(one_line("ünïcode ok"), "ünïcode ok");
}

/// A sink that fails like a closed pipe.
struct Broken;
impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn broken_pipe_is_an_error_not_a_panic() {
    let w = ProtocolWriter::new(Broken);
    assert_eq!(w.version().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    assert!(!w.version_sent(), "a failed VERSION is not counted as sent");
    assert_eq!(
        w.log(Severity::Error, "x").unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
}

/// Records each `write` call separately, to prove a line is never split.
#[derive(Default)]
struct Calls {
    writes: Vec<Vec<u8>>,
    flushes: usize,
}
impl Write for Calls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

#[test]
fn one_write_and_one_flush_per_line() {
    let w = ProtocolWriter::new(Calls::default());
    w.version().unwrap();
    w.cmethod("water", addr("127.0.0.1:9")).unwrap();
    let calls = w.into_inner();
    assert_eq!(
        calls.writes,
        vec![
            b"VERSION 1\n".to_vec(),
            b"CMETHOD water socks5 127.0.0.1:9\n".to_vec()
        ]
    );
    assert_eq!(calls.flushes, 2);
}

#[test]
fn concurrent_lines_do_not_interleave() {
    let w = Arc::new(started());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                for j in 0..50 {
                    w.log(Severity::Info, &format!("thread {i} line {j}"))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let out = text(Arc::try_unwrap(w).ok().unwrap());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 401);
    for l in &lines[1..] {
        assert!(
            l.starts_with("LOG SEVERITY=info MESSAGE=\"thread ") && l.ends_with('"'),
            "{l}"
        );
    }
}

#[test]
fn global_stdout_is_a_singleton() {
    assert!(std::ptr::eq(stdout(), stdout()));
}
