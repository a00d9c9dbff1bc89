//! The Windows half of the platform layer.
//!
//! Guest descriptors are Winsock sockets and every wait is one `WSAPoll`
//! (through `rustix`). `WSAPoll` only takes sockets, so the two things that
//! are pipes or eventfds on Unix (the [`Waker`] and the caller socket pair)
//! are connected loopback TCP pairs here.

use super::{AsFd, BorrowedFd, LifecycleSignal, OwnedFd, PollFd, PollFlags};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Two connected loopback TCP sockets (blocking, Nagle off).
///
/// The listener lives only for this call, on a port the OS picks. Another
/// local process could still connect to it in that window, so the accepted
/// connection is only taken if its peer address is our own connecting
/// socket's address; anything else is dropped and accepting goes on.
fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let ours = TcpStream::connect(listener.local_addr()?)?;
    let want = ours.local_addr()?;
    loop {
        let (theirs, peer) = listener.accept()?;
        if peer == want {
            ours.set_nodelay(true)?;
            theirs.set_nodelay(true)?;
            return Ok((ours, theirs));
        }
    }
}

/// A wake-up signal that can be included in any `poll` set: readable from
/// [`Waker::wake`] until [`Waker::drain`]. The read end of a loopback pair;
/// waking writes a byte to the other end.
///
/// Unlike on Linux, each waker (so each session) holds sockets of its own:
/// `WSAPoll` has no signal mask and no alertable form, and returns early
/// only when one of its own sockets becomes ready, so a socket in the set is
/// the only way another thread can end the wait.
#[derive(Debug)]
pub struct Waker {
    read: TcpStream,
    write: TcpStream,
}

impl Waker {
    /// Creates a new, not yet signalled, waker.
    pub fn new() -> io::Result<Self> {
        let (read, write) = loopback_pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(Self { read, write })
    }

    /// Signals the waker; any current or future wait that includes it returns.
    pub fn wake(&self) {
        // A full buffer (`WouldBlock`) means it is signalled already.
        let _ = (&self.write).write(&[1u8]);
    }

