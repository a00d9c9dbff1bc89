//! Descriptor I/O: `fd_read`, `fd_write`, `fd_close`, fdstat, and the
//! `sock_*` calls.
//!
//! Bytes move straight between guest memory and the socket (`read` and
//! `writev` on the host descriptor, no intermediate buffer): this is what
//! lets a passthrough module run at native loopback speed. A read may be
//! short; a write takes every byte (see [`super::send`]).

use super::{
    with_ctx, CallerClose, Entry, Errno, Fail, GuestMemory, HostResult, LazySocket, Socket,
    WasiCtx, WasiView,
};
use crate::sys::{self, BorrowedFd, PollFd, PollFlags};
use std::io::IoSlice;
use wasmtime::{Caller, Linker};

const P1: &str = super::PREVIEW1;

/// `fdflags.nonblock`.
pub(super) const FDFLAGS_NONBLOCK: u16 = 1 << 2;
/// `fdflags.append` (reported for stdout/stderr).
const FDFLAGS_APPEND: u16 = 1 << 0;

pub(super) const FILETYPE_CHARACTER_DEVICE: u8 = 2;
pub(super) const FILETYPE_DIRECTORY: u8 = 3;
pub(super) const FILETYPE_REGULAR_FILE: u8 = 4;
pub(super) const FILETYPE_SOCKET_STREAM: u8 = 6;

/// Every right preview1 defines (bits 0..=29); the runtime enforces its own
/// rules per descriptor kind instead of tracking rights.
pub(super) const ALL_RIGHTS: u64 = (1 << 30) - 1;
/// `rights.fd_write`.
pub(super) const RIGHT_FD_WRITE: u64 = 1 << 6;

/// Longest stdout/stderr write echoed into the log.
const MAX_LOGGED_OUTPUT: usize = 4096;

pub(super) fn add_to_linker<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(
        P1,
        "fd_write",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                // Every output pointer is checked before any byte moves: a
                // bad one must not lose (or duplicate) data.
                m.slice_mut(out as u32, 4)?;
                let written = write(m, ctx, fd, iovs as u32, n as u32)?;
                Ok(m.write_u32(out as u32, written)?)
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "fd_read",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                m.slice_mut(out as u32, 4)?;
                let read = read(m, ctx, fd, iovs as u32, n as u32)?;
                Ok(m.write_u32(out as u32, read)?)
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "sock_send",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, flags: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                if flags != 0 {
                    return Err(Errno::NOTSUP.into());
                }
                ctx.open_lazy(fd)?;
                ctx.fds.socket(fd)?;
                m.slice_mut(out as u32, 4)?;
                let written = write(m, ctx, fd, iovs as u32, n as u32)?;
                Ok(m.write_u32(out as u32, written)?)
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "sock_recv",
        |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, flags: i32, out: i32, oflags: i32| {
            with_ctx(&mut c, |m, ctx| {
                if flags != 0 {
                    return Err(Errno::NOTSUP.into());
                }
                if !matches!(ctx.fds.get(fd)?, Entry::Lazy(_)) {
                    ctx.fds.socket(fd)?;
                }
                m.slice_mut(out as u32, 4)?;
                m.slice_mut(oflags as u32, 2)?;
                let read = read(m, ctx, fd, iovs as u32, n as u32)?;
                m.write_u32(out as u32, read)?;
                Ok(m.write_u16(oflags as u32, 0)?)
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "sock_shutdown",
        |mut c: Caller<'_, T>, fd: i32, how: i32| {
            with_ctx(&mut c, |_, ctx| {
                ctx.open_lazy(fd)?;
                let s = ctx.fds.socket(fd)?;
                if how & !3 != 0 || how == 0 {
                    return Err(Errno::INVAL.into());
                }
                sys::shutdown(s.fd(), how & 1 != 0, how & 2 != 0).map_err(Errno::from)?;
                Ok(())
            })
        },
    )?;
    linker.func_wrap(P1, "fd_close", |mut c: Caller<'_, T>, fd: i32| {
        with_ctx(&mut c, |_, ctx| {
            match (ctx.fds.remove(fd)?, &ctx.caller_close) {
                (Entry::Socket(s), CallerClose::Keeps) if s.is_caller => {
                    ctx.caller_close = CallerClose::Kept(s.into_fd());
                }
                _ => {}
            }
            Ok(())
        })
    })?;
    linker.func_wrap(
        P1,
        "fd_fdstat_get",
        |mut c: Caller<'_, T>, fd: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                let (filetype, flags) = match ctx.fds.get(fd)? {
                    Entry::Stdin => (FILETYPE_CHARACTER_DEVICE, 0),
                    Entry::Stdout | Entry::Stderr => (FILETYPE_CHARACTER_DEVICE, FDFLAGS_APPEND),
                    Entry::ConfDir => (FILETYPE_DIRECTORY, 0),
                    Entry::ConfFile { .. } => (FILETYPE_REGULAR_FILE, 0),
                    Entry::Socket(Socket { nonblocking, .. })
                    | Entry::Lazy(LazySocket { nonblocking, .. })
                    | Entry::Control { nonblocking, .. } => (
                        FILETYPE_SOCKET_STREAM,
                        if *nonblocking { FDFLAGS_NONBLOCK } else { 0 },
                    ),
                };
                let out = out as u32;
                let mut stat = [0u8; 24];
                stat[0] = filetype;
                stat[2..4].copy_from_slice(&flags.to_le_bytes());
                stat[8..16].copy_from_slice(&ALL_RIGHTS.to_le_bytes());
                stat[16..24].copy_from_slice(&ALL_RIGHTS.to_le_bytes());
                Ok(m.write(out, &stat)?)
            })
        },
    )?;
    linker.func_wrap(
        P1,
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, T>, fd: i32, flags: i32| {
            with_ctx(&mut c, |_, ctx| {
                let nonblock = flags as u16 & FDFLAGS_NONBLOCK != 0;
                match ctx.fds.get_mut(fd)? {
                    Entry::Socket(Socket { nonblocking, .. })
                    | Entry::Lazy(LazySocket { nonblocking, .. })
                    | Entry::Control { nonblocking, .. } => *nonblocking = nonblock,
                    _ => {}
                }
                Ok(())
            })
        },
    )?;
    Ok(())
}

