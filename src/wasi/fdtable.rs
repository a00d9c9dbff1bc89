//! The guest's file descriptor table.
//!
//! A WATM only ever sees small integers. This table maps them to what the
//! runtime actually holds: the three stdio streams (routed to the log, never
//! to the process's stdout, which belongs to tor's protocol), the read-only
//! `/conf` preopen with its single `watm.cfg`, and host sockets. Dropping the
//! table closes every socket the instance was given.

use super::errno::Errno;
use crate::sys::{AsFd, BorrowedFd, HostFd};

/// Most descriptors one instance may hold at once. A connection needs about
/// five (stdio, caller, network, control pipe); the cap keeps a misbehaving
/// module from hoarding host sockets.
pub const MAX_FDS: usize = 64;

/// What a guest descriptor refers to.
#[derive(Debug)]
pub enum Entry {
    Stdin,
    Stdout,
    Stderr,
    /// The preopened, read-only `/conf` directory.
    ConfDir,
    /// `/conf/watm.cfg`, opened for reading; `pos` is the read offset.
    ConfFile {
        pos: u64,
    },
    /// The control channel: readable once the runtime asks the module to
    /// stop, when it yields one `0x00` byte and then end-of-stream. Backed
    /// by the instance's [`super::StopSignal`], not by a descriptor of its
    /// own.
    Control {
        nonblocking: bool,
        delivered: bool,
    },
    Socket(Socket),
    /// A socket the runtime opens only when the module first writes to it
    /// or polls it for writing (see [`LazySocket`]).
    Lazy(LazySocket),
}

/// Opens a socket on demand; given the instance's stop waker so that a
/// stop can cut the wait short.
pub type OpenSocket = Box<dyn FnOnce(&crate::sys::Waker) -> std::io::Result<HostFd> + Send>;

/// A socket not opened yet. Until the module wants to write to it, it reads
/// as a socket with nothing to read: the peer behind it (tor) never speaks
/// first, so nothing is lost by connecting late, and a connection the module
/// rejects without ever writing costs that peer nothing.
pub struct LazySocket {
    pub(super) open: Option<OpenSocket>,
    pub nonblocking: bool,
}

impl LazySocket {
    pub fn new(open: OpenSocket) -> Self {
        Self {
            open: Some(open),
            nonblocking: false,
        }
    }
}

impl std::fmt::Debug for LazySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySocket")
            .field("nonblocking", &self.nonblocking)
            .finish_non_exhaustive()
    }
}

/// A host socket (or the runtime's end of a pipe) lent to the guest.
#[derive(Debug)]
pub struct Socket {
    fd: HostFd,
    /// The guest's view of `O_NONBLOCK`. The host descriptor itself is always
    /// non-blocking; blocking reads and writes are emulated so that a stop
    /// request can interrupt them.
    pub nonblocking: bool,
    /// An error a write met after the kernel had taken some of its bytes.
    /// That write reported its byte count; the next one reports the error
    /// (the kernel hands a socket error out only once).
    pub(super) failed: Option<super::Errno>,
    /// Whether this is the caller socket the runtime handed over. The runtime
    /// writes its setup replies only to an entry carrying this mark: once the
    /// module closed its caller fd, the number may name another socket.
    pub is_caller: bool,
}

impl Socket {
    /// Wraps a descriptor, switching it to non-blocking mode at the OS level.
    pub fn new(fd: HostFd) -> std::io::Result<Self> {
        crate::sys::set_nonblocking(fd.as_fd())?;
        Ok(Self {
            fd,
            nonblocking: false,
            failed: None,
            is_caller: false,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn into_fd(self) -> HostFd {
        self.fd
    }
}

/// Descriptor number -> entry; lowest free number first, like POSIX.
#[derive(Debug, Default)]
pub struct FdTable {
    entries: Vec<Option<Entry>>,
}

impl FdTable {
    /// A table with stdio at 0, 1, 2 and, when `with_conf` is set, the
    /// `/conf` preopen at 3 (where wasi-libc looks for preopens).
    pub fn new(with_conf: bool) -> Self {
        let mut entries = vec![Some(Entry::Stdin), Some(Entry::Stdout), Some(Entry::Stderr)];
        if with_conf {
            entries.push(Some(Entry::ConfDir));
        }
        Self { entries }
    }

    /// Inserts an entry at the lowest free number.
    pub fn insert(&mut self, entry: Entry) -> Result<u32, Errno> {
        if let Some(i) = self.entries.iter().position(Option::is_none) {
            self.entries[i] = Some(entry);
            return Ok(i as u32);
        }
        if self.entries.len() >= MAX_FDS {
            return Err(Errno::MFILE);
        }
        self.entries.push(Some(entry));
        Ok((self.entries.len() - 1) as u32)
    }

    fn index(fd: i32) -> Result<usize, Errno> {
        usize::try_from(fd).map_err(|_| Errno::BADF)
    }

    pub fn get(&self, fd: i32) -> Result<&Entry, Errno> {
        self.entries
            .get(Self::index(fd)?)
            .and_then(Option::as_ref)
            .ok_or(Errno::BADF)
    }

    pub fn get_mut(&mut self, fd: i32) -> Result<&mut Entry, Errno> {
        self.entries
            .get_mut(Self::index(fd)?)
            .and_then(Option::as_mut)
            .ok_or(Errno::BADF)
    }

    pub fn socket(&self, fd: i32) -> Result<&Socket, Errno> {
        match self.get(fd)? {
            Entry::Socket(s) => Ok(s),
            _ => Err(Errno::NOTSOCK),
        }
    }

    pub fn remove(&mut self, fd: i32) -> Result<Entry, Errno> {
        let slot = self.entries.get_mut(Self::index(fd)?).ok_or(Errno::BADF)?;
        let entry = slot.take().ok_or(Errno::BADF)?;
        while matches!(self.entries.last(), Some(None)) {
            self.entries.pop();
        }
        Ok(entry)
    }

    /// Number of sockets currently held.
    pub fn socket_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Some(Entry::Socket(_) | Entry::Lazy(_))))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock() -> Entry {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        Entry::Socket(Socket::new(a.into()).unwrap())
    }

    #[test]
    fn numbering_starts_after_stdio_and_preopen() {
        let mut t = FdTable::new(true);
        assert!(matches!(t.get(3), Ok(Entry::ConfDir)));
        assert_eq!(t.insert(sock()), Ok(4));
        let mut t = FdTable::new(false);
        assert_eq!(t.insert(sock()), Ok(3));
        assert_eq!(t.insert(sock()), Ok(4));
        assert!(t.remove(3).is_ok());
        assert_eq!(t.insert(sock()), Ok(3), "lowest free number is reused");
        assert_eq!(t.socket_count(), 2);
    }

    #[test]
    fn bad_descriptors_are_ebadf() {
        let mut t = FdTable::new(false);
        assert_eq!(t.get(-1).err(), Some(Errno::BADF));
        assert_eq!(t.get(99).err(), Some(Errno::BADF));
        assert_eq!(t.remove(42).err(), Some(Errno::BADF));
        assert_eq!(t.socket(1).err(), Some(Errno::NOTSOCK));
        assert!(t.remove(2).is_ok());
        assert_eq!(t.remove(2).err(), Some(Errno::BADF), "double close");
    }

    #[test]
    fn table_is_capped() {
        let mut t = FdTable::new(false);
        for _ in 3..MAX_FDS {
            t.insert(Entry::ConfFile { pos: 0 }).unwrap();
        }
        assert_eq!(t.insert(Entry::ConfFile { pos: 0 }), Err(Errno::MFILE));
    }
}
