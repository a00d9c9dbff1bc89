//! Outbound TCP dialing for transport modules, optionally through tor's upstream proxy.
//!
//! This is blocking `std` code on purpose: a WATER module dials from its own thread, and a
//! blocking connect with a deadline is simpler there than bridging into the async runtime.
//!
//! Two environment inputs from tor shape it (pt-spec):
//! * `TOR_PT_OUTBOUND_BIND_ADDRESS_V4/_V6`: bind outgoing sockets of that family to the given
//!   address, but never for loopback destinations (a loopback connection cannot leave from a
//!   public address);
//! * `TOR_PT_PROXY`: every outgoing connection goes through that proxy. The proxy's own address
//!   is what gets connected to, so the bind rule applies to it, and destination hostnames are
//!   handed to the proxy unresolved so no DNS query leaks around it.

mod handshake;
mod url;

#[cfg(test)]
#[path = "../../tests/common/test_proxies.rs"]
mod test_proxies;
#[cfg(test)]
mod tests;

pub use url::ProxyUrl;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How [`dial`] makes connections.
#[derive(Debug, Clone)]
pub struct DialOptions {
    /// Budget for the whole dial: resolution aside, every connect, write and read of the proxy
    /// handshake shares it.
    pub timeout: Duration,
    /// `TOR_PT_OUTBOUND_BIND_ADDRESS_V4`.
    pub bind_v4: Option<Ipv4Addr>,
    /// `TOR_PT_OUTBOUND_BIND_ADDRESS_V6`.
    pub bind_v6: Option<Ipv6Addr>,
    /// `TOR_PT_PROXY`.
    pub proxy: Option<ProxyUrl>,
}

/// Connects to `address` (`host:port`, `[v6]:port`) over `network` (`tcp`, `tcp4`, `tcp6`).
///
/// The returned stream has no read/write timeouts set. Errors keep a meaningful
/// [`io::ErrorKind`] (e.g. `ConnectionRefused`, `TimedOut`, `PermissionDenied` for rejected
/// proxy credentials) and their message names the step that failed.
pub fn dial(opts: &DialOptions, network: &str, address: &str) -> io::Result<TcpStream> {
    let deadline = Deadline::after(opts.timeout);
    let family = Family::parse(network)?;
    let (host, port) = split_host_port(address)?;
    if let Host::Ip(ip) = &host {
        if !family.allows(*ip) {
            return Err(invalid(format!(
                "{address} is not an address of network {network}"
            )));
        }
    }
    match &opts.proxy {
        None => dial_direct(opts, family, &host, port, &deadline),
        Some(proxy) => dial_via_proxy(opts, proxy, &host, port, &deadline),
    }
}

/// The outbound address to bind to before connecting to `dest`, if any.
fn bind_addr_for(opts: &DialOptions, dest: IpAddr) -> Option<IpAddr> {
    let dest = dest.to_canonical();
    if dest.is_loopback() {
        return None;
    }
    match dest {
        IpAddr::V4(_) => opts.bind_v4.map(IpAddr::V4),
        IpAddr::V6(_) => opts.bind_v6.map(IpAddr::V6),
    }
}

fn dial_direct(
    opts: &DialOptions,
    family: Family,
    host: &Host,
    port: u16,
    deadline: &Deadline,
) -> io::Result<TcpStream> {
    let candidates: Vec<SocketAddr> = match host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        // std's resolver has no timeout parameter; the system resolver's own limits apply.
        Host::Name(name) => (name.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| with_context(e, format!("resolving {name}")))?
            .filter(|a| family.allows(a.ip()))
            .collect(),
    };
    let mut last_err = None;
    for addr in candidates {
        match connect_tcp(opts, addr, deadline) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_err = Some(with_context(e, format!("connecting to {addr}"))),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no {} address", family.describe()),
        )
    }))
}

