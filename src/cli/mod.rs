//! The `water-pt` command line.
//!
//! Without a subcommand and with `TOR_PT_MANAGED_TRANSPORT_VER` in the
//! environment, `water-pt` is a managed pluggable transport launched by tor.
//! The subcommands run the same runtime standalone, for testing and for use
//! without tor.

mod client;
mod relay;
mod server;

use crate::runtime::{Limits, Runtime, RuntimeConfig, Watm};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "water-pt",
    version,
    about = "WATER (WebAssembly Transport Modules) runtime and Tor pluggable transport",
    long_about = "WATER runtime and Tor pluggable transport.\n\n\
        Run without a subcommand from tor (ClientTransportPlugin / ServerTransportPlugin \
        water exec /path/to/water-pt): it then speaks the managed-proxy protocol. \
        The subcommands run the runtime standalone.\n\n\
        Logs go to stderr; set the level with RUST_LOG (e.g. RUST_LOG=debug)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Limits of managed mode (the subcommands take the same options after
    /// their name). tor passes them from the torrc line, e.g.
    /// `ClientTransportPlugin water exec /usr/bin/water-pt --network-stall-ms 30000`.
    #[command(flatten)]
    managed: LimitArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Accept plain TCP (or SOCKS5) connections and carry each through a
    /// module's dialer role.
    Client(client::ClientArgs),
    /// Accept transport connections, decode each with a module's listener
    /// role and forward the plaintext to a TCP address.
    Server(server::ServerArgs),
    /// Accept connections and relay each to a fixed remote with a module's
    /// relay role (`watm_associate_v1`).
    Relay(relay::RelayArgs),
}

/// Options every standalone command shares: the module and the runtime's
/// limits.
#[derive(Args, Debug, Clone)]
pub struct ModuleArgs {
    /// The WATM (.wasm) to run; the built-in `plain` module when omitted.
    #[arg(long, value_name = "FILE")]
    pub wasm: Option<PathBuf>,
    /// A file whose bytes the module reads as /conf/watm.cfg.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for compiled modules (default: $XDG_CACHE_HOME/water-pt or
    /// ~/.cache/water-pt).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not cache compiled modules on disk.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The runtime's limits (see [`Limits`]), as options of every command.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Largest linear memory one instance may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_memory_mib: usize,
    /// Wasm stack size per instance, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 512)]
    pub wasm_stack_kib: usize,
    /// Stop a module that runs wasm code this long without calling the host.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub max_compute_ms: u64,
    /// Most connections open at once; further ones are refused at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// How long a module asked to stop may take before it is forced.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    pub stop_grace_ms: u64,
    /// Stop a connection whose module has not finished its setup (init,
    /// dial or accept, control pipe) this long after it started.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub setup_timeout_secs: u64,
    /// Fail a network connection whose peer leaves written data unread this
    /// long (TCP_USER_TIMEOUT).
    #[arg(long, value_name = "MS", default_value_t = 120_000)]
    pub network_stall_ms: u64,
    /// Fix the kernel send and receive buffers of every connection's
    /// sockets at this size instead of letting the kernel autotune them.
    /// Bounds kernel memory on a busy bridge (autotuned buffers can grow to
    /// several MiB per socket); keep it above the paths' bandwidth-delay
    /// product.
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(4..=65536))]
    pub socket_buffer_kib: Option<u32>,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_memory: self.max_memory_mib.saturating_mul(1 << 20),
            wasm_stack: self.wasm_stack_kib.saturating_mul(1 << 10),
            max_compute: Duration::from_millis(self.max_compute_ms),
            max_connections: self.max_connections,
            stop_grace: Duration::from_millis(self.stop_grace_ms),
            setup_timeout: Duration::from_secs(self.setup_timeout_secs),
            network_stall: Duration::from_millis(self.network_stall_ms),
            socket_buffer: self.socket_buffer_kib.map(|kib| kib as usize * 1024),
        }
    }
}

impl ModuleArgs {
    pub fn limits(&self) -> Limits {
        self.limits.limits()
    }

