//! The listener role: `watm_accept_v1` decodes inbound connections.

use super::binding::{binding_settings, Binding, Sockets};
use super::module::{Role, Watm};
use super::net::{Connector, DirectConnector, NetPolicy};
use super::session::{CallerSocket, SessionHandle, SetupHook};
use super::stream::{caller_pair, WaterStream};
use super::{Error, Runtime};
use crate::sys::HostFd;
use crate::wasi::OpenSocket;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Serves inbound connections through a WATM's listener role, one instance
/// per connection: inside `watm_accept_v1` the module's `water_accept()`
/// returns the inbound connection.
#[derive(Clone, Debug)]
pub struct Server {
    binding: Binding,
}

binding_settings!(Server);

impl Server {
    /// Fails if the module has no `watm_accept_v1`.
    pub fn new(runtime: &Runtime, watm: Arc<Watm>) -> Result<Self, Error> {
        watm.require(Role::Listener)?;
        Ok(Self {
            binding: Binding::new(runtime, watm),
        })
    }

    /// Serves one accepted connection with `caller` as the module's caller
    /// fd: an already-connected socket (e.g. to the upstream server), so the
    /// module writes straight into it.
    pub async fn serve(&self, inbound: HostFd, caller: HostFd) -> Result<SessionHandle, Error> {
        let sockets = Sockets::serve(inbound, CallerSocket::Open(caller));
        self.binding.start(Role::Listener, sockets).await
    }

    /// Like [`Server::serve`], but the caller socket is opened by `open`
    /// only when the module first writes to it or polls it for writing, so
    /// a connection the module rejects without a word (a probe) never
    /// reaches the upstream. Until then the caller fd has nothing to read.
    /// `open` runs on the session's thread and should return early when its
    /// waker fires (a stop); if it fails, the module sees the caller
    /// socket closed.
    pub async fn serve_opening_caller(
        &self,
        inbound: HostFd,
        open: OpenSocket,
    ) -> Result<SessionHandle, Error> {
        let sockets = Sockets::serve(inbound, CallerSocket::OnFirstWrite(open));
        self.binding.start(Role::Listener, sockets).await
    }

    /// Like [`Server::serve_opening_caller`], without waiting: `on_setup` is called once with
    /// the session's handle or why setup failed (see [`super::Dialer::launch_with_caller`]).
    pub fn launch_opening_caller(&self, inbound: HostFd, open: OpenSocket, on_setup: SetupHook) {
        let sockets = Sockets::serve(inbound, CallerSocket::OnFirstWrite(open));
        self.binding.launch(Role::Listener, sockets, on_setup);
    }

    /// Serves one accepted connection and returns the decoded stream.
    pub async fn serve_stream(&self, inbound: TcpStream) -> Result<WaterStream, Error> {
        let (ours, theirs) = caller_pair()?;
        let session = self.serve(into_fd(inbound)?, theirs).await?;
        Ok(WaterStream::new(ours, session))
    }
}

/// A bound TCP listener whose connections are decoded by a WATM, like the
/// reference runtime's `Listener`.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    server: Server,
}

impl Listener {
    /// Binds `addr`. Fails at once if the module has no `watm_accept_v1`.
    pub async fn bind(runtime: &Runtime, watm: Arc<Watm>, addr: SocketAddr) -> Result<Self, Error> {
        let server = Server::new(runtime, watm)?;
        let tcp = TcpListener::bind(addr).await?;
        Ok(Self { tcp, server })
    }

    pub fn with_config(mut self, config: Option<Vec<u8>>) -> Self {
        self.server = self.server.with_config(config);
        self
    }

    pub fn with_policy(mut self, policy: NetPolicy) -> Self {
        self.server = self.server.with_policy(policy);
        self
    }

    /// The serving half, to hand to per-connection tasks.
    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts the next TCP connection without starting a module for it.
    /// Errors here are about the listening socket (e.g. `EMFILE`).
    pub async fn accept_tcp(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.tcp.accept().await
    }

    /// Accepts the next connection and returns the decoded stream.
    pub async fn accept(&self) -> Result<(WaterStream, SocketAddr), Error> {
        let (tcp, peer) = self.accept_tcp().await?;
        Ok((self.server.serve_stream(tcp).await?, peer))
    }

    /// See [`Server::serve`].
    pub async fn serve(&self, inbound: HostFd, caller: HostFd) -> Result<SessionHandle, Error> {
        self.server.serve(inbound, caller).await
    }
}

/// An [`OpenSocket`] for [`Server::serve_opening_caller`] that runs the async
/// `connect` on the tokio runtime this is called in. The connection is made
/// when the module first writes toward the caller: the session's thread
/// starts `connect` as a task on that runtime (no thread of its own, so a
/// busy server does not start one per connection) and waits for it beside
/// its stop signal; a stop ends the wait at once and aborts the task.
pub fn open_with<F, Fut>(connect: F) -> OpenSocket
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    let tokio = tokio::runtime::Handle::current();
    Box::new(move |cancel| {
        super::run_task_cancellable(cancel, &tokio, async move {
            // Deregistering the socket from tokio's reactor happens inside the runtime.
            into_fd(connect().await?)
        })
    })
}

/// An [`OpenSocket`] that connects to `address` (`host:port`) from the
/// session's own thread, as a module's own dial does ([`DirectConnector`]):
/// a non-blocking connect waited on beside the stop signal (a name is looked
/// up on a helper thread first). For an upstream that needs nothing but the
/// connection (tor's plain ORPort, a standalone server's forward target) this
/// spares what [`open_with`] costs per connection: a tokio task, a wake-up of
/// one of its workers, and the wake-up back to the session thread.
pub fn open_direct(address: String) -> OpenSocket {
    Box::new(move |cancel| {
        let stream = DirectConnector::default().connect("tcp", &address, cancel)?;
        let _ = stream.set_nodelay(true);
        Ok(stream.into())
    })
}

/// Turns a tokio TCP stream into an owned descriptor for a module, with `TCP_NODELAY` set:
/// a module's writes are whole records, and none should wait for Nagle's timer. Every
/// connection a module is handed passes through here, so nothing before sets it.
pub fn into_fd(tcp: TcpStream) -> io::Result<HostFd> {
    let std = tcp.into_std()?;
    let _ = std.set_nodelay(true);
    Ok(std.into())
}
