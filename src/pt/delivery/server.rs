//! The bridge's delivery port: one Shadowsocks session per connection, one request, one
//! response, by hash only.
//!
//! A connection is admitted if fewer than [`MAX_OPEN`] are open (else it is closed at once)
//! and counted against its address's [rate limit](super::rate). The request must arrive
//! within [`REQUEST_TIMEOUT`] and the whole exchange end within [`EXCHANGE_TIMEOUT`]. The
//! answer is decided by [`DeliveryServer::answer`] from the request bytes alone: the served
//! modules are a map from SHA-256 to bytes read at start-up, so no request can name a file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::rate::RateLimit;
use super::wire::{read_full, Request, ResponseHead, Status, REQUEST_LEN};
use super::{delivery_module, server_config};
use crate::pt::catalogue;
use crate::pt::output::Severity;
use crate::pt::report::Reporter;
use crate::runtime::{Error, Runtime, Server};
use crate::serve::accept_loop;
use crate::shutdown::Shutdown;

/// How long after the accept the request may take (including the Shadowsocks handshake).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a whole exchange may take, module transfer included.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most delivery connections open at once.
pub const MAX_OPEN: usize = 32;
/// Downloads allowed per client address per hour unless `water-fetch-rate` says otherwise.
pub const DEFAULT_RATE: u32 = 20;

/// The modules a bridge serves, by SHA-256.
pub type Served = HashMap<[u8; 32], Arc<[u8]>>;

/// A bridge's delivery service.
#[derive(Debug)]
pub struct DeliveryServer {
    runtime: Runtime,
    key: String,
    /// The Shadowsocks listener, compiled on the first delivery connection (or found in the
    /// compiled-module cache) rather than before the bridge announces itself.
    server: tokio::sync::OnceCell<Server>,
    served: Served,
    rate: Mutex<RateLimit>,
    open: Arc<Semaphore>,
    sent: AtomicU64,
    reporter: Arc<Reporter>,
}

impl DeliveryServer {
    /// Serves `served` to clients holding `key`, at most `per_hour` downloads per address.
    pub fn new(
        runtime: &Runtime,
        key: &str,
        served: Served,
        per_hour: u32,
        reporter: Arc<Reporter>,
    ) -> Self {
        Self {
            runtime: runtime.clone(),
            key: key.to_owned(),
            server: tokio::sync::OnceCell::new(),
            served,
            rate: Mutex::new(RateLimit::new(per_hour)),
            open: Arc::new(Semaphore::new(MAX_OPEN)),
            sent: AtomicU64::new(0),
            reporter,
        }
    }

    /// The listener that decodes delivery connections.
    async fn server(&self) -> Result<&Server, String> {
        self.server
            .get_or_try_init(|| async {
                let (runtime, key) = (self.runtime.clone(), self.key.clone());
                tokio::task::spawn_blocking(move || -> Result<Server, Error> {
                    Ok(Server::new(&runtime, delivery_module(&runtime)?)?
                        .with_config(Some(server_config(&key))))
                })
                .await
                .map_err(|e| format!("loading the delivery module: {e}"))?
                .map_err(|e| format!("the delivery module: {e}"))
            })
            .await
    }

    /// Modules sent since start.
    pub fn downloads(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Accepts on `tcp` until the shutdown phase leaves `Running`.
    pub async fn serve(self: Arc<Self>, tcp: TcpListener, shutdown: &Shutdown) {
        accept_loop(&tcp, shutdown, |stream, peer| {
            let server = self.clone();
            async move { server.handle(stream, peer).await }
        })
        .await;
    }

    /// Serves one delivery connection.
    pub async fn handle(&self, tcp: TcpStream, peer: SocketAddr) {
        let Ok(_permit) = self.open.clone().try_acquire_owned() else {
            tracing::debug!("module delivery: {MAX_OPEN} connections open; closing a new one");
            return;
        };
        let admitted = self
            .rate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(peer.ip(), Instant::now());
        match tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(tcp, admitted)).await {
            Ok(Ok(Some((digest, len)))) => {
                let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
                self.reporter.log(
                    Severity::Notice,
                    &format!(
                        "water: module {} sent ({len} bytes; {n} downloads since start)",
                        catalogue::label(&digest)
                    ),
                );
            }
            Ok(Ok(None)) => {}
            // Client addresses stay out of the logs: these say only what went wrong.
            Ok(Err(e)) => tracing::debug!("module delivery connection: {e}"),
            Err(_) => tracing::debug!(
                "module delivery connection: not done within {EXCHANGE_TIMEOUT:?}; closed"
            ),
        }
    }

