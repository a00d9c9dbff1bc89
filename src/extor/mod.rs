//! Extended ORPort client: how the server side of the transport hands a connection to tor.
//!
//! Using the Extended ORPort instead of the plain ORPort lets tor learn the real client
//! address (for its GeoIP statistics and bridge-reachability data) and the transport name.
//! tor requires SAFE_COOKIE authentication first, proving both sides can read the cookie file
//! in tor's data directory (ext-orport-spec; tor's `feature/relay/ext_orport.c`).
//!
//! A busy bridge runs several tor instances behind one load balancer, each with its own cookie:
//! tor writes a fresh random cookie at every start, over any file already at that path, and
//! deletes the file when it exits, so instances cannot share one. [`connect_any`] therefore
//! takes every instance's cookie file and answers with the cookie whose ServerHash matches,
//! which identifies the instance behind this connection without revealing anything to it.

mod wire;

#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use wire::{Command, AUTH_SAFE_COOKIE, CMD_DENY, CMD_OKAY, COOKIE_FILE_LEN};

/// Limit for the whole exchange, connect to OKAY. tor answers at once on loopback; the limit
/// only keeps a wedged tor from holding a client connection open forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// tor offers one authentication type today; more than this many bytes without the
/// terminating 0 is not tor.
const MAX_AUTH_TYPES: usize = 255;

/// Why tor did not take the connection.
#[derive(Debug, thiserror::Error)]
pub enum ExtOrError {
    #[error("Extended ORPort cookie file {}: {reason}", path.display())]
    Cookie { path: PathBuf, reason: String },
    #[error("{0}")]
    InvalidTransport(String),
    #[error("Extended ORPort: {step}: {source}")]
    Io {
        step: &'static str,
        source: io::Error,
    },
    #[error("Extended ORPort does not offer SAFE_COOKIE authentication (offered types {0:?})")]
    NoSafeCookie(Vec<u8>),
    #[error("Extended ORPort server hash is wrong: tor has none of the cookies we read")]
    ServerHashMismatch,
    #[error("Extended ORPort rejected our client hash (status {0})")]
    AuthRejected(u8),
    #[error("Extended ORPort denied the connection")]
    Denied,
    #[error("Extended ORPort protocol error: {0}")]
    Protocol(String),
    #[error("Extended ORPort handshake not finished within {0:?}")]
    Timeout(Duration),
}

/// Connects to tor's Extended ORPort, authenticates with the cookie, reports `client_addr`
/// and `transport`, and returns the stream once tor said OKAY, ready for the client's bytes.
pub async fn connect(
    ext_orport: SocketAddr,
    cookie_file: &Path,
    client_addr: SocketAddr,
    transport: &str,
) -> Result<TcpStream, ExtOrError> {
    connect_with_timeout(
        ext_orport,
        cookie_file,
        client_addr,
        transport,
        HANDSHAKE_TIMEOUT,
    )
    .await
}

/// [`connect`] with an explicit limit for the exchange.
pub async fn connect_with_timeout(
    ext_orport: SocketAddr,
    cookie_file: &Path,
    client_addr: SocketAddr,
    transport: &str,
    limit: Duration,
) -> Result<TcpStream, ExtOrError> {
    connect_any(
        ext_orport,
        &[cookie_file.to_path_buf()],
        client_addr,
        transport,
        limit,
    )
    .await
}