/// `fd_write`: stdout/stderr go to the log; sockets take every byte (see
/// [`super::send`]).
fn write(m: &GuestMemory<'_>, ctx: &mut WasiCtx, fd: i32, iovs: u32, n: u32) -> HostResult<u32> {
    let iovecs = m.iovecs(iovs, n)?;
    ctx.open_lazy(fd)?;
    match ctx.fds.get(fd)? {
        entry @ (Entry::Stdout | Entry::Stderr) => {
            let mut total = 0u32;
            let mut text = Vec::new();
            for iov in &iovecs {
                total = total.saturating_add(iov.len);
                let bytes = m.slice(iov.ptr, iov.len)?;
                let room = MAX_LOGGED_OUTPUT.saturating_sub(text.len());
                text.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            let stderr = matches!(entry, Entry::Stderr);
            if let (true, Some(captured)) = (stderr, ctx.captured_stderr.as_mut()) {
                if captured.len() < MAX_LOGGED_OUTPUT {
                    captured.push_str(&String::from_utf8_lossy(&text));
                }
            }
            log_guest_output(ctx.tag, stderr, &text);
            Ok(total)
        }
        Entry::Socket(_) => {
            // The count returned to the guest is a u32; buffers may overlap,
            // so their sum can exceed it. Take at most that much.
            let mut room = u32::MAX;
            let mut slices = Vec::with_capacity(iovecs.len());
            for iov in iovecs.iter().filter(|iov| iov.len > 0) {
                let len = iov.len.min(room);
                room -= len;
                slices.push(IoSlice::new(m.slice(iov.ptr, len)?));
                if room == 0 {
                    break;
                }
            }
            if slices.is_empty() {
                return Ok(0);
            }
            let n = super::send::write_socket(ctx, fd, &slices)?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        }
        Entry::Stdin
        | Entry::ConfDir
        | Entry::ConfFile { .. }
        | Entry::Control { .. }
        | Entry::Lazy(_) => Err(Errno::BADF.into()),
    }
}

/// `fd_read`: the config file, an empty stdin, or a socket read straight
/// into the first non-empty guest buffer (a short read is always allowed).
/// The descriptor is checked first; with no room in the buffers nothing is
/// read.
fn read(m: &mut GuestMemory<'_>, ctx: &mut WasiCtx, fd: i32, iovs: u32, n: u32) -> HostResult<u32> {
    let iovecs = m.iovecs(iovs, n)?;
    let target = iovecs.iter().find(|iov| iov.len > 0).copied();
    match ctx.fds.get(fd)? {
        Entry::Stdin => Ok(0),
        Entry::ConfFile { .. } => super::fs::read_conf(m, ctx, fd, &iovecs),
        Entry::Socket(s) => {
            let Some(target) = target else {
                return Ok(0);
            };
            let buf = m.slice_mut(target.ptr, target.len)?;
            let fd_ = s.fd();
            let from_network = !s.is_caller;
            let (n, waited) = retry_blocking(s.nonblocking, ctx, fd_, PollFlags::IN, || {
                sys::read(fd_, &mut *buf)
            })?;
            if from_network {
                ctx.net_bytes.read += n as u64;
            }
            if n > 0 {
                ctx.progressed();
            } else if waited {
                ctx.waited();
            }
            Ok(n as u32)
        }
        Entry::Lazy(lazy) => {
            // Not opened yet, so nothing to read: `EAGAIN`, or for a
            // blocking read a wait that only a forced stop ends.
            if lazy.nonblocking {
                return Err(Errno::AGAIN.into());
            }
            let stop = ctx.stop_signal();
            loop {
                sys::wait(&mut [], &[stop.waker()], None).map_err(|e| Errno::from(&e))?;
                stop.woken().map_err(Fail::Trap)?;
            }
        }
        Entry::Control { .. } => {
            let Some(target) = target else {
                return Ok(0);
            };
            let byte = read_control(ctx, fd)?;
            m.write(target.ptr, byte)?;
            if !byte.is_empty() {
                ctx.progressed();
            }
            Ok(byte.len() as u32)
        }
        Entry::Stdout | Entry::Stderr | Entry::ConfDir => Err(Errno::BADF.into()),
    }
}

/// `fd_read` on the control channel: nothing until the runtime asks for a
/// stop, then one `0x00` byte, then end-of-stream.
fn read_control(ctx: &mut WasiCtx, fd: i32) -> HostResult<&'static [u8]> {
    loop {
        let stop = ctx.stop.clone();
        let Entry::Control {
            nonblocking,
            delivered,
        } = ctx.fds.get_mut(fd)?
        else {
            return Err(Errno::BADF.into());
        };
        if stop.is_requested() {
            return Ok(if std::mem::replace(delivered, true) {
                &[]
            } else {
                &[0]
            });
        }
        if *nonblocking {
            return Err(Errno::AGAIN.into());
        }
        sys::wait(&mut [], &[stop.waker()], None).map_err(|e| Errno::from(&e))?;
        stop.woken().map_err(Fail::Trap)?;
    }
}

