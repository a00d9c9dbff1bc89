//! The platform layer: every OS-specific call the runtime makes.
//!
//! The WASI host needs a handful of primitives that differ between operating
//! systems: waiting on several sockets at once (`poll`), a wake-up handle
//! another thread can trigger to interrupt such a wait, and raw reads and
//! writes on socket descriptors. Keeping them here means a port to another
//! OS touches this module only.
//!
//! What both platforms share lives in this file: `rustix` maps `poll`,
//! `read`, `FIONREAD`, `FIONBIO` and `shutdown` onto POSIX calls on Unix and
//! onto Winsock (`WSAPoll`, `recv`, `ioctlsocket`) on Windows, where its
//! descriptor types are the socket types. What differs (the wake-up handle,
//! the caller socket pair, vectored writes, lifecycle signals, directory
//! permissions, socket options only some kernels have) lives in [`unix`]
//! or [`windows`], which export the same names. Only one call needs `unsafe`:
//! Windows' `TCP_MAXRT` socket option, which no safe wrapper exposes.

use std::io;
use std::time::Duration;

pub use rustix::event::{PollFd, PollFlags};
/// Descriptor types: `std::os::fd` on Unix, the Winsock socket types (under
/// the same names) on Windows.
pub use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// A socket descriptor owned by a guest's fd table.
pub type HostFd = OwnedFd;

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no limit).
///
/// Retries on `EINTR`, so a signal delivered to the process does not look
/// like a spurious wake-up to the guest.
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let remaining = deadline.map(|d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            rustix::event::Timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: left.subsec_nanos() as _,
            }
        });
        match rustix::event::poll(fds, remaining.as_ref()) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads from a socket into `buf`.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, rustix::io::Errno> {
    retry_intr(|| rustix::io::read(fd, &mut *buf))
}

/// Bytes waiting to be read on a socket (0 when unknown).
pub fn bytes_readable(fd: BorrowedFd<'_>) -> u64 {
    rustix::io::ioctl_fionread(fd).unwrap_or(0)
}

/// Shuts down one or both directions of a socket.
pub fn shutdown(fd: BorrowedFd<'_>, read: bool, write: bool) -> Result<(), rustix::io::Errno> {
    use rustix::net::Shutdown;
    let how = match (read, write) {
        (true, true) => Shutdown::Both,
        (true, false) => Shutdown::Read,
        (false, true) => Shutdown::Write,
        (false, false) => return Ok(()),
    };
    rustix::net::shutdown(fd, how)
}

/// Puts a descriptor in non-blocking mode. Every socket the runtime holds is
/// non-blocking at the OS level; blocking guest semantics are emulated on top
/// with [`poll`] so that a stop request can always interrupt a wait.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::io::ioctl_fionbio(fd, true)?;
    Ok(())
}

fn retry_intr<T>(
    mut f: impl FnMut() -> Result<T, rustix::io::Errno>,
) -> Result<T, rustix::io::Errno> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Fixes a socket's send and receive buffers at `bytes` each (`SO_SNDBUF`,
/// `SO_RCVBUF`), which turns off the kernel's autotuning for that socket.
/// The kernel may round the size (Linux doubles it for bookkeeping).
pub fn set_buffer_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let sock = socket2::SockRef::from(&fd);
    sock.set_send_buffer_size(bytes)?;
    sock.set_recv_buffer_size(bytes)
}
