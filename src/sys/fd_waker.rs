//! Wake-ups through a descriptor, where a waiting thread cannot be
//! interrupted any other way: macOS has no `ppoll` (so no race-free way to
//! let a signal end a `poll`), and `WSAPoll` on Windows returns early only
//! for one of its own sockets. Each [`Waker`] holds its own descriptor (a
//! non-blocking pipe on Unix, a loopback socket pair on Windows, see
//! `windows.rs`) and every [`wait`] includes it.

use super::{copy_revents, timespec, PollFd, PollFlags, Waited};

/// Descriptors each [`Waker`] holds: both ends of its pipe or socket pair.
pub const WAKER_DESCRIPTORS: u64 = 2;
use std::io;
use std::time::{Duration, Instant};

#[cfg(windows)]
pub use super::windows::Waker;

/// Waits until one of `fds` is ready, one of `wakers` is woken, or
/// `timeout` passes (`None`: no limit). A waker stays woken until drained,
/// so a wake that came before the call ends it at once.
pub fn wait(
    fds: &mut [PollFd<'_>],
    wakers: &[&Waker],
    timeout: Option<Duration>,
) -> io::Result<Waited> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut os: Vec<_> = fds
        .iter()
        .map(PollFd::os)
        .chain(
            wakers
                .iter()
                .map(|w| rustix::event::PollFd::from_borrowed_fd(w.as_fd(), PollFlags::IN)),
        )
        .collect();
    loop {
        match rustix::event::poll(&mut os, timespec(deadline).as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let ready = copy_revents(fds, &os);
    let woken = os[fds.len()..].iter().any(|p| !p.revents().is_empty());
    Ok(Waited { ready, woken })
}

/// A wake-up signal that can be included in any `poll` set: readable from
/// [`Waker::wake`] until [`Waker::drain`]. The read end of a non-blocking
/// pipe.
#[cfg(unix)]
#[derive(Debug)]
pub struct Waker {
    read: super::OwnedFd,
    write: super::OwnedFd,
}

#[cfg(unix)]
impl Waker {
    /// Creates a new, not yet signalled, waker.
    pub fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe()?;
        for fd in [&read, &write] {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
            rustix::io::ioctl_fionbio(fd, true)?;
        }
        Ok(Self { read, write })
    }

    /// Signals the waker; any current or future wait that includes it returns.
    pub fn wake(&self) {
        // A full pipe means it is signalled already.
        let _ = rustix::io::write(&self.write, &[1u8]);
    }

    /// Resets the waker to not signalled, so that a wait including it blocks
    /// again until the next [`Waker::wake`].
    pub fn drain(&self) {
        // The pipe may hold several wake-up bytes.
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(&self.read, &mut buf), Ok(n) if n > 0) {}
    }

    /// Whether [`Waker::wake`] has been called since the last drain.
    pub fn is_woken(&self) -> bool {
        let mut fds = [PollFd::from_borrowed_fd(self.as_fd(), PollFlags::IN)];
        matches!(super::poll(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
    }

    /// The descriptor a wait includes (readable once woken).
    pub fn as_fd(&self) -> super::BorrowedFd<'_> {
        use super::AsFd;
        self.read.as_fd()
    }
}
