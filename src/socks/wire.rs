//! Byte-level pieces of the SOCKS5 exchange that this crate writes itself (see the module
//! comment in `mod.rs` for why): the RFC 1929 username/password sub-negotiation, the reply
//! codes and the fixed-shape reply.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// RFC 1928 protocol version byte.
pub(crate) const SOCKS_VERSION: u8 = 0x05;
/// RFC 1928 method "NO AUTHENTICATION REQUIRED".
pub(crate) const METHOD_NO_AUTH: u8 = 0x00;
/// RFC 1928 method "USERNAME/PASSWORD" (RFC 1929). tor carries the bridge-line arguments in
/// it, which is why it must win over 0x00 when both are offered.
pub(crate) const METHOD_USER_PASS: u8 = 0x02;
/// RFC 1929 sub-negotiation version byte.
pub(crate) const AUTH_VERSION: u8 = 0x01;
/// RFC 1929 reply: version 1, status 0 (success).
pub(crate) const AUTH_SUCCESS: [u8; 2] = [AUTH_VERSION, 0x00];
/// RFC 1929 reply: version 1, any non-zero status means failure and the server must close.
pub(crate) const AUTH_FAILURE: [u8; 2] = [AUTH_VERSION, 0x01];
/// RFC 1928 REP value for success.
pub(crate) const REP_SUCCEEDED: u8 = 0x00;

/// A non-success SOCKS5 reply code (RFC 1928 section 6, field REP).
///
/// tor only distinguishes success from failure, but sending the most specific code helps anyone
/// reading a packet capture or a debug log on the tor side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    /// X'01' general SOCKS server failure.
    GeneralFailure,
    /// X'02' connection not allowed by ruleset.
    NotAllowed,
    /// X'03' network unreachable.
    NetworkUnreachable,
    /// X'04' host unreachable.
    HostUnreachable,
    /// X'05' connection refused.
    ConnectionRefused,
    /// X'06' TTL expired (conventionally also used for "timed out").
    TtlExpired,
    /// X'07' command not supported.
    CommandNotSupported,
    /// X'08' address type not supported.
    AddressTypeNotSupported,
}

impl Reply {
    /// The REP byte for this reply.
    pub const fn code(self) -> u8 {
        match self {
            Reply::GeneralFailure => 0x01,
            Reply::NotAllowed => 0x02,
            Reply::NetworkUnreachable => 0x03,
            Reply::HostUnreachable => 0x04,
            Reply::ConnectionRefused => 0x05,
            Reply::TtlExpired => 0x06,
            Reply::CommandNotSupported => 0x07,
            Reply::AddressTypeNotSupported => 0x08,
        }
    }

    /// The reply that best describes a failed outbound connection attempt.
    pub fn from_io_error(err: &io::Error) -> Reply {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
            io::ErrorKind::TimedOut => Reply::TtlExpired,
            io::ErrorKind::PermissionDenied => Reply::NotAllowed,
            _ => Reply::GeneralFailure,
        }
    }
}

/// The complete reply to a CONNECT request: `05 REP 00 01 0.0.0.0:0`.
///
/// RFC 1928 wants BND.ADDR/BND.PORT to be present; tor reads and ignores them, and an
/// all-zero IPv4 address is the shortest complete form (and leaks no local address).
pub(crate) const fn reply_bytes(rep: u8) -> [u8; 10] {
    [SOCKS_VERSION, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0]
}

/// What the client sent in the RFC 1929 sub-negotiation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UserPass {
    /// Well-formed: the raw bytes, exactly as sent. ULEN/PLEN of 0 are passed through too:
    /// RFC 1929 says 1..255, but deciding what an empty field means is the caller's business.
    Credentials { user: Vec<u8>, pass: Vec<u8> },
    /// The first byte was not the sub-negotiation version 0x01; nothing more was read.
    BadVersion(u8),
}

