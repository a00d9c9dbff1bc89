//! The server (bridge) side: accept transport connections, decode each with the module's
//! listener role, and hand the plaintext to tor.
//!
//! tor's side of each connection is opened when the module first writes toward it (or waits
//! to be able to): an authenticated Extended ORPort connection (or a plain ORPort one) becomes
//! the module's caller fd, so the module writes decoded bytes straight to tor. Until then the
//! caller fd has nothing to read, which costs nothing since tor never speaks first; a probe
//! the module rejects (silence, garbage) therefore never becomes a connection into tor. A
//! connection tor refuses (DENY, bad cookie, ORPort down) is reported once per kind; the
//! module sees its caller socket closed, and the transport keeps serving the others.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::bridge::bridge_line;
use super::bridge_setup::{BridgeSetup, Keying};
use super::catalogue;
use super::delivery::plan::{remember_port, DeliveryPlan, PortChoice, PORT_FILE};
use super::delivery::server::DeliveryServer;
use super::env::ServerEnv;
use super::modules::ModuleStore;
use super::output::{self, Severity};
use super::report::Reporter;
use super::secrets::SecretFile;
use super::TRANSPORT_NAME;
use crate::extor::{self, ExtOrError};
use crate::runtime::{
    into_fd, open_direct, open_with, Error, OpenSocket, Server, SessionEnd, SessionHandle,
    SetupHook,
};
use crate::serve::accept_each;
use crate::shutdown::Shutdown;

pub use super::bridge_setup::CLIENT_CONFIG_OPTION;

/// The file in `TOR_PT_STATE_LOCATION` holding a ready-to-edit bridge line.
pub const BRIDGE_LINE_FILE: &str = "water_bridgeline.txt";

/// Where decoded connections go.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// tor's Extended ORPort, authenticated with the cookie file (re-read per connection).
    ExtOrPort { addr: SocketAddr, cookie: PathBuf },
    /// tor's plain ORPort.
    OrPort(SocketAddr),
}

impl Upstream {
    /// The Extended ORPort when tor offers one (it tells tor the client's address), else the
    /// ORPort. `None` only for an environment [`super::env::parse`] would have refused.
    pub fn from_env(env: &ServerEnv) -> Option<Self> {
        match (&env.ext_orport, &env.auth_cookie_file, &env.orport) {
            (Some(addr), Some(cookie), _) => Some(Upstream::ExtOrPort {
                addr: *addr,
                cookie: cookie.clone(),
            }),
            (_, _, Some(addr)) => Some(Upstream::OrPort(*addr)),
            _ => None,
        }
    }
}

fn extor_kind(e: &ExtOrError) -> &'static str {
    match e {
        ExtOrError::Cookie { .. } => "extor-cookie",
        ExtOrError::Denied => "extor-denied",
        ExtOrError::ServerHashMismatch | ExtOrError::AuthRejected(_) => "extor-auth",
        ExtOrError::Io { .. } => "extor-io",
        _ => "extor-protocol",
    }
}

/// An announced water server: how each inbound connection is served. Its listening socket
/// is kept apart (see [`launch`]) so that it can be closed while open connections drain.
#[derive(Debug)]
pub struct WaterServer {
    server: Server,
    /// The module's name in the statistics.
    label: String,
    upstream: Upstream,
    reporter: Arc<Reporter>,
    /// The module-delivery port, taken out when serving starts.
    delivery: std::sync::Mutex<Option<(Arc<DeliveryServer>, TcpListener)>>,
}

/// Sets up the server side for tor: module from `ServerTransportOptions`, listener on tor's
/// bind address, then `SMETHOD water IP:PORT ARGS:water-sha256=...` (or `SMETHOD-ERROR`) and
/// the bridge-line file. The caller writes `SMETHODS DONE`.
pub async fn launch(
    env: &ServerEnv,
    modules: &Arc<ModuleStore>,
    state_dir: &Path,
    reporter: Arc<Reporter>,
) -> Option<(WaterServer, TcpListener)> {
    match try_launch(env, modules, state_dir, reporter).await {
        Ok(server) => Some(server),
        Err(msg) => {
            tracing::error!("water server: {msg}");
            let _ = output::stdout().smethod_error(TRANSPORT_NAME, &msg);
            None
        }
    }
}

