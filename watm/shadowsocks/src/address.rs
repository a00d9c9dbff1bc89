//! The target address header a Shadowsocks client puts in front of its data:
//! SOCKS5's address encoding, `ATYP` then the address then a big-endian port.
//!
//! | ATYP | address |
//! |---|---|
//! | 1 | 4 bytes of IPv4 |
//! | 3 | 1 length byte, then that many bytes of host name |
//! | 4 | 16 bytes of IPv6 |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use watm_sdk::kv::is_host_port;

/// Longest possible header: ATYP, length, 255 name bytes, port.
pub const MAX_HEADER_LEN: usize = 1 + 1 + 255 + 2;

/// A target as the header carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// ATYP 1 or 4.
    Ip(SocketAddr),
    /// ATYP 3; kept as given (case included).
    Name(String, u16),
}

impl Target {
    /// Parses `host:port` as the config gives it: an IPv4 literal, an IPv6
    /// literal in brackets, or a host name of 1..=255 bytes.
    pub fn parse(text: &str) -> Option<Self> {
        if !is_host_port(text) {
            return None;
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(Self::Ip(addr));
        }
        let (host, port) = text.rsplit_once(':')?;
        // A bracketed host that is not an IPv6 literal is no host name either.
        if host.starts_with('[') || host.len() > 255 {
            return None;
        }
        Some(Self::Name(host.to_owned(), port.parse().ok()?))
    }

    /// Appends the header encoding of this target to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Ip(SocketAddr::V4(addr)) => {
                out.push(1);
                out.extend_from_slice(&addr.ip().octets());
            }
            Self::Ip(SocketAddr::V6(addr)) => {
                out.push(4);
                out.extend_from_slice(&addr.ip().octets());
            }
            Self::Name(host, _) => {
                out.push(3);
                // `parse` allowed at most 255 bytes.
                out.push(u8::try_from(host.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(host.as_bytes());
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
    }

    fn port(&self) -> u16 {
        match self {
            Self::Ip(addr) => addr.port(),
            Self::Name(_, port) => *port,
        }
    }

    /// Whether a header naming `self` is what `expected` allows. Addresses
    /// compare as addresses (so `[::1]` matches however it was written) and
    /// names compare without regard to ASCII case; a name never matches an
    /// address, since the server must not resolve names to decide.
    pub fn matches(&self, expected: &Target) -> bool {
        match (self, expected) {
            (Self::Ip(a), Self::Ip(b)) => a == b,
            (Self::Name(a, pa), Self::Name(b, pb)) => pa == pb && a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

/// `host:port`, as the config writes it (IPv6 in brackets).
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(addr) => write!(f, "{addr}"),
            Self::Name(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole header, and how many bytes it took.
    Complete(Target, usize),
    /// The buffer is a prefix of a valid header; more bytes are needed.
    Incomplete,
    /// Not a header: unknown ATYP, empty or non-UTF-8 name.
    Invalid,
}

/// Decodes the header at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    let Some(&atyp) = buf.first() else {
        return Decoded::Incomplete;
    };
    let (address_len, skip) = match atyp {
        1 => (4, 1),
        4 => (16, 1),
        3 => match buf.get(1) {
            None => return Decoded::Incomplete,
            Some(0) => return Decoded::Invalid,
            Some(&len) => (usize::from(len), 2),
        },
        _ => return Decoded::Invalid,
    };
    let total = skip + address_len + 2;
    let (Some(address), Some(port)) = (
        buf.get(skip..skip + address_len),
        buf.get(skip + address_len..total),
    ) else {
        return Decoded::Incomplete;
    };
    let port = u16::from_be_bytes([
        port.first().copied().unwrap_or(0),
        port.get(1).copied().unwrap_or(0),
    ]);
    let target = match atyp {
        1 => <[u8; 4]>::try_from(address)
            .map(|ip| Target::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))),
        4 => <[u8; 16]>::try_from(address)
            .map(|ip| Target::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))),
        _ => match std::str::from_utf8(address) {
            Ok(name) => Ok(Target::Name(name.to_owned(), port)),
            Err(_) => return Decoded::Invalid,
        },
    };
    match target {
        Ok(target) => Decoded::Complete(target, total),
        Err(_) => Decoded::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        for text in ["127.0.0.1:9000", "[::1]:443", "Example.COM:80"] {
            let target = Target::parse(text).unwrap();
            let mut buf = Vec::new();
            target.encode(&mut buf);
            buf.extend_from_slice(b"data");
            let Decoded::Complete(back, used) = decode(&buf) else {
                panic!("{text}: {buf:?}");
            };
            assert_eq!(back, target);
            assert_eq!(&buf[used..], b"data");
            // Every strict prefix is incomplete, never invalid.
            for cut in 0..used {
                assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "{text} {cut}");
            }
        }
    }

    #[test]
    fn encodings() {
        let mut buf = Vec::new();
        Target::parse("1.2.3.4:258").unwrap().encode(&mut buf);
        assert_eq!(buf, [1, 1, 2, 3, 4, 1, 2]);
        buf.clear();
        Target::parse("ab:1").unwrap().encode(&mut buf);
        assert_eq!(buf, [3, 2, b'a', b'b', 0, 1]);
    }

    #[test]
    fn rejects_bad_headers_and_targets() {
        assert_eq!(decode(&[0, 1, 2, 3]), Decoded::Invalid);
        assert_eq!(decode(&[5]), Decoded::Invalid);
        assert_eq!(decode(&[3, 0, 0, 80]), Decoded::Invalid);
        assert_eq!(decode(&[3, 1, 0xff, 0, 80]), Decoded::Invalid);
        for bad in ["", "host", "host:0", "[nope]:1", "a b:1"] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
        assert_eq!(Target::parse(&format!("{}:1", "a".repeat(256))), None);
    }

    #[test]
    fn matching() {
        let t = |s| Target::parse(s).unwrap();
        assert!(t("[::1]:5").matches(&t("[0:0::1]:5")));
        assert!(t("EXAMPLE.com:5").matches(&t("example.COM:5")));
        assert!(!t("example.com:5").matches(&t("example.com:6")));
        assert!(!t("127.0.0.1:5").matches(&t("localhost:5")));
    }
}
