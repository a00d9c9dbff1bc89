//! The listener role: `watm_accept_v1` decodes inbound connections.

use super::module::{Role, Watm};
use super::net::NetPolicy;
use super::session::{self, Job, SessionHandle};
use super::stream::{caller_pair, WaterStream};
use super::{Error, Runtime};
use crate::sys::HostFd;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Accepts TCP connections and serves each through its own instance of a
/// WATM. The host accepts; inside `watm_accept_v1` the module's
/// `water_accept()` returns that connection.
#[derive(Debug)]
pub struct Listener {
    tcp: TcpListener,
    runtime: Runtime,
    watm: Arc<Watm>,
    config: Option<Arc<[u8]>>,
    policy: Arc<NetPolicy>,
}

impl Listener {
    /// Binds `addr`. Fails at once if the module has no `watm_accept_v1`.
    pub async fn bind(runtime: &Runtime, watm: Arc<Watm>, addr: SocketAddr) -> Result<Self, Error> {
        watm.require(Role::Listener)?;
        let tcp = TcpListener::bind(addr).await?;
        Ok(Self::from_tcp(runtime, watm, tcp))
    }

    /// Serves an already-bound listener.
    pub fn from_tcp(runtime: &Runtime, watm: Arc<Watm>, tcp: TcpListener) -> Self {
        Self {
            tcp,
            runtime: runtime.clone(),
            watm,
            config: None,
            policy: Arc::new(NetPolicy::default()),
        }
    }

    pub fn with_config(mut self, config: Option<Vec<u8>>) -> Self {
        self.config = config.map(Arc::from);
        self
    }

    pub fn with_policy(mut self, policy: NetPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The listening socket.
    pub fn tcp(&self) -> &TcpListener {
        &self.tcp
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
        let (ours, theirs) = caller_pair()?;
        let session = self.serve(into_fd(tcp)?, theirs).await?;
        Ok((WaterStream::new(ours, session), peer))
    }

    /// Serves one accepted connection with `caller` as the module's caller
    /// fd: an already-connected socket (e.g. to the upstream server), so the
    /// module writes straight into it.
    pub async fn serve(&self, inbound: HostFd, caller: HostFd) -> Result<SessionHandle, Error> {
        let job = Job {
            role: Role::Listener,
            caller: Some(caller),
            inbound: Some(inbound),
            fixed_remote: None,
            config: self.config.clone(),
            policy: self.policy.clone(),
            replies: None,
        };
        session::start(&self.runtime, self.watm.clone(), job).await
    }
}

/// Turns a tokio TCP stream into an owned descriptor for a module.
pub fn into_fd(tcp: TcpStream) -> io::Result<HostFd> {
    let std = tcp.into_std()?;
    let _ = std.set_nodelay(true);
    Ok(std.into())
}
