//! The flood mode (`--flood-silent N --flood-noisy M`): a bridge a censor tries to starve.
//!
//! `water-pt server` runs the Shadowsocks module (which waits for an authenticated first
//! chunk) in front of the echo server. `N` connections are opened to it and stay silent, `M`
//! more send a few hundred random bytes and then stay open; all of them are open at once.
//! Meanwhile a real client (`water-pt client` with the Shadowsocks module) connects and
//! echoes `--flood-echo-bytes` through the bridge: the bytes must come back intact, and the
//! time from the attempt to the last byte is reported. Then the flood closes, and the
//! server's descriptors and threads must come back to the baseline and its RSS near it.

use super::*;

/// The password both sides use; only the flood's shape matters here.
const PASSWORD: &str = "water-pt soak flood secret";

/// Connections being opened at once while the flood builds up: enough to build 10,000 in a
/// few seconds, few enough not to overflow the listener's backlog.
const OPENING_AT_ONCE: usize = 64;

/// A little more than the runtime's keep-alive of finished session threads (10 s).
const THREAD_KEEPALIVE: Duration = Duration::from_secs(11);

/// What the flood run measured, for the report.
#[derive(Debug, Default, Clone)]
pub struct FloodResult {
    /// Flood connections the driver opened.
    pub opened: usize,
    /// Sessions the server held for them at once (its threads above the baseline: one per
    /// open session).
    pub held: usize,
    /// What the server said about its capacity and refusals (first lines of each kind).
    pub server_said: Vec<String>,
    pub silent: usize,
    pub noisy: usize,
    /// How long opening the flood took.
    pub opening: Duration,
    /// From the real client's connect to the last echoed byte.
    pub echo_took: Option<Duration>,
    pub echo_bytes: usize,
}

/// Writes the server and client configs into a fresh directory under the system's temporary
/// directory, removed when the run ends.
struct Configs {
    dir: PathBuf,
    server: PathBuf,
    client: PathBuf,
}

impl Configs {
    fn write(echo: SocketAddr, hold_secs: u64) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("water-soak-flood-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (server, client) = (dir.join("server.json"), dir.join("client.json"));
        let write = |path: &PathBuf, text: String| {
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
        };
        // The module closes a connection that has not authenticated after
        // `reject_timeout_secs`; the flood must outlive the measurement.
        write(
            &server,
            format!(
                r#"{{"method":"chacha20-ietf-poly1305","password":"{PASSWORD}","reject_timeout_secs":{hold_secs}}}"#
            ),
        )?;
        write(
            &client,
            format!(
                r#"{{"method":"chacha20-ietf-poly1305","password":"{PASSWORD}","target":"{echo}"}}"#
            ),
        )?;
        Ok(Self {
            dir,
            server,
            client,
        })
    }
}

impl Drop for Configs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects and echoes `len` pseudo-random bytes through `addr`, checked by SHA-256; returns
/// how long it took from the connect.
async fn echo_through(addr: SocketAddr, len: usize, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let s = timed(limit, "connect", connect(addr, None)).await?;
    let mut data = vec![0u8; len];
    Stream(0x5eed_f100d).fill(&mut data);
    let sent = Sha256::digest(&data);
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut back = vec![0u8; len];
    timed(limit, "read", r.read_exact(&mut back)).await?;
    let took = started.elapsed();
    let _w = writer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("write: {e}"))?;
    if Sha256::digest(&back) != sent {
        return Err("the echoed bytes differ".into());
    }
    Ok(took)
}

