//! The stdout half of the managed-proxy protocol.
//!
//! tor reads our stdout line by line and acts on each line immediately, so every line is built
//! whole, written with one `write_all` under a lock, and flushed: two threads can never interleave
//! halves of lines, and nothing sits in a buffer while tor waits. Nothing else may write to
//! stdout; diagnostics go to stderr (tor logs it at info level) or through [`ProtocolWriter::log`].
//!
//! A write fails with `EPIPE` once tor is gone (Rust ignores `SIGPIPE`, so this is an error, not
//! a signal). Every method returns that `io::Error`; none panics.
//!
//! tor destroys a proxy that writes a method line before `VERSION`, or `VERSION` twice, so the
//! writer refuses both with [`io::ErrorKind::InvalidInput`] instead of sending them.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock, PoisonError};

use super::args::format_smethod_args;
use super::env::{is_transport_name, EnvError};

/// `LOG` severities, exactly the words tor accepts (`warn` is not one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// `error`
    Error,
    /// `warning`
    Warning,
    /// `notice` (tor's default log level shows this and above)
    Notice,
    /// `info`
    Info,
    /// `debug`
    Debug,
}

impl Severity {
    /// The word written after `SEVERITY=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
            Severity::Debug => "debug",
        }
    }

    /// One-to-one from `tracing` levels; `TRACE` has no tor equivalent and becomes `debug`.
    pub fn from_tracing(level: tracing::Level) -> Self {
        match level {
            tracing::Level::ERROR => Severity::Error,
            tracing::Level::WARN => Severity::Warning,
            tracing::Level::INFO => Severity::Info,
            _ => Severity::Debug,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

struct State<W> {
    out: W,
    version_sent: bool,
}

/// Writes protocol lines to `W` (stdout in production, a `Vec<u8>` in tests).
pub struct ProtocolWriter<W: Write> {
    state: Mutex<State<W>>,
}

/// The process-wide writer on stdout.
pub fn stdout() -> &'static ProtocolWriter<io::Stdout> {
    static STDOUT: OnceLock<ProtocolWriter<io::Stdout>> = OnceLock::new();
    STDOUT.get_or_init(|| ProtocolWriter::new(io::stdout()))
}

fn refuse(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// Which ordering rule a line is subject to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `VERSION 1`: at most once.
    Version,
    /// Method, proxy and done lines: only after `VERSION`.
    AfterVersion,
    /// Errors before `VERSION`, `LOG`, `STATUS`: any time.
    Anytime,
}

impl<W: Write> ProtocolWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        ProtocolWriter {
            state: Mutex::new(State {
                out,
                version_sent: false,
            }),
        }
    }

    /// Gives back the writer (for tests).
    pub fn into_inner(self) -> W {
        self.state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .out
    }

    /// Whether `VERSION 1` has been written.
    pub fn version_sent(&self) -> bool {
        self.lock().version_sent
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<W>> {
        // A panic elsewhere while holding the lock cannot leave a half line behind (lines are
        // written in one call), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, kind: Kind, mut line: String) -> io::Result<()> {
        let mut st = self.lock();
        match kind {
            Kind::Version if st.version_sent => {
                return Err(refuse("VERSION was already written".into()))
            }
            Kind::AfterVersion if !st.version_sent => {
                let word = line.split(' ').next().unwrap_or("").to_owned();
                return Err(refuse(format!("{word} must not be written before VERSION")));
            }
            _ => {}
        }
        line.push('\n');
        st.out.write_all(line.as_bytes())?;
        st.out.flush()?;
        if kind == Kind::Version {
            st.version_sent = true;
        }
        Ok(())
    }

    /// `VERSION 1`: the only version tor speaks; must come before any method line.
    pub fn version(&self) -> io::Result<()> {
        self.emit(Kind::Version, "VERSION 1".into())
    }

    /// `VERSION-ERROR no-version`: none of tor's versions is ours; exit afterwards.
    pub fn version_error(&self) -> io::Result<()> {
        self.emit(Kind::Anytime, "VERSION-ERROR no-version".into())
    }

    /// `ENV-ERROR msg`: the environment is unusable; exit afterwards.
    pub fn env_error(&self, msg: &str) -> io::Result<()> {
        self.emit(Kind::Anytime, format!("ENV-ERROR {}", one_line(msg)))
    }

    /// The line matching an [`EnvError`]: `VERSION-ERROR no-version` or `ENV-ERROR msg`.
    pub fn report_env_error(&self, err: &EnvError) -> io::Result<()> {
        match err {
            EnvError::NoVersion => self.version_error(),
            EnvError::Invalid(msg) => self.env_error(msg),
        }
    }

    /// `PROXY DONE`: we will use `TOR_PT_PROXY`. Required whenever tor set it.
    pub fn proxy_done(&self) -> io::Result<()> {
        self.emit(Kind::AfterVersion, "PROXY DONE".into())
    }

    /// `PROXY-ERROR msg`: `TOR_PT_PROXY` is unusable.
    pub fn proxy_error(&self, msg: &str) -> io::Result<()> {
        self.emit(Kind::AfterVersion, format!("PROXY-ERROR {}", one_line(msg)))
    }

    /// `CMETHOD name socks5 IP:PORT`: our SOCKS5 listener for `name`. The port must be the real,
    /// non-zero one.
    pub fn cmethod(&self, name: &str, addr: SocketAddr) -> io::Result<()> {
        check_name(name)?;
        check_port(addr)?;
        self.emit(Kind::AfterVersion, format!("CMETHOD {name} socks5 {addr}"))
    }

    /// `CMETHOD-ERROR name msg`: `name` could not be started (tor carries on).
    pub fn cmethod_error(&self, name: &str, msg: &str) -> io::Result<()> {
        check_name(name)?;
        self.emit(
            Kind::AfterVersion,
            format!("CMETHOD-ERROR {name} {}", one_line(msg)),
        )
    }

    /// `CMETHODS DONE`: no more client methods.
    pub fn cmethods_done(&self) -> io::Result<()> {
        self.emit(Kind::AfterVersion, "CMETHODS DONE".into())
    }

    /// `SMETHOD name IP:PORT [ARGS:k=v,...]`: our listener for `name`, with the arguments clients
    /// need (tor publishes them in the bridge's extra-info). `ARGS:` is left out when `args` is
    /// empty. Arguments that cannot be carried (spaces, control characters, empty keys) are
    /// refused with `InvalidInput`.
    pub fn smethod<K, V>(&self, name: &str, addr: SocketAddr, args: &[(K, V)]) -> io::Result<()>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        check_name(name)?;
        check_port(addr)?;
        let mut line = format!("SMETHOD {name} {addr}");
        if !args.is_empty() {
            let formatted = format_smethod_args(args).map_err(|e| refuse(e.to_string()))?;
            line.push_str(" ARGS:");
            line.push_str(&formatted);
        }
        self.emit(Kind::AfterVersion, line)
    }

    /// `SMETHOD-ERROR name msg`: `name` could not be started (tor carries on).
    pub fn smethod_error(&self, name: &str, msg: &str) -> io::Result<()> {
        check_name(name)?;
        self.emit(
            Kind::AfterVersion,
            format!("SMETHOD-ERROR {name} {}", one_line(msg)),
        )
    }

    /// `SMETHODS DONE`: no more server methods.
    pub fn smethods_done(&self) -> io::Result<()> {
        self.emit(Kind::AfterVersion, "SMETHODS DONE".into())
    }

    /// `LOG SEVERITY=sev MESSAGE=msg`: a message for tor's log, allowed at any time.
    pub fn log(&self, severity: Severity, msg: &str) -> io::Result<()> {
        let mut line = format!("LOG SEVERITY={severity} MESSAGE=");
        push_value(&mut line, msg);
        self.emit(Kind::Anytime, line)
    }

    /// `STATUS TYPE=version IMPLEMENTATION=... VERSION=...`: which program and version serve
    /// the transports; tor 0.4.8 and later publish it in the bridge's extra-info as
    /// `transport-info`.
    pub fn version_status(&self, implementation: &str, version: &str) -> io::Result<()> {
        let mut line = String::from("STATUS TYPE=version IMPLEMENTATION=");
        push_value(&mut line, implementation);
        line.push_str(" VERSION=");
        push_value(&mut line, version);
        self.emit(Kind::AfterVersion, line)
    }

    /// `STATUS TRANSPORT=name K=V ...`: a status report tor forwards as a control-port event.
    /// Keys must be non-empty printable ASCII without spaces, `=`, `"` or `\`.
    pub fn status<K, V>(&self, transport: &str, pairs: &[(K, V)]) -> io::Result<()>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        check_name(transport)?;
        let mut line = format!("STATUS TRANSPORT={transport}");
        for (k, v) in pairs {
            let k = k.as_ref();
            let key_ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'=' | b'"' | b'\\'));
            if !key_ok {
                return Err(refuse(format!("STATUS key {k:?} is not a plain word")));
            }
            let _ = write!(line, " {k}=");
            push_value(&mut line, v.as_ref());
        }
        self.emit(Kind::Anytime, line)
    }
}

fn check_name(name: &str) -> io::Result<()> {
    if is_transport_name(name) {
        Ok(())
    } else {
        Err(refuse(format!("{name:?} is not a valid transport name")))
    }
}

fn check_port(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        Err(refuse(format!(
            "{addr} has port 0; report the port actually bound"
        )))
    } else {
        Ok(())
    }
}

/// Makes a free-text message fit on one line: control characters (CR, LF, tab, ...) become
/// spaces, and an empty message becomes `unspecified error` so tor's log says something.
pub fn one_line(msg: &str) -> String {
    let flat: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = flat.trim();
    if trimmed.is_empty() {
        "unspecified error".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Appends a `LOG`/`STATUS` value, quoted when it must be.
///
/// Quoted when empty or when it holds a space, `"`, `=`, `\`, a control character or anything
/// outside printable ASCII (tor's notion of printable is ASCII-only). Inside quotes only `\\`
/// `\n` `\r` `\t` are used, escapes both tor and arti decode (arti rejects tor's octal
/// escapes); other control characters are replaced by `?`. A `"` becomes `'`: arti decodes
/// `\"` as a lone backslash, so an escaped quote would reach its log mangled. Non-ASCII text is
/// kept as UTF-8.
pub fn push_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'));
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push('\''),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
