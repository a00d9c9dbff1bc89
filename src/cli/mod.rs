//! The `water-pt` command line.
//!
//! Without a subcommand and with `TOR_PT_MANAGED_TRANSPORT_VER` in the
//! environment, `water-pt` is a managed pluggable transport launched by tor.
//! The subcommands run the same runtime standalone, for testing and for use
//! without tor.

mod check;
mod client;
mod logging;
mod modules;
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
        Logs go to stderr (tor shows them at its info level), or to --log-file; \
        addresses are scrubbed from them unless --unsafe-logging. The options below \
        apply to managed mode and to every subcommand, before or after its name; \
        tor passes them from the torrc line, e.g. \
        `ServerTransportPlugin water exec /usr/bin/water-pt --log-level debug`."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The runtime's limits.
    #[command(flatten)]
    limits: LimitArgs,
    /// Where logs go and how much they say.
    #[command(flatten)]
    logging: logging::LogArgs,
    /// Managed mode: log the connection statistics (one line per module: accepted,
    /// completed, failed by reason, peak at once; no addresses) this often, and at exit.
    /// 0: only at exit.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    stats_interval_secs: u64,
    /// Managed mode: serve the same counters (totals since the start) in the
    /// Prometheus text format on this address; keep it on loopback
    /// (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// After the first SIGINT (or, in managed mode, stdin closing when tor asks for that),
    /// let open connections finish for this long, then stop them and exit.
    #[arg(long, global = true, value_name = "SECS",
          default_value_t = crate::shutdown::DEFAULT_DRAIN.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    shutdown_timeout_secs: u64,
    /// Managed mode, client side: the largest module downloaded from a bridge (for a
    /// `water-sha256` pin the client lacks; see `water-fetch` in pt-spec), in MiB. A bridge
    /// announcing more is refused before any of it is read.
    #[arg(long, value_name = "MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4095))]
    max_fetch_mib: u32,
    /// Managed mode, client side: how long a module download from a bridge may take, from
    /// connecting to the last byte.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    fetch_timeout_secs: u64,
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
    /// List the built-in modules: name, size, SHA-256 and whether a bridge
    /// keys itself with it.
    Modules,
    /// Load a module and run it up to `watm_init_v1` with a config, as a
    /// bridge does at start-up: says why a module or config is refused.
    Check(check::CheckArgs),
    /// Print the bridge line a bridge with these options publishes, keying it
    /// like the bridge would (secrets kept in --state-dir).
    BridgeLine(check::BridgeLineArgs),
    /// Print a config file as a `water-config=` value (URL-safe base64).
    EncodeConfig(modules::EncodeConfigArgs),
}

impl Command {
    /// Whether the runtime's limits mean anything to this command; the
    /// others refuse them rather than ignore them.
    fn uses_limits(&self) -> bool {
        !matches!(self, Command::Modules | Command::EncodeConfig(_))
    }

    /// Whether this command serves connections until told to stop (and so
    /// has open connections to drain).
    fn serves(&self) -> bool {
        matches!(
            self,
            Command::Client(_) | Command::Server(_) | Command::Relay(_)
        )
    }
}

/// Options every standalone command shares: the module and its config.
#[derive(Args, Debug, Clone)]
pub struct ModuleArgs {
    /// The WATM (.wasm) to run, or the name of a built-in module (see
    /// `water-pt modules`); the built-in `plain` module when omitted.
    #[arg(long, value_name = "FILE|NAME")]
    pub wasm: Option<PathBuf>,
    /// A file whose bytes the module reads as /conf/watm.cfg.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for compiled modules (default: $XDG_CACHE_HOME/water-pt or
    /// ~/.cache/water-pt; on Windows %LOCALAPPDATA%\water-pt).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not cache compiled modules on disk.
    #[arg(long)]
    pub no_cache: bool,
}

