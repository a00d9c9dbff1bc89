//! `water-pt relay`: relay each inbound connection to a fixed remote with a
//! module's relay role.

use super::ModuleArgs;
use crate::runtime::{AllowList, NetPolicy, Relay};
use crate::serve::accept_loop;
use crate::shutdown::Shutdown;
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct RelayArgs {
    #[command(flatten)]
    pub module: ModuleArgs,
    /// Address to accept connections on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where the module's `water_dial_fixed` connects.
    #[arg(long, value_name = "HOST:PORT")]
    pub remote: String,
    /// An address the module may dial itself with `water_dial` (repeatable;
    /// none by default).
    #[arg(long, value_name = "HOST:PORT")]
    pub allow_dial: Vec<String>,
}

pub async fn run(
    args: RelayArgs,
    limits: crate::runtime::Limits,
    drain: std::time::Duration,
) -> Result<(), String> {
    let (runtime, watm, config) = args.module.load_checked(limits).await?;
    let relay = Relay::new(&runtime, watm, "tcp", &args.remote)
        .map_err(|e| e.to_string())?
        .with_config(config)
        .with_policy(NetPolicy {
            allow: AllowList::new(&args.allow_dial),
            ..NetPolicy::default()
        });
    let relay = Arc::new(relay);
    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        target: crate::pt::scrub::CONFIGURED,
        "relay listening on {}, relaying to {}",
        tcp.local_addr().map_err(|e| e.to_string())?,
        args.remote
    );
    let shutdown = Shutdown::install(false, drain).map_err(|e| e.to_string())?;
    super::serve_until_stopped(&runtime, &shutdown, tcp, async |tcp| {
        accept_loop(tcp, &shutdown, |inbound, peer| {
            let relay = relay.clone();
            async move {
                if let Err(e) = relay.serve(inbound).await {
                    tracing::info!("connection from {peer}: {e}");
                }
            }
        })
        .await
    })
    .await;
    Ok(())
}
