//! `reference-loop`: a test fixture whose I/O loop behaves like the worker of the
//! reference TinyGo v1 SDK (its "unfair" worker, the default), so that the runtime can be
//! tested against the way modules built with that SDK use the host. It passes bytes
//! through unchanged.
//!
//! What it does, step for step as that SDK does it:
//! - every descriptor is switched to non-blocking with `fd_fdstat_get` then
//!   `fd_fdstat_set_flags` (the control fd in `watm_ctrlpipe_v1`, the caller and network
//!   fds in the role function);
//! - `watm_start_v1` loops on `poll_oneoff` with FD_READ on the control, caller and network
//!   fds and no clock; zero events means `sched_yield` and poll again, and errors in the
//!   events of a poll that returned some are not looked at;
//! - after each poll it reads the control fd: anything but `EAGAIN` ends the loop (data or
//!   end of stream with `-ECANCELED`, an error with `-EIO`);
//! - then it copies caller to network, then network to caller, 1 KiB per read, each until a
//!   read returns `EAGAIN`;
//! - a write refused with `EAGAIN` is retried at once with the same bytes, in a tight loop
//!   that looks at nothing else;
//! - a write that takes fewer bytes than were read is fatal: it logs `readN != writeN` and
//!   `watm_start_v1` returns `-EIO`;
//! - end of stream on either side returns 0, any other error `-errno`.
//!
//! No configuration; the dialer and listener roles only.

#![cfg(target_os = "wasi")]

use std::sync::atomic::{AtomicI32, Ordering::Relaxed};

/// WASI errno numbers this module returns.
const EBADF: i32 = 8;
const EBUSY: i32 = 10;
const ECANCELED: i32 = 11;
const EIO: i32 = 29;
const ENOTCONN: i32 = 53;

/// The reference SDK's read buffer size.
const READ_SIZE: usize = 1024;

static CTRL: AtomicI32 = AtomicI32::new(-1);
static CALLER: AtomicI32 = AtomicI32::new(-1);
static NETWORK: AtomicI32 = AtomicI32::new(-1);
/// `dialer` or `listener`, for the start-up log line.
static ROLE: AtomicI32 = AtomicI32::new(0);

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn water_dial_fixed() -> i32;
    fn water_accept() -> i32;
}

fn errno(e: wasi::Errno) -> i32 {
    i32::from(e.raw())
}

fn set_nonblocking(fd: i32) -> Result<(), i32> {
    // SAFETY: integer argument only; the host checks the descriptor.
    let stat = unsafe { wasi::fd_fdstat_get(fd as wasi::Fd) }.map_err(errno)?;
    // SAFETY: as above.
    unsafe { wasi::fd_fdstat_set_flags(fd as wasi::Fd, stat.fs_flags | wasi::FDFLAGS_NONBLOCK) }
        .map_err(errno)
}

fn read(fd: i32, buf: &mut [u8]) -> Result<usize, wasi::Errno> {
    let iovs = [wasi::Iovec {
        buf: buf.as_mut_ptr(),
        buf_len: buf.len(),
    }];
    // SAFETY: the iovec describes `buf`, exclusively borrowed for the call.
    unsafe { wasi::fd_read(fd as wasi::Fd, &iovs) }
}

fn write(fd: i32, buf: &[u8]) -> Result<usize, wasi::Errno> {
    let iovs = [wasi::Ciovec {
        buf: buf.as_ptr(),
        buf_len: buf.len(),
    }];
    // SAFETY: the ciovec describes `buf`, borrowed for the call; the host only reads it.
    unsafe { wasi::fd_write(fd as wasi::Fd, &iovs) }
}

fn readable(fd: i32) -> wasi::Subscription {
    wasi::Subscription {
        userdata: fd as u64,
        u: wasi::SubscriptionU {
            tag: wasi::EVENTTYPE_FD_READ.raw(),
            u: wasi::SubscriptionUU {
                fd_read: wasi::SubscriptionFdReadwrite {
                    file_descriptor: fd as wasi::Fd,
                },
            },
        },
    }
}

#[unsafe(export_name = "watm_init_v1")]
extern "C" fn watm_init_v1() -> i32 {
    0
}

#[unsafe(export_name = "watm_ctrlpipe_v1")]
extern "C" fn watm_ctrlpipe_v1(ctrl: i32) -> i32 {
    CTRL.store(ctrl, Relaxed);
    match set_nonblocking(ctrl) {
        Ok(()) => 0,
        Err(e) => -e,
    }
}

