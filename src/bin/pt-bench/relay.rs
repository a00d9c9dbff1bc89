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
//!
//! The SOCKS relay chain is the same with one difference: its first hop is a SOCKS5 front,
//! answering with water-pt's own handshake code ([`water_pt::socks`]) and relaying to the
//! address the client asked for, as a transport's client side must. It is water-pt without the
//! module and its session, so "plain against the SOCKS relay chain" is what running the module
//! costs, and the chain's short-connection rate is the most any SOCKS-fronted transport pair
//! can reach on the machine.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use water_pt::socks::{Reply, TargetAddr};

use crate::launch::{self, ManagedPt};

/// The line a hop prints on stdout once it listens: `RELAY <addr>`.
const READY: &str = "RELAY";

/// After a failed `accept` (out of descriptors, say) the pending connection stays queued and
/// the next `accept` fails at once; a short pause keeps the hop from spinning on it while
/// connections elsewhere close.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Where a hop sends what it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Always to this address.
    Fixed(SocketAddr),
    /// Where each client's SOCKS5 CONNECT asks: the hop is a SOCKS front.
    Socks,
}

/// `--relay-hop socks`: the hop is a SOCKS front (see [`Upstream::Socks`]).
const SOCKS_UPSTREAM: &str = "socks";

/// The `--relay-hop` value: `socks`, or the address to relay to.
impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Fixed(addr) => addr.fmt(f),
            Upstream::Socks => f.write_str(SOCKS_UPSTREAM),
        }
    }
}

impl std::str::FromStr for Upstream {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            SOCKS_UPSTREAM => Ok(Upstream::Socks),
            _ => s.parse().map(Upstream::Fixed),
        }
    }
}

/// The `--relay-hop UPSTREAM` (or `--relay-hop socks`) child: relays every connection until
/// stdin reaches EOF (its parent gone or done), as the transports do with
/// TOR_PT_EXIT_ON_STDIN_CLOSE.
pub fn serve_hop(upstream: Upstream) -> io::Result<()> {
    launch::helper_runtime()?.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{READY} {}", listener.local_addr()?);
        relay_each(listener, upstream).await
    })
}

/// Relays every connection `listener` accepts to `upstream`, each in its own task.
async fn relay_each(listener: TcpListener, upstream: Upstream) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(async move {
                    let relayed = match upstream {
                        Upstream::Fixed(addr) => relay(inbound, addr).await,
                        Upstream::Socks => relay_socks(inbound).await,
                    };
                    if let Err(e) = relayed {
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

/// Relays one connection to `upstream`.
async fn relay(inbound: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let outbound = TcpStream::connect(upstream).await?;
    copy(inbound, outbound).await
}

/// Copies one connection both ways with tokio's default buffers (8 KiB each way): the chains
/// are the baseline for short and idle connections, where large buffers would only add memory.
/// The bulk baseline is the socat chain, with buffers as large as water-pt's reads.
async fn copy(mut inbound: TcpStream, mut outbound: TcpStream) -> io::Result<()> {
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}

/// Answers a client's SOCKS5 handshake (any credentials) the way water-pt's client side does,
/// connects where its CONNECT asks, and then copies as [`relay`] does. The success reply goes
/// out once the connection is up, as water-pt sends it once the module's is.
async fn relay_socks(inbound: TcpStream) -> io::Result<()> {
    let request = water_pt::socks::accept(inbound, |_| Ok(()))
        .await
        .map_err(io::Error::other)?;
    let target = match request.target {
        TargetAddr::Ip(addr) => addr,
        TargetAddr::Domain(..) => {
            request
                .reply_failure(Reply::AddressTypeNotSupported)
                .await?;
            return Err(io::Error::other(
                "the SOCKS hop relays to IP addresses only",
            ));
        }
    };
    let outbound = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            request.reply_failure(Reply::ConnectionRefused).await?;
            return Err(e);
        }
    };
    let (inbound, ()) = request.reply_success().await?;
    copy(inbound, outbound).await
}

/// Starts one hop relaying to `upstream`; returns it with the address it listens on.
pub fn start_hop(upstream: Upstream, log: &Path) -> io::Result<(ManagedPt, SocketAddr)> {
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
        let (far, far_addr) = listen().await;
        let (second, second_addr) = listen().await;
        let (first, first_addr) = listen().await;
        tokio::spawn(relay_each(second, Upstream::Fixed(far_addr)));
        tokio::spawn(relay_each(first, Upstream::Fixed(second_addr)));

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

    /// The SOCKS hop takes a tor-style handshake with bridge arguments, connects where the
    /// CONNECT asks and carries bytes both ways; a CONNECT to a closed port gets REP 5.
    #[tokio::test]
    async fn socks_hop_connects_where_asked_and_refuses_what_it_cannot_reach() {
        let (far, far_addr) = listen().await;
        let (hop, hop_addr) = listen().await;
        tokio::spawn(relay_each(hop, Upstream::Socks));

        let args = [("water-wasm".to_string(), "plain.wasm".to_string())];
        let route = crate::route::Route::socks(hop_addr, &args, far_addr).unwrap();
        let mut client = route.open().await.unwrap().stream;
        let (mut end, _) = far.accept().await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        end.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        end.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");

        // A port nobody listens on: bound, then closed.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let route = crate::route::Route::socks(hop_addr, &args, closed).unwrap();
        let err = route.open().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(err.to_string().contains("REP 5"), "{err}");
    }

    #[test]
    fn hop_upstream_parses_an_address_or_socks_and_prints_back() {
        assert_eq!("socks".parse(), Ok(Upstream::Socks));
        assert_eq!(
            "127.0.0.1:9".parse(),
            Ok(Upstream::Fixed("127.0.0.1:9".parse().unwrap()))
        );
        assert!("socks5".parse::<Upstream>().is_err());
        for up in [Upstream::Socks, Upstream::Fixed("[::1]:9".parse().unwrap())] {
            assert_eq!(up.to_string().parse(), Ok(up));
        }
    }

    /// A listener on a free loopback port, and its address.
    async fn listen() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }
}
