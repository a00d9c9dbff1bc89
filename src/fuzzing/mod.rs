//! Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API).
//!
//! The fuzz crate lives outside the workspace and can only see public items, while the pieces it
//! wants to drive directly (the Extended ORPort exchange over an arbitrary stream, the WASI host
//! behind a real instance) are crate-private. This module exposes exactly those, so nothing else
//! had to be made public for fuzzing's sake.
//!
//! The WASI harness needs the `runtime` feature; the parser targets build without it, so they
//! do not compile wasmtime.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::extor::ExtOrError;

// libFuzzer and the harness's SIGPIPE handling are Unix-only.
#[cfg(all(feature = "runtime", unix))]
mod wasi;
#[cfg(all(feature = "runtime", unix))]
pub use wasi::*;

/// Runs the Extended ORPort client exchange (SAFE_COOKIE authentication, USERADDR, TRANSPORT,
/// DONE, then tor's answer) over `stream`, as [`crate::extor::connect`] does over TCP.
pub async fn extor_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cookie: &[u8; 32],
    client_addr: SocketAddr,
    transport: &str,
) -> Result<(), ExtOrError> {
    let commands = crate::extor::encode_commands(client_addr, transport)?;
    crate::extor::handshake(stream, cookie, &commands).await
}
