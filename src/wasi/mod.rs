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
mod send;

pub use errno::Errno;
pub use fdtable::{Entry, FdTable, LazySocket, OpenSocket, Socket, MAX_FDS};
pub use memory::{GuestMemory, IoVec};

use crate::sys::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// How the runtime tells an instance to stop, through one descriptor.
///
/// A graceful stop makes the guest's control fd readable (it reads a single
/// `0x00`, then end-of-stream), which is what a WATM watches for. A forced
/// stop (`kill`) ends every wait of the instance with a trap. Both wake the
/// same OS descriptor, which every host-side wait of the instance includes;
/// the flags say which it was. The control fd itself is virtual, so a
/// connection costs no socket pair for it.
#[derive(Debug)]
pub struct StopSignal {
    waker: Waker,
    requested: AtomicBool,
    killed: AtomicBool,
}

impl StopSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            waker: Waker::new()?,
            requested: AtomicBool::new(false),
            killed: AtomicBool::new(false),
        })
    }

    /// Graceful stop: the control fd becomes readable.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Forced stop: every wait of the instance traps.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// The descriptor every wait includes.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Called when the waker fired during a wait: traps on a forced stop,
    /// otherwise re-arms the waker (the graceful request stays recorded in
    /// its flag) so later waits block again.
    pub(crate) fn woken(&self) -> Result<(), HostTrap> {
        self.waker.drain();
        // Checked after draining: a kill that raced with the drain is seen.
        if self.is_killed() {
            Err(HostTrap::Stopped)
        } else {
            Ok(())
        }
    }
}

/// Per-instance WASI state.
pub struct WasiCtx {
    pub fds: FdTable,
    /// Contents of `/conf/watm.cfg`, when the runtime was given a config.
    conf: Option<Arc<[u8]>>,
    /// How the runtime stops this instance; included in every wait.
    stop: Arc<StopSignal>,
    /// The guest's exported memory, set right after instantiation.
    pub memory: Option<Memory>,
    /// Epoch ticks spent in wasm code since the module last left it, that
    /// is, since a host call that waited or moved data (see
    /// [`WasiCtx::progressed`]); the runtime stops a module that computes too
    /// long without ever doing either. Calls that do neither (`sched_yield`,
    /// `clock_time_get`, a write refused with `EAGAIN`) keep counting, so a
    /// module cannot hide a busy loop behind them.
    pub ticks_without_host_call: u32,
    /// How long a write to a guest socket may wait without the kernel taking
    /// a byte before it gives up (the runtime's network-stall limit).
    network_stall: Duration,
    /// Non-blocking socket writes refused with `EAGAIN` since the module
    /// last moved data or called `poll_oneoff`, and when the first of them
    /// was refused:
    /// a module that retries such a write without waiting in between is
    /// spinning (see [`send`]).
    refused_writes: u32,
    refused_since: Option<Instant>,
    /// Whether the module has waited for a socket to become writable
    /// (`poll_oneoff` FD_WRITE). Such a module handles short writes itself,
    /// so its non-blocking writes return what the kernel took (see [`send`]).
    ///
    /// This holds for the whole instance, not only the socket it polled: a
    /// module announces itself once, on a socket it has (the SDK's loop polls
    /// its network socket as it starts), and a caller socket opened on the
    /// module's first write cannot be polled beforehand without opening it.
    /// Were the flag per socket, a write to that caller socket could wait for
    /// room while the module's other direction went unserved, and a peer that
    /// reads only while its own writes go through (an echo) would then wait
    /// on the module for good.
    polls_for_write: bool,
    /// Reference point of the monotonic clock.
    clock_base: Instant,
    /// Prefix for log lines about this instance (the connection id).
    pub tag: u64,
    /// When set, what the module writes to stderr is also collected here, so that a start-up
    /// check can report the module's own reason for refusing its config.
    pub captured_stderr: Option<String>,
    /// Bytes the module read from and wrote to its network sockets (every socket but the
    /// caller's), for the operator's statistics.
    pub net_bytes: NetBytes,
    /// What the module's `fd_close` of its caller socket does.
    pub caller_close: CallerClose,
}

