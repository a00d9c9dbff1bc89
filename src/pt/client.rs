//! The client side: a SOCKS5 front whose requests are dialed through WATMs.

use crate::runtime::Runtime;
use crate::shutdown::Shutdown;
use tokio::net::TcpListener;

/// Serves SOCKS5 on `listener` until shutdown.
pub async fn serve_socks(
    _runtime: &Runtime,
    _listener: &TcpListener,
    _shutdown: &Shutdown,
    _module_dir: Option<&std::path::Path>,
) -> Result<(), String> {
    Err("the SOCKS5 client is not available in this build".into())
}
