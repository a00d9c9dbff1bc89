//! `water-pt server`: decode inbound transport connections with a module's
//! listener role and forward the plaintext to a TCP address.

use super::ModuleArgs;
use crate::runtime::{Error, Server};
use crate::serve::accept_loop;
use crate::shutdown::Shutdown;
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub module: ModuleArgs,
    /// Address to accept transport connections on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where each decoded connection is carried, as plain TCP.
    #[arg(long, value_name = "HOST:PORT")]
    pub forward: String,
}

pub async fn run(args: ServerArgs, limits: crate::runtime::Limits) -> Result<(), String> {
    // A forward address that does not resolve would fail every connection: refuse it now.
    match tokio::net::lookup_host(&args.forward).await {
        Ok(mut addrs) => {
            if addrs.next().is_none() {
                return Err(format!("--forward {}: no address found", args.forward));
            }
        }
        Err(e) => return Err(format!("--forward {}: {e}", args.forward)),
    }
    let (runtime, watm, config) = args.module.load_checked(limits).await?;
    let server = Server::new(&runtime, watm)
        .map_err(|e| e.to_string())?
        .with_config(config);
    let tcp = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        target: crate::pt::scrub::CONFIGURED,
        "server listening on {local}, forwarding to {}",
        args.forward
    );
    let shutdown = Shutdown::install(false).map_err(|e| e.to_string())?;
    let forward = Arc::new(args.forward);
    super::serve_until_stopped(&runtime, &shutdown, tcp, async |tcp| {
        accept_loop(tcp, &shutdown, |inbound, peer| {
            let server = server.clone();
            let forward = forward.clone();
            async move {
                if let Err(e) = serve_one(&server, inbound, &forward).await {
                    tracing::info!("connection from {peer}: {e}");
                }
            }
        })
        .await
    })
    .await;
    Ok(())
}

async fn serve_one(
    server: &Server,
    inbound: tokio::net::TcpStream,
    forward: &str,
) -> Result<(), Error> {
    let upstream = tokio::net::TcpStream::connect(forward)
        .await
        .map_err(|e| Error::Dial {
            address: forward.to_owned(),
            source: e,
        })?;
    let _ = upstream.set_nodelay(true);
    server
        .serve(
            crate::runtime::into_fd(inbound)?,
            crate::runtime::into_fd(upstream)?,
        )
        .await?;
    Ok(())
}
