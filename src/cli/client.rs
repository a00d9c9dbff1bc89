//! `water-pt client`: carry local TCP connections through a module's dialer
//! role.

use super::ModuleArgs;
use crate::runtime::{into_fd, AllowList, Dialer, NetPolicy, SetupHook};
use crate::serve::accept_each;
use crate::shutdown::Shutdown;
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ClientArgs {
    #[command(flatten)]
    pub module: ModuleArgs,
    /// Address to accept local connections on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Carry every connection to this address (`watm_dial_v1`). Without it
    /// (and without --fixed) the client is a SOCKS5 proxy that takes the
    /// destination and bridge-line arguments from each request.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "fixed")]
    pub remote: Option<String>,
    /// Let the module choose the remote (`watm_dial_fixed_v1`); it may only
    /// dial addresses given with --allow-dial.
    #[arg(long)]
    pub fixed: bool,
    /// An address the module may dial with `water_dial` (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub allow_dial: Vec<String>,
    /// SOCKS5 mode: where bare `water-wasm=NAME` and pin-only (`water-sha256=HEX`, loaded
    /// as HEX.wasm) bridge arguments are looked up.
    #[arg(long, value_name = "DIR")]
    pub module_dir: Option<std::path::PathBuf>,
}

pub async fn run(
    args: ClientArgs,
    limits: crate::runtime::Limits,
    drain: std::time::Duration,
) -> Result<(), String> {
    // With a fixed destination the module and config serve every connection, so one they
    // refuse stops the client at start. A SOCKS client's --wasm is only the default for
    // requests that name no module; a failing one fails those requests, answered in SOCKS.
    let (runtime, watm, config) = if args.remote.is_some() || args.fixed {
        args.module.load_checked(limits).await?
    } else {
        args.module.load(limits)?
    };
    let config_bytes = config.clone();
    let dialer = Dialer::new(&runtime, watm)
        .with_config(config)
        .with_policy(NetPolicy {
            allow: AllowList::new(&args.allow_dial),
            ..NetPolicy::default()
        });
    let role = if args.fixed {
        crate::runtime::Role::FixedDialer
    } else {
        crate::runtime::Role::Dialer
    };
    dialer.watm().require(role).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let shutdown = Shutdown::install(false, drain).map_err(|e| e.to_string())?;
    let remote = match (args.remote, args.fixed) {
        (Some(remote), _) => Some(remote),
        (None, true) => None,
        (None, false) => {
            tracing::info!(target: crate::pt::scrub::CONFIGURED, "SOCKS5 client listening on {local}");
            // Each request's bridge arguments pick the module; --wasm and --config apply
            // to requests that name none.
            let modules = crate::pt::modules::ModuleStore::new(runtime.clone(), args.module_dir)
                .with_default(dialer.watm().clone());
            let client = Arc::new(crate::pt::client::SocksClient {
                modules: Arc::new(modules),
                policy: NetPolicy::default(),
                reporter: Arc::new(crate::pt::report::Reporter::new(false)),
                default_config: config_bytes,
            });
            super::serve_until_stopped(&runtime, &shutdown, tcp, async |tcp| {
                crate::pt::client::serve_socks(client, tcp, &shutdown).await
            })
            .await;
            return Ok(());
        }
    };
    match &remote {
        Some(r) => {
            tracing::info!(target: crate::pt::scrub::CONFIGURED, "client listening on {local}, dialing {r}")
        }
        None => {
            tracing::info!(target: crate::pt::scrub::CONFIGURED, "client listening on {local}, module chooses the remote")
        }
    }
    super::serve_until_stopped(&runtime, &shutdown, tcp, async |tcp| {
        // Each connection is handed to a session from the accept task: only a failed setup
        // has anything to say, so nothing waits for it.
        accept_each(tcp, &shutdown, |caller, peer| {
            let on_setup: SetupHook = Box::new(move |setup| {
                if let Err(e) = setup {
                    tracing::info!("connection from {peer}: {e}");
                }
            });
            match into_fd(caller) {
                Ok(fd) => match &remote {
                    Some(r) => dialer.launch_with_caller(fd, "tcp", r, None, on_setup),
                    None => dialer.launch_fixed_with_caller(fd, on_setup),
                },
                Err(e) => on_setup(Err(e.into())),
            }
        })
        .await
    })
    .await;
    Ok(())
}