    /// Resets the waker to not signalled, so that a wait including it blocks
    /// again until the next [`Waker::wake`].
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Whether [`Waker::wake`] has been called.
    pub fn is_woken(&self) -> bool {
        let mut fds = [PollFd::from_borrowed_fd(
            AsFd::as_fd(&self.read),
            PollFlags::IN,
        )];
        matches!(super::poll(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
    }

    /// The socket to include in a poll set (readable once woken).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        AsFd::as_fd(&self.read)
    }
}

/// Writes the given buffers to a socket with one `WSASend`.
pub fn write_vectored(
    fd: BorrowedFd<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Result<usize, rustix::io::Errno> {
    socket2::SockRef::from(&fd)
        .send_vectored(bufs)
        .map_err(|e| rustix::io::Errno::from_raw_os_error(e.raw_os_error().unwrap_or(0)))
}

/// What a read subscription waits for (`WSAPoll` has no `POLLRDHUP`).
pub const READ_INTEREST: PollFlags = PollFlags::IN;

/// Poll results that mean the peer hung up.
pub const HANGUP: PollFlags = PollFlags::HUP;

/// Bounds how long written data may stay unacknowledged before the
/// connection is dropped: `TCP_MAXRT`, Windows' counterpart of Linux's
/// `TCP_USER_TIMEOUT`. It counts whole seconds, so the limit is rounded up.
pub fn set_stall_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{
        setsockopt, IPPROTO_TCP, SOCKET, SOCKET_ERROR, TCP_MAXRT,
    };
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let secs = u32::try_from(secs.max(1)).unwrap_or(u32::MAX);
    let len = std::mem::size_of::<u32>() as i32;
    // SAFETY: `fd` is a live socket for the duration of the call (it is
    // borrowed), and the option value points at a local `u32` whose size is
    // passed as its length; `setsockopt` only reads that many bytes.
    #[allow(unsafe_code)]
    let rc = unsafe {
        setsockopt(
            fd.as_raw_socket() as SOCKET,
            IPPROTO_TCP,
            TCP_MAXRT,
            std::ptr::from_ref(&secs).cast(),
            len,
        )
    };
    if rc == SOCKET_ERROR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The stream type of the runtime's end of a caller socket pair.
pub type CallerStream = tokio::net::TcpStream;

/// A connected socket pair: the tokio end for the runtime's caller, the
/// other end for the module. Windows' `WSAPoll` takes sockets only, so this
/// is a loopback TCP pair (see [`loopback_pair`] for who may connect).
pub fn caller_pair() -> io::Result<(CallerStream, OwnedFd)> {
    let (ours, theirs) = loopback_pair()?;
    ours.set_nonblocking(true)?;
    Ok((CallerStream::from_std(ours)?, theirs.into()))
}

/// Two connected stream sockets (a loopback TCP pair).
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = loopback_pair()?;
    Ok((a.into(), b.into()))
}

/// Creates `dir` and its parents. A new directory inherits its parent's
/// access list; tor's state directory and the cache below it sit in the
/// user's profile, which only that user (and administrators) may read.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Creates a new file (failing if it exists). Like every file water-pt
/// keeps, it lives in a directory made by [`create_private_dir`] and takes
/// that directory's access list.
pub fn create_private_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Makes an existing file private to its owner: on Windows its access list
/// is its directory's (see [`create_private_file`]), so nothing to do.
pub fn make_private(path: &Path) -> io::Result<()> {
    let _ = path;
    Ok(())
}

/// The user's cache directory: `%LOCALAPPDATA%` (not roamed between
/// machines, which suits compiled code tied to this CPU).
pub fn user_cache_dir() -> Option<PathBuf> {
    std::env::var_os("LOCALAPPDATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Whether an `accept` failed because the process or system ran out of
/// sockets or buffer space (worth backing off rather than retrying at once).
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    const WSAEMFILE: i32 = 10024;
    const WSAENOBUFS: i32 = 10055;
    matches!(e.raw_os_error(), Some(WSAEMFILE | WSAENOBUFS))
        || e.kind() == io::ErrorKind::OutOfMemory
}

/// Whether a non-blocking `connect` returned "in progress"
/// (`WSAEWOULDBLOCK` on Windows).
pub fn connect_in_progress(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Counts this process's open descriptors and threads: not exposed without
/// the tool-help API, so `None`.
pub fn process_counts() -> Option<(usize, usize)> {
    None
}

/// The installed console control handlers. Tor itself never sends these
/// on Windows: it closes the transport's stdin and then terminates it.
#[derive(Debug)]
pub struct LifecycleSignals {
    interrupt: tokio::signal::windows::CtrlC,
    terminate: tokio::signal::windows::CtrlBreak,
    close: tokio::signal::windows::CtrlClose,
}

impl LifecycleSignals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> io::Result<Self> {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        Ok(Self {
            interrupt: ctrl_c()?,
            terminate: ctrl_break()?,
            close: ctrl_close()?,
        })
    }

    /// The next request (`None` once no more can arrive).
    pub async fn recv(&mut self) -> Option<LifecycleSignal> {
        tokio::select! {
            Some(()) = self.interrupt.recv() => Some(LifecycleSignal::Interrupt),
            Some(()) = self.terminate.recv() => Some(LifecycleSignal::Terminate),
            Some(()) = self.close.recv() => Some(LifecycleSignal::Terminate),
            else => None,
        }
    }
}

/// Windows has no per-process limit on sockets like Unix's `RLIMIT_NOFILE`:
/// `None` (unlimited), nothing to raise.
pub fn raise_fd_limit() -> io::Result<Option<u64>> {
    Ok(None)
}

/// Windows has no per-process limit on memory mappings.
pub fn max_memory_mappings() -> Option<u64> {
    None
}

/// Tor on Windows closes the transport's stdin and then terminates it, so
/// there is no parent-death signal to ask for. Returns `false` (not
/// supported).
pub fn exit_with_parent() -> io::Result<bool> {
    Ok(false)
}

/// Which file a path led to. Stable Rust gives no file index on Windows, so there is none:
/// callers then read the file again rather than trust its name, size and time alone.
pub fn file_identity(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}
