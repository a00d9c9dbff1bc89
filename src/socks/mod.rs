//! The SOCKS5 front end that tor's client side talks to (pt-spec "managed proxy" client mode).
//!
//! tor connects to the `CMETHOD water socks5 127.0.0.1:PORT` listener, offers method 0x02 when
//! the bridge line has arguments (`05 02 00 02`), sends them in the RFC 1929 username/password
//! fields, then sends a CONNECT for the bridge address. We answer the CONNECT only once the
//! transport connection is up, so tor never pipelines data into a half-made tunnel.
//!
//! # What fast-socks5 1.0.0 does here and what it could not do
//!
//! Used from fast-socks5: the method negotiation (`Socks5ServerProtocol::negotiate_auth`, given
//! our own `AuthMethod` list in which 0x02 comes before 0x00, so 0x02 is selected when both are
//! offered, and 0xFF is sent when neither is) and the request parsing (`read_command`, which
//! also answers REP 7 for unknown command bytes and REP 8 for unknown address types).
//!
//! Written here instead (in `wire.rs` and below), because fast-socks5 1.0.0 could not:
//! * hand over the raw username/password bytes: `read_username_password` turns both fields
//!   into `String` with `String::from_utf8` (tor splits its argument string at byte 255 and
//!   may cut a UTF-8 sequence), refuses ULEN or PLEN of 0 without sending any RFC 1929 reply,
//!   and never checks the sub-negotiation version byte;
//! * defer the reply while giving the stream back: after `read_command` the stream is private
//!   inside its `CommandRead` state, which has no `into_inner`, so the reply could only be sent
//!   by keeping that wrapper alive, not from a `SocksRequest` holding a plain `TcpStream`; and
//!   its `reply_success`/`reply_error` send the reply with a single `write` whose short-write
//!   count is ignored. The 10-byte reply is therefore written here with `write_all`.
//!
//! fast-socks5 behaviours kept as they are: a hostname that is not UTF-8, or an address cut
//! short by EOF, is answered with REP 5 before the error comes back to us; the RSV byte of the
//! request is not checked.

mod wire;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::server::{AuthMethod, SocksServerError};
use fast_socks5::util::target_addr::{AddrError, TargetAddr as LibTargetAddr};
use fast_socks5::Socks5Command;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use wire::Reply;
use wire::{UserPass, AUTH_FAILURE, AUTH_SUCCESS, METHOD_NO_AUTH, METHOD_USER_PASS};

/// How long a client may take for the whole handshake (greeting to request). tor sends all of
/// it at once on loopback; the limit only stops idle or hostile local connections from holding
/// a task forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The destination of a CONNECT request, as the client named it (hostnames are not resolved:
/// tor sends IP literals, arti may send a hostname, and the transport decides what to do).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// ATYP 1 or 4.
    Ip(SocketAddr),
    /// ATYP 3: a hostname (non-empty, UTF-8) and a port.
    Domain(String, u16),
}