/// A role function: the caller fd, then the network fd from `connect`, both non-blocking.
fn take_role(caller: i32, role: i32, connect: unsafe extern "C" fn() -> i32) -> i32 {
    if NETWORK.load(Relaxed) >= 0 {
        return -EBUSY;
    }
    if let Err(e) = set_nonblocking(caller) {
        return -e;
    }
    // SAFETY: the imports take no arguments and return a descriptor or -errno.
    let network = unsafe { connect() };
    if network < 0 {
        return network;
    }
    if let Err(e) = set_nonblocking(network) {
        return -e;
    }
    CALLER.store(caller, Relaxed);
    NETWORK.store(network, Relaxed);
    ROLE.store(role, Relaxed);
    network
}

#[unsafe(export_name = "watm_dial_v1")]
extern "C" fn watm_dial_v1(caller: i32) -> i32 {
    take_role(caller, 1, water_dial_fixed)
}

#[unsafe(export_name = "watm_accept_v1")]
extern "C" fn watm_accept_v1(caller: i32) -> i32 {
    take_role(caller, 2, water_accept)
}

#[unsafe(export_name = "watm_start_v1")]
extern "C" fn watm_start_v1() -> i32 {
    let (ctrl, caller, network) = (
        CTRL.load(Relaxed),
        CALLER.load(Relaxed),
        NETWORK.load(Relaxed),
    );
    if network < 0 {
        eprintln!("worker: uninitialized");
        return -ENOTCONN;
    }
    if ctrl < 0 {
        eprintln!("worker: at least one of sourceConn, remoteConn, and ctrlConn is nil");
        return -EBADF;
    }
    let role = if ROLE.load(Relaxed) == 1 { "dialer" } else { "listener" };
    eprintln!("worker: working as {role}");
    worker(ctrl, caller, network)
}

fn worker(ctrl: i32, caller: i32, network: i32) -> i32 {
    let mut buf = [0u8; READ_SIZE];
    let subscriptions = [readable(ctrl), readable(caller), readable(network)];
    let mut events = [wasi::Event {
        userdata: 0,
        error: wasi::ERRNO_SUCCESS,
        type_: wasi::EVENTTYPE_CLOCK,
        fd_readwrite: wasi::EventFdReadwrite {
            nbytes: 0,
            flags: 0,
        },
    }; 3];
    loop {
        // SAFETY: both arrays hold three entries and outlive the call.
        let polled = unsafe {
            wasi::poll_oneoff(subscriptions.as_ptr(), events.as_mut_ptr(), subscriptions.len())
        };
        match polled {
            Ok(0) => {
                // SAFETY: no arguments.
                let _ = unsafe { wasi::sched_yield() };
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("worker: unfairWorker: _poll: {e}");
                return -errno(e);
            }
        }

        match read(ctrl, &mut buf) {
            Err(wasi::ERRNO_AGAIN) => {}
            Ok(_) => {
                eprintln!("worker: unfairWorker: ctrlConn is closed");
                return -ECANCELED;
            }
            Err(e) => {
                eprintln!("worker: unfairWorker: ctrlConn.Read: {e}");
                return -EIO;
            }
        }
        if let Some(end) = copy(caller, network, &mut buf, "sourceConn", "remoteConn") {
            return end;
        }
        if let Some(end) = copy(network, caller, &mut buf, "remoteConn", "sourceConn") {
            return end;
        }
    }
}

/// Reads `src` and writes each read to `dst` until a read says `EAGAIN` (`None`: go on
/// polling) or the connection ends (`Some(result of watm_start_v1)`).
fn copy(src: i32, dst: i32, buf: &mut [u8], src_name: &str, dst_name: &str) -> Option<i32> {
    loop {
        let n = match read(src, buf) {
            Ok(0) => {
                eprintln!("worker: unfairWorker: {src_name} is closed");
                return Some(0);
            }
            Ok(n) => n,
            Err(wasi::ERRNO_AGAIN) => return None,
            Err(e) => {
                eprintln!("worker: unfairWorker: {src_name}.Read: {e}");
                return Some(-errno(e));
            }
        };
        let written = loop {
            match write(dst, &buf[..n]) {
                Ok(w) => break w,
                Err(wasi::ERRNO_AGAIN) => continue,
                Err(e) => {
                    eprintln!("worker: unfairWorker: {dst_name}.Write: {e}");
                    return Some(-errno(e));
                }
            }
        };
        if written != n {
            eprintln!("worker: unfairWorker: readN != writeN ({n} read, {written} written)");
            return Some(-EIO);
        }
    }
}
