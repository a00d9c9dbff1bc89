//! The platform layer: every OS-specific call the runtime makes.
//!
//! The WASI host needs a handful of primitives that differ between operating
//! systems: waiting on several sockets at once (`poll`), a wake-up handle
//! another thread can trigger to interrupt such a wait, and raw reads and
//! writes on socket descriptors. Keeping them here means a port to another
//! OS touches this module only. Everything goes through `rustix`, so this
//! module needs no `unsafe` of its own.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

pub use rustix::event::{PollFd, PollFlags};

/// A socket or pipe descriptor owned by a guest's fd table.
pub type HostFd = OwnedFd;

/// A wake-up signal that can be included in any `poll` set: readable from
/// [`Waker::wake`] until [`Waker::drain`].
#[derive(Debug)]
pub struct Waker {
    read: OwnedFd,
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    write: OwnedFd,
}

impl Waker {
    /// Creates a new, not yet signalled, waker.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn new() -> io::Result<Self> {
        use rustix::event::{eventfd, EventfdFlags};
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Self { read: fd })
    }

    /// Creates a new, not yet signalled, waker.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn new() -> io::Result<Self> {
        use rustix::pipe::{pipe_with, PipeFlags};
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Self { read, write })
    }

    /// Signals the waker; any current or future wait that includes it returns.
    pub fn wake(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = rustix::io::write(&self.read, &1u64.to_ne_bytes());
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = rustix::io::write(&self.write, &[1u8]);
    }

    /// Resets the waker to not signalled, so that a wait including it blocks
    /// again until the next [`Waker::wake`].
    pub fn drain(&self) {
        // An eventfd resets its counter with one read; a pipe may hold
        // several wake-up bytes.
        let mut buf = [0u8; 64];
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = rustix::io::read(&self.read, &mut buf);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        while matches!(rustix::io::read(&self.read, &mut buf), Ok(n) if n > 0) {}
    }

    /// Whether [`Waker::wake`] has been called.
    pub fn is_woken(&self) -> bool {
        let mut fds = [PollFd::new(&self.read, PollFlags::IN)];
        matches!(poll(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
    }

    /// The descriptor to include in a poll set (readable once woken).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

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

/// Writes the given buffers to a socket with one `writev`.
pub fn write_vectored(
    fd: BorrowedFd<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Result<usize, rustix::io::Errno> {
    retry_intr(|| rustix::io::writev(fd, bufs))
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

/// Bounds how long data written to a TCP socket may stay unacknowledged,
/// including while the peer advertises a zero window (`TCP_USER_TIMEOUT`),
/// after which the kernel fails the connection with `ETIMEDOUT`. Where the
/// OS has no such option this does nothing.
pub fn set_stall_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket2::SockRef::from(&fd).set_tcp_user_timeout(Some(timeout))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (fd, timeout);
    Ok(())
}

/// Fixes a socket's send and receive buffers at `bytes` each (`SO_SNDBUF`,
/// `SO_RCVBUF`), which turns off the kernel's autotuning for that socket.
/// The kernel may round the size (Linux doubles it for bookkeeping).
pub fn set_buffer_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let sock = socket2::SockRef::from(&fd);
    sock.set_send_buffer_size(bytes)?;
    sock.set_recv_buffer_size(bytes)
}

/// Counts this process's open file descriptors and threads (for tests and
/// the benchmark; `None` where the OS does not expose them).
pub fn process_counts() -> Option<(usize, usize)> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let threads = std::fs::read_dir("/proc/self/task").ok()?.count();
    Some((fds, threads))
}

/// Raises this process's soft limit on open descriptors to its hard limit
/// and returns the new soft limit (`None`: unlimited). Every connection holds
/// about three descriptors (caller, network, stop waker), so the usual soft
/// limit (1024, or 20,000 on some servers) caps a bridge long before memory
/// or CPU does.
pub fn raise_fd_limit() -> io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current != now.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

/// Has the kernel send this process SIGTERM when its parent exits, so a
/// transport whose tor was killed (no chance to close our stdin or signal
/// us) does not live on. Returns whether the platform supports it.
pub fn exit_with_parent() -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
        Ok(true)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    Ok(false)
}