/// What a module's `fd_close` of its caller socket does. While the runtime still owes the
/// caller a setup reply (the SOCKS front's), the socket is kept rather than closed, so that a
/// failure reply still reaches the caller; its number is free for the module at once, as
/// after any close.
#[derive(Debug)]
pub enum CallerClose {
    Closes,
    /// A reply is owed: a close keeps the socket here.
    Keeps,
    /// The module closed it while a reply was owed.
    Kept(crate::sys::HostFd),
}

/// Bytes moved on a module's network sockets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetBytes {
    /// Read from the network (toward the caller).
    pub read: u64,
    /// Written to the network (from the caller).
    pub written: u64,
}

impl WasiCtx {
    pub fn new(conf: Option<Arc<[u8]>>, stop: Arc<StopSignal>, tag: u64) -> Self {
        Self {
            fds: FdTable::new(conf.is_some()),
            conf,
            stop,
            memory: None,
            ticks_without_host_call: 0,
            network_stall: DEFAULT_NETWORK_STALL,
            refused_writes: 0,
            refused_since: None,
            polls_for_write: false,
            clock_base: Instant::now(),
            tag,
            captured_stderr: None,
            net_bytes: NetBytes::default(),
            caller_close: CallerClose::Closes,
        }
    }

    /// Sets how long a socket write may make no progress before it fails
    /// (default [`DEFAULT_NETWORK_STALL`]).
    pub fn with_network_stall(mut self, limit: Duration) -> Self {
        self.network_stall = limit;
        self
    }

    pub fn stop_signal(&self) -> &StopSignal {
        &self.stop
    }

    /// Opens `fd` if it is a [`LazySocket`], before the module writes to it
    /// or waits to be able to. If opening fails (the reason is logged by
    /// whoever opens), the module gets a socket whose peer has gone: reads
    /// see end-of-stream, writes `EPIPE`, as if the peer had closed at once.
    /// Traps on a forced stop.
    pub(crate) fn open_lazy(&mut self, fd: i32) -> HostResult {
        let Ok(Entry::Lazy(lazy)) = self.fds.get_mut(fd) else {
            return Ok(());
        };
        let nonblocking = lazy.nonblocking;
        let opened = match lazy.open.take() {
            Some(open) => open(self.stop.waker()),
            None => Err(std::io::Error::other("already failed")),
        };
        if self.stop.is_killed() {
            return Err(Fail::Trap(HostTrap::Stopped));
        }
        let host_fd = match opened {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(conn = self.tag, "socket {fd} could not be opened: {e}");
                let (ours, peer) = crate::sys::socket_pair().map_err(|e| Errno::from(&e))?;
                drop(peer);
                ours
            }
        };
        let mut socket = Socket::new(host_fd).map_err(|e| Errno::from(&e))?;
        socket.nonblocking = nonblocking;
        *self.fds.get_mut(fd)? = Entry::Socket(socket);
        Ok(())
    }

    /// Whether the runtime was given a config for this instance.
    pub fn has_config(&self) -> bool {
        self.conf.is_some()
    }

    /// Records that the module left wasm for real: a host call waited or
    /// moved data. Resets the compute budget and the spin detection.
    pub(crate) fn progressed(&mut self) {
        self.ticks_without_host_call = 0;
        self.forget_refused_writes();
    }

    /// Ends the spin detection: the module did something other than retry
    /// a refused write.
    pub(crate) fn forget_refused_writes(&mut self) {
        self.refused_writes = 0;
        self.refused_since = None;
    }

    /// Records a host call that waited without moving data (the compute
    /// budget restarts, the spin detection does not).
    pub(crate) fn waited(&mut self) {
        self.ticks_without_host_call = 0;
    }
}

/// The network-stall limit used when the runtime sets none.
pub const DEFAULT_NETWORK_STALL: Duration = Duration::from_secs(120);

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
#[derive(Debug)]
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
/// Calling the host alone does not restart the compute budget: bodies that
/// wait or move data say so with [`WasiCtx::progressed`] or
/// [`WasiCtx::waited`].
pub(crate) fn with_ctx<T: WasiView>(
    caller: &mut Caller<'_, T>,
    body: impl FnOnce(&mut GuestMemory<'_>, &mut WasiCtx) -> HostResult,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller.data_mut().wasi().memory else {
        return Ok(Errno::FAULT.raw());
    };
    let (bytes, data) = memory.data_and_store_mut(&mut *caller);
    let ctx = data.wasi();
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
