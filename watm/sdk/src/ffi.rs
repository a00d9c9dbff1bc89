//! Every foreign call of the SDK, and with them every `unsafe` block.
//!
//! The rest of the crate only sees the safe functions below. Each wraps one
//! WASI preview 1 call (through the `wasi` crate's raw bindings) or one import
//! of the WATER runtime, and takes Rust slices so the pointer and length it
//! passes on are always valid for the duration of the call.

use crate::Errno;

/// A WASI file descriptor.
pub(crate) type Fd = wasi::Fd;

// The imports a WATER v1 runtime provides in module `env`.
//
// Return values are a descriptor (`>= 0`) or a negated WASI errno.
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Dials `address` over `network`, both given as WASI ciovec arrays.
    fn water_dial(
        network_iovs: *const wasi::Ciovec,
        network_iovs_len: usize,
        address_iovs: *const wasi::Ciovec,
        address_iovs_len: usize,
    ) -> i32;
    /// Dials the remote chosen by the runtime.
    fn water_dial_fixed() -> i32;
    /// Takes the next inbound connection from the runtime's listener.
    fn water_accept() -> i32;
}

/// The imports a WATER v0 runtime provides in module `env`, kept apart from
/// the v1 ones: a module only ever imports the functions it calls, so a
/// module exporting one generation imports that generation's functions only.
mod v0 {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        /// Dials the remote chosen by the runtime.
        pub(super) fn host_dial() -> i32;
        /// Takes the inbound connection from the runtime.
        pub(super) fn host_accept() -> i32;
        /// Tells the runtime the worker ended (a no-op in current runtimes).
        pub(super) fn host_defer();
    }
}

/// Maps an import's return value to a descriptor or an errno.
fn fd_result(ret: i32) -> Result<Fd, Errno> {
    match Errno::from_return(ret) {
        None => Ok(ret as Fd), // non-negative, so the cast is lossless
        Some(errno) => Err(errno),
    }
}

fn errno(err: wasi::Errno) -> Errno {
    Errno::from_raw(err.raw())
}

/// `env.water_dial(network, address)`.
pub(crate) fn dial(network: &str, address: &str) -> Result<Fd, Errno> {
    let network = [wasi::Ciovec {
        buf: network.as_ptr(),
        buf_len: network.len(),
    }];
    let address = [wasi::Ciovec {
        buf: address.as_ptr(),
        buf_len: address.len(),
    }];
    // SAFETY: each array holds one ciovec pointing at a live `&str` that
    // outlives the call; the host only reads through them.
    fd_result(unsafe { water_dial(network.as_ptr(), 1, address.as_ptr(), 1) })
}

/// `env.water_dial_fixed()`.
pub(crate) fn dial_fixed() -> Result<Fd, Errno> {
    // SAFETY: no arguments; the host returns a descriptor or an errno.
    fd_result(unsafe { water_dial_fixed() })
}

/// `env.water_accept()`.
pub(crate) fn accept() -> Result<Fd, Errno> {
    // SAFETY: no arguments; the host returns a descriptor or an errno.
    fd_result(unsafe { water_accept() })
}

/// v0 `env.host_dial()`.
pub(crate) fn host_dial() -> Result<Fd, Errno> {
    // SAFETY: no arguments; the host returns a descriptor or an errno.
    fd_result(unsafe { v0::host_dial() })
}

/// v0 `env.host_accept()`.
pub(crate) fn host_accept() -> Result<Fd, Errno> {
    // SAFETY: no arguments; the host returns a descriptor or an errno.
    fd_result(unsafe { v0::host_accept() })
}

/// v0 `env.host_defer()`.
pub(crate) fn host_defer() {
    // SAFETY: no arguments, no result.
    unsafe { v0::host_defer() }
}

/// Puts `fd` in non-blocking mode, so reads and writes report `AGAIN` instead
/// of stalling the single-threaded loop.
pub(crate) fn set_nonblocking(fd: Fd) -> Result<(), Errno> {
    // SAFETY: plain integer arguments; an invalid fd is reported as BADF.
    unsafe { wasi::fd_fdstat_set_flags(fd, wasi::FDFLAGS_NONBLOCK) }.map_err(errno)
}