    /// One exchange; the digest and length of the module sent, if one was.
    async fn exchange(
        &self,
        tcp: TcpStream,
        admitted: Result<(), Duration>,
    ) -> Result<Option<([u8; 32], usize)>, String> {
        let mut stream = self
            .server()
            .await?
            .serve_stream(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut request = [0u8; REQUEST_LEN];
        let got = tokio::time::timeout(REQUEST_TIMEOUT, read_full(&mut stream, &mut request))
            .await
            .map_err(|_| format!("no request within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        if got == 0 {
            return Err("closed without a request".into());
        }
        let (head, module) = self.answer(&request[..got], admitted);
        let io = |e: std::io::Error| e.to_string();
        stream.write_all(&head.encode()).await.map_err(io)?;
        if let Some(bytes) = &module {
            stream.write_all(bytes).await.map_err(io)?;
        }
        stream.shutdown().await.map_err(io)?;
        // The module still holds what it has not sent; it ends once the client closes.
        stream.session().finished().await;
        Ok(module.map(|m| (crate::runtime::sha256(&m), m.len())))
    }

    /// The response to `request` (the bytes received, possibly fewer than a request):
    /// refused when `admitted` is not, else the module or why not.
    pub fn answer(
        &self,
        request: &[u8],
        admitted: Result<(), Duration>,
    ) -> (ResponseHead, Option<Arc<[u8]>>) {
        let refuse = |status, value| (ResponseHead::new(status, value), None);
        let request = match Request::parse(request) {
            Ok(r) => r,
            Err(_) => return refuse(Status::BadRequest, 0),
        };
        if let Err(wait) = admitted {
            let secs = u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX);
            return refuse(Status::RateLimited, secs);
        }
        let Some(module) = self.served.get(&request.sha256) else {
            return refuse(Status::UnknownModule, 0);
        };
        let len = u32::try_from(module.len()).unwrap_or(u32::MAX);
        if len > request.max_len {
            return refuse(Status::TooLarge, len);
        }
        (ResponseHead::new(Status::Ok, len), Some(module.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{sha256, RuntimeConfig};

    #[test]
    fn answers_by_hash_only() {
        let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
        let module: Arc<[u8]> = Arc::from(&b"module bytes"[..]);
        let digest = sha256(&module);
        let served = Served::from([(digest, module.clone())]);
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
        let server = DeliveryServer::new(&runtime, key, served, 1, Arc::new(Reporter::new(false)));
        let ask = |max_len, sha256| Request { max_len, sha256 }.encode();

        let (head, body) = server.answer(&ask(100, digest), Ok(()));
        assert_eq!(head, ResponseHead::new(Status::Ok, 12));
        assert_eq!(body.as_deref(), Some(&module[..]));

        let (head, body) = server.answer(&ask(11, digest), Ok(()));
        assert_eq!(head, ResponseHead::new(Status::TooLarge, 12));
        assert!(body.is_none());

        let (head, _) = server.answer(&ask(100, [0; 32]), Ok(()));
        assert_eq!(head.status, Status::UnknownModule);

        let (head, _) = server.answer(&ask(100, digest), Err(Duration::from_secs(90)));
        assert_eq!(head, ResponseHead::new(Status::RateLimited, 90));

        let (head, _) = server.answer(&ask(100, digest)[..41], Ok(()));
        assert_eq!(head.status, Status::BadRequest);
        let (head, _) = server.answer(b"GET /etc/passwd HTTP/1.1\r\n\r\n..............", Ok(()));
        assert_eq!(head.status, Status::BadRequest);
    }
}
