//! Where water-pt's own log goes, how much it says, and that it says no addresses.
//!
//! Managed by tor, stderr ends up in tor's log at its info level only, which a bridge operator
//! rarely reads; `--log-file` puts everything in a file of its own instead, and `--log-level`
//! sets how much (both on the torrc line, e.g.
//! `ServerTransportPlugin water exec /usr/bin/water-pt --log-level debug --log-file /var/log/tor/water.log`).
//! `RUST_LOG` still works for per-module filters when `--log-level` is not given. Every line is
//! [scrubbed](crate::pt::scrub) of addresses unless `--unsafe-logging`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::pt::scrub;

/// The logging options, accepted by managed mode and every subcommand.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// How much to log: error, warn, info, debug, trace or off (default: info, or RUST_LOG).
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<log::LevelFilter>,
    /// Append the log to this file instead of writing it to stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Log IP addresses and host:port pairs as they are (by default they are
    /// replaced by [scrubbed], in the log and in what tor is told).
    #[arg(long, global = true)]
    pub unsafe_logging: bool,
}

impl LogArgs {
    /// Installs the logger. Fails only when `--log-file` cannot be opened.
    pub fn init(&self) -> Result<(), String> {
        scrub::set_unsafe_logging(self.unsafe_logging);
        let mut builder =
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
        if let Some(level) = self.log_level {
            builder.filter_level(level);
        }
        match &self.log_file {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
                builder.target(env_logger::Target::Pipe(Box::new(file)));
            }
            // Never stdout: that is tor's protocol channel.
            None => {
                builder.target(env_logger::Target::Stderr);
            }
        }
        builder.format(|buf, record| {
            let text = record.args().to_string();
            let text = match record.target() {
                scrub::CONFIGURED => text.as_str().into(),
                _ => scrub::for_log(&text),
            };
            writeln!(
                buf,
                "[{} {:5} {}] {}",
                buf.timestamp_seconds(),
                record.level(),
                record.target(),
                text
            )
        });
        let _ = builder.try_init();
        Ok(())
    }
}