async fn try_launch(
    env: &ServerEnv,
    modules: &Arc<ModuleStore>,
    state_dir: &Path,
    reporter: Arc<Reporter>,
) -> Result<(WaterServer, TcpListener), String> {
    let options = env.options_for(TRANSPORT_NAME);
    for (key, _) in options {
        if !key.starts_with("water-") {
            tracing::warn!("ServerTransportOptions water:{key}=... is not a water option; ignored");
        }
    }
    let setup = BridgeSetup::prepare(options, modules, state_dir).await?;
    match setup.keying {
        Keying::Operator => {}
        Keying::Generated => reporter.log(
            Severity::Notice,
            &format!(
                "water: new per-bridge secret generated and kept in {}; give out the line in {BRIDGE_LINE_FILE}",
                SecretFile::in_dir(state_dir).path().display()
            ),
        ),
        Keying::Stored => tracing::info!(
            "water: using the per-bridge secret in {}",
            SecretFile::in_dir(state_dir).path().display()
        ),
    }
    let (watm, config, mut published) = (setup.watm, setup.server_config, setup.published);
    let upstream = Upstream::from_env(env).ok_or("neither an ORPort nor an Extended ORPort")?;
    let bind = env.bind_addr(TRANSPORT_NAME);
    let tcp = TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let addr = tcp.local_addr().map_err(|e| e.to_string())?;
    let delivery = match setup.delivery {
        Some(plan) => {
            let (server, listener, fetch_args) =
                launch_delivery(plan, addr, modules, state_dir, &reporter).await?;
            published.extend(fetch_args);
            Some((server, listener))
        }
        None => None,
    };
    output::stdout()
        .smethod(TRANSPORT_NAME, addr, &published)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "water server listening on {addr} (module {})",
        watm.sha256_hex()
    );
    if let Err(e) = write_bridge_line(state_dir, addr, &published) {
        reporter.log(
            Severity::Warning,
            &format!("water: cannot write {BRIDGE_LINE_FILE}: {e}"),
        );
    }
    let label = catalogue::label(&watm.sha256());
    let server = Server::new(modules.runtime(), watm)
        .map_err(|e| e.to_string())?
        .with_config(config);
    Ok((
        WaterServer {
            server,
            label,
            upstream,
            reporter,
            delivery: std::sync::Mutex::new(delivery),
        },
        tcp,
    ))
}

/// The module-delivery service, its listener, and the `water-fetch` arguments to publish.
type Delivery = (Arc<DeliveryServer>, TcpListener, Vec<(String, String)>);

/// Binds the delivery port beside the transport's address `addr` (and remembers a port it
/// chose), ready to serve what `plan` says.
async fn launch_delivery(
    plan: DeliveryPlan,
    addr: SocketAddr,
    modules: &Arc<ModuleStore>,
    state_dir: &Path,
    reporter: &Arc<Reporter>,
) -> Result<Delivery, String> {
    let wanted = SocketAddr::new(addr.ip(), plan.port_to_bind(state_dir));
    let tcp = match TcpListener::bind(wanted).await {
        Ok(tcp) => tcp,
        // A remembered port taken by something else: a new one, and a new line.
        Err(e) if plan.port == PortChoice::Remembered && wanted.port() != 0 => {
            reporter.log(
                Severity::Warning,
                &format!(
                    "water: cannot listen on the module-delivery port {} again ({e}); using a \
                     new one: give out the new line in {BRIDGE_LINE_FILE}",
                    wanted.port()
                ),
            );
            TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                .await
                .map_err(|e| format!("module delivery: cannot listen: {e}"))?
        }
        Err(e) => return Err(format!("module delivery: cannot listen on {wanted}: {e}")),
    };
    let port = tcp.local_addr().map_err(|e| e.to_string())?.port();
    if plan.port == PortChoice::Remembered {
        if let Err(e) = remember_port(state_dir, port) {
            reporter.log(
                Severity::Warning,
                &format!("water: cannot remember the module-delivery port in {PORT_FILE}: {e}"),
            );
        }
    }
    let server = DeliveryServer::new(
        modules.runtime(),
        &plan.key,
        plan.served.clone(),
        plan.rate,
        reporter.clone(),
    );
    tracing::info!(
        "water: module delivery on port {port} ({} module(s), {} downloads per address per hour)",
        plan.served.len(),
        plan.rate
    );
    Ok((Arc::new(server), tcp, plan.published(port)))
}

