//! The Tor managed-proxy protocol (pluggable transport spec, version 1), as tor 0.4.x and arti
//! speak it to the `water` transport.
//!
//! Everything here is pure and synchronous so it can be tested against byte and string vectors
//! without a tor process:
//!
//! * [`env`](mod@env): the `TOR_PT_*` environment tor hands to a managed proxy.
//! * [`output`]: the line protocol the proxy writes on stdout (`VERSION 1`, `CMETHOD ...`).
//! * [`args`]: the `k=v` codecs: per-connection SOCKS arguments, `SMETHOD ... ARGS:` escaping.
//! * [`module_ref`]: how a bridge argument may name a WebAssembly module file.
//! * [`bridge`]: the `water-*` bridge arguments and `Bridge water ...` lines.
//!
//! Networking (SOCKS, Extended ORPort, the upstream proxy) lives elsewhere; the transport itself
//! is assembled from it here:
//!
//! * [`managed`]: the process tor launches (environment, stdout lines, lifecycle).
//! * [`client`]: the SOCKS5 front, one module session per bridge connection.
//! * [`server`]: the bridge side, one module session per inbound connection, fed to tor.
//! * [`modules`]: which module a bridge uses, loaded once per file; [`catalogue`]: the modules
//!   built into the binary.
//! * [`bridge_config`], [`secrets`]: how a module declares per-bridge secrets, and where a
//!   self-keyed bridge keeps them.
//! * [`connector`]: outbound connections through tor's proxy and bind addresses.
//! * [`report`]: `LOG`/`STATUS` lines for tor, de-duplicated; [`scrub`]: addresses kept out of
//!   every log; [`stats`]: the operator's periodic connection counts, also served by
//!   [`metrics`] in the Prometheus text format.

pub mod args;
pub mod bridge;
#[cfg(feature = "runtime")]
pub mod bridge_config;
#[cfg(feature = "runtime")]
pub mod bridge_setup;
#[cfg(feature = "runtime")]
pub mod catalogue;
#[cfg(feature = "runtime")]
pub mod client;
#[cfg(feature = "runtime")]
pub mod connector;
pub mod delivery;
pub mod env;
#[cfg(feature = "runtime")]
mod file_stamp;
#[cfg(feature = "runtime")]
pub mod managed;
pub mod metrics;
pub mod module_ref;
#[cfg(feature = "runtime")]
pub mod modules;
pub mod output;
pub mod report;
pub mod scrub;
#[cfg(feature = "runtime")]
pub mod secrets;
#[cfg(feature = "runtime")]
pub mod server;
pub mod stats;

/// The only transport name this pluggable transport implements. Names are C identifiers, which
/// tor checks in its configuration, and tor compares them case-sensitively.
pub const TRANSPORT_NAME: &str = "water";
