//! The caller's side of a connection carried by a module.

use super::session::SessionHandle;
use crate::sys::CallerStream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream whose other end is the module's caller fd.
///
/// Bytes written here are transformed by the module and sent on the network
/// connection; bytes the module delivers from the network are read here.
/// Dropping the stream stops the module (control byte first, forced stop
/// after the runtime's grace period).
#[derive(Debug)]
pub struct WaterStream {
    io: CallerStream,
    session: SessionHandle,
}

impl WaterStream {
    pub(crate) fn new(io: CallerStream, session: SessionHandle) -> Self {
        Self { io, session }
    }

    /// The session carrying this stream.
    pub fn session(&self) -> &SessionHandle {
        &self.session
    }
}

impl Drop for WaterStream {
    fn drop(&mut self) {
        self.session.stop();
    }
}

impl AsyncRead for WaterStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WaterStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

pub(crate) use crate::sys::caller_pair;
