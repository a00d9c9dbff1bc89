//! The I/O loop of the reference TinyGo v1 SDK, through the `reference-loop` fixture:
//! non-blocking descriptors, 1 KiB reads, `EAGAIN` from `fd_write` retried in a tight
//! loop, and a short write treated as fatal. Bulk traffic fills socket buffers, which is
//! exactly when a host that returns short writes breaks such modules.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use water_pt::{Dialer, Listener};

/// Bytes carried from the client's caller to the server's caller.
const TOTAL: u64 = 256 << 20;
const CHUNK: usize = 256 << 10;

/// Byte `offset..offset + out.len()` of a fixed pseudo-random stream (splitmix64 of the
/// 8-byte block number), so the reader can check every byte without keeping a copy.
fn stream_bytes(offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut filled = 0;
    while filled < out.len() {
        let mut z = (pos / 8)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let word = (z ^ (z >> 31)).to_le_bytes();
        let skip = (pos % 8) as usize;
        let take = (8 - skip).min(out.len() - filled);
        out[filled..filled + take].copy_from_slice(&word[skip..skip + take]);
        filled += take;
        pos += take as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_and_server_pair_carries_256_mib_intact() {
    let rt = runtime();
    let watm = rt.load(&module("reference-loop")).unwrap();
    let listener = Listener::bind(&rt, watm.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = vec![0u8; CHUNK];
        let mut want = vec![0u8; CHUNK];
        let mut received = 0u64;
        loop {
            let n = s.read(&mut got).await.unwrap();
            if n == 0 {
                return received;
            }
            stream_bytes(received, &mut want[..n]);
            assert!(
                got[..n] == want[..n],
                "bytes {received}..{} differ",
                received + n as u64
            );
            received += n as u64;
        }
    });

    let mut client = Dialer::new(&rt, watm)
        .dial("tcp", &addr.to_string())
        .await
        .unwrap();
    let mut chunk = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < TOTAL {
        stream_bytes(sent, &mut chunk);
        if let Err(e) = client.write_all(&chunk).await {
            panic!(
                "the client connection failed after {sent} bytes ({e}); ended: {:?}",
                client.session().finished().await
            );
        }
        sent += CHUNK as u64;
    }
    client.shutdown().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("the server side ends")
        .unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(
        client.session().finished().await,
        water_pt::runtime::SessionEnd::Closed,
        "the client module ends on the caller's end of stream"
    );
}

/// A caller that stops reading for a while (three times the test runtime's compute limit)
/// leaves the module retrying a refused write the whole time. Those retries wait for room,
/// so they neither burn a core nor count as computing: the connection survives the pause
/// and delivers every byte once the caller reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_pauses_reading_loses_nothing() {
    const LEN: usize = 8 << 20;
    let rt = runtime();
    let echo = echo_server().await;
    let stream = Dialer::new(&rt, rt.load(&module("reference-loop")).unwrap())
        .dial("tcp", &echo.to_string())
        .await
        .unwrap();
    let session = stream.session().clone();
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let mut chunk = vec![0u8; CHUNK];
        let mut sent = 0u64;
        while sent < LEN as u64 {
            stream_bytes(sent, &mut chunk);
            w.write_all(&chunk).await.unwrap();
            sent += CHUNK as u64;
        }
        w
    });
    // The pause under test: the echo path fills and the module spins on its write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !session.is_finished(),
        "ended during the pause: {:?}",
        session.finished().await
    );
    let mut got = vec![0u8; LEN];
    tokio::time::timeout(Duration::from_secs(30), r.read_exact(&mut got))
        .await
        .expect("the echo comes back")
        .unwrap();
    let mut want = vec![0u8; LEN];
    stream_bytes(0, &mut want);
    assert!(got == want, "the echo differs");
    drop(writer.await.unwrap());
}
