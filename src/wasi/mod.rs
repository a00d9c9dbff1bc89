//! The WASI preview1 surface a WATM needs, implemented over wasmtime's
//! [`Linker`].
//!
//! `wasmtime-wasi` cannot hold a host socket as a preview1 descriptor, and a
//! WATM's whole job is reading, writing and polling sockets, so this module
//! provides its own preview1 functions: sockets as guest fds, `poll_oneoff`
//! over them, a read-only `/conf` preopen for `watm.cfg`, clocks, randomness,
//! empty args/environ and `proc_exit`. Any other preview1 import a module
//! declares is linked to a stub that returns `ENOSYS`, so an unused import
//! never makes instantiation fail.

mod errno;
mod fdtable;
mod fs;
mod io;
mod memory;
mod misc;
mod poll;

pub use errno::Errno;
pub use fdtable::{Entry, FdTable, Socket, MAX_FDS};
pub use memory::{GuestMemory, IoVec};

use crate::sys::Waker;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::{Caller, Linker, Memory};

/// The import module name of WASI preview1.
pub const PREVIEW1: &str = "wasi_snapshot_preview1";

/// The preview1 functions this module implements; every other preview1
/// import is linked to an `ENOSYS` stub.
pub const IMPLEMENTED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "environ_get",
    "environ_sizes_get",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_filestat_get",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_read",
    "fd_seek",
    "fd_tell",
    "fd_write",
    "path_filestat_get",
    "path_open",
    "poll_oneoff",
    "proc_exit",
    "random_get",
    "sched_yield",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Per-instance WASI state.
pub struct WasiCtx {
    pub fds: FdTable,
    /// Contents of `/conf/watm.cfg`, when the runtime was given a config.
    conf: Option<Arc<[u8]>>,
    /// Signalled by the runtime to stop this instance; included in every wait.
    stop: Arc<Waker>,
    /// The guest's exported memory, set right after instantiation.
    pub memory: Option<Memory>,
    /// Epoch ticks spent in wasm code since the last host call; the runtime
    /// stops a module that computes too long without ever calling the host.
    pub ticks_without_host_call: u32,
    /// Reference point of the monotonic clock.
    clock_base: Instant,
    /// Prefix for log lines about this instance (the connection id).
    pub tag: u64,
}

impl WasiCtx {
    pub fn new(conf: Option<Arc<[u8]>>, stop: Arc<Waker>, tag: u64) -> Self {
        Self {
            fds: FdTable::new(conf.is_some()),
            conf,
            stop,
            memory: None,
            ticks_without_host_call: 0,
            clock_base: Instant::now(),
            tag,
        }
    }

    pub fn stop_signal(&self) -> &Waker {
        &self.stop
    }
}

/// Store data that carries a [`WasiCtx`].
pub trait WasiView: Send + 'static {
    fn wasi(&mut self) -> &mut WasiCtx;
}

/// Why a host call ended the guest's execution instead of returning.
#[derive(Debug)]
pub enum HostTrap {
    /// The runtime asked the instance to stop while it was waiting.
    Stopped,
    /// The guest called `proc_exit(code)`.
    Exit(i32),
}

impl std::fmt::Display for HostTrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostTrap::Stopped => f.write_str("stopped by the runtime"),
            HostTrap::Exit(code) => write!(f, "module called proc_exit({code})"),
        }
    }
}

impl std::error::Error for HostTrap {}

/// A failed host call: an errno returned to the guest, or a trap.
pub(crate) enum Fail {
    Errno(Errno),
    Trap(HostTrap),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Errno(e)
    }
}

pub(crate) type HostResult<T = ()> = Result<T, Fail>;

/// Runs a host call body with the guest memory and WASI state borrowed, and
/// maps its outcome to the preview1 convention (errno result, or trap).
pub(crate) fn with_ctx<T: WasiView>(
    caller: &mut Caller<'_, T>,
    body: impl FnOnce(&mut GuestMemory<'_>, &mut WasiCtx) -> HostResult,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller.data_mut().wasi().memory else {
        return Ok(Errno::FAULT.raw());
    };
    let (bytes, data) = memory.data_and_store_mut(&mut *caller);
    let ctx = data.wasi();
    ctx.ticks_without_host_call = 0;
    let mut mem = GuestMemory::new(bytes);
    match body(&mut mem, ctx) {
        Ok(()) => Ok(0),
        Err(Fail::Errno(e)) => Ok(e.raw()),
        Err(Fail::Trap(t)) => Err(wasmtime::Error::new(t)),
    }
}

/// Adds every implemented preview1 function to `linker`.
pub fn add_to_linker<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    io::add_to_linker(linker)?;
    fs::add_to_linker(linker)?;
    poll::add_to_linker(linker)?;
    misc::add_to_linker(linker)?;
    Ok(())
}
