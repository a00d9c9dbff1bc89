//! Launching a managed pluggable transport the way tor does, and stopping it on every path.
//!
//! tor hands a managed proxy its configuration in `TOR_PT_*` variables, keeps its stdin open for
//! as long as it wants the proxy alive, and reads `VERSION` / `CMETHOD` / `SMETHOD` lines from its
//! stdout. Doing exactly that here means the figures include whatever the transport does in
//! managed mode (argument parsing per SOCKS connection, ORPort dialing), not a shortcut.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// How long a transport may take to print its method lines. water-pt compiles its module at
/// launch (the server side), which takes a second or two on a slow machine.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a transport gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// A running transport process. Dropping it stops the process (stdin closed, SIGTERM, then
/// SIGKILL), so no early return, error or panic in the benchmark can leave one behind.
#[derive(Debug)]
pub struct ManagedPt {
    child: Child,
    label: String,
    log: PathBuf,
}

impl ManagedPt {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (an exit mid-test invalidates the figures).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the transport's stderr, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 8)
    }
}

impl Drop for ManagedPt {
    fn drop(&mut self) {
        // tor's exit closes the proxy's stdin; with TOR_PT_EXIT_ON_STDIN_CLOSE=1 that alone
        // ends it. SIGTERM is what tor sends on reconfiguration; SIGKILL is the backstop.
        drop(self.child.stdin.take());
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("pt-bench: {} ignored SIGTERM; killing it", self.label);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client transport: where its SOCKS5 listener is.
#[derive(Debug)]
pub struct ClientPt {
    pub process: ManagedPt,
    pub socks: SocketAddr,
}

/// A server transport: where it listens, and the `ARGS:` of its `SMETHOD` line.
#[derive(Debug)]
pub struct ServerPt {
    pub process: ManagedPt,
    pub addr: SocketAddr,
    pub args: Vec<(String, String)>,
}

/// What to launch and where its files go.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub program: &'a Path,
    pub transport: &'a str,
    /// `TOR_PT_STATE_LOCATION`; created by the transport if missing, as tor expects.
    pub state_dir: &'a Path,
    /// The transport's stderr goes here.
    pub log: &'a Path,
}

/// Starts a client transport and waits for its `CMETHOD ... socks5 ADDR` and `CMETHODS DONE`.
pub fn client(l: &Launch<'_>) -> io::Result<ClientPt> {
    let mut cmd = base_command(l);
    cmd.env("TOR_PT_CLIENT_TRANSPORTS", l.transport);
    let (process, lines) = spawn(cmd, l.log, format!("{} client", l.transport))?;
    let mut socks = None;
    let process = expect_lines(process, &lines, "CMETHODS DONE", |words| {
        if words.first() == Some(&"CMETHOD") && words.get(1) == Some(&l.transport) {
            if words.get(2) != Some(&"socks5") {
                return Err(format!("expected a socks5 method, got {words:?}"));
            }
            socks = Some(parse_addr(words.get(3))?);
        }
        Ok(())
    })?;
    let socks = socks.ok_or_else(|| io::Error::other(format!("{}: no CMETHOD", l.transport)))?;
    Ok(ClientPt { process, socks })
}

/// Starts a server transport forwarding to the plain ORPort `orport` (no Extended ORPort, as
/// for a bridge without `ExtORPort`) and waits for its `SMETHOD` and `SMETHODS DONE`.
/// `options` is `TOR_PT_SERVER_TRANSPORT_OPTIONS`, already escaped.
pub fn server(l: &Launch<'_>, orport: SocketAddr, options: Option<&str>) -> io::Result<ServerPt> {
    let mut cmd = base_command(l);
    cmd.env("TOR_PT_SERVER_TRANSPORTS", l.transport)
        .env(
            "TOR_PT_SERVER_BINDADDR",
            format!("{}-127.0.0.1:0", l.transport),
        )
        .env("TOR_PT_ORPORT", orport.to_string())
        .env("TOR_PT_EXTENDED_SERVER_PORT", "");
    if let Some(options) = options {
        cmd.env("TOR_PT_SERVER_TRANSPORT_OPTIONS", options);
    }
    let (process, lines) = spawn(cmd, l.log, format!("{} server", l.transport))?;
    let mut found = None;
    let process = expect_lines(process, &lines, "SMETHODS DONE", |words| {
        if words.first() == Some(&"SMETHOD") && words.get(1) == Some(&l.transport) {
            let addr = parse_addr(words.get(2))?;
            let args = match words.get(3).and_then(|w| w.strip_prefix("ARGS:")) {
                Some(a) => parse_smethod_args(a)?,
                None => Vec::new(),
            };
            found = Some((addr, args));
        }
        Ok(())
    })?;
    let (addr, args) =
        found.ok_or_else(|| io::Error::other(format!("{}: no SMETHOD", l.transport)))?;
    Ok(ServerPt {
        process,
        addr,
        args,
    })
}

/// The environment every managed proxy gets from tor. Inherited `TOR_PT_*` variables are
/// removed so a benchmark run from inside a tor-launched shell cannot leak into it.
fn base_command(l: &Launch<'_>) -> Command {
    let mut cmd = Command::new(l.program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TOR_PT_") {
            cmd.env_remove(key);
        }
    }
    // tor passes the state directory with a trailing slash.
    let mut state = l.state_dir.as_os_str().to_owned();
    state.push("/");
    cmd.env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
        .env("TOR_PT_STATE_LOCATION", state)
        .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "1");
    cmd
}

