//! Outbound connections for modules, the way tor wants them made: through `TOR_PT_PROXY` and
//! from `TOR_PT_OUTBOUND_BIND_ADDRESS_V4/_V6` when tor set them.
//!
//! Every dialer the transport creates carries this connector in its [`NetPolicy`], so a module's
//! `water_dial_fixed` (the bridge address) never bypasses the user's proxy.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use crate::proxy::{self, DialOptions, ProxyUrl};
use crate::runtime::{run_cancellable, AllowList, Connector, DirectConnector, NetPolicy};
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
    /// so it runs on a helper thread and a stop of the session ends the wait at once (the
    /// helper's dial ends on its own within the timeout).
    fn connect(&self, network: &str, address: &str, cancel: &Waker) -> io::Result<TcpStream> {
        let (opts, network, address) = (self.opts.clone(), network.to_owned(), address.to_owned());
        run_cancellable(cancel, move || proxy::dial(&opts, &network, &address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_stop_ends_a_dial_through_a_silent_proxy() {
        // A SOCKS5 proxy that accepts and never answers the greeting.
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = ProxyUrl::parse(&format!("socks5://{}", proxy.local_addr().unwrap())).unwrap();
        let connector = PtConnector::new(DialOptions {
            timeout: Duration::from_secs(30),
            bind_v4: None,
            bind_v6: None,
            proxy: Some(url),
        });
        let cancel = std::sync::Arc::new(Waker::new().unwrap());
        let stopper = cancel.clone();
        let accepted = std::thread::spawn(move || proxy.accept().map(|(s, _)| s));
        let waker = std::thread::spawn(move || {
            let held = accepted.join().unwrap();
            stopper.wake();
            held
        });
        let started = Instant::now();
        let err = connector
            .connect("tcp", "192.0.2.1:443", &cancel)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted, "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(waker.join());
    }
}
