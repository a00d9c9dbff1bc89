//! What every role starts its sessions with: a module, its config and what
//! it may dial.

use super::module::{Role, Watm};
use super::net::NetPolicy;
use super::session::{self, CallerSocket, Job, Replies, SessionHandle, SetupHook};
use super::{Error, Runtime};
use crate::sys::HostFd;
use std::sync::Arc;

/// A module bound to a runtime, with the settings of its sessions.
#[derive(Clone, Debug)]
pub(crate) struct Binding {
    runtime: Runtime,
    pub watm: Arc<Watm>,
    /// Bytes the module reads as `/conf/watm.cfg`.
    pub config: Option<Arc<[u8]>>,
    pub policy: Arc<NetPolicy>,
}

/// The sockets and remote one session starts with.
#[derive(Default)]
pub(crate) struct Sockets {
    pub caller: Option<CallerSocket>,
    pub inbound: Option<HostFd>,
    pub fixed_remote: Option<(String, String)>,
    pub replies: Option<Replies>,
}

impl Sockets {
    /// A dial from the already-connected `caller`: to `remote` (`watm_dial_v1`), or with
    /// `None` to where the module chooses (`watm_dial_fixed_v1`).
    pub fn dial(caller: HostFd, remote: Option<(&str, &str)>, replies: Option<Replies>) -> Self {
        Self {
            caller: Some(CallerSocket::Open(caller)),
            fixed_remote: remote.map(|(network, address)| (network.to_owned(), address.to_owned())),
            replies,
            ..Self::default()
        }
    }

    /// One accepted connection, served with `caller` as the module's caller socket.
    pub fn serve(inbound: HostFd, caller: CallerSocket) -> Self {
        Self {
            caller: Some(caller),
            inbound: Some(inbound),
            ..Self::default()
        }
    }
}

impl Binding {
    pub fn new(runtime: &Runtime, watm: Arc<Watm>) -> Self {
        Self {
            runtime: runtime.clone(),
            watm,
            config: None,
            policy: Arc::new(NetPolicy::default()),
        }
    }

    pub fn set_config(&mut self, config: Option<Vec<u8>>) {
        self.config = config.map(Arc::from);
    }

    pub fn set_policy(&mut self, policy: NetPolicy) {
        self.policy = Arc::new(policy);
    }

    /// Starts a session in `role` and waits until its connection is set up.
    pub async fn start(&self, role: Role, sockets: Sockets) -> Result<SessionHandle, Error> {
        session::start(&self.runtime, self.watm.clone(), self.job(role, sockets)).await
    }

    /// Starts a session in `role` without waiting; `on_setup` hears how setup ended
    /// (see [`session::launch`]).
    pub fn launch(&self, role: Role, sockets: Sockets, on_setup: SetupHook) {
        session::launch(
            &self.runtime,
            self.watm.clone(),
            self.job(role, sockets),
            on_setup,
        );
    }

    fn job(&self, role: Role, sockets: Sockets) -> Job {
        Job {
            role,
            caller: sockets.caller,
            inbound: sockets.inbound,
            fixed_remote: sockets.fixed_remote,
            config: self.config.clone(),
            policy: self.policy.clone(),
            replies: sockets.replies,
            watch: None,
        }
    }
}

/// The settings every role type exposes, generated for a type with a
/// `binding: Binding` field so the three roles cannot drift apart.
macro_rules! binding_settings {
    ($role:ty) => {
        impl $role {
            /// Bytes the module reads as `/conf/watm.cfg`.
            pub fn with_config(mut self, config: Option<Vec<u8>>) -> Self {
                self.binding.set_config(config);
                self
            }

            /// What the module may dial and how.
            pub fn with_policy(mut self, policy: $crate::runtime::NetPolicy) -> Self {
                self.binding.set_policy(policy);
                self
            }

            /// The module this role runs.
            pub fn watm(&self) -> &std::sync::Arc<$crate::runtime::Watm> {
                &self.binding.watm
            }
        }
    };
}
pub(crate) use binding_settings;
