//! `water-pt server`: decode inbound transport connections with a module's
//! listener role and carry the plaintext to a TCP address, or to tor's
//! Extended ORPort without tor launching us (a bridge's transport run as its
//! own service, possibly in front of several tor instances behind a load
//! balancer).
//!
//! The upstream is connected to when the module first writes toward it (see
//! [`Server::serve_opening_caller`]), unless `--upstream-speaks-first`.

use super::ModuleArgs;
use crate::extor;
use crate::pt::TRANSPORT_NAME;
use crate::runtime::{into_fd, open_direct, open_with, Error, OpenSocket, Server, SetupHook};
use crate::serve::accept_each;
use crate::shutdown::Shutdown;
use clap::{ArgGroup, Args};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("upstream").required(true).args(["forward", "ext_orport"])))]
pub struct ServerArgs {
    #[command(flatten)]
    pub module: ModuleArgs,
    /// Address to accept transport connections on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where each decoded connection is carried, as plain TCP.
    #[arg(long, value_name = "HOST:PORT")]
    pub forward: Option<String>,
    /// tor's Extended ORPort (or a load balancer in front of several tor
    /// instances' ones): each decoded connection is handed to tor with the
    /// client's address and the transport name `water`.
    #[arg(long, value_name = "ADDR", requires = "ext_orport_cookie")]
    pub ext_orport: Option<SocketAddr>,
    /// The Extended ORPort cookie file (tor's ExtORPortCookieAuthFile).
    /// Repeat it for each tor instance behind a load balancer: every
    /// instance writes its own cookie, and the one the answering instance
    /// proves it holds is used. Re-read for every connection.
    #[arg(long, value_name = "FILE", requires = "ext_orport")]
    pub ext_orport_cookie: Vec<PathBuf>,
    /// Connect to the upstream as soon as a connection is accepted, for an
    /// upstream that speaks first (an SSH or SMTP server, say). By default the
    /// upstream is connected to when the module first writes toward it, so a
    /// probe the module rejects (silence, garbage) costs the upstream nothing;
    /// tor never speaks first.
    #[arg(long)]
    pub upstream_speaks_first: bool,
}

/// Where decoded connections go.
#[derive(Debug)]
enum Upstream {
    Forward(String),
    ExtOrPort {
        addr: SocketAddr,
        cookies: Vec<PathBuf>,
    },
}

impl Upstream {
    fn from_args(args: &ServerArgs) -> Result<Self, String> {
        match (&args.forward, args.ext_orport) {
            (Some(forward), None) => Ok(Upstream::Forward(forward.clone())),
            (None, Some(addr)) => Ok(Upstream::ExtOrPort {
                addr,
                cookies: args.ext_orport_cookie.clone(),
            }),
            // clap's argument group enforces exactly one.
            _ => Err("give either --forward or --ext-orport".into()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Upstream::Forward(addr) => addr.clone(),
            Upstream::ExtOrPort { addr, cookies } => {
                format!("Extended ORPort {addr} ({} cookie file(s))", cookies.len())
            }
        }
    }

    /// Opens the upstream side of one inbound connection from `peer`.
    async fn connect(&self, peer: SocketAddr) -> Result<TcpStream, String> {
        match self {
            Upstream::Forward(forward) => TcpStream::connect(forward.as_str())
                .await
                .map_err(|e| e.to_string()),
            Upstream::ExtOrPort { addr, cookies } => extor::connect_any(
                *addr,
                cookies,
                peer,
                TRANSPORT_NAME,
                extor::HANDSHAKE_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string()),
        }
    }
}

/// Whether the upstream is taking connections, so that an outage is logged
/// once when it starts and once when it ends, not once per client: a busy
/// bridge gets many connections a second, and with every tor instance
/// behind the balancer down each of them fails the same way.
#[derive(Debug, Default)]
struct Health {
    down: AtomicBool,
}

impl Health {
    fn record(&self, upstream: &Upstream, failure: Option<&str>) {
        match failure {
            Some(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{} is not taking connections ({e}); inbound connections \
                         are dropped until it is back",
                        upstream.describe()
                    );
                } else {
                    tracing::debug!("{}: {e}", upstream.describe());
                }
            }
            None => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("{} is taking connections again", upstream.describe());
                }
            }
        }
    }
}

