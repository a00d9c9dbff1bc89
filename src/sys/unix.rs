//! The Unix half of the platform layer (Linux, Android, macOS, the BSDs).

use super::{retry_intr, BorrowedFd, LifecycleSignal, OwnedFd, PollFlags};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes the given buffers to a socket with one `writev`.
pub fn write_vectored(
    fd: BorrowedFd<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Result<usize, rustix::io::Errno> {
    retry_intr(|| rustix::io::writev(fd, bufs))
}

/// What a read subscription waits for. Where the OS reports it, the peer
/// closing its side (`POLLRDHUP`) is asked for too, so a read event can say
/// "hang-up" even while unread data is queued: a module that stopped
/// reading a source (backpressure) can still learn that its peer is gone.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const READ_INTEREST: PollFlags = PollFlags::IN.union(PollFlags::RDHUP);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const READ_INTEREST: PollFlags = PollFlags::IN;

/// Poll results that mean the peer hung up.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const HANGUP: PollFlags = PollFlags::HUP.union(PollFlags::RDHUP);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const HANGUP: PollFlags = PollFlags::HUP;

/// Bounds how long data written to a TCP socket may stay unacknowledged,
/// including while the peer advertises a zero window (`TCP_USER_TIMEOUT`),
/// after which the kernel fails the connection with `ETIMEDOUT`. macOS and
/// the BSDs have no such option, so there this does nothing and a stalled
/// peer is left to TCP's own retransmission limit.
pub fn set_stall_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket2::SockRef::from(&fd).set_tcp_user_timeout(Some(timeout))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (fd, timeout);
    Ok(())
}

/// The stream type of the runtime's end of a caller socket pair.
pub type CallerStream = tokio::net::UnixStream;

/// A connected socket pair: the tokio end for the runtime's caller, the
/// other end for the module. A Unix-domain pair: no port, nothing another
/// process could connect to.
pub fn caller_pair() -> io::Result<(CallerStream, OwnedFd)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    Ok((CallerStream::from_std(ours)?, theirs.into()))
}

/// Two connected stream sockets (a Unix-domain pair).
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    Ok((a.into(), b.into()))
}

/// Creates `dir` and its parents, readable by the owner only (mode 0700).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates a new file (failing if it exists) that only the owner may read
/// or write (mode 0600).
pub fn create_private_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Makes an existing file private to its owner (mode 0600), e.g. one
/// restored from a backup with looser permissions.
pub fn make_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// The user's cache directory: `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn user_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
}

/// Whether an `accept` failed because the process or system ran out of
/// descriptors or memory (worth backing off rather than retrying at once).
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

/// Whether a non-blocking `connect` returned "in progress" (`EINPROGRESS`).
pub fn connect_in_progress(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error())
        || e.kind() == io::ErrorKind::WouldBlock
}

/// Counts this process's open file descriptors and threads (for tests and
/// the benchmark; `None` where the OS does not expose them in `/proc`).
pub fn process_counts() -> Option<(usize, usize)> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let threads = std::fs::read_dir("/proc/self/task").ok()?.count();
    Some((fds, threads))
}

/// The installed handlers for [`LifecycleSignal`]s.
#[derive(Debug)]
pub struct LifecycleSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl LifecycleSignals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next request (`None` once no more can arrive).
    pub async fn recv(&mut self) -> Option<LifecycleSignal> {
        tokio::select! {
            Some(()) = self.interrupt.recv() => Some(LifecycleSignal::Interrupt),
            Some(()) = self.terminate.recv() => Some(LifecycleSignal::Terminate),
            else => None,
        }
    }
}

/// Raises this process's soft limit on open descriptors to its hard limit
/// and returns the new soft limit (`None`: unlimited). Every connection holds
/// two descriptors in each process (its caller and network sockets), so the
/// usual soft limit (1024, or 20,000 on some servers) caps a bridge long
/// before memory or CPU does.
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

/// The most memory mappings this process may have (`vm.max_map_count` on
/// Linux), or `None` where the platform has no such limit or it cannot be
/// read. Going past it fails `mmap`/`mprotect`, and a thread that cannot
/// map its signal stack aborts the process.
pub fn max_memory_mappings() -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    None
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

/// The device and inode of a file: which file a path led to, so that one replaced under the
/// same name (by a rename, or a retargeted symlink) is told apart from the one read before.
pub fn file_identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}
