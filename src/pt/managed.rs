//! Managed mode: `water-pt` launched by tor, configured by its environment, talking to it on
//! stdout. One process serves the client side, the server side, or both, with one runtime.
//!
//! The order of the stdout lines is tor's: `VERSION 1`, then `PROXY DONE`/`PROXY-ERROR` if
//! tor set `TOR_PT_PROXY` (checked before anything is bound, so a refused proxy leaves nothing
//! behind), then `CMETHOD`s and `CMETHODS DONE`, `SMETHOD`s and `SMETHODS DONE`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::client::{serve_socks, SocksClient};
use super::connector::PtConnector;
use super::delivery::fetch::FetchSettings;
use super::env::{self, supported_transports, ManagedEnv};
use super::modules::ModuleStore;
use super::output::{self, Severity};
use super::report::Reporter;
use super::server::{self, WaterServer};
use super::TRANSPORT_NAME;
use crate::proxy::ProxyUrl;
use crate::runtime::{Limits, NetPolicy, Runtime, RuntimeConfig};
use crate::shutdown::Shutdown;

/// The client's limits on module downloads from bridges (see [`super::delivery`]).
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// The largest module accepted, in bytes.
    pub max_bytes: u32,
    /// How long a whole download may take.
    pub timeout: Duration,
}

/// Runs as a managed proxy configured by tor's environment, with the runtime `limits` and
/// the `drain` time for a graceful exit given on the command line; connection statistics are logged every `stats_every` (if non-zero)
/// and at exit. Returns `Err` (non-zero exit) when tor's request cannot be served at all;
/// `Ok` when asked to exit.
pub async fn run(
    limits: Limits,
    drain: Duration,
    stats_every: Duration,
    metrics: Option<std::net::SocketAddr>,
    fetch: FetchLimits,
) -> Result<(), String> {
    // tor killed outright can neither signal us nor close our stdin: go with it. (The signal
    // comes when the thread that started us ends; tor starts transports from its main thread.)
    if let Err(e) = crate::sys::exit_with_parent() {
        tracing::warn!("cannot ask to be stopped with tor: {e}");
    }
    let out = output::stdout();
    let env = match env::from_process_env() {
        Ok(env) => env,
        Err(e) => {
            let _ = out.report_env_error(&e);
            return Err(format!("managed-proxy environment: {e}"));
        }
    };
    // Before VERSION, so a failure can still be an ENV-ERROR.
    // Private (mode 0700 on Unix): it holds module caches and the bridge line.
    if let Err(e) = crate::sys::create_private_dir(&env.state_location) {
        let msg = format!(
            "TOR_PT_STATE_LOCATION: cannot create {}: {e}",
            env.state_location.display()
        );
        let _ = out.env_error(&msg);
        return Err(msg);
    }
    out.version().map_err(|e| format!("stdout: {e}"))?;
    // tor 0.4.8+ publishes this as the bridge's `transport-info` line.
    let _ = out.version_status(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));

    let proxy = match env.client.as_ref().and_then(|c| c.proxy.as_deref()) {
        None => None,
        Some(raw) => match ProxyUrl::parse(raw) {
            Ok(url) => {
                let _ = out.proxy_done();
                Some(url)
            }
            Err(e) => {
                let _ = out.proxy_error(&e);
                return Err(format!("TOR_PT_PROXY: {e}"));
            }
        },
    };

    let want_client = env
        .client
        .as_ref()
        .is_some_and(|c| !supported_transports(&c.transports).is_empty());
    let want_server = env
        .server
        .as_ref()
        .is_some_and(|s| !supported_transports(&s.transports).is_empty());

    let runtime = match Runtime::new(RuntimeConfig {
        limits,
        cache_dir: Some(env.state_location.join("cache")),
        ..RuntimeConfig::default()
    }) {
        Ok(rt) => rt,
        Err(e) => {
            let msg = format!("cannot start the WATER runtime: {e}");
            report_fatal(&env, want_client, want_server, &msg);
            return Err(msg);
        }
    };
    // The module directory is created up front so that an error naming a file to put there
    // names a directory that exists.
    let module_dir = env.state_location.join("watm");
    if let Err(e) = crate::sys::create_private_dir(&module_dir) {
        tracing::warn!(
            "cannot create the module directory {}: {e}",
            module_dir.display()
        );
    }
    // Module downloads go out like bridge connections: through tor's proxy and bind addresses.
    let policy = PtConnector::from_env(&env, proxy).policy();
    let modules = Arc::new(
        ModuleStore::new(runtime.clone(), Some(module_dir)).with_fetch(FetchSettings {
            policy: policy.clone(),
            max_bytes: fetch.max_bytes,
            timeout: fetch.timeout,
        }),
    );
    let reporter = Arc::new(Reporter::new(true));
    let shutdown = Shutdown::install(env.exit_on_stdin_close, drain)
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let socks = match &env.client {
        None => None,
        Some(_) => {
            let socks = if want_client {
                launch_client(&modules, policy, &reporter).await
            } else {
                None
            };
            let _ = out.cmethods_done();
            socks
        }
    };
    let water_server = match &env.server {
        None => None,
        Some(server_env) => {
            let server = if want_server {
                server::launch(server_env, &modules, &env.state_location, reporter.clone())
                    .await
                    .map(|(server, tcp)| (Arc::new(server), tcp))
            } else {
                None
            };
            let _ = out.smethods_done();
            server
        }
    };
    if socks.is_none() && water_server.is_none() {
        // Like obfs4proxy: nothing to serve is a failed launch; tor notes the exit.
        return Err("no transport to serve".into());
    }
    let metrics_server = match metrics {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(tcp) => {
                if !addr.ip().is_loopback() {
                    tracing::warn!(
                        "--metrics-listen {addr} is not a loopback address: anyone who can \
                         reach it can read the bridge's counters"
                    );
                }
                tracing::info!(target: super::scrub::CONFIGURED, "metrics on http://{addr}/metrics");
                Some(tokio::spawn(super::metrics::serve(
                    tcp,
                    reporter.stats().clone(),
                )))
            }
            Err(e) => {
                reporter.log(
                    Severity::Warning,
                    &format!("water: --metrics-listen {addr}: cannot listen: {e}"),
                );
                None
            }
        },
        None => None,
    };
    let periodic = async {
        if stats_every.is_zero() {
            return std::future::pending().await;
        }
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + stats_every, stats_every);
        loop {
            tick.tick().await;
            reporter.report_stats(&format!("last {}", human(stats_every)));
        }
    };
    tokio::select! {
        _ = serve(socks, water_server, &runtime, &shutdown) => {}
        _ = periodic => {}
    }
    if let Some(task) = metrics_server {
        task.abort();
    }
    reporter.report_stats("at exit");
    Ok(())
}