impl fmt::Display for TargetAddr {
    /// `host:port`, with IPv6 addresses in brackets so the result parses back unambiguously.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(SocketAddr::V4(a)) => write!(f, "{}:{}", a.ip(), a.port()),
            TargetAddr::Ip(SocketAddr::V6(a)) => write!(f, "[{}]:{}", a.ip(), a.port()),
            TargetAddr::Domain(host, port) if host.contains(':') => write!(f, "[{host}]:{port}"),
            TargetAddr::Domain(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a SOCKS handshake did not produce a request. Where the protocol has a way to say so,
/// the client has already been told (method 0xFF, auth status 1, or a REP code).
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    #[error("SOCKS handshake not finished within {0:?}")]
    Timeout(Duration),
    #[error("i/o error during SOCKS handshake: {0}")]
    Io(#[from] io::Error),
    #[error("client speaks SOCKS version {0}, not 5")]
    BadVersion(u8),
    #[error("client offered no usable SOCKS5 method (offered {0:02x?}; we take 0x02 or 0x00)")]
    NoAcceptableMethod(Vec<u8>),
    #[error("username/password sub-negotiation has version {0}, not 1")]
    BadAuthVersion(u8),
    #[error("SOCKS credentials rejected: {0}")]
    AuthRejected(String),
    #[error("SOCKS command {0:#04x} not supported (only CONNECT)")]
    UnsupportedCommand(u8),
    #[error("SOCKS address type not supported")]
    UnsupportedAddressType,
    #[error("bad SOCKS target address: {0}")]
    BadAddress(&'static str),
    #[error("SOCKS handshake failed: {0}")]
    Other(String),
}

/// A parsed CONNECT request whose reply has not been sent yet.
///
/// The stream type is generic so the handshake can run over any byte stream (the fuzz harness
/// drives it through an in-memory duplex); in the transport it is always a `TcpStream`.
#[derive(Debug)]
pub struct SocksRequest<A, S = TcpStream> {
    /// The client connection; nothing past the request has been read from it.
    pub stream: S,
    /// What `parse_auth` made of the credentials.
    pub auth: A,
    /// Where the client wants to go.
    pub target: TargetAddr,
}

/// The complete CONNECT reply: `05 00 00 01 0.0.0.0:0` for `Ok(())`, the same with the REP
/// code of the [`Reply`] for `Err`.
///
/// Public because the reply may be written by someone other than [`SocksRequest`]: the
/// pluggable-transport client hands the accepted socket to a WATM and lets the runtime write
/// these bytes once the module's connection is up (or has failed). Every reply this module
/// sends goes through here too, so the two paths cannot drift apart.
pub fn connect_reply(outcome: Result<(), Reply>) -> [u8; 10] {
    wire::reply_bytes(match outcome {
        Ok(()) => wire::REP_SUCCEEDED,
        Err(rep) => rep.code(),
    })
}

impl<A, S: AsyncWrite + Unpin> SocksRequest<A, S> {
    /// Sends `05 00 00 01 0.0.0.0:0` and hands the stream over for relaying.
    pub async fn reply_success(mut self) -> io::Result<(S, A)> {
        self.stream.write_all(&connect_reply(Ok(()))).await?;
        Ok((self.stream, self.auth))
    }

    /// Sends a failure reply and closes the connection, as RFC 1928 requires after a
    /// non-success REP.
    pub async fn reply_failure(mut self, rep: Reply) -> io::Result<()> {
        self.stream.write_all(&connect_reply(Err(rep))).await?;
        self.stream.shutdown().await
    }
}

/// Runs the SOCKS5 handshake on `stream` with [`HANDSHAKE_TIMEOUT`].
///
/// `parse_auth` gets `Some((username, password))` (raw bytes) if the client used method 0x02,
/// or `None` for 0x00. Returning `Err` rejects the client: with 0x02 it gets `01 01` and the
/// connection closes (what tor expects for malformed bridge arguments); with 0x00 there is no
/// reply to carry the refusal, so the connection just closes.
pub async fn accept<A, S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    parse_auth: impl FnOnce(Option<(&[u8], &[u8])>) -> Result<A, String>,
) -> Result<SocksRequest<A, S>, SocksError> {
    accept_with_timeout(stream, HANDSHAKE_TIMEOUT, parse_auth).await
}

/// [`accept`] with an explicit limit for the whole handshake.
pub async fn accept_with_timeout<A, S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    limit: Duration,
    parse_auth: impl FnOnce(Option<(&[u8], &[u8])>) -> Result<A, String>,
) -> Result<SocksRequest<A, S>, SocksError> {
    match tokio::time::timeout(limit, handshake(&mut stream, parse_auth)).await {
        Ok(Ok((auth, target))) => Ok(SocksRequest {
            stream,
            auth,
            target,
        }),
        Ok(Err(e)) => Err(e),
        Err(_elapsed) => Err(SocksError::Timeout(limit)),
    }
}

/// The methods we support, in order of preference, as fast-socks5's negotiation wants them.
/// The starting state is just the stream back: the sub-negotiation is done in `wire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    UserPass,
    NoAuth,
}

impl<T> AuthMethod<T> for Method {
    type StartingState = (Method, T);

