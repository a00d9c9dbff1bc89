//! water-pt: a WATER runtime (WATM v1 and v0) on wasmtime, shipped as a Tor
//! pluggable transport.
//!
//! The crate is layered like the data path:
//! - [`sys`]: the few OS calls the runtime needs (poll, wake-ups, socket I/O);
//! - [`wasi`]: the WASI preview1 surface a WATM sees (sockets as fds);
//! - [`runtime`]: engine, modules, one instance per connection, and the
//!   dialer / listener / relay roles;
//! - [`pt`]: tor's managed-proxy protocol (environment, stdout lines, args);
//! - [`socks`], [`extor`], [`proxy`]: the SOCKS5 front tor's client talks
//!   to, the Extended ORPort client of the bridge side, and outbound dialing
//!   through tor's upstream proxy.
//!
//! Everything that needs wasmtime sits behind the `runtime` feature (on by
//! default). Without it only the protocol parsers and clients remain (the
//! managed-proxy environment and lines, SOCKS, the Extended ORPort, upstream
//! proxies), which is what the fuzz targets of those parsers build against.

#![deny(unsafe_code)]

#[cfg(feature = "runtime")]
pub mod cli;
pub mod extor;
#[doc(hidden)]
pub mod fuzzing;
pub mod proxy;
pub mod pt;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod serve;
pub mod shutdown;
pub mod socks;
pub mod sys;
#[cfg(feature = "runtime")]
pub mod wasi;

#[cfg(feature = "runtime")]
pub use runtime::{
    AllowList, Dialer, Error, Limits, Listener, NetPolicy, Relay, Role, Runtime, RuntimeConfig,
    WaterStream, Watm,
};

/// The module used when none is named: `plain`, a passthrough (the first entry of the
/// [built-in catalogue](pt::catalogue)).
#[cfg(feature = "runtime")]
pub const DEFAULT_MODULE: &[u8] = pt::catalogue::BUILTINS[0].wasm;