/// The helper side of [`helper`]: a tokio runtime with two workers (what water-pt's own has on
/// the 2-core benchmark machine), and a thread that ends the process once stdin reaches EOF,
/// the parent being gone or done, like a transport with TOR_PT_EXIT_ON_STDIN_CLOSE.
pub fn helper_runtime() -> io::Result<tokio::runtime::Runtime> {
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Starts a helper process of the benchmark itself that, like a transport, lives until its
/// stdin closes and announces itself with one stdout line starting with `tag`.
pub fn helper(
    program: &Path,
    args: &[&str],
    log: &Path,
    label: &str,
    tag: &str,
) -> io::Result<(ManagedPt, String)> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let (process, lines) = spawn(cmd, log, label.to_string())?;
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(tag) => return Ok((process, line)),
            Ok(_) => {}
            Err(_) => {
                return Err(io::Error::other(format!(
                    "{}: no {tag:?} line\n{}",
                    process.label,
                    process.log_tail()
                )))
            }
        }
    }
}

/// The socket buffer size of the socat chain (`socat -b`): as large as the reads water-pt's
/// modules do, so the baseline is a copying proxy that is not held back by small buffers.
pub const SOCAT_BUFFER: usize = 262_144;

/// Starts one hop of the native socat chain: a listener on a free loopback port that forks
/// per connection and copies to `upstream`. Returns once socat reports where it listens.
pub fn socat(
    program: &Path,
    upstream: SocketAddr,
    log: &Path,
) -> io::Result<(ManagedPt, SocketAddr)> {
    let mut cmd = Command::new(program);
    cmd.args([
        "-d".to_string(),
        "-d".to_string(),
        "-b".to_string(),
        SOCAT_BUFFER.to_string(),
        "TCP-LISTEN:0,bind=127.0.0.1,fork,reuseaddr".to_string(),
        format!("TCP:{upstream},nodelay"),
    ]);
    let (mut process, _stdout) = spawn(cmd, log, format!("socat to {upstream}"))?;
    // socat has no protocol on stdout; with `-d -d` it logs "listening on AF=2 ADDR:PORT".
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.split_once("listening on AF=2 ").map(|(_, a)| a.trim()))
        {
            let addr = addr
                .parse()
                .map_err(|e| io::Error::other(format!("socat listens on {addr:?}: {e}")))?;
            return Ok((process, addr));
        }
        if !process.is_running() || Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{}: no \"listening on\" line\n{}",
                process.label,
                process.log_tail()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn(
    mut cmd: Command,
    log: &Path,
    label: String,
) -> io::Result<(ManagedPt, mpsc::Receiver<String>)> {
    let log_file = File::create(log)?;
    let program = cmd.get_program().to_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", program.to_string_lossy())))?;
    let stdout = child.stdout.take();
    let process = ManagedPt {
        label: format!("{label} (pid {})", child.id()),
        child,
        log: log.to_owned(),
    };
    let stdout = stdout.ok_or_else(|| io::Error::other("stdout was not piped"))?;
    // The stdout reader runs for the process's whole life: a transport that writes LOG or
    // STATUS lines later must never block on a full pipe. It ends at EOF, when the process does.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("pt-stdout".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // After launch nobody receives; the send fails and the line is dropped.
                let _ = tx.send(line);
            }
        })?;
    Ok((process, rx))
}