    fn method_id(self) -> u8 {
        match self {
            Method::UserPass => METHOD_USER_PASS,
            Method::NoAuth => METHOD_NO_AUTH,
        }
    }

    fn new(self, inner: T) -> Self::StartingState {
        (self, inner)
    }
}

/// 0x02 first: tor drops the bridge arguments if 0x00 is chosen while it offered both.
const PREFERENCE: [Method; 2] = [Method::UserPass, Method::NoAuth];

async fn handshake<A, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    parse_auth: impl FnOnce(Option<(&[u8], &[u8])>) -> Result<A, String>,
) -> Result<(A, TargetAddr), SocksError> {
    let (method, _) = Socks5ServerProtocol::start(&mut *stream)
        .negotiate_auth(&PREFERENCE)
        .await
        .map_err(from_lib)?;

    let auth = match method {
        Method::NoAuth => parse_auth(None).map_err(SocksError::AuthRejected)?,
        Method::UserPass => match wire::read_user_pass(stream).await? {
            UserPass::BadVersion(v) => {
                stream.write_all(&AUTH_FAILURE).await?;
                return Err(SocksError::BadAuthVersion(v));
            }
            UserPass::Credentials { user, pass } => match parse_auth(Some((&user, &pass))) {
                Ok(auth) => {
                    stream.write_all(&AUTH_SUCCESS).await?;
                    auth
                }
                Err(msg) => {
                    stream.write_all(&AUTH_FAILURE).await?;
                    return Err(SocksError::AuthRejected(msg));
                }
            },
        },
    };

    // Authentication was done above, so fast-socks5's post-authentication entry point is the
    // right one despite its name: RFC 1928 is followed on the wire.
    let (_reply_state, cmd, target) =
        Socks5ServerProtocol::skip_auth_this_is_not_rfc_compliant(&mut *stream)
            .read_command()
            .await
            .map_err(from_lib)?;

    let cmd_byte = match cmd {
        Socks5Command::TCPConnect => None,
        Socks5Command::TCPBind => Some(0x02),
        Socks5Command::UDPAssociate => Some(0x03),
    };
    if let Some(c) = cmd_byte {
        refuse(stream, Reply::CommandNotSupported).await?;
        return Err(SocksError::UnsupportedCommand(c));
    }

    let target = match target {
        LibTargetAddr::Ip(addr) => TargetAddr::Ip(addr),
        LibTargetAddr::Domain(host, _) if host.is_empty() => {
            refuse(stream, Reply::GeneralFailure).await?;
            return Err(SocksError::BadAddress("empty hostname"));
        }
        LibTargetAddr::Domain(host, port) => TargetAddr::Domain(host, port),
    };
    Ok((auth, target))
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, rep: Reply) -> io::Result<()> {
    stream.write_all(&connect_reply(Err(rep))).await
}

/// Maps fast-socks5's error type onto ours, keeping I/O errors as I/O errors (EOF in the
/// middle of a handshake is a truncated message, not a protocol violation).
fn from_lib(err: SocksServerError) -> SocksError {
    match err {
        SocksServerError::Io { source, .. } => SocksError::Io(source),
        SocksServerError::UnsupportedSocksVersion(v) => SocksError::BadVersion(v),
        SocksServerError::AuthMethodUnacceptable(offered) => {
            SocksError::NoAcceptableMethod(offered)
        }
        SocksServerError::UnknownCommand(c) => SocksError::UnsupportedCommand(c),
        SocksServerError::AddrError(addr) => match addr {
            AddrError::IncorrectAddressType => SocksError::UnsupportedAddressType,
            AddrError::Utf8(_) => SocksError::BadAddress("hostname is not UTF-8"),
            AddrError::IPv4Unreadable(e)
            | AddrError::IPv6Unreadable(e)
            | AddrError::PortNumberUnreadable(e)
            | AddrError::DomainLenUnreadable(e)
            | AddrError::DomainContentUnreadable(e) => SocksError::Io(e),
            other => SocksError::Other(other.to_string()),
        },
        other => SocksError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
