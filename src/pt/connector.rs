//! Outbound connections for modules, the way tor wants them made: through `TOR_PT_PROXY` and
//! from `TOR_PT_OUTBOUND_BIND_ADDRESS_V4/_V6` when tor set them.
//!
//! Every dialer the transport creates carries this connector in its [`NetPolicy`], so a module's
//! `water_dial_fixed` (the bridge address) never bypasses the user's proxy.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use crate::proxy::{self, DialOptions, ProxyUrl};
use crate::runtime::{AllowList, Connector, DirectConnector, NetPolicy};
use crate::sys::Waker;

/// How long one outbound connection (including a proxy handshake) may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`Connector`] over [`proxy::dial`].
#[derive(Debug, Clone)]
pub struct PtConnector {
    opts: DialOptions,
}

impl PtConnector {
    pub fn new(opts: DialOptions) -> Self {
        Self { opts }
    }

    /// From the managed environment's proxy and bind addresses.
    pub fn from_env(env: &super::env::ManagedEnv, proxy: Option<ProxyUrl>) -> Self {
        Self::new(DialOptions {
            timeout: DIAL_TIMEOUT,
            bind_v4: env.outbound_bind_v4,
            bind_v6: env.outbound_bind_v6,
            proxy,
        })
    }

    /// Nothing to do beyond a plain connect?
    fn is_direct(&self) -> bool {
        self.opts.proxy.is_none() && self.opts.bind_v4.is_none() && self.opts.bind_v6.is_none()
    }

    /// The policy every PT dialer uses: this connector, and no `water_dial` destinations at all
    /// (the only address a bridge module needs is the bridge, reached with `water_dial_fixed`).
    pub fn policy(self) -> NetPolicy {
        let connector: std::sync::Arc<dyn Connector> = if self.is_direct() {
            // The direct connector watches the stop signal while connecting, which
            // `proxy::dial` cannot; use it whenever there is no proxy or bind to honour.
            std::sync::Arc::new(DirectConnector {
                timeout: self.opts.timeout,
            })
        } else {
            std::sync::Arc::new(self)
        };
        NetPolicy {
            allow: AllowList::deny_all(),
            connector,
        }
    }
}

impl Connector for PtConnector {
    /// Blocking, bounded by [`DialOptions::timeout`]. `proxy::dial` has no cancellation hook,
    /// so a stop request during a proxied connect takes effect when the dial returns (at worst
    /// after the timeout; the runtime's force-stop still bounds the session).
    fn connect(&self, network: &str, address: &str, _cancel: &Waker) -> io::Result<TcpStream> {
        proxy::dial(&self.opts, network, address)
    }
}