/// Reads protocol lines until `done` (e.g. `CMETHODS DONE`), giving each to `on_line` as words.
/// Any `*-ERROR` line, a missing `VERSION 1`, an exit or a timeout fails the launch; the
/// process is then stopped by the guard's drop.
fn expect_lines(
    mut process: ManagedPt,
    lines: &mpsc::Receiver<String>,
    done: &str,
    mut on_line: impl FnMut(&[&str]) -> Result<(), String>,
) -> io::Result<ManagedPt> {
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    let mut seen_version = false;
    let mut recent: VecDeque<String> = VecDeque::new();
    let fail = |process: &ManagedPt, why: String| {
        io::Error::other(format!(
            "{}: {why}\n  stderr tail:\n{}",
            process.label,
            process.log_tail()
        ))
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !process.is_running() {
                    return Err(fail(&process, "exited during launch".into()));
                }
                if left.is_zero() {
                    return Err(fail(&process, format!("no {done:?} in {LAUNCH_TIMEOUT:?}")));
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail(
                    &process,
                    format!("stdout closed before {done:?}; last lines: {recent:?}"),
                ));
            }
        };
        recent.push_back(line.clone());
        if recent.len() > 5 {
            recent.pop_front();
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&first) = words.first() else {
            continue;
        };
        if first.ends_with("-ERROR") {
            return Err(fail(&process, format!("refused: {line}")));
        }
        if first == "VERSION" {
            if words.get(1) != Some(&"1") {
                return Err(fail(&process, format!("unexpected {line:?}")));
            }
            seen_version = true;
            continue;
        }
        if !seen_version && (first == "CMETHOD" || first == "SMETHOD") {
            return Err(fail(
                &process,
                format!("method line before VERSION: {line}"),
            ));
        }
        if line.trim() == done {
            return Ok(process);
        }
        on_line(&words).map_err(|e| fail(&process, e))?;
    }
}

fn parse_addr(word: Option<&&str>) -> Result<SocketAddr, String> {
    let word = word.ok_or("missing address")?;
    word.parse()
        .map_err(|e| format!("bad address {word:?}: {e}"))
}

/// Splits `k=v,k=v` from `SMETHOD ... ARGS:`, where `,` `=` and `\` inside keys and values are
/// backslash-escaped.
pub fn parse_smethod_args(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let (mut key, mut cur) = (None::<String>, String::new());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.push(chars.next().ok_or("ARGS: ends with a backslash")?),
            '=' if key.is_none() => key = Some(std::mem::take(&mut cur)),
            ',' => {
                let k = key
                    .take()
                    .ok_or_else(|| format!("ARGS: {cur:?} has no '='"))?;
                pairs.push((k, std::mem::take(&mut cur)));
            }
            c => cur.push(c),
        }
    }
    if let Some(k) = key {
        pairs.push((k, cur));
    } else if !cur.is_empty() {
        return Err(format!("ARGS: {cur:?} has no '='"));
    }
    Ok(pairs)
}

/// Escapes a value for `TOR_PT_SERVER_TRANSPORT_OPTIONS`, where `:` `;` and `\` are special.
pub fn escape_option(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ':' | ';' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The last `n` lines of a log file, indented.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smethod_args() {
        assert_eq!(
            parse_smethod_args("cert=ab\\=c,iat-mode=0").unwrap(),
            vec![
                ("cert".to_string(), "ab=c".to_string()),
                ("iat-mode".to_string(), "0".to_string())
            ]
        );
        assert!(parse_smethod_args("novalue").is_err());
        assert_eq!(escape_option("a:b;c\\"), "a\\:b\\;c\\\\");
    }
}