/// The runtime's limits (see [`Limits`]), options of managed mode and of
/// every command that runs modules.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest linear memory one instance may use, in MiB.
    #[arg(long, global = true, value_name = "MIB", default_value_t = 64)]
    pub max_memory_mib: usize,
    /// Wasm stack size per instance, in KiB.
    #[arg(long, global = true, value_name = "KIB", default_value_t = 512)]
    pub wasm_stack_kib: usize,
    /// Stop a module that runs wasm code this long without a host call that
    /// waits or moves data (calls such as `clock_time_get` do not count).
    #[arg(long, global = true, value_name = "MS", default_value_t = 10_000)]
    pub max_compute_ms: u64,
    /// Most connections open at once; further ones are refused at once.
    #[arg(long, global = true, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// How long a module asked to stop may take before it is forced.
    #[arg(long, global = true, value_name = "MS", default_value_t = 2_000)]
    pub stop_grace_ms: u64,
    /// Stop a connection whose module has not finished its setup (init,
    /// dial or accept, control pipe) this long after it started.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub setup_timeout_secs: u64,
    /// Fail a network connection whose peer leaves written data unread this
    /// long (TCP_USER_TIMEOUT).
    #[arg(long, global = true, value_name = "MS", default_value_t = 120_000)]
    pub network_stall_ms: u64,
    /// Fix the kernel send and receive buffers of every connection's
    /// sockets at this size instead of letting the kernel autotune them.
    /// Bounds kernel memory on a busy bridge (autotuned buffers can grow to
    /// several MiB per socket); keep it above the paths' bandwidth-delay
    /// product.
    #[arg(long, global = true, value_name = "KIB", value_parser = clap::value_parser!(u32).range(4..=65536))]
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
    /// Builds the runtime with `limits` and loads the module and its config.
    pub fn load(&self, limits: Limits) -> Result<Loaded, String> {
        let runtime = self.runtime(limits)?;
        let watm = runtime
            .load(&self.module_bytes()?)
            .map_err(|e| format!("cannot load module: {e}"))?;
        Ok((runtime, watm, self.config_bytes()?))
    }

    /// [`ModuleArgs::load`], then runs the module up to `watm_init_v1` with the config, so a
    /// module that refuses its config stops the command at start with the module's reason
    /// instead of failing every connection.
    pub async fn load_checked(&self, limits: Limits) -> Result<Loaded, String> {
        let (runtime, watm, config) = self.load(limits)?;
        runtime
            .check_init(watm.clone(), config.as_deref())
            .await
            .map_err(|e| {
                format!(
                    "module {} refused its configuration: {e}",
                    watm.sha256_hex()
                )
            })?;
        Ok((runtime, watm, config))
    }

    /// A runtime with `limits` and the compiled-module cache these options ask for.
    pub fn runtime(&self, limits: Limits) -> Result<Runtime, String> {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        };
        Runtime::new(RuntimeConfig {
            limits,
            cache_dir,
            ..RuntimeConfig::default()
        })
        .map_err(|e| format!("cannot start the runtime: {e}"))
    }

    /// The bytes of `--config`, if given.
    pub fn config_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        self.config
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|e| format!("cannot read config {}: {e}", path.display()))
            })
            .transpose()
    }
}

impl ModuleArgs {
    /// The bytes `--wasm` names: a built-in module's (a bare name like `shadowsocks`, when no
    /// file of that name is in the current directory) or a file's.
    pub fn module_bytes(&self) -> Result<std::borrow::Cow<'static, [u8]>, String> {
        let Some(path) = &self.wasm else {
            return Ok(crate::DEFAULT_MODULE.into());
        };
        let bare = path.components().count() == 1 && !path.exists();
        match path.to_str().and_then(crate::pt::catalogue::by_name) {
            Some(b) if bare => Ok(b.wasm.into()),
            _ => std::fs::read(path)
                .map(Into::into)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "no module file {} (built-in modules: {})",
                        path.display(),
                        crate::pt::catalogue::names()
                    ),
                    _ => format!("cannot read module {}: {e}", path.display()),
                }),
        }
    }
}

/// A runtime, the module it loaded and that module's config bytes.
pub type Loaded = (Runtime, Arc<Watm>, Option<Vec<u8>>);

