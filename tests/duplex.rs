//! Full-duplex bulk through a dialer + listener pair: both modules write toward each other at
//! once, so both network paths fill at the same time.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use water_pt::{Dialer, Listener};

const LEN: usize = 32 << 20;

/// Writes `LEN` bytes of seed `mine` while reading `LEN` bytes and checking them against seed
/// `theirs`. Returns the stream: dropping it stops its module, which must wait until the other
/// side has read everything (bytes written here may still be on their way through the module).
async fn both_ways<S: AsyncRead + AsyncWrite + Send + 'static>(
    s: S,
    mine: u64,
    theirs: u64,
) -> impl Send {
    let (mut r, mut w) = tokio::io::split(s);
    let out = random_bytes(LEN, mine);
    let writer = tokio::spawn(async move {
        w.write_all(&out).await.unwrap();
        w
    });
    let mut got = vec![0u8; LEN];
    r.read_exact(&mut got).await.unwrap();
    assert!(got == random_bytes(LEN, theirs), "bytes differ");
    (r, writer.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_pair_carries_bulk_both_ways_at_once() {
    // Small socket buffers, so writes are cut short often.
    let rt = runtime_with(|l| l.socket_buffer = Some(16 << 10));
    let watm = rt.load(&module("plain")).unwrap();
    let listener = Listener::bind(&rt, watm.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        both_ways(s, 2, 1).await
    });
    let client = Dialer::new(&rt, watm)
        .dial("tcp", &addr.to_string())
        .await
        .unwrap();
    let done = async {
        let ours = both_ways(client, 1, 2).await;
        let theirs = server.await.unwrap();
        drop((ours, theirs));
    };
    tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("no deadlock");
}

/// An echo in front of the listener's module: the peer reads only while its writes back go
/// through, as `tokio::io::copy` (and any simple echo) does. A module that waited in a write
/// toward it, instead of reading what it echoed, would leave both sides waiting on each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listener_serves_an_echo_that_reads_only_while_it_can_write() {
    let rt = runtime();
    let watm = rt.load(&module("plain")).unwrap();
    let listener = Listener::bind(&rt, watm, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = tokio::io::split(s);
        // Ends with the connection; how it ends is not what this test is about.
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = client.into_split();
    let sent = random_bytes(LEN, 3);
    // No half-close: a v1 module ends the connection when either side reaches end of stream.
    let writer = tokio::spawn(async move { w.write_all(&sent).await.map(|()| w) });
    let done = async {
        let mut got = vec![0u8; LEN];
        r.read_exact(&mut got).await.unwrap();
        assert!(got == random_bytes(LEN, 3), "bytes differ");
        writer.await.unwrap().unwrap();
    };
    tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("no deadlock");
}
