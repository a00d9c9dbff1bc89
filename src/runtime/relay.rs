//! The relay role: `watm_associate_v1` accepts an inbound connection and
//! dials the fixed remote inside one instance.

use super::listener::into_fd;
use super::module::{Role, Watm};
use super::net::NetPolicy;
use super::session::{self, Job, SessionHandle};
use super::{Error, Runtime};
use std::sync::Arc;
use tokio::net::TcpStream;

/// Forwards connections to a fixed remote through a WATM.
#[derive(Clone, Debug)]
pub struct Relay {
    runtime: Runtime,
    watm: Arc<Watm>,
    remote: (String, String),
    config: Option<Arc<[u8]>>,
    policy: Arc<NetPolicy>,
}

impl Relay {
    /// A relay to `network`/`address`. Fails if the module has no
    /// `watm_associate_v1`.
    pub fn new(
        runtime: &Runtime,
        watm: Arc<Watm>,
        network: &str,
        address: &str,
    ) -> Result<Self, Error> {
        watm.require(Role::Relay)?;
        Ok(Self {
            runtime: runtime.clone(),
            watm,
            remote: (network.to_owned(), address.to_owned()),
            config: None,
            policy: Arc::new(NetPolicy::default()),
        })
    }

    pub fn with_config(mut self, config: Option<Vec<u8>>) -> Self {
        self.config = config.map(Arc::from);
        self
    }

    pub fn with_policy(mut self, policy: NetPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// Relays one accepted connection.
    pub async fn serve(&self, inbound: TcpStream) -> Result<SessionHandle, Error> {
        let job = Job {
            role: Role::Relay,
            caller: None,
            inbound: Some(into_fd(inbound)?),
            fixed_remote: Some(self.remote.clone()),
            config: self.config.clone(),
            policy: self.policy.clone(),
            replies: None,
        };
        session::start(&self.runtime, self.watm.clone(), job).await
    }
}