/// `water-pt` in the user's cache directory (see [`crate::sys::user_cache_dir`]).
pub fn default_cache_dir() -> Option<PathBuf> {
    Some(crate::sys::user_cache_dir()?.join("water-pt"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match parse(std::env::args_os()) {
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
    if let Err(msg) = cli.logging.init() {
        eprintln!("water-pt: {msg}");
        if std::env::var_os("TOR_PT_MANAGED_TRANSPORT_VER").is_some() {
            let _ = crate::pt::output::stdout().env_error(&msg);
        }
        return ExitCode::FAILURE;
    }
    let limits = cli.limits.limits();
    let drain = Duration::from_secs(cli.shutdown_timeout_secs);
    log_fd_capacity(crate::sys::raise_fd_limit());
    crate::sys::tune_heap();
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
    // The command runs as a task on a worker thread rather than on this thread: an accept
    // loop that spawns a connection's task from a worker queues it on that worker, which runs
    // it next without waking another thread; spawned from outside the workers, every
    // connection would cost a cross-thread wake-up.
    let command = rt.spawn(async move {
        match cli.command {
            Some(Command::Client(args)) => client::run(args, limits, drain).await,
            Some(Command::Server(args)) => server::run(args, limits, drain).await,
            Some(Command::Relay(args)) => relay::run(args, limits, drain).await,
            Some(Command::Modules) => modules::list(),
            Some(Command::Check(args)) => check::check(args, limits).await,
            Some(Command::BridgeLine(args)) => check::bridge_line(args, limits).await,
            Some(Command::EncodeConfig(args)) => modules::encode_config(args),
            None => {
                if std::env::var_os("TOR_PT_MANAGED_TRANSPORT_VER").is_some() {
                    let every = std::time::Duration::from_secs(cli.stats_interval_secs);
                    let fetch = crate::pt::managed::FetchLimits {
                        max_bytes: cli.max_fetch_mib << 20,
                        timeout: Duration::from_secs(cli.fetch_timeout_secs),
                    };
                    crate::pt::managed::run(limits, drain, every, cli.metrics_listen, fetch).await
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
    let result = rt
        .block_on(command)
        .unwrap_or_else(|e| Err(format!("the command task failed: {e}")));
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

/// Parses the command line; a limit given to a command that runs no module is refused, not
/// ignored.
fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    for (id, flag) in [
        ("stats_interval_secs", "--stats-interval-secs"),
        ("metrics_listen", "--metrics-listen"),
    ] {
        if cli.command.is_some() && matches.value_source(id) == Some(ValueSource::CommandLine) {
            return Err(command.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{flag} applies to managed mode (launched by tor) only"),
            ));
        }
    }
    if cli.command.as_ref().is_some_and(|c| !c.serves())
        && matches.value_source("shutdown_timeout_secs") == Some(ValueSource::CommandLine)
    {
        let name = matches.subcommand_name().unwrap_or("this command");
        return Err(command.error(
            clap::error::ErrorKind::ArgumentConflict,
            format!("--shutdown-timeout-secs does not apply to `water-pt {name}`, which serves no connections"),
        ));
    }
    if cli.command.as_ref().is_some_and(|c| !c.uses_limits()) {
        let limit_ids = LimitArgs::augment_args(clap::Command::new("limits"));
        for arg in limit_ids.get_arguments() {
            let id = arg.get_id().as_str();
            if matches.value_source(id) == Some(ValueSource::CommandLine) {
                let name = matches.subcommand_name().unwrap_or("this command");
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--{} does not apply to `water-pt {name}`, which runs no module",
                        arg.get_long().unwrap_or(id)
                    ),
                ));
            }
        }
    }
    Ok(cli)
}

/// Says once, at start, how many connections the descriptor limit leaves room for.
fn log_fd_capacity(limit: std::io::Result<Option<u64>>) {
    match limit {
        Ok(Some(n)) => {
            let each = crate::sys::DESCRIPTORS_PER_CONNECTION;
            tracing::info!(
                "open-file limit {n}: room for about {} connections ({each} descriptors each)",
                n / each
            )
        }
        Ok(None) => tracing::info!("open-file limit: unlimited"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// Serves `tcp` with `serve` (an accept loop that returns once the shutdown
/// phase leaves `Running`) and ends the way the transports' convention asks:
/// after the first SIGINT the listening socket is closed and open
/// connections are awaited for the drain time, then stopped (see
/// [`crate::shutdown::Shutdown::drain`]); SIGTERM or a second SIGINT ends
/// everything at once.
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
    shutdown.drain(runtime).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_mode_defaults_are_the_runtime_defaults() {
        let cli = Cli::try_parse_from(["water-pt"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.limits.limits(), Limits::default());
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
        let limits = cli.limits.limits();
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
        assert!(matches!(cli.command, Some(Command::Client(_))));
        assert_eq!(cli.limits.limits().max_connections, 7);
    }

    /// Options before the subcommand's name apply to it as well.
    #[test]
    fn global_options_before_the_subcommand_apply() {
        let cli = parse([
            "water-pt",
            "--max-connections",
            "1",
            "--log-level",
            "debug",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "127.0.0.1:1",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Server(_))));
        assert_eq!(cli.limits.limits().max_connections, 1);
        assert_eq!(cli.logging.log_level, Some(log::LevelFilter::Debug));
    }

    /// A limit given to a command that runs no module is refused with a message naming it.
    #[test]
    fn limits_are_refused_where_they_mean_nothing() {
        for args in [
            &["water-pt", "--max-connections", "1", "modules"][..],
            &["water-pt", "modules", "--max-memory-mib", "8"],
            &["water-pt", "encode-config", "f", "--network-stall-ms", "5"],
        ] {
            let err = parse(args).expect_err("refused");
            let text = err.to_string();
            assert!(
                text.contains("does not apply") && text.contains("--"),
                "{text}"
            );
        }
        assert!(parse(["water-pt", "--log-level", "warn", "modules"]).is_ok());
        let err = parse(["water-pt", "--metrics-listen", "127.0.0.1:1", "check"]).unwrap_err();
        assert!(err.to_string().contains("managed mode"), "{err}");
        let err = parse(["water-pt", "--stats-interval-secs", "5", "modules"]).unwrap_err();
        assert!(err.to_string().contains("managed mode"), "{err}");
        assert_eq!(
            parse(["water-pt", "--stats-interval-secs", "5"])
                .unwrap()
                .stats_interval_secs,
            5
        );
        assert!(parse(["water-pt", "--max-connections", "1", "check"]).is_ok());
    }

    /// The drain time after the first SIGINT: a default, the torrc line or a serving
    /// command can change it, a command that serves nothing refuses it.
    #[test]
    fn shutdown_timeout_from_the_torrc_line_or_a_serving_command() {
        let cli = parse(["water-pt"]).unwrap();
        assert_eq!(
            Duration::from_secs(cli.shutdown_timeout_secs),
            crate::shutdown::DEFAULT_DRAIN
        );
        assert_eq!(
            parse(["water-pt", "--shutdown-timeout-secs", "5"])
                .unwrap()
                .shutdown_timeout_secs,
            5
        );
        let served = [
            "water-pt",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "127.0.0.1:1",
            "--shutdown-timeout-secs",
            "0",
        ];
        assert_eq!(parse(served).unwrap().shutdown_timeout_secs, 0);
        let err = parse(["water-pt", "check", "--shutdown-timeout-secs", "5"]).unwrap_err();
        assert!(err.to_string().contains("serves no connections"), "{err}");
        let err = Cli::try_parse_from(["water-pt", "--shutdown-timeout-secs", "soon"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn socket_buffers_are_autotuned_unless_a_size_is_given() {
        let cli = Cli::try_parse_from(["water-pt"]).unwrap();
        assert_eq!(cli.limits.limits().socket_buffer, None);
        let cli = Cli::try_parse_from(["water-pt", "--socket-buffer-kib", "64"]).unwrap();
        assert_eq!(cli.limits.limits().socket_buffer, Some(64 << 10));
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