fn dial_via_proxy(
    opts: &DialOptions,
    proxy: &ProxyUrl,
    host: &Host,
    port: u16,
    deadline: &Deadline,
) -> io::Result<TcpStream> {
    if let (ProxyUrl::Socks4a { .. }, Host::Ip(IpAddr::V6(_))) = (proxy, host) {
        return Err(invalid(format!(
            "socks4a proxy cannot reach IPv6 destination {}",
            HostPort(host, port)
        )));
    }
    let label = format!("{} proxy {}", proxy.scheme(), proxy.addr());
    let mut stream = connect_tcp(opts, proxy.addr(), deadline)
        .map_err(|e| with_context(e, format!("{label}: connecting")))?;
    let mut conn = handshake::Conn::new(&mut stream, deadline, label);
    match proxy {
        ProxyUrl::Socks5 { auth, .. } => handshake::socks5(&mut conn, auth.as_ref(), host, port)?,
        ProxyUrl::Socks4a { .. } => handshake::socks4a(&mut conn, host, port)?,
        ProxyUrl::Http { auth, .. } => {
            handshake::http_connect(&mut conn, auth.as_ref(), host, port)?
        }
    }
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(stream)
}

/// One TCP connect under the deadline, bound per [`bind_addr_for`].
fn connect_tcp(opts: &DialOptions, addr: SocketAddr, deadline: &Deadline) -> io::Result<TcpStream> {
    let remaining = deadline.remaining()?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(local) = bind_addr_for(opts, addr.ip()) {
        socket
            .bind(&SocketAddr::new(local, 0).into())
            .map_err(|e| with_context(e, format!("binding to outbound address {local}")))?;
    }
    socket.connect_timeout(&addr.into(), remaining)?;
    Ok(socket.into())
}

/// The point in time by which the whole dial must be done.
pub(crate) struct Deadline(Instant);

impl Deadline {
    fn after(timeout: Duration) -> Self {
        // An absurdly large timeout is capped instead of overflowing `Instant`.
        const YEAR: Duration = Duration::from_secs(365 * 86_400);
        let now = Instant::now();
        Deadline(now.checked_add(timeout.min(YEAR)).unwrap_or(now))
    }

    /// Time left, or a `TimedOut` error if there is none (a zero socket timeout would mean
    /// "block forever" to `set_read_timeout`, and is an error to `connect_timeout`).
    pub(crate) fn remaining(&self) -> io::Result<Duration> {
        let left = self.0.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "dial timeout expired",
            ))
        } else {
            Ok(left)
        }
    }
}

/// Which address family `network` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

impl Family {
    fn parse(network: &str) -> io::Result<Self> {
        match network {
            "tcp" => Ok(Family::Any),
            "tcp4" => Ok(Family::V4),
            "tcp6" => Ok(Family::V6),
            other => Err(invalid(format!(
                "unsupported network '{other}' (tcp, tcp4 or tcp6)"
            ))),
        }
    }

    fn allows(self, ip: IpAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Family::Any => "usable",
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A destination host as given by the caller: proxies receive names unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// `host:port` with IPv6 in brackets (the form HTTP CONNECT and error messages want).
pub(crate) struct HostPort<'a>(pub &'a Host, pub u16);

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

/// Splits `host:port` / `[v6]:port`. Names are limited to what every proxy protocol can carry
/// (SOCKS5 ATYP 3 has a one-byte length) and may not contain whitespace or control bytes, which
/// would otherwise let a caller inject into the HTTP CONNECT request or the SOCKS4a NUL framing.
fn split_host_port(address: &str) -> io::Result<(Host, u16)> {
    let bad = |why: &str| invalid(format!("bad address '{address}': {why}"));
    let (host, port) = if let Some(inner) = address.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let ip: Ipv6Addr = h
            .parse()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (h, port) = address
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port"))?;
        if h.contains(':') {
            return Err(bad("IPv6 addresses must be in brackets"));
        }
        let host = match h.parse::<Ipv4Addr>() {
            Ok(ip) => Host::Ip(IpAddr::V4(ip)),
            Err(_) if h.is_empty() => return Err(bad("empty host")),
            Err(_) if h.len() > 255 => return Err(bad("host name longer than 255 bytes")),
            Err(_) if h.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(bad("host name contains whitespace or control characters"));
            }
            Err(_) => Host::Name(h.to_string()),
        };
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("port must be a number from 1 to 65535")),
        Ok(port) => Ok((host, port)),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Prefixes an error with what was being done, keeping its kind. A socket timeout surfaces as
/// `WouldBlock` on Unix; it is reported as `TimedOut`, which is what it means here.
pub(crate) fn with_context(err: io::Error, what: impl fmt::Display) -> io::Error {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, format!("{what}: timed out"))
        }
        kind => io::Error::new(kind, format!("{what}: {err}")),
    }
}
