//! The accept loop shared by every listening command.

use crate::shutdown::{Phase, Shutdown};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections until the shutdown phase leaves `Running`, handing
/// each to `handle` on its own task.
///
/// Running out of file descriptors (`EMFILE`/`ENFILE`) pauses accepting with
/// an exponential back-off instead of spinning: the pending connection stays
/// in the kernel's backlog until a descriptor is free again.
pub async fn accept_loop<F, Fut>(listener: &TcpListener, shutdown: &Shutdown, mut handle: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_each(listener, shutdown, |stream, peer| {
        tokio::spawn(handle(stream, peer));
    })
    .await;
}

/// Like [`accept_loop`], but `handle` runs on the accepting task itself: for a handler that
/// only passes the connection on (e.g. to a session thread) and never waits, a task of its
/// own would be one more thing to schedule per connection.
pub async fn accept_each<F>(listener: &TcpListener, shutdown: &Shutdown, mut handle: F)
where
    F: FnMut(TcpStream, SocketAddr),
{
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            // Checked first: once draining, a connection still in the backlog
            // is refused (the listener closes), never served.
            biased;
            _ = shutdown.reached(Phase::Draining) => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                handle(stream, peer);
            }
            Err(e) => {
                let exhausted = crate::sys::is_resource_exhaustion(&e);
                if exhausted {
                    tracing::warn!("accept: {e}; pausing accepts for {backoff:?}");
                } else {
                    tracing::warn!("accept: {e}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
