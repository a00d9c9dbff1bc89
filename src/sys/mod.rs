//! The platform layer: every OS-specific call the runtime makes.
//!
//! The WASI host needs a handful of primitives that differ between operating
//! systems: waiting on several sockets at once while staying interruptible by
//! another thread ([`wait`] with a [`Waker`]), and raw reads and writes on
//! socket descriptors. Keeping them here means a port to another OS touches
//! this module only.
//!
//! What both platforms share lives in this file: `rustix` maps `poll`,
//! `read`, `FIONREAD`, `FIONBIO` and `shutdown` onto POSIX calls on Unix and
//! onto Winsock (`WSAPoll`, `recv`, `ioctlsocket`) on Windows, where its
//! descriptor types are the socket types. What differs (the wake-up, the
//! caller socket pair, vectored writes, lifecycle signals, directory
//! permissions, socket options only some kernels have) lives in [`unix`]
//! or [`windows`], which export the same names. A few calls need `unsafe`:
//! Windows' `TCP_MAXRT` socket option, which no safe wrapper exposes, and
//! those in [`memory`] that give pages back to the OS (`madvise` on a
//! finished instance's memory, glibc's `malloc_trim` and `mallopt`).
//!
//! A [`Waker`] costs no descriptor on Linux and Android, where waking one
//! interrupts its thread's `ppoll` with a signal ([`signal_waker`]); a
//! bridge holding 10,000 connections then needs only their sockets. Other
//! systems have no `ppoll` (macOS) or no signals (Windows) and include a
//! wake-up descriptor in the wait instead ([`fd_waker`]).

use std::io;
use std::time::{Duration, Instant};

pub use rustix::event::PollFlags;
/// Descriptor types: `std::os::fd` on Unix, the Winsock socket types (under
/// the same names) on Windows.
pub use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

/// A request to the process from outside: what tor or a terminal sends
/// (SIGINT and SIGTERM on Unix, Ctrl-C and Ctrl-Break on a Windows console).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LifecycleSignal {
    /// Stop accepting and drain; a second one exits.
    Interrupt,
    /// Exit now (on Windows also the console window closing).
    Terminate,
}

impl LifecycleSignal {
    /// The name used in log lines: the platform's own word for it.
    pub fn name(self) -> &'static str {
        match (self, cfg!(windows)) {
            (Self::Interrupt, false) => "SIGINT",
            (Self::Terminate, false) => "SIGTERM",
            (Self::Interrupt, true) => "Ctrl-C",
            (Self::Terminate, true) => "Ctrl-Break",
        }
    }
}

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

mod memory;
pub use memory::{release_pages, trim_heap, tune_heap};

#[cfg(any(target_os = "linux", target_os = "android"))]
mod signal_waker;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use signal_waker::{wait, Waker, WAKER_DESCRIPTORS};
#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod fd_waker;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub use fd_waker::{wait, Waker, WAKER_DESCRIPTORS};

/// Descriptors one open connection holds in a PT process: its two sockets (the network
/// one, and the caller's end or the upstream one), plus its session's wake-up ones.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 2 + WAKER_DESCRIPTORS;

/// One descriptor in a [`wait`] or [`poll`]: what to wait for, and
/// afterwards what happened. Kept here rather than taken from `rustix` so
/// that each platform can hand the set to the call it waits with.
#[derive(Debug, Clone, Copy)]
pub struct PollFd<'a> {
    fd: BorrowedFd<'a>,
    events: PollFlags,
    revents: PollFlags,
}

impl<'a> PollFd<'a> {
    /// Waits on `fd` for `events`.
    pub fn from_borrowed_fd(fd: BorrowedFd<'a>, events: PollFlags) -> Self {
        Self {
            fd,
            events,
            revents: PollFlags::empty(),
        }
    }

    /// What the last wait found (empty: nothing).
    pub fn revents(&self) -> PollFlags {
        self.revents
    }

    /// Forgets what the last wait found.
    pub fn clear_revents(&mut self) {
        self.revents = PollFlags::empty();
    }

    fn os(&self) -> rustix::event::PollFd<'a> {
        rustix::event::PollFd::from_borrowed_fd(self.fd, self.events)
    }
}

impl AsFd for PollFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
    }
}

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    /// Entries of the set with something to report.
    pub ready: usize,
    /// Whether one of the wakers was woken (before or during the wait).
    pub woken: bool,
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no limit),
/// with no way for another thread to interrupt it: for descriptors that are
/// ready at once or soon (use [`wait`] for everything else).
///
/// Retries on `EINTR`, so a signal delivered to the process does not look
/// like a spurious wake-up to the caller.
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut os: Vec<_> = fds.iter().map(PollFd::os).collect();
    loop {
        match rustix::event::poll(&mut os, timespec(deadline).as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(copy_revents(fds, &os))
}

/// Copies what the kernel reported back into `fds`; returns how many
/// entries have something to report.
fn copy_revents(fds: &mut [PollFd<'_>], os: &[rustix::event::PollFd<'_>]) -> usize {
    let mut ready = 0;
    for (ours, theirs) in fds.iter_mut().zip(os) {
        ours.revents = theirs.revents();
        ready += usize::from(!ours.revents.is_empty());
    }
    ready
}

/// The time left until `deadline`, as the kernel takes it (`None`: no limit).
fn timespec(deadline: Option<Instant>) -> Option<rustix::event::Timespec> {
    deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        rustix::event::Timespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: left.subsec_nanos() as _,
        }
    })
}

/// A socket descriptor owned by a guest's fd table.
pub type HostFd = OwnedFd;

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

/// A new TCP socket of `domain`, already non-blocking. Where the OS creates it so in one
/// call (`SOCK_NONBLOCK`), that saves the two `fcntl` calls switching it after, on every
/// connection a session opens.
pub fn nonblocking_tcp_socket(domain: socket2::Domain) -> io::Result<socket2::Socket> {
    use socket2::{Protocol, Socket, Type};
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let socket = {
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket
    };
    Ok(socket)
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