/// Runs a non-blocking socket read. For a guest descriptor in blocking
/// mode, `EAGAIN` turns into a wait for readiness that a forced stop can
/// interrupt. Also returns whether it waited.
fn retry_blocking(
    nonblocking: bool,
    ctx: &WasiCtx,
    fd: BorrowedFd<'_>,
    interest: PollFlags,
    mut op: impl FnMut() -> Result<usize, rustix::io::Errno>,
) -> HostResult<(usize, bool)> {
    let mut waited = false;
    loop {
        match op() {
            Ok(n) => return Ok((n, waited)),
            Err(rustix::io::Errno::AGAIN) if !nonblocking => {
                waited = true;
                let stop = ctx.stop_signal();
                let mut fds = [PollFd::from_borrowed_fd(fd, interest)];
                let outcome =
                    sys::wait(&mut fds, &[stop.waker()], None).map_err(|e| Errno::from(&e))?;
                if outcome.woken {
                    stop.woken().map_err(Fail::Trap)?;
                }
            }
            Err(e) => return Err(Errno::from(e).into()),
        }
    }
}

fn log_guest_output(tag: u64, stderr: bool, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    if stderr {
        tracing::info!(target: "watm", conn = tag, "module stderr: {text}");
    } else {
        tracing::debug!(target: "watm", conn = tag, "module stdout: {text}");
    }
}