/// Reads into `buf`; `Ok(0)` means end of stream (for a non-empty `buf`).
pub(crate) fn read(fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
    let iovs = [wasi::Iovec {
        buf: buf.as_mut_ptr(),
        buf_len: buf.len(),
    }];
    // SAFETY: the iovec describes `buf`, which is exclusively borrowed for the
    // call, so the host may write up to `buf.len()` bytes into it.
    let n = unsafe { wasi::fd_read(fd, &iovs) }.map_err(errno)?;
    // A host claiming more than it was offered is broken; do not trust it.
    if n > buf.len() { Err(Errno::IO) } else { Ok(n) }
}

/// Writes from `buf`, returning how many bytes the descriptor accepted.
pub(crate) fn write(fd: Fd, buf: &[u8]) -> Result<usize, Errno> {
    let iovs = [wasi::Ciovec {
        buf: buf.as_ptr(),
        buf_len: buf.len(),
    }];
    // SAFETY: the ciovec describes `buf`, borrowed for the call; the host only
    // reads through it.
    let n = unsafe { wasi::fd_write(fd, &iovs) }.map_err(errno)?;
    if n > buf.len() { Err(Errno::IO) } else { Ok(n) }
}

/// Closes `fd`. Used only to give back a descriptor the module will not use.
pub(crate) fn close(fd: Fd) {
    // SAFETY: plain integer argument. Nothing useful can be done about a
    // failure (the runtime closes the instance's descriptors anyway).
    let _ = unsafe { wasi::fd_close(fd) };
}

/// A subscription that fires when `fd` is readable (data, end of stream or an
/// error). `tag` comes back in [`Event::userdata`](wasi::Event::userdata).
pub(crate) fn readable(tag: u64, fd: Fd) -> wasi::Subscription {
    wasi::Subscription {
        userdata: tag,
        u: wasi::SubscriptionU {
            tag: wasi::EVENTTYPE_FD_READ.raw(),
            u: wasi::SubscriptionUU {
                fd_read: wasi::SubscriptionFdReadwrite {
                    file_descriptor: fd,
                },
            },
        },
    }
}

/// A subscription that fires when `fd` can accept more bytes.
pub(crate) fn writable(tag: u64, fd: Fd) -> wasi::Subscription {
    wasi::Subscription {
        userdata: tag,
        u: wasi::SubscriptionU {
            tag: wasi::EVENTTYPE_FD_WRITE.raw(),
            u: wasi::SubscriptionUU {
                fd_write: wasi::SubscriptionFdReadwrite {
                    file_descriptor: fd,
                },
            },
        },
    }
}

/// A subscription that fires `nanos` nanoseconds from now (monotonic clock).
pub(crate) fn timeout(tag: u64, nanos: u64) -> wasi::Subscription {
    wasi::Subscription {
        userdata: tag,
        u: wasi::SubscriptionU {
            tag: wasi::EVENTTYPE_CLOCK.raw(),
            u: wasi::SubscriptionUU {
                clock: wasi::SubscriptionClock {
                    id: wasi::CLOCKID_MONOTONIC,
                    timeout: nanos,
                    precision: 0,
                    flags: 0,
                },
            },
        },
    }
}

/// An event slot for [`poll`] to fill.
pub(crate) const EMPTY_EVENT: wasi::Event = wasi::Event {
    userdata: 0,
    error: wasi::ERRNO_SUCCESS,
    type_: wasi::EVENTTYPE_CLOCK,
    fd_readwrite: wasi::EventFdReadwrite {
        nbytes: 0,
        flags: 0,
    },
};

/// Blocks until at least one subscription fires; returns the filled prefix of
/// `events`. Only `userdata` and `error` of the events are meant to be read.
pub(crate) fn poll<'e>(
    subscriptions: &[wasi::Subscription],
    events: &'e mut [wasi::Event],
) -> Result<&'e [wasi::Event], Errno> {
    if subscriptions.is_empty() || events.len() < subscriptions.len() {
        return Err(Errno::INVAL);
    }
    // SAFETY: `subscriptions` is readable and `events` writable for
    // `subscriptions.len()` elements (checked above), and both are borrowed
    // for the whole call.
    let n = unsafe {
        wasi::poll_oneoff(
            subscriptions.as_ptr(),
            events.as_mut_ptr(),
            subscriptions.len(),
        )
    }
    .map_err(errno)?;
    events.get(..n).ok_or(Errno::IO)
}