/// Writes `state_dir/water_bridgeline.txt`: a comment on what to fill in, then the line.
pub fn write_bridge_line(
    state_dir: &Path,
    addr: SocketAddr,
    args: &[(String, String)],
) -> io::Result<()> {
    let line = bridge_line(addr, None, args)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    // `bridge_line` without a fingerprint gives `Bridge water ADDR k=v...`; the fingerprint
    // goes right after the address.
    let head = format!("Bridge {TRANSPORT_NAME} {addr}");
    let rest = line.strip_prefix(&head).unwrap_or("");
    let text = format!(
        "# A bridge line for this water bridge. Before giving it out, replace <FINGERPRINT>\n\
         # with the bridge's identity fingerprint (the second word of the file\n\
         # <DataDirectory>/fingerprint, also printed in tor's log at startup) and, if the\n\
         # address is 0.0.0.0 or [::], put the bridge's public address there.\n\
         {head} <FINGERPRINT>{rest}\n"
    );
    std::fs::write(state_dir.join(BRIDGE_LINE_FILE), text)
}

impl WaterServer {
    /// Accepts on `tcp` until the shutdown phase leaves `Running`, then closes it.
    /// The module-delivery port is served beside it, until the same moment.
    pub async fn serve(self: Arc<Self>, tcp: TcpListener, shutdown: &Shutdown) {
        let delivery = self
            .delivery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let delivery = async {
            if let Some((server, tcp)) = delivery {
                server.serve(tcp, shutdown).await;
            }
        };
        let transport = accept_each(&tcp, shutdown, |inbound, peer| self.handle(inbound, peer));
        tokio::join!(transport, delivery);
    }

    fn handle(&self, inbound: TcpStream, peer: SocketAddr) {
        let conn = self.reporter.stats().accepted("bridge", &self.label);
        // Set when tor's side cannot be opened, so the statistics say why.
        let upstream_failure = Arc::new(std::sync::OnceLock::new());
        let open = self.open_upstream(peer, upstream_failure.clone());
        let reporter = self.reporter.clone();
        // Told on the session's thread once setup ends (here if it never starts); nothing
        // waits for it.
        let on_setup: SetupHook =
            Box::new(move |setup: Result<&SessionHandle, Error>| match setup {
                // Counted as the session ends (after its upstream was opened or not).
                Ok(session) => session.when_finished(move |end, bytes| {
                    conn.add_bytes(bytes.read, bytes.written);
                    match (upstream_failure.get(), end) {
                        (Some(kind), _) => conn.failed(kind),
                        (None, SessionEnd::Closed | SessionEnd::Cancelled) => conn.completed(),
                        (None, SessionEnd::Failed(_)) => conn.failed("module"),
                    }
                }),
                Err(e) => {
                    match upstream_failure.get() {
                        Some(kind) => conn.failed(kind),
                        None => conn.failed("module-setup"),
                    }
                    // Client addresses stay out of tor's log (bridges do not log users).
                    tracing::debug!("connection from {peer}: {e}");
                    reporter
                        .failed_once("module", &format!("water: inbound connection failed: {e}"));
                }
            });
        match into_fd(inbound) {
            Ok(inbound) => self.server.launch_opening_caller(inbound, open, on_setup),
            Err(e) => on_setup(Err(e.into())),
        }
    }

    /// Opens tor's side of the connection from `peer` when the module first writes toward
    /// it: a probe the module rejects without a word never becomes a connection into tor.
    /// Runs on the session's thread; a stop of the session cuts the handshake short.
    fn open_upstream(
        &self,
        peer: SocketAddr,
        failure: Arc<std::sync::OnceLock<&'static str>>,
    ) -> OpenSocket {
        let reporter = self.reporter.clone();
        let dropped = move |kind: &'static str, msg: String| {
            let _ = failure.set(kind);
            // The module sees its caller socket closed and ends the connection.
            reporter.failed_once(kind, &format!("water: inbound connection dropped: {msg}"));
            io::Error::new(io::ErrorKind::ConnectionRefused, msg)
        };
        match &self.upstream {
            // Nothing to say to a plain ORPort: the session thread connects itself.
            Upstream::OrPort(addr) => {
                let addr = *addr;
                let open = open_direct(addr.to_string());
                Box::new(move |cancel| {
                    open(cancel).map_err(|e| {
                        dropped("orport", format!("cannot connect to ORPort {addr}: {e}"))
                    })
                })
            }
            // The Extended ORPort is told who the connection is from, in an exchange that
            // runs on the tokio runtime.
            Upstream::ExtOrPort { addr, cookie } => {
                let (addr, cookie) = (*addr, cookie.clone());
                open_with(move || async move {
                    extor::connect(addr, &cookie, peer, TRANSPORT_NAME)
                        .await
                        .map_err(|e| dropped(extor_kind(&e), e.to_string()))
                })
            }
        }
    }
}