/// [`connect_with_timeout`] for an Extended ORPort that may be any of several tor instances
/// (a load balancer in front of them): `cookie_files` holds each instance's cookie file, and
/// the one tor proves it has is used. Files that cannot be read are skipped, since a stopped
/// instance deletes its cookie; it is an error only when none can be read.
pub async fn connect_any(
    ext_orport: SocketAddr,
    cookie_files: &[PathBuf],
    client_addr: SocketAddr,
    transport: &str,
    limit: Duration,
) -> Result<TcpStream, ExtOrError> {
    // Everything that can fail locally fails before a connection to tor is made.
    let cookies = read_cookies(cookie_files)?;
    let commands = encode_commands(client_addr, transport)?;

    let exchange = async {
        let mut stream = TcpStream::connect(ext_orport)
            .await
            .map_err(io_err("connecting"))?;
        handshake_any(&mut stream, &cookies, &commands).await?;
        Ok(stream)
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or(Err(ExtOrError::Timeout(limit)))
}

/// Every cookie that can be read from `paths`, or the first path's error when none can.
fn read_cookies(paths: &[PathBuf]) -> Result<Vec<[u8; 32]>, ExtOrError> {
    let mut cookies = Vec::with_capacity(paths.len());
    let mut first_error = None;
    for path in paths {
        match read_cookie(path) {
            Ok(cookie) => cookies.push(cookie),
            Err(e) => {
                tracing::debug!("{e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if cookies.is_empty() => Err(e),
        None if cookies.is_empty() => Err(ExtOrError::Cookie {
            path: PathBuf::new(),
            reason: "no cookie file given".into(),
        }),
        _ => Ok(cookies),
    }
}

/// The commands we send after authenticating: USERADDR, TRANSPORT, DONE.
pub(crate) fn encode_commands(
    client_addr: SocketAddr,
    transport: &str,
) -> Result<Vec<u8>, ExtOrError> {
    let mut commands = Vec::with_capacity(64);
    Command::user_addr(client_addr).encode_into(&mut commands);
    Command::transport(transport)
        .map_err(ExtOrError::InvalidTransport)?
        .encode_into(&mut commands);
    Command::done().encode_into(&mut commands);
    Ok(commands)
}

/// Everything after the connection is made: authentication, our `commands`, and tor's answer.
///
/// Generic over the stream so the whole exchange can also run against an in-memory peer (the
/// fuzz harness plays a hostile tor this way); [`connect_with_timeout`] bounds it in time.
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cookie: &[u8; 32],
    commands: &[u8],
) -> Result<(), ExtOrError> {
    handshake_any(stream, std::slice::from_ref(cookie), commands).await
}

/// [`handshake`] with the cookies of several tor instances, any of which may be at the other
/// end.
async fn handshake_any<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cookies: &[[u8; 32]],
    commands: &[u8],
) -> Result<(), ExtOrError> {
    authenticate(stream, cookies).await?;
    stream
        .write_all(commands)
        .await
        .map_err(io_err("sending commands"))?;
    wait_for_okay(stream).await
}

/// Reads the cookie afresh: tor writes a new one every time it starts, and a long-running
/// PT may outlive a tor restart. The file is 64 bytes, so the blocking read is negligible.
fn read_cookie(path: &Path) -> Result<[u8; 32], ExtOrError> {
    let fail = |reason: String| ExtOrError::Cookie {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    // One byte more than allowed is enough to tell "too long" without reading a huge file.
    let mut contents = Vec::with_capacity(COOKIE_FILE_LEN + 1);
    file.take(COOKIE_FILE_LEN as u64 + 1)
        .read_to_end(&mut contents)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if contents.len() > COOKIE_FILE_LEN {
        return Err(fail(format!(
            "is longer than {COOKIE_FILE_LEN} bytes (32-byte header + 32-byte cookie)"
        )));
    }
    wire::parse_cookie_file(&contents).map_err(fail)
}

/// The SAFE_COOKIE exchange (ext-orport-spec section 2), with whichever of `cookies` tor has.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cookies: &[[u8; 32]],
) -> Result<(), ExtOrError> {
    let mut offered = Vec::new();
    loop {
        let t = stream
            .read_u8()
            .await
            .map_err(io_err("reading auth types"))?;
        if t == 0 {
            break;
        }
        if offered.len() == MAX_AUTH_TYPES {
            return Err(ExtOrError::Protocol(
                "auth type list is not terminated".into(),
            ));
        }
        offered.push(t);
    }
    if !offered.contains(&AUTH_SAFE_COOKIE) {
        return Err(ExtOrError::NoSafeCookie(offered));
    }

    let mut client_nonce = [0u8; 32];
    getrandom::fill(&mut client_nonce).map_err(|e| ExtOrError::Io {
        step: "generating nonce",
        source: io::Error::other(e.to_string()),
    })?;
    let mut hello = [0u8; 33];
    hello[0] = AUTH_SAFE_COOKIE;
    hello[1..].copy_from_slice(&client_nonce);
    stream
        .write_all(&hello)
        .await
        .map_err(io_err("sending auth type and nonce"))?;

    let mut server = [0u8; 64];
    stream
        .read_exact(&mut server)
        .await
        .map_err(io_err("reading server hash and nonce"))?;
    let (server_hash, server_nonce) = server.split_at(32);
    let mut sn = [0u8; 32];
    sn.copy_from_slice(server_nonce);
    // Check tor's proof before sending ours: a party without the cookie learns nothing. With
    // several instances' cookies, the proof also tells which instance answered.
    let cookie = cookies
        .iter()
        .find(|cookie| wire::verify_server_hash(cookie, &client_nonce, &sn, server_hash))
        .ok_or(ExtOrError::ServerHashMismatch)?;
    let client_hash = wire::client_hash(cookie, &client_nonce, &sn);
    stream
        .write_all(&client_hash)
        .await
        .map_err(io_err("sending client hash"))?;

    match stream
        .read_u8()
        .await
        .map_err(io_err("reading auth status"))?
    {
        1 => Ok(()),
        status => Err(ExtOrError::AuthRejected(status)),
    }
}

/// Reads tor's commands until OKAY or DENY. Reads are exact: tor may start sending OR
/// protocol bytes right after OKAY, and those belong to the client.
async fn wait_for_okay<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(), ExtOrError> {
    loop {
        let mut header = [0u8; 4];
        stream
            .read_exact(&mut header)
            .await
            .map_err(io_err("reading reply"))?;
        let (kind, len) = wire::parse_header(header);
        let mut body = vec![0u8; usize::from(len)];
        stream
            .read_exact(&mut body)
            .await
            .map_err(io_err("reading reply body"))?;
        match kind {
            CMD_OKAY => return Ok(()),
            CMD_DENY => return Err(ExtOrError::Denied),
            other => tracing::debug!(command = other, len, "skipping Extended ORPort command"),
        }
    }
}

fn io_err(step: &'static str) -> impl FnOnce(io::Error) -> ExtOrError {
    move |source| ExtOrError::Io { step, source }
}
