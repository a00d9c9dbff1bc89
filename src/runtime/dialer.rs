//! The dialer roles: `watm_dial_v1` (the runtime picks the remote) and
//! `watm_dial_fixed_v1` (the module picks it, within the allow-list).

use super::module::{Role, Watm};
use super::net::NetPolicy;
use super::session::{self, Job, Replies, SessionHandle};
use super::stream::{caller_pair, WaterStream};
use super::{Error, Runtime};
use crate::sys::HostFd;
use std::sync::Arc;

/// Opens connections through a WATM.
#[derive(Clone, Debug)]
pub struct Dialer {
    runtime: Runtime,
    watm: Arc<Watm>,
    config: Option<Arc<[u8]>>,
    policy: Arc<NetPolicy>,
}

impl Dialer {
    pub fn new(runtime: &Runtime, watm: Arc<Watm>) -> Self {
        Self {
            runtime: runtime.clone(),
            watm,
            config: None,
            policy: Arc::new(NetPolicy::default()),
        }
    }

    /// Bytes the module reads as `/conf/watm.cfg`.
    pub fn with_config(mut self, config: Option<Vec<u8>>) -> Self {
        self.config = config.map(Arc::from);
        self
    }

    /// What the module may dial and how.
    pub fn with_policy(mut self, policy: NetPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    pub fn watm(&self) -> &Arc<Watm> {
        &self.watm
    }

    /// Connects to `address` through the module (`watm_dial_v1`) and returns
    /// the caller's end.
    pub async fn dial(&self, network: &str, address: &str) -> Result<WaterStream, Error> {
        let (ours, theirs) = caller_pair()?;
        let session = self
            .start(Role::Dialer, theirs, Some((network, address)), None)
            .await?;
        Ok(WaterStream::new(ours, session))
    }

    /// Connects to the address the module chooses (`watm_dial_fixed_v1`).
    pub async fn dial_fixed(&self) -> Result<WaterStream, Error> {
        let (ours, theirs) = caller_pair()?;
        let session = self.start(Role::FixedDialer, theirs, None, None).await?;
        Ok(WaterStream::new(ours, session))
    }

    /// Like [`Dialer::dial`], but the module's caller fd is `caller`, an
    /// already-connected socket (e.g. an accepted SOCKS client), so no copy
    /// loop stands between it and the module. `replies` are written on
    /// `caller` once the connection is up (or has failed).
    pub async fn dial_with_caller(
        &self,
        caller: HostFd,
        network: &str,
        address: &str,
        replies: Option<Replies>,
    ) -> Result<SessionHandle, Error> {
        self.start(Role::Dialer, caller, Some((network, address)), replies)
            .await
    }

    /// Like [`Dialer::dial_fixed`], with an already-connected caller socket.
    pub async fn dial_fixed_with_caller(&self, caller: HostFd) -> Result<SessionHandle, Error> {
        self.start(Role::FixedDialer, caller, None, None).await
    }

    async fn start(
        &self,
        role: Role,
        caller: HostFd,
        remote: Option<(&str, &str)>,
        replies: Option<Replies>,
    ) -> Result<SessionHandle, Error> {
        let job = Job {
            role,
            caller: Some(caller),
            inbound: None,
            fixed_remote: remote.map(|(n, a)| (n.to_owned(), a.to_owned())),
            config: self.config.clone(),
            policy: self.policy.clone(),
            replies,
        };
        session::start(&self.runtime, self.watm.clone(), job).await
    }
}
