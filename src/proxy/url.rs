//! Parsing of `TOR_PT_PROXY`.
//!
//! tor builds the value by pasting its `Socks5ProxyUsername`/`Socks5ProxyPassword` or
//! `HTTPSProxyAuthenticator` options into the URL without percent-encoding (transports.c), so
//! a general URL parser (the `url` crate) would either reject such values or percent-decode
//! bytes that were never encoded. The format is fixed and small, so it is split by hand: the
//! credentials end at the LAST `@` (the address part never contains one) and the username ends
//! at the FIRST `:` (a Basic-auth user-id cannot contain `:`; the password can).
//!
//! Error messages end up verbatim in `PROXY-ERROR msg`, i.e. in tor's log, so they never echo
//! the credentials.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An upstream proxy that outbound connections must go through (pt-spec `TOR_PT_PROXY`).
#[derive(Clone, PartialEq, Eq)]
pub enum ProxyUrl {
    /// `socks5://[user:pass@]ip:port`; credentials use RFC 1929.
    Socks5 {
        addr: SocketAddr,
        auth: Option<(String, String)>,
    },
    /// `socks4a://ip:port`; SOCKS4 has only an ident user-id, which tor leaves empty.
    Socks4a { addr: SocketAddr },
    /// `http://[user:pass@]ip:port`; HTTP CONNECT with `Proxy-Authorization: Basic`.
    Http {
        addr: SocketAddr,
        auth: Option<(String, String)>,
    },
}

impl ProxyUrl {
    /// Parses `TOR_PT_PROXY`. The scheme is matched case-insensitively; the host must be an IP
    /// literal (tor resolves the proxy address itself) and the port non-zero.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s.split_once("://").ok_or(
            "proxy URL has no scheme (expected socks5://, socks4a:// or http://)".to_string(),
        )?;
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "socks5" | "socks4a" | "http") {
            return Err(format!(
                "unsupported proxy scheme '{scheme}' (expected socks5, socks4a or http)"
            ));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
        let addr = parse_hostport(hostport)?;
        if scheme == "socks4a" {
            return match userinfo {
                Some(_) => Err("socks4a proxy URL cannot carry credentials".into()),
                None => Ok(ProxyUrl::Socks4a { addr }),
            };
        }
        let auth = userinfo.map(split_userinfo).transpose()?;
        if scheme == "http" {
            return Ok(ProxyUrl::Http { addr, auth });
        }
        if let Some((user, pass)) = &auth {
            // RFC 1929: ULEN and PLEN are 1..=255.
            check_rfc1929_len("username", user)?;
            check_rfc1929_len("password", pass)?;
        }
        Ok(ProxyUrl::Socks5 { addr, auth })
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        match self {
            ProxyUrl::Socks5 { addr, .. }
            | ProxyUrl::Socks4a { addr }
            | ProxyUrl::Http { addr, .. } => *addr,
        }
    }

    /// The URL scheme, also used to name the proxy in error messages.
    pub fn scheme(&self) -> &'static str {
        match self {
            ProxyUrl::Socks5 { .. } => "socks5",
            ProxyUrl::Socks4a { .. } => "socks4a",
            ProxyUrl::Http { .. } => "http",
        }
    }

    fn user(&self) -> Option<&str> {
        match self {
            ProxyUrl::Socks5 { auth, .. } | ProxyUrl::Http { auth, .. } => {
                auth.as_ref().map(|(u, _)| u.as_str())
            }
            ProxyUrl::Socks4a { .. } => None,
        }
    }
}

/// `scheme://[user:***@]addr`: safe to log.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme())?;
        if let Some(user) = self.user() {
            write!(f, "{user}:***@")?;
        }
        write!(f, "{}", self.addr())
    }
}

/// Like `Display`, so a stray `{:?}` cannot leak the password either.
impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

fn split_userinfo(userinfo: &str) -> Result<(String, String), String> {
    userinfo
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .ok_or_else(|| "proxy credentials must have the form user:pass (no ':' found)".into())
}

fn check_rfc1929_len(what: &str, value: &str) -> Result<(), String> {
    match value.len() {
        0 => Err(format!(
            "socks5 proxy {what} is empty (RFC 1929 needs 1 to 255 bytes)"
        )),
        1..=255 => Ok(()),
        n => Err(format!(
            "socks5 proxy {what} is {n} bytes long (RFC 1929 allows 255)"
        )),
    }
}

