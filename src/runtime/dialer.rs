//! The dialer roles: `watm_dial_v1` (the runtime picks the remote) and
//! `watm_dial_fixed_v1` (the module picks it, within the allow-list).

use super::binding::{binding_settings, Binding, Sockets};
use super::module::{Role, Watm};
use super::session::{Replies, SessionHandle, SetupHook};
use super::stream::{caller_pair, WaterStream};
use super::{Error, Runtime};
use crate::sys::HostFd;
use std::sync::Arc;

/// Opens connections through a WATM.
#[derive(Clone, Debug)]
pub struct Dialer {
    binding: Binding,
}

binding_settings!(Dialer);

impl Dialer {
    pub fn new(runtime: &Runtime, watm: Arc<Watm>) -> Self {
        Self {
            binding: Binding::new(runtime, watm),
        }
    }

    /// Connects to `address` through the module (`watm_dial_v1`) and returns
    /// the caller's end.
    pub async fn dial(&self, network: &str, address: &str) -> Result<WaterStream, Error> {
        let (ours, theirs) = caller_pair()?;
        let session = self
            .dial_with_caller(theirs, network, address, None)
            .await?;
        Ok(WaterStream::new(ours, session))
    }

    /// Connects to the address the module chooses (`watm_dial_fixed_v1`).
    pub async fn dial_fixed(&self) -> Result<WaterStream, Error> {
        let (ours, theirs) = caller_pair()?;
        let session = self.dial_fixed_with_caller(theirs).await?;
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
        let sockets = Sockets::dial(caller, Some((network, address)), replies);
        self.binding.start(Role::Dialer, sockets).await
    }

    /// Like [`Dialer::dial_with_caller`], without waiting: `on_setup` is called once, on the
    /// session's thread, with the session's handle when the connection is up and the replies
    /// are written, or with why it failed (on this thread if the session never started).
    /// A front that only has to count its connections then needs no task waiting for each.
    pub fn launch_with_caller(
        &self,
        caller: HostFd,
        network: &str,
        address: &str,
        replies: Option<Replies>,
        on_setup: SetupHook,
    ) {
        let sockets = Sockets::dial(caller, Some((network, address)), replies);
        self.binding.launch(Role::Dialer, sockets, on_setup);
    }

    /// Like [`Dialer::dial_fixed`], with an already-connected caller socket.
    pub async fn dial_fixed_with_caller(&self, caller: HostFd) -> Result<SessionHandle, Error> {
        let sockets = Sockets::dial(caller, None, None);
        self.binding.start(Role::FixedDialer, sockets).await
    }

    /// Like [`Dialer::dial_fixed_with_caller`], without waiting: `on_setup` is told as with
    /// [`Dialer::launch_with_caller`].
    pub fn launch_fixed_with_caller(&self, caller: HostFd, on_setup: SetupHook) {
        let sockets = Sockets::dial(caller, None, None);
        self.binding.launch(Role::FixedDialer, sockets, on_setup);
    }
}
