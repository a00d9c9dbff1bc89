//! The relay role: `watm_associate_v1` accepts an inbound connection and
//! dials the fixed remote inside one instance.

use super::binding::{binding_settings, Binding, Sockets};
use super::listener::into_fd;
use super::module::{Role, Watm};
use super::session::SessionHandle;
use super::{Error, Runtime};
use std::sync::Arc;
use tokio::net::TcpStream;

/// Forwards connections to a fixed remote through a WATM.
#[derive(Clone, Debug)]
pub struct Relay {
    binding: Binding,
    remote: (String, String),
}

binding_settings!(Relay);

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
            binding: Binding::new(runtime, watm),
            remote: (network.to_owned(), address.to_owned()),
        })
    }

    /// Relays one accepted connection.
    pub async fn serve(&self, inbound: TcpStream) -> Result<SessionHandle, Error> {
        let sockets = Sockets {
            inbound: Some(into_fd(inbound)?),
            fixed_remote: Some(self.remote.clone()),
            ..Sockets::default()
        };
        self.binding.start(Role::Relay, sockets).await
    }
}
