//! Errors of the WATER runtime.

use crate::wasi::Errno;
use std::io;

/// Why a module could not be loaded or a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a WebAssembly module wasmtime accepts.
    #[error("invalid WebAssembly module: {0}")]
    InvalidModule(String),
    /// A WATM v1 export every module must have is absent.
    #[error("not a WATM v1 module: it does not export `{0}`")]
    MissingExport(&'static str),
    /// The module's exports name no WATM generation, or two.
    #[error("not a WATM module: {0}")]
    Generation(String),
    /// A WATM v0 export every v0 module must have is absent.
    #[error("not a WATM v0 module: it does not export `{0}`")]
    MissingV0Export(&'static str),
    /// An export exists with the wrong type.
    #[error("module export `{name}` has the wrong type (expected {expected})")]
    BadExportType {
        name: &'static str,
        expected: &'static str,
    },
    /// The module lacks the export a role needs.
    #[error("module cannot act as a {role}: it does not export `{export}`")]
    RoleUnsupported {
        role: &'static str,
        export: &'static str,
    },
    /// The module imports something the runtime cannot provide.
    #[error("module imports {0}, which the runtime cannot provide")]
    UnsupportedImport(String),
    /// The connection limit is reached.
    #[error("connection limit reached ({0} open)")]
    TooManyConnections(usize),
    /// A `watm_*` export returned a negative errno.
    #[error("{call} returned -{errno}")]
    Guest { call: &'static str, errno: Errno },
    /// The module trapped (or was stopped) inside a call.
    #[error("{call} trapped: {reason}")]
    Trap { call: &'static str, reason: String },
    /// A role function returned a number that is not one of its sockets.
    #[error("{call} returned fd {fd}, which is not a network socket of this instance")]
    BogusFd { call: &'static str, fd: i32 },
    /// The host failed to dial on the module's behalf.
    #[error("dial {address} failed: {source}")]
    Dial {
        address: String,
        #[source]
        source: io::Error,
    },
    /// The connection was not ready within the setup deadline
    /// ([`crate::runtime::Limits::setup_timeout`]) and was stopped.
    #[error("module did not finish connection setup within {} s", .0.as_secs_f64())]
    SetupTimeout(std::time::Duration),
    /// Whoever started the connection stopped waiting for it.
    #[error("connection setup cancelled")]
    SetupCancelled,
    /// An OS-level failure (sockets, threads).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// wasmtime refused something (engine setup, instantiation).
    #[error("wasmtime: {0}")]
    Engine(String),
}

impl Error {
    pub(crate) fn engine(e: impl std::fmt::Display) -> Self {
        Error::Engine(format!("{e:#}"))
    }
}
