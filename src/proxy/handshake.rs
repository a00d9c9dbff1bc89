//! Client side of the three proxy protocols tor can hand us in `TOR_PT_PROXY`.
//!
//! Every read is exact: the stream is handed to the transport right after the proxy's reply,
//! so a byte read past the reply would be a byte of tunnel data lost. That is why the HTTP
//! response is read one byte at a time up to the blank line instead of through a buffer.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};

use base64::Engine as _;

use super::{with_context, Deadline, Host, HostPort};

/// The longest HTTP CONNECT response header we accept before giving up.
const MAX_HTTP_RESPONSE: usize = 16 * 1024;

/// A proxy connection under the dial deadline, naming the proxy in every error.
pub(crate) struct Conn<'a> {
    stream: &'a mut TcpStream,
    deadline: &'a Deadline,
    label: String,
}

impl<'a> Conn<'a> {
    pub(crate) fn new(stream: &'a mut TcpStream, deadline: &'a Deadline, label: String) -> Self {
        Conn {
            stream,
            deadline,
            label,
        }
    }

    fn write(&mut self, step: &str, bytes: &[u8]) -> io::Result<()> {
        let ctx = |e| with_context(e, format!("{}: {step}", self.label));
        let left = self.deadline.remaining().map_err(ctx)?;
        self.stream.set_write_timeout(Some(left)).map_err(ctx)?;
        self.stream.write_all(bytes).map_err(ctx)
    }

    /// Fills `buf` exactly, re-arming the socket timeout with what is left of the deadline
    /// before every `read` so that several slow reads cannot add up past it.
    fn read_exact(&mut self, step: &str, buf: &mut [u8]) -> io::Result<()> {
        let ctx = |e| with_context(e, format!("{}: {step}", self.label));
        let mut filled = 0;
        while filled < buf.len() {
            let left = self.deadline.remaining().map_err(ctx)?;
            self.stream.set_read_timeout(Some(left)).map_err(ctx)?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(ctx(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "proxy closed the connection",
                    )))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ctx(e)),
            }
        }
        Ok(())
    }

    fn read_u8(&mut self, step: &str) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(step, &mut b)?;
        Ok(b[0])
    }

    fn fail(&self, kind: io::ErrorKind, msg: impl std::fmt::Display) -> io::Error {
        io::Error::new(kind, format!("{}: {msg}", self.label))
    }
}