/// Opens `silent` connections that send nothing and `noisy` ones that send a few hundred
/// random bytes each, `OPENING_AT_ONCE` at a time; the first error stops the opening.
async fn open_flood(
    addr: SocketAddr,
    silent: usize,
    noisy: usize,
) -> (Vec<TcpStream>, Option<String>) {
    let mut opened = Vec::with_capacity(silent + noisy);
    let indices: Vec<usize> = (0..silent + noisy).collect();
    for batch in indices.chunks(OPENING_AT_ONCE) {
        let mut set = tokio::task::JoinSet::new();
        for &i in batch {
            set.spawn(async move {
                let mut s = connect(addr, None).await?;
                if i >= silent {
                    let mut junk = vec![0u8; 200 + (i % 7) * 100];
                    Stream(i as u64 | 1).fill(&mut junk);
                    s.write_all(&junk).await?;
                }
                Ok::<_, std::io::Error>(s)
            });
        }
        while let Some(r) = set.join_next().await {
            opened.push(r.map_err(std::io::Error::other).and_then(|r| r));
        }
    }
    let mut flood = Vec::with_capacity(opened.len());
    let mut first_error = None;
    for r in opened {
        match r {
            Ok(s) => flood.push(s),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (flood, first_error)
}

/// The soft open-file limit of this process, from `/proc/self/limits`.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs the flood mode; see the module documentation.
pub async fn run(o: &Opts, bin: &PathBuf, report: &mut Report) -> Result<FloodResult, String> {
    let total = o.flood_silent + o.flood_noisy;
    if let Some(limit) = open_file_limit() {
        // The flood's sockets, the real client's and the echo server's, and some spare.
        let need = total as u64 + 200;
        if limit < need {
            report.problems.push(format!(
                "the driver's open-file limit is {limit}, the flood needs about {need}: \
                 raise it (ulimit -n; scripts/soak.sh does) or the opening fails"
            ));
        }
    }
    let echo = echo_server(None).await.map_err(|e| e.to_string())?;
    let hold = o.flood_hold_secs;
    let configs = Configs::write(echo, hold)?;
    let common = |wasm_config: &PathBuf| -> Vec<String> {
        vec![
            "--no-cache".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--wasm".into(),
            "shadowsocks".into(),
            "--config".into(),
            wasm_config.display().to_string(),
            "--max-connections".into(),
            (total + 100).to_string(),
            // The Shadowsocks server waits for the first chunk during setup: the flood
            // must not be ended by the setup deadline before it is measured.
            "--setup-timeout-secs".into(),
            hold.to_string(),
        ]
    };
    let mut args = vec!["server".to_string(), "--forward".into(), echo.to_string()];
    args.extend(common(&configs.server));
    let mut server = Pt::spawn("server", bin, &args)?;
    let server_addr = server.listening_addr()?;
    let mut args = vec![
        "client".to_string(),
        "--remote".into(),
        server_addr.to_string(),
    ];
    args.extend(common(&configs.client));
    let mut client = Pt::spawn("client", bin, &args)?;
    let client_addr = client.listening_addr()?;
    let limit = Duration::from_secs(o.io_timeout_secs);

    // Baseline: after one real connection (the module compiled, one-time allocations made),
    // once every session thread is gone again. Finished session threads stay parked for the
    // runtime's keep-alive, the one that checked the module's config at start too, so the
    // baseline waits that out: then the flood's sessions are exactly the threads above it.
    let fresh = (client.usage()?, server.usage()?);
    echo_through(client_addr, o.flood_echo_bytes, limit)
        .await
        .map_err(|e| format!("warm-up echo: {e}"))?;
    tokio::time::sleep(THREAD_KEEPALIVE).await;
    let warm = settle(&mut client, &mut server, fresh, false, o).await?;
    let base = warm.1;
    report.snapshots.push(("fresh".into(), fresh.0, fresh.1, 0));
    report.snapshots.push(("baseline".into(), warm.0, base, 0));

    let mut result = FloodResult {
        silent: o.flood_silent,
        noisy: o.flood_noisy,
        echo_bytes: o.flood_echo_bytes,
        ..FloodResult::default()
    };
    let opening = Instant::now();
    let (flood, error) = open_flood(server_addr, o.flood_silent, o.flood_noisy).await;
    if let Some(e) = error {
        report.problems.push(format!(
            "opening the flood: {} of {total} connections opened; first error: {e}",
            flood.len()
        ));
    }
    // Every connection accepted and given its session (each session has a thread of its
    // own), and the count steady for a second. Bounded: a server that cannot take them all
    // stops short.
    let deadline = Instant::now() + Duration::from_secs(o.settle_secs.max(60));
    let mut during = server.usage()?;
    let mut steady = 0;
    while (during.threads < base.threads + flood.len() || steady < 5) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = server.usage()?;
        steady = if now.threads == during.threads {
            steady + 1
        } else {
            0
        };
        during = now;
    }
    result.opening = opening.elapsed();
    result.opened = flood.len();
    result.held = during.threads.saturating_sub(base.threads);
    if result.held < flood.len() {
        report.problems.push(format!(
            "the server held {} sessions for {} open flood connections",
            result.held,
            flood.len()
        ));
    }

    match echo_through(client_addr, o.flood_echo_bytes, limit).await {
        Ok(took) => result.echo_took = Some(took),
        Err(e) => report
            .problems
            .push(format!("real client during the flood: {e}")),
    }
    let during = (client.usage()?, server.usage()?);
    report
        .snapshots
        .push(("during flood".into(), during.0, during.1, 0));

    drop(flood);
    // The server's own account of its capacity and of what it refused.
    let mut refused = 0usize;
    while let Ok(line) = server.lines.try_recv() {
        if line.contains("connection limit reached") {
            refused += 1;
            if refused > 1 {
                continue;
            }
        }
        if line.contains("serving at most") || line.contains("connection limit reached") {
            result.server_said.push(line);
        }
    }
    if refused > 0 {
        result.server_said.push(format!(
            "({refused} connections refused at the connection limit)"
        ));
    }
    let after = settle(&mut client, &mut server, (warm.0, base), true, o).await?;
    let allow = POOL_RESIDENT_KIB + o.rss_slack_mib * 1024;
    check(report, "after flood", "server", &base, &after.1, allow);
    report
        .snapshots
        .push(("after flood".into(), after.0, after.1, allow));
    for pt in [&client, &server] {
        let w = pt.warnings.lock().unwrap();
        if !w.is_empty() {
            eprintln!("soak: {} logged warnings: {:#?}", pt.name, *w);
        }
    }
    Ok(result)
}

impl FloodResult {
    /// The flood's lines of the report.
    pub fn table(&self) -> String {
        let echo = match self.echo_took {
            Some(d) => format!("{:.3} s", d.as_secs_f64()),
            None => "failed".into(),
        };
        let mut t = format!(
            "flood: {} silent + {} noisy connections to the Shadowsocks server: {} opened, \
             {} held by the server at once ({:.1} s to open and settle)\n\
             real client: {} KiB echoed intact in {echo} during the flood\n",
            self.silent,
            self.noisy,
            self.opened,
            self.held,
            self.opening.as_secs_f64(),
            self.echo_bytes >> 10,
        );
        for line in &self.server_said {
            t.push_str(&format!("server: {line}\n"));
        }
        t
    }
}