pub async fn run(
    args: ServerArgs,
    limits: crate::runtime::Limits,
    drain: std::time::Duration,
) -> Result<(), String> {
    // A forward address that does not resolve would fail every connection: refuse it now.
    if let Some(forward) = &args.forward {
        match tokio::net::lookup_host(forward.as_str()).await {
            Ok(mut addrs) => {
                if addrs.next().is_none() {
                    return Err(format!("--forward {forward}: no address found"));
                }
            }
            Err(e) => return Err(format!("--forward {forward}: {e} (expected HOST:PORT)")),
        }
    }
    let (runtime, watm, config) = args.module.load_checked(limits).await?;
    let server = Server::new(&runtime, watm)
        .map_err(|e| e.to_string())?
        .with_config(config);
    let upstream = Arc::new((Upstream::from_args(&args)?, Health::default()));
    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        target: crate::pt::scrub::CONFIGURED,
        "server listening on {local}, forwarding to {}",
        upstream.0.describe()
    );
    let shutdown = Shutdown::install(false, drain).map_err(|e| e.to_string())?;
    let eager = args.upstream_speaks_first;
    super::serve_until_stopped(&runtime, &shutdown, tcp, async |tcp| {
        accept_each(tcp, &shutdown, |inbound, peer| {
            if eager {
                // The upstream is connected first, so this connection needs a task that waits.
                let server = server.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connected(&server, inbound, peer, &upstream).await {
                        report_failure(&e);
                    }
                });
            } else {
                launch_one(&server, inbound, peer, upstream.clone());
            }
        })
        .await
    })
    .await;
    Ok(())
}

/// Logs why an inbound connection failed, without the client's address: bridges do not log
/// their users.
fn report_failure(e: &Error) {
    tracing::info!("inbound connection failed: {e}");
}

/// Hands one inbound connection to a session without waiting for it. The upstream is
/// connected to only when the module first writes toward it, so a probe the module rejects
/// without a word (silence, garbage) costs the upstream nothing; if that connection fails,
/// the module sees its caller socket closed.
fn launch_one(
    server: &Server,
    inbound: TcpStream,
    peer: SocketAddr,
    upstream: Arc<(Upstream, Health)>,
) {
    let open: OpenSocket = match &upstream.0 {
        // Connected from the session's thread: no tokio task per connection.
        Upstream::Forward(forward) => {
            let direct = open_direct(forward.clone());
            Box::new(move |cancel| {
                let (upstream, health) = &*upstream;
                let outbound = direct(cancel);
                match &outbound {
                    // A stopped session says nothing about the upstream.
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => health.record(upstream, Some(&e.to_string())),
                    Ok(_) => health.record(upstream, None),
                }
                outbound
            })
        }
        Upstream::ExtOrPort { .. } => open_with(move || async move {
            let (upstream, health) = &*upstream;
            let outbound = upstream.connect(peer).await;
            health.record(upstream, outbound.as_ref().err().map(String::as_str));
            outbound.map_err(std::io::Error::other)
        }),
    };
    let on_setup: SetupHook = Box::new(|setup| {
        if let Err(e) = setup {
            report_failure(&e);
        }
    });
    match into_fd(inbound) {
        Ok(fd) => server.launch_opening_caller(fd, open, on_setup),
        Err(e) => on_setup(Err(e.into())),
    }
}

/// Serves one inbound connection with the upstream connected first (`--upstream-speaks-first`);
/// if the upstream cannot be reached, the inbound connection is closed without running the
/// module.
async fn serve_connected(
    server: &Server,
    inbound: TcpStream,
    peer: SocketAddr,
    upstream: &(Upstream, Health),
) -> Result<(), Error> {
    let (upstream, health) = upstream;
    let outbound = upstream.connect(peer).await;
    health.record(upstream, outbound.as_ref().err().map(String::as_str));
    let outbound = outbound.map_err(std::io::Error::other)?;
    server.serve(into_fd(inbound)?, into_fd(outbound)?).await?;
    Ok(())
}