/// RFC 1928 CONNECT, with RFC 1929 username/password when configured. A hostname goes out as
/// ATYP 3 so the proxy, not us, resolves it.
pub(crate) fn socks5(
    conn: &mut Conn<'_>,
    auth: Option<&(String, String)>,
    host: &Host,
    port: u16,
) -> io::Result<()> {
    // Offer only what we can complete: with credentials, 0x00 as well (the proxy may not need
    // them), without credentials 0x00 alone.
    let greeting: &[u8] = if auth.is_some() {
        &[5, 2, 0x00, 0x02]
    } else {
        &[5, 1, 0x00]
    };
    conn.write("sending greeting", greeting)?;
    let mut sel = [0u8; 2];
    conn.read_exact("reading method selection", &mut sel)?;
    if sel[0] != 5 {
        return Err(conn.fail(
            io::ErrorKind::InvalidData,
            format!("method selection has version {:#04x}, not 0x05", sel[0]),
        ));
    }
    match (sel[1], auth) {
        (0x00, _) => {}
        (0x02, Some((user, pass))) => {
            let (u, p) = (user.as_bytes(), pass.as_bytes());
            let (Ok(ulen), Ok(plen)) = (u8::try_from(u.len()), u8::try_from(p.len())) else {
                return Err(conn.fail(
                    io::ErrorKind::InvalidInput,
                    "username or password longer than 255 bytes",
                ));
            };
            let mut msg = Vec::with_capacity(3 + u.len() + p.len());
            msg.extend_from_slice(&[0x01, ulen]);
            msg.extend_from_slice(u);
            msg.push(plen);
            msg.extend_from_slice(p);
            conn.write("sending username/password", &msg)?;
            let mut status = [0u8; 2];
            conn.read_exact("reading authentication status", &mut status)?;
            if status[1] != 0x00 {
                return Err(conn.fail(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "username/password authentication rejected (status {:#04x})",
                        status[1]
                    ),
                ));
            }
        }
        (0xff, _) => {
            return Err(conn.fail(
                io::ErrorKind::PermissionDenied,
                "no acceptable authentication method (reply 0xff)",
            ))
        }
        (other, _) => {
            return Err(conn.fail(
                io::ErrorKind::InvalidData,
                format!("proxy selected method {other:#04x}, which was not offered"),
            ))
        }
    }

    let mut req = vec![5, 0x01, 0x00];
    match host {
        Host::Ip(IpAddr::V4(ip)) => {
            req.push(0x01);
            req.extend_from_slice(&ip.octets());
        }
        Host::Ip(IpAddr::V6(ip)) => {
            req.push(0x04);
            req.extend_from_slice(&ip.octets());
        }
        Host::Name(name) => {
            // split_host_port guarantees 1..=255 bytes.
            let len = u8::try_from(name.len())
                .map_err(|_| conn.fail(io::ErrorKind::InvalidInput, "host name too long"))?;
            req.extend_from_slice(&[0x03, len]);
            req.extend_from_slice(name.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    let target = HostPort(host, port);
    conn.write("sending CONNECT", &req)?;

    let mut head = [0u8; 4];
    conn.read_exact("reading CONNECT reply", &mut head)?;
    let [ver, rep, _rsv, atyp] = head;
    if ver != 5 {
        return Err(conn.fail(
            io::ErrorKind::InvalidData,
            format!("CONNECT reply has version {ver:#04x}, not 0x05"),
        ));
    }
    if rep != 0x00 {
        let (kind, text) = socks5_reply_meaning(rep);
        return Err(conn.fail(
            kind,
            format!("CONNECT to {target} failed: reply {rep:#04x} ({text})"),
        ));
    }
    // Consume BND.ADDR and BND.PORT exactly; their length depends on ATYP.
    let rest = match atyp {
        0x01 => 4 + 2,
        0x04 => 16 + 2,
        0x03 => usize::from(conn.read_u8("reading CONNECT reply")?) + 2,
        other => {
            return Err(conn.fail(
                io::ErrorKind::InvalidData,
                format!("CONNECT reply has unknown address type {other:#04x}"),
            ))
        }
    };
    let mut bound = vec![0u8; rest];
    conn.read_exact("reading CONNECT reply", &mut bound)
}

/// RFC 1928 section 6 reply codes, with the `io::ErrorKind` that fits each.
fn socks5_reply_meaning(rep: u8) -> (io::ErrorKind, &'static str) {
    use io::ErrorKind as K;
    match rep {
        0x01 => (K::Other, "general SOCKS server failure"),
        0x02 => (K::PermissionDenied, "connection not allowed by ruleset"),
        0x03 => (K::NetworkUnreachable, "network unreachable"),
        0x04 => (K::HostUnreachable, "host unreachable"),
        0x05 => (K::ConnectionRefused, "connection refused"),
        0x06 => (K::TimedOut, "TTL expired"),
        0x07 => (K::Unsupported, "command not supported"),
        0x08 => (K::Unsupported, "address type not supported"),
        _ => (K::Other, "unassigned reply code"),
    }
}

/// SOCKS4a CONNECT with an empty user-id (as tor sends). An IPv4 destination goes in DSTIP;
/// a hostname uses the 4a form: DSTIP `0.0.0.1` (any 0.0.0.x with x != 0) followed by the
/// NUL-terminated name, which the proxy resolves.
pub(crate) fn socks4a(conn: &mut Conn<'_>, host: &Host, port: u16) -> io::Result<()> {
    let mut req = vec![4, 0x01];
    req.extend_from_slice(&port.to_be_bytes());
    match host {
        Host::Ip(IpAddr::V4(ip)) => {
            req.extend_from_slice(&ip.octets());
            req.push(0); // empty USERID
        }
        Host::Name(name) => {
            req.extend_from_slice(&[0, 0, 0, 1]);
            req.push(0); // empty USERID
            req.extend_from_slice(name.as_bytes());
            req.push(0);
        }
        Host::Ip(IpAddr::V6(_)) => {
            return Err(conn.fail(io::ErrorKind::InvalidInput, "SOCKS4a cannot carry IPv6"));
        }
    }
    conn.write("sending CONNECT", &req)?;
    let mut reply = [0u8; 8];
    conn.read_exact("reading CONNECT reply", &mut reply)?;
    // VN is 0 in replies; some servers echo 4. Only CD carries meaning.
    match reply[1] {
        90 => Ok(()),
        cd => {
            let text = match cd {
                91 => "request rejected or failed",
                92 => "rejected: proxy cannot reach client's identd",
                93 => "rejected: identd user-id mismatch",
                _ => "unknown reply code",
            };
            let target = HostPort(host, port);
            Err(conn.fail(
                io::ErrorKind::ConnectionRefused,
                format!("CONNECT to {target} failed: reply {cd:#04x} ({text})"),
            ))
        }
    }
}

/// HTTP/1.1 CONNECT (RFC 9110 section 9.3.6) with optional Basic proxy authentication
/// (RFC 7617: base64 of `user:pass`, the raw bytes tor gave us).
pub(crate) fn http_connect(
    conn: &mut Conn<'_>,
    auth: Option<&(String, String)>,
    host: &Host,
    port: u16,
) -> io::Result<()> {
    let target = HostPort(host, port).to_string();
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, pass)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    conn.write("sending CONNECT", req.as_bytes())?;

    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HTTP_RESPONSE {
            return Err(conn.fail(
                io::ErrorKind::InvalidData,
                format!("CONNECT response header longer than {MAX_HTTP_RESPONSE} bytes"),
            ));
        }
        head.push(conn.read_u8("reading CONNECT response")?);
    }
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    // The status line comes from the proxy and ends up in logs: keep it short and printable.
    let status_line: String = String::from_utf8_lossy(status_line)
        .trim_end()
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    let code = match code {
        Some(code) if version.starts_with("HTTP/1.") => code,
        _ => {
            return Err(conn.fail(
                io::ErrorKind::InvalidData,
                format!("malformed CONNECT response status line {status_line:?}"),
            ))
        }
    };
    if (200..300).contains(&code) {
        return Ok(());
    }
    let kind = match code {
        407 | 401 | 403 => io::ErrorKind::PermissionDenied,
        504 => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::ConnectionRefused,
    };
    Err(conn.fail(kind, format!("CONNECT to {target} failed: {status_line}")))
}
