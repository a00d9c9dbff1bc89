//! The client side: a SOCKS5 front whose requests are dialed through WATMs.
//!
//! tor connects once per bridge connection, with the bridge line's arguments in the SOCKS5
//! username/password and the bridge address in the CONNECT request. For each connection:
//! 1. the handshake runs; arguments that do not even parse get `01 01` (tor's rule);
//! 2. the arguments pick the module ([`ModuleStore`], which downloads a pinned module it lacks
//!    from the bridge when the line says where); a module that cannot be used gets a
//!    non-zero CONNECT reply;
//! 3. the accepted socket itself becomes the module's caller fd, and the runtime writes the
//!    CONNECT reply on it once the module's dial succeeded or failed, so tor never sends
//!    data into a tunnel that is not up, and no copy loop sits between tor and the module.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::args::parse_socks_args;
use super::bridge::{BridgeArgs, BridgeArgsError};
use super::catalogue;
use super::modules::ModuleStore;
use super::report::Reporter;
use crate::runtime::{into_fd, Dialer, Error, NetPolicy, Replies, SessionEnd, SessionHandle};
use crate::serve::accept_loop;
use crate::shutdown::Shutdown;
use crate::socks::{self, Reply};

/// Everything the SOCKS front needs, shared by all its connections.
#[derive(Debug)]
pub struct SocksClient {
    pub modules: Arc<ModuleStore>,
    /// How modules reach the bridge (tor's proxy and bind addresses in managed mode).
    pub policy: NetPolicy,
    pub reporter: Arc<Reporter>,
    /// Configuration for requests that name neither a module nor a config (the standalone
    /// client's `--config`; `None` in managed mode).
    pub default_config: Option<Vec<u8>>,
}

/// Serves SOCKS5 on `listener` until the shutdown phase leaves `Running`. Returns when the
/// accept loop stops; open connections keep running (wait with `Runtime::wait_idle`).
pub async fn serve_socks(client: Arc<SocksClient>, listener: &TcpListener, shutdown: &Shutdown) {
    accept_loop(listener, shutdown, |stream, peer| {
        let client = client.clone();
        async move { client.handle(stream, peer).await }
    })
    .await;
}

/// The CONNECT reply for a failed setup: REP 5 when the bridge refused the connection, REP 1
/// for everything else (tor only tells success from failure; the code helps a reader of a
/// capture).
pub fn failure_reply(err: &Error) -> Reply {
    match err {
        Error::Dial { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused => {
            Reply::ConnectionRefused
        }
        _ => Reply::GeneralFailure,
    }
}

/// A short word for each kind of dial failure, for de-duplicated reporting.
fn failure_kind(err: &Error) -> &'static str {
    match err {
        Error::Dial { source, .. } => match source.kind() {
            io::ErrorKind::ConnectionRefused => "refused",
            io::ErrorKind::TimedOut => "timeout",
            io::ErrorKind::PermissionDenied => "proxy-auth",
            _ => "dial",
        },
        Error::TooManyConnections(_) => "too-many-connections",
        Error::RoleUnsupported { .. } => "module-role",
        _ => "module-failed",
    }
}

/// What `parse_auth` hands on: arguments that parsed, possibly unusable.
type ParsedArgs = Result<BridgeArgs, BridgeArgsError>;

fn parse_auth(creds: Option<(&[u8], &[u8])>) -> Result<ParsedArgs, String> {
    match creds {
        None => Ok(Ok(BridgeArgs::default())),
        Some((user, pass)) => {
            let pairs = parse_socks_args(user, pass).map_err(|e| e.to_string())?;
            Ok(BridgeArgs::from_pairs(&pairs))
        }
    }
}

impl SocksClient {
    async fn handle(&self, stream: TcpStream, peer: SocketAddr) {
        let request = match socks::accept(stream, parse_auth).await {
            Ok(r) => r,
            Err(e) => {
                // Malformed bridge arguments are the bridge line's fault: tell the user.
                if let socks::SocksError::AuthRejected(msg) = &e {
                    self.reporter.failed_once(
                        "malformed-arguments",
                        &format!("water: malformed bridge arguments: {msg}"),
                    );
                } else {
                    tracing::info!("SOCKS connection from {peer}: {e}");
                }
                return;
            }
        };
        let address = request.target.to_string();
        let args = match &request.auth {
            Ok(args) => args.clone(),
            Err(e) => {
                let msg = e.to_string();
                self.reporter.bridge_failed(&address, "bad-arguments", &msg);
                let _ = request.reply_failure(Reply::GeneralFailure).await;
                return;
            }
        };
        let names_nothing = args.wasm.is_none() && args.sha256.is_none();
        let config = match (&args.config, names_nothing) {
            (None, true) => self.default_config.clone(),
            (c, _) => c.clone(),
        };
        let watm = match self.modules.obtain(args, &address).await {
            Ok(w) => w,
            Err(e) => {
                self.reporter
                    .stats()
                    .accepted("client", "(no module)")
                    .failed(e.kind());
                self.reporter
                    .bridge_failed(&address, e.kind(), &e.to_string());
                let _ = request.reply_failure(Reply::GeneralFailure).await;
                return;
            }
        };
        let conn = self
            .reporter
            .stats()
            .accepted("client", &catalogue::label(&watm.sha256()));
        let fd = match into_fd(request.stream) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::info!("SOCKS connection from {peer}: {e}");
                conn.failed("io");
                return;
            }
        };
        // The runtime owns `fd` from here on and writes the SOCKS reply on it, success or
        // failure, including a refusal before the session's thread starts (connection limit).
        let dialer = Dialer::new(self.modules.runtime(), watm)
            .with_config(config)
            .with_policy(self.policy.clone());
        let replies = Replies {
            ready: socks::connect_reply(Ok(())).to_vec(),
            failed: Box::new(|e| socks::connect_reply(Err(failure_reply(e))).to_vec()),
        };
        // Told on the session's thread once the connection is up or has failed; this task
        // ends here. The hook keeps the address for its reports.
        let target = address.clone();
        let reporter = self.reporter.clone();
        let on_setup = Box::new(move |setup: Result<&SessionHandle, Error>| match setup {
            Ok(session) => {
                reporter.bridge_connected(&address);
                // Counted as the session ends.
                session.when_finished(move |end, bytes| {
                    conn.add_bytes(bytes.read, bytes.written);
                    match end {
                        SessionEnd::Failed(_) => conn.failed("module"),
                        SessionEnd::Closed | SessionEnd::Cancelled => conn.completed(),
                    }
                });
            }
            Err(e) => {
                conn.failed(failure_kind(&e));
                reporter.bridge_failed(&address, failure_kind(&e), &e.to_string());
            }
        });
        dialer.launch_with_caller(fd, "tcp", &target, Some(replies), on_setup);
    }
}