/// The SOCKS listener for the client side, announced with `CMETHOD`.
async fn launch_client(
    modules: &Arc<ModuleStore>,
    policy: NetPolicy,
    reporter: &Arc<Reporter>,
) -> Option<(Arc<SocksClient>, TcpListener)> {
    let out = output::stdout();
    let tcp = match TcpListener::bind(("127.0.0.1", 0)).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let _ = out.cmethod_error(TRANSPORT_NAME, &format!("cannot listen: {e}"));
            return None;
        }
    };
    let addr = match tcp.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = out.cmethod_error(TRANSPORT_NAME, &format!("cannot listen: {e}"));
            return None;
        }
    };
    let _ = out.cmethod(TRANSPORT_NAME, addr);
    tracing::info!("water client: SOCKS5 on {addr}");
    let client = SocksClient {
        modules: modules.clone(),
        policy,
        reporter: reporter.clone(),
        default_config: None,
    };
    Some((Arc::new(client), tcp))
}

/// Serves both sides until told to stop: on `Draining` the accept loops end and open
/// connections are awaited, for the drain time at most (see [`Shutdown::drain`]); on `Exit`
/// this returns at once.
async fn serve(
    socks: Option<(Arc<SocksClient>, TcpListener)>,
    server: Option<(Arc<WaterServer>, TcpListener)>,
    runtime: &Runtime,
    shutdown: &Shutdown,
) {
    let client_side = async {
        if let Some((client, tcp)) = socks {
            serve_socks(client, &tcp, shutdown).await;
        }
    };
    let server_side = async {
        if let Some((server, tcp)) = server {
            server.serve(tcp, shutdown).await;
        }
    };
    // The accept loops end on `Draining` and on `Exit` alike; the drain returns at once on
    // `Exit`.
    tokio::join!(client_side, server_side);
    shutdown.drain(runtime).await;
}

/// `24h`, `90m`, `30s`: a period as an operator reads it.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Method errors for whatever tor asked for, then the DONE lines, so tor learns why.
fn report_fatal(env: &ManagedEnv, want_client: bool, want_server: bool, msg: &str) {
    let out = output::stdout();
    if env.client.is_some() {
        if want_client {
            let _ = out.cmethod_error(TRANSPORT_NAME, msg);
        }
        let _ = out.cmethods_done();
    }
    if env.server.is_some() {
        if want_server {
            let _ = out.smethod_error(TRANSPORT_NAME, msg);
        }
        let _ = out.smethods_done();
    }
}