/// Reads `VER ULEN UNAME PLEN PASSWD` with exact reads, so nothing past the sub-negotiation
/// is consumed. tor splits its argument string at byte 255 without regard for UTF-8, so the
/// fields are kept as bytes.
pub(crate) async fn read_user_pass<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<UserPass> {
    let version = r.read_u8().await?;
    if version != AUTH_VERSION {
        return Ok(UserPass::BadVersion(version));
    }
    let user = read_len_prefixed(r).await?;
    let pass = read_len_prefixed(r).await?;
    Ok(UserPass::Credentials { user, pass })
}

/// One length byte followed by that many bytes.
async fn read_len_prefixed<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let len = r.read_u8().await?;
    let mut buf = vec![0u8; usize::from(len)];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_match_rfc1928() {
        let table = [
            (Reply::GeneralFailure, 1),
            (Reply::NotAllowed, 2),
            (Reply::NetworkUnreachable, 3),
            (Reply::HostUnreachable, 4),
            (Reply::ConnectionRefused, 5),
            (Reply::TtlExpired, 6),
            (Reply::CommandNotSupported, 7),
            (Reply::AddressTypeNotSupported, 8),
        ];
        for (reply, code) in table {
            assert_eq!(reply.code(), code, "{reply:?}");
        }
    }

    #[test]
    fn reply_from_io_error() {
        use io::ErrorKind as K;
        let table = [
            (K::ConnectionRefused, Reply::ConnectionRefused),
            (K::NetworkUnreachable, Reply::NetworkUnreachable),
            (K::HostUnreachable, Reply::HostUnreachable),
            (K::TimedOut, Reply::TtlExpired),
            (K::PermissionDenied, Reply::NotAllowed),
            (K::UnexpectedEof, Reply::GeneralFailure),
            (K::Other, Reply::GeneralFailure),
        ];
        for (kind, reply) in table {
            assert_eq!(
                Reply::from_io_error(&io::Error::from(kind)),
                reply,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn reply_layout() {
        assert_eq!(reply_bytes(0), [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(reply_bytes(7), [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    async fn parse(mut input: &[u8]) -> (io::Result<UserPass>, usize) {
        let total = input.len();
        let res = read_user_pass(&mut input).await;
        (res, total - input.len())
    }

    #[tokio::test]
    async fn user_pass_raw_bytes_and_exact_length() {
        // Non-UTF-8 user, lone-NUL password (tor's "fits in the username" form), then trailing
        // bytes that must stay unread.
        let input = [1, 3, 0xff, b'a', 0xfe, 1, 0x00, 0x05, 0x01];
        let (res, used) = parse(&input).await;
        assert_eq!(
            res.unwrap(),
            UserPass::Credentials {
                user: vec![0xff, b'a', 0xfe],
                pass: vec![0]
            }
        );
        assert_eq!(used, 7);
    }

    #[tokio::test]
    async fn user_pass_empty_fields() {
        let (res, used) = parse(&[1, 0, 0]).await;
        assert_eq!(
            res.unwrap(),
            UserPass::Credentials {
                user: vec![],
                pass: vec![]
            }
        );
        assert_eq!(used, 3);
    }

    #[tokio::test]
    async fn user_pass_full_length_fields() {
        let mut input = vec![1, 255];
        input.extend(std::iter::repeat_n(b'u', 255));
        input.push(255);
        input.extend(std::iter::repeat_n(b'p', 255));
        let (res, used) = parse(&input).await;
        match res.unwrap() {
            UserPass::Credentials { user, pass } => {
                assert_eq!(user, vec![b'u'; 255]);
                assert_eq!(pass, vec![b'p'; 255]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(used, input.len());
    }

    #[tokio::test]
    async fn user_pass_bad_version_reads_one_byte() {
        let (res, used) = parse(&[5, 1, 0]).await;
        assert_eq!(res.unwrap(), UserPass::BadVersion(5));
        assert_eq!(used, 1);
    }

    #[tokio::test]
    async fn user_pass_truncated() {
        for input in [
            &[][..],
            &[1],
            &[1, 4, b'a', b'b'],
            &[1, 1, b'a'],
            &[1, 1, b'a', 2, b'x'],
        ] {
            let (res, _) = parse(input).await;
            assert_eq!(
                res.unwrap_err().kind(),
                io::ErrorKind::UnexpectedEof,
                "input {input:?}"
            );
        }
    }
}
