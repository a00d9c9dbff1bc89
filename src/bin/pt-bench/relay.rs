//! The native relay chain: two `pt-bench --relay-hop` children in a row, each a tokio program
//! that accepts on loopback and copies every connection to the next hop and back, with no
//! transport, handshake or wasm in between.
//!
//! It is the baseline for the tests the socat chain cannot serve: socat forks a process per
//! connection, so its short-connection rate and idle memory would measure `fork`, not
//! relaying. The socat chain stays the bulk baseline, so this one skips the bulk tests.
//!
//! Two copying hops with one thread pool each are what any pair of transports pays at least,
//! on the same machine and under the same descriptor limit, so "plain against the relay chain"
//! separates what water-pt costs from what the machine allows.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::launch::{self, ManagedPt};

/// The line a hop prints on stdout once it listens: `RELAY <addr>`.
const READY: &str = "RELAY";

/// After a failed `accept` (out of descriptors, say) the pending connection stays queued and
/// the next `accept` fails at once; a short pause keeps the hop from spinning on it while
/// connections elsewhere close.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// The `--relay-hop UPSTREAM` child: relays every connection to `upstream` until stdin reaches
/// EOF (its parent gone or done), as the transports do with TOR_PT_EXIT_ON_STDIN_CLOSE.
pub fn serve_hop(upstream: SocketAddr) -> io::Result<()> {
    launch::helper_runtime()?.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{READY} {}", listener.local_addr()?);
        relay_each(listener, upstream).await
    })
}

/// Relays every connection `listener` accepts to `upstream`, each in its own task.
async fn relay_each(listener: TcpListener, upstream: SocketAddr) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(async move {
                    if let Err(e) = relay(inbound, upstream).await {
                        eprintln!("relay hop: {e}");
                    }
                });
            }
            Err(e) => {
                eprintln!("relay hop: accept: {e}");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Copies one connection both ways with tokio's default buffers (8 KiB each way): the chain
/// is the baseline for short and idle connections, where large buffers would only add memory.
/// The bulk baseline is the socat chain, with buffers as large as water-pt's reads.
async fn relay(mut inbound: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let mut outbound = TcpStream::connect(upstream).await?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

/// Starts one hop relaying to `upstream`; returns it with the address it listens on.
pub fn start_hop(upstream: SocketAddr, log: &Path) -> io::Result<(ManagedPt, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let upstream = upstream.to_string();
    let (process, line) = launch::helper(
        &exe,
        &["--relay-hop", &upstream],
        log,
        &format!("relay hop to {upstream}"),
        READY,
    )?;
    let addr = line
        .strip_prefix(READY)
        .map(str::trim)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::other(format!("relay hop: unexpected line {line:?}")))?;
    Ok((process, addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two hops in a row carry bytes both ways, and a client's close reaches the far end and
    /// comes back as the end of the stream.
    #[tokio::test]
    async fn two_hops_carry_bytes_both_ways_and_pass_the_close_on() {
        let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far_addr = far.local_addr().unwrap();
        let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let second_addr = second.local_addr().unwrap();
        let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let first_addr = first.local_addr().unwrap();
        tokio::spawn(relay_each(second, far_addr));
        tokio::spawn(relay_each(first, second_addr));

        let mut client = TcpStream::connect(first_addr).await.unwrap();
        let (mut end, _) = far.accept().await.unwrap();
        let upload = vec![7u8; 300_000];
        client.write_all(&upload).await.unwrap();
        let mut got = vec![0u8; upload.len()];
        end.read_exact(&mut got).await.unwrap();
        assert_eq!(got, upload);

        end.write_all(b"reply").await.unwrap();
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");

        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(end.read_to_end(&mut rest).await.unwrap(), 0);
        drop(end);
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