/// Defines the seven `watm_*_v1` exports for a [`Transport`](crate::Transport)
/// type. Use it exactly once, at the top level of the module's crate:
///
/// ```ignore
/// watm_sdk::export_transport!(MyTransport);
/// ```
///
/// The connection state lives in a thread-local owned by the module (a WATM
/// instance is single-threaded), and the exports only forward to
/// `watm_sdk::session`.
#[macro_export]
macro_rules! export_transport {
    ($transport:ty) => {
        const _: () = {
            use $crate::session::{Session, with};

            ::std::thread_local! {
                static SESSION: ::core::cell::RefCell<Session<$transport>> =
                    const { ::core::cell::RefCell::new(Session::new()) };
            }

            // SAFETY (all exports below): the names are those of the WATM v1
            // ABI and are defined nowhere else in the module; the signatures
            // use only `i32`, matching the ABI's wasm types.
            #[unsafe(export_name = "watm_init_v1")]
            extern "C" fn watm_init_v1() -> i32 {
                with(&SESSION, |s| s.init())
            }

            #[unsafe(export_name = "watm_ctrlpipe_v1")]
            extern "C" fn watm_ctrlpipe_v1(ctrl_fd: i32) -> i32 {
                with(&SESSION, |s| s.ctrlpipe(ctrl_fd))
            }

            #[unsafe(export_name = "watm_dial_v1")]
            extern "C" fn watm_dial_v1(caller_fd: i32) -> i32 {
                with(&SESSION, |s| s.dial(caller_fd))
            }

            #[unsafe(export_name = "watm_dial_fixed_v1")]
            extern "C" fn watm_dial_fixed_v1(caller_fd: i32) -> i32 {
                with(&SESSION, |s| s.dial_fixed(caller_fd))
            }

            #[unsafe(export_name = "watm_accept_v1")]
            extern "C" fn watm_accept_v1(caller_fd: i32) -> i32 {
                with(&SESSION, |s| s.accept(caller_fd))
            }

            #[unsafe(export_name = "watm_associate_v1")]
            extern "C" fn watm_associate_v1() -> i32 {
                with(&SESSION, |s| s.associate())
            }

            #[unsafe(export_name = "watm_start_v1")]
            extern "C" fn watm_start_v1() -> i32 {
                with(&SESSION, |s| s.start())
            }
        };
    };
}

/// Defines the WATM v0 exports for a [`Transport`](crate::Transport) type,
/// for runtimes that still drive the first generation of the ABI:
/// `_water_v0` (the marker, an immutable global as Rust v0 modules export
/// it), `_water_init`, `_water_dial`, `_water_accept`, `_water_associate`,
/// `_water_cancel_with` and `_water_worker`. The transport is the same as
/// for [`export_transport!`](crate::export_transport); only the export and
/// import names differ (v0 imports `host_dial`, `host_accept`,
/// `host_defer`). Use one of the two macros per module, never both: a
/// runtime refuses a module that claims both generations.
#[macro_export]
macro_rules! export_transport_v0 {
    ($transport:ty) => {
        const _: () = {
            use $crate::session::{Session, with};

            ::std::thread_local! {
                static SESSION: ::core::cell::RefCell<Session<$transport>> =
                    const { ::core::cell::RefCell::new(Session::new()) };
            }

            // SAFETY (all exports below): the names are those of the WATM v0
            // ABI and are defined nowhere else in the module; the signatures
            // use only `i32`, matching the ABI's wasm types.
            #[unsafe(export_name = "_water_v0")]
            static WATER_V0: i32 = 0;

            #[unsafe(export_name = "_water_init")]
            extern "C" fn water_init() -> i32 {
                with(&SESSION, |s| s.init())
            }

            #[unsafe(export_name = "_water_dial")]
            extern "C" fn water_dial(caller_fd: i32) -> i32 {
                with(&SESSION, |s| s.dial_v0(caller_fd))
            }

            #[unsafe(export_name = "_water_accept")]
            extern "C" fn water_accept(caller_fd: i32) -> i32 {
                with(&SESSION, |s| s.accept_v0(caller_fd))
            }

            #[unsafe(export_name = "_water_associate")]
            extern "C" fn water_associate() -> i32 {
                with(&SESSION, |s| s.associate_v0())
            }

            #[unsafe(export_name = "_water_cancel_with")]
            extern "C" fn water_cancel_with(cancel_fd: i32) -> i32 {
                with(&SESSION, |s| s.ctrlpipe(cancel_fd))
            }

            #[unsafe(export_name = "_water_worker")]
            extern "C" fn water_worker() -> i32 {
                with(&SESSION, |s| s.worker_v0())
            }
        };
    };
}
