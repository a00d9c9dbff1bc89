//! What a module may dial, and how the host dials it.
//!
//! A WATM never opens sockets itself: it asks the host through
//! `water_dial_fixed` (the address the runtime's caller chose) or
//! `water_dial` (an address the module chose). The second is checked against
//! an allow-list that is empty by default, so a module one did not write
//! cannot turn the runtime into an open proxy.

use crate::sys::{self, AsFd, PollFd, PollFlags, Waker};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Addresses a module may dial with `water_dial`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<String>,
}

impl AllowList {
    /// Allows nothing (the default).
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Allows exactly the given `host:port` strings (compared as written,
    /// after lower-casing the host).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|s| s.as_ref().to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn allows(&self, network: &str, address: &str) -> bool {
        matches!(network, "tcp" | "tcp4" | "tcp6")
            && self.entries.iter().any(|e| e.eq_ignore_ascii_case(address))
    }
}

/// Opens outbound TCP connections for modules.
///
/// Implemented directly here, and by the pluggable-transport layer to go
/// through tor's upstream proxy. Runs on the module's own thread, so it may
/// block; it should return early when `cancel` is woken.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, network: &str, address: &str, cancel: &Waker) -> io::Result<TcpStream>;
}

/// Plain TCP connections with a timeout.
#[derive(Clone, Debug)]
pub struct DirectConnector {
    pub timeout: Duration,
}

impl Default for DirectConnector {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

impl Connector for DirectConnector {
    fn connect(&self, network: &str, address: &str, cancel: &Waker) -> io::Result<TcpStream> {
        let deadline = Instant::now() + self.timeout;
        let mut last = None;
        // A literal address needs no lookup; a name is resolved on a helper
        // thread, since the system resolver cannot be interrupted by a stop.
        let addrs = match address.parse::<SocketAddr>() {
            Ok(_) => resolve(network, address)?,
            Err(_) => {
                let (network, address) = (network.to_owned(), address.to_owned());
                super::run_cancellable(cancel, move || resolve(&network, &address))?
            }
        };
        for addr in addrs {
            match connect_one(addr, deadline, cancel) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{address} has no address for {network}"),
            )
        }))
    }
}

/// Resolves `host:port`, keeping only the family `network` asks for.
pub fn resolve(network: &str, address: &str) -> io::Result<Vec<SocketAddr>> {
    let want = |a: &SocketAddr| match network {
        "tcp" => true,
        "tcp4" => a.is_ipv4(),
        "tcp6" => a.is_ipv6(),
        _ => false,
    };
    if !matches!(network, "tcp" | "tcp4" | "tcp6") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsupported network {network:?}"),
        ));
    }
    Ok(address.to_socket_addrs()?.filter(want).collect())
}

/// A non-blocking connect that a stop request can interrupt.
fn connect_one(addr: SocketAddr, deadline: Instant, cancel: &Waker) -> io::Result<TcpStream> {
    let socket = sys::nonblocking_tcp_socket(socket2::Domain::for_address(addr))?;
    match socket.connect(&addr.into()) {
        Ok(()) => return Ok(socket.into()),
        Err(e) if sys::connect_in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    let mut fds = [PollFd::from_borrowed_fd(socket.as_fd(), PollFlags::OUT)];
    let left = deadline.saturating_duration_since(Instant::now());
    let outcome = sys::wait(&mut fds, &[cancel], Some(left))?;
    if outcome.woken {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
    }
    if outcome.ready == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {addr} timed out"),
        ));
    }
    if let Some(e) = socket.take_error()? {
        return Err(e);
    }
    Ok(socket.into())
}

/// Everything a module's network imports need: the allow-list for
/// `water_dial` and the connector for both dial imports.
#[derive(Clone)]
pub struct NetPolicy {
    pub allow: AllowList,
    pub connector: Arc<dyn Connector>,
}

impl Default for NetPolicy {
    fn default() -> Self {
        Self {
            allow: AllowList::deny_all(),
            connector: Arc::new(DirectConnector::default()),
        }
    }
}

impl fmt::Debug for NetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetPolicy")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_denies_by_default() {
        assert!(!AllowList::deny_all().allows("tcp", "127.0.0.1:80"));
        let a = AllowList::new(["127.0.0.1:7700", "Example.org:443"]);
        assert!(a.allows("tcp", "127.0.0.1:7700"));
        assert!(a.allows("tcp4", "example.ORG:443"));
        assert!(!a.allows("udp", "127.0.0.1:7700"));
        assert!(!a.allows("tcp", "127.0.0.1:7701"));
    }

    #[test]
    fn resolve_filters_families() {
        assert_eq!(resolve("tcp4", "[::1]:1").unwrap().len(), 0);
        assert_eq!(resolve("tcp6", "[::1]:1").unwrap().len(), 1);
        assert!(resolve("udp", "127.0.0.1:1").is_err());
    }

    #[test]
    fn direct_connect_reports_refusal() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let w = Waker::new().unwrap();
        let err = DirectConnector::default()
            .connect("tcp", &addr.to_string(), &w)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