/// `1.2.3.4:port` or `[v6]:port`, IP literals only.
fn parse_hostport(hp: &str) -> Result<SocketAddr, String> {
    if hp.is_empty() {
        return Err("proxy URL has no address".into());
    }
    let (ip, port) = if let Some(inner) = hp.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("proxy address '{hp}' has an unclosed '['"))?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| format!("proxy host '[{host}]' is not an IPv6 address literal"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("proxy address '{hp}' has no port"))?;
        (IpAddr::V6(ip), port)
    } else {
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| format!("proxy address '{hp}' has no port"))?;
        if host.contains(':') {
            return Err(format!(
                "IPv6 proxy address '{hp}' must be written in brackets, e.g. [::1]:1080"
            ));
        }
        let ip: Ipv4Addr = host.parse().map_err(|_| {
            format!("proxy host '{host}' is not an IP address literal (tor passes IPs only)")
        })?;
        (IpAddr::V4(ip), port)
    };
    if port.is_empty() {
        return Err(format!("proxy address '{hp}' has no port"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("proxy port '{port}' is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("proxy port must not be 0".into());
    }
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn creds(u: &str, p: &str) -> Option<(String, String)> {
        Some((u.into(), p.into()))
    }

    #[test]
    fn parses_valid_urls() {
        let table = [
            (
                "socks5://127.0.0.1:1080",
                ProxyUrl::Socks5 {
                    addr: a("127.0.0.1:1080"),
                    auth: None,
                },
            ),
            (
                "socks5://alice:secret@10.0.0.1:9050",
                ProxyUrl::Socks5 {
                    addr: a("10.0.0.1:9050"),
                    auth: creds("alice", "secret"),
                },
            ),
            (
                // Raw credentials: '@' and ':' in the password, '%' not decoded.
                "socks5://user:p@ss:w%41rd@127.0.0.1:1080",
                ProxyUrl::Socks5 {
                    addr: a("127.0.0.1:1080"),
                    auth: creds("user", "p@ss:w%41rd"),
                },
            ),
            (
                "socks5://u:@:@[::1]:1080",
                ProxyUrl::Socks5 {
                    addr: a("[::1]:1080"),
                    auth: creds("u", "@:"),
                },
            ),
            (
                "SOCKS5://[2001:db8::7]:65535",
                ProxyUrl::Socks5 {
                    addr: a("[2001:db8::7]:65535"),
                    auth: None,
                },
            ),
            (
                "socks4a://192.0.2.1:1080",
                ProxyUrl::Socks4a {
                    addr: a("192.0.2.1:1080"),
                },
            ),
            (
                "socks4a://[::1]:9",
                ProxyUrl::Socks4a { addr: a("[::1]:9") },
            ),
            (
                "http://192.0.2.1:3128",
                ProxyUrl::Http {
                    addr: a("192.0.2.1:3128"),
                    auth: None,
                },
            ),
            (
                "http://bob:pa:ss@[fe80::1]:8080",
                ProxyUrl::Http {
                    addr: a("[fe80::1]:8080"),
                    auth: creds("bob", "pa:ss"),
                },
            ),
            (
                "http://:x@1.2.3.4:1/",
                ProxyUrl::Http {
                    addr: a("1.2.3.4:1"),
                    auth: creds("", "x"),
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(ProxyUrl::parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn rejects_bad_urls_with_clear_messages() {
        let long = format!("socks5://{}:p@1.2.3.4:1", "u".repeat(256));
        let table: [(&str, &str); 15] = [
            ("127.0.0.1:1080", "has no scheme"),
            ("ftp://1.2.3.4:21", "unsupported proxy scheme 'ftp'"),
            ("https://proxy.example", "unsupported proxy scheme 'https'"),
            ("socks5://127.0.0.1", "has no port"),
            ("socks5://127.0.0.1:", "has no port"),
            ("socks5://[::1]", "has no port"),
            ("socks5://[::1", "unclosed '['"),
            ("socks5://::1:1080", "must be written in brackets"),
            ("socks5://proxy.example:1080", "not an IP address literal"),
            ("socks5://[nope]:1080", "not an IPv6 address literal"),
            ("socks5://1.2.3.4:0", "must not be 0"),
            ("socks5://1.2.3.4:70000", "not a number from 1 to 65535"),
            ("socks5://user@1.2.3.4:1", "user:pass"),
            ("socks4a://u:p@1.2.3.4:1", "cannot carry credentials"),
            ("socks5://", "has no address"),
        ];
        for (input, want) in table {
            let err = ProxyUrl::parse(input).unwrap_err();
            assert!(err.contains(want), "{input}: got {err:?}, want {want:?}");
        }
        let err = ProxyUrl::parse(&long).unwrap_err();
        assert!(err.contains("256 bytes"), "{err}");
        let err = ProxyUrl::parse("socks5://:pw@1.2.3.4:1").unwrap_err();
        assert!(err.contains("username is empty"), "{err}");
        let err = ProxyUrl::parse("socks5://u:@1.2.3.4:1").unwrap_err();
        assert!(err.contains("password is empty"), "{err}");
    }

    #[test]
    fn errors_and_display_never_show_the_password() {
        let err = ProxyUrl::parse("socks5://u:hunter2@proxy.example:1").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let url = ProxyUrl::parse("http://u:hunter2@1.2.3.4:8080").unwrap();
        assert_eq!(url.to_string(), "http://u:***@1.2.3.4:8080");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.addr(), a("1.2.3.4:8080"));
        assert_eq!(url.scheme(), "http");
    }
}