    /// Builds the runtime and loads the module and its config.
    pub fn load(&self) -> Result<Loaded, String> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        let runtime = Runtime::new(RuntimeConfig {
            limits: self.limits(),
            cache_dir,
            ..RuntimeConfig::default()
        })
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
        let watm = match &self.wasm {
            Some(path) => runtime.load_file(path),
            None => runtime.load(crate::DEFAULT_MODULE),
        }
        .map_err(|e| format!("cannot load module: {e}"))?;
        let config = match &self.config {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("cannot read config {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok((runtime, watm, config))
    }
}

/// A runtime, the module it loaded and that module's config bytes.
pub type Loaded = (Runtime, Arc<Watm>, Option<Vec<u8>>);

/// `$XDG_CACHE_HOME/water-pt`, else `~/.cache/water-pt`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("water-pt"))
}

/// Logs go to stderr only: stdout is tor's protocol channel.
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .try_init();
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Launched by tor, a bad option on the torrc line is also an ENV-ERROR, so that
            // tor's log says why the transport did not start.
            if e.use_stderr() && std::env::var_os("TOR_PT_MANAGED_TRANSPORT_VER").is_some() {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("bad command line");
                let first = first.strip_prefix("error: ").unwrap_or(first);
                let _ = crate::pt::output::stdout().env_error(&format!("command line: {first}"));
            }
            e.exit();
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Some(Command::Client(args)) => client::run(args).await,
            Some(Command::Server(args)) => server::run(args).await,
            Some(Command::Relay(args)) => relay::run(args).await,
            None => {
                if std::env::var_os("TOR_PT_MANAGED_TRANSPORT_VER").is_some() {
                    crate::pt::managed::run(cli.managed.limits()).await
                } else {
                    Err(
                        "no subcommand given and TOR_PT_MANAGED_TRANSPORT_VER is not set \
                         (tor sets it when it launches a transport); see --help"
                            .to_string(),
                    )
                }
            }
        }
    });
    // Session threads may still be blocked in a module; they end with the
    // process.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            tracing::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// Serves `tcp` with `serve` (an accept loop that returns once the shutdown
/// phase leaves `Running`) and ends the way the transports' convention asks:
/// after the first SIGINT the listening socket is closed and open
/// connections are awaited; SIGTERM or a second SIGINT ends everything at
/// once.
pub(crate) async fn serve_until_stopped(
    runtime: &Runtime,
    shutdown: &crate::shutdown::Shutdown,
    tcp: tokio::net::TcpListener,
    serve: impl AsyncFnOnce(&tokio::net::TcpListener),
) {
    use crate::shutdown::Phase;
    tokio::select! {
        _ = serve(&tcp) => {}
        _ = shutdown.reached(Phase::Exit) => return,
    }
    drop(tcp);
    tokio::select! {
        _ = runtime.wait_idle() => {}
        _ = shutdown.reached(Phase::Exit) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_mode_defaults_are_the_runtime_defaults() {
        let cli = Cli::try_parse_from(["water-pt"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.managed.limits(), Limits::default());
    }

    #[test]
    fn managed_mode_takes_limits_from_the_torrc_line() {
        let cli = Cli::try_parse_from([
            "water-pt",
            "--network-stall-ms",
            "1500",
            "--setup-timeout-secs",
            "20",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let limits = cli.managed.limits();
        assert_eq!(limits.network_stall, Duration::from_millis(1500));
        assert_eq!(limits.setup_timeout, Duration::from_secs(20));
        let err = Cli::try_parse_from(["water-pt", "--setup-timeout-secs", "0"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn subcommands_take_limits_after_their_name() {
        let cli = Cli::try_parse_from([
            "water-pt",
            "client",
            "--listen",
            "127.0.0.1:0",
            "--remote",
            "127.0.0.1:1",
            "--max-connections",
            "7",
        ])
        .unwrap();
        let Some(Command::Client(args)) = cli.command else {
            panic!("not the client subcommand");
        };
        assert_eq!(args.module.limits().max_connections, 7);
    }

    #[test]
    fn socket_buffers_are_autotuned_unless_a_size_is_given() {
        let cli = Cli::try_parse_from(["water-pt"]).unwrap();
        assert_eq!(cli.managed.limits().socket_buffer, None);
        let cli = Cli::try_parse_from(["water-pt", "--socket-buffer-kib", "64"]).unwrap();
        assert_eq!(cli.managed.limits().socket_buffer, Some(64 << 10));
        for bad in ["0", "3", "65537", "64k"] {
            let err = Cli::try_parse_from(["water-pt", "--socket-buffer-kib", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn a_malformed_limit_is_refused() {
        let err = Cli::try_parse_from(["water-pt", "--network-stall-ms", "soon"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
