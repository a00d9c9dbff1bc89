//! A bridge under a connection flood: `water-pt server` with the Shadowsocks
//! module (which waits for an authenticated first chunk) while many silent
//! connections and connections sending random bytes are open at once. A real
//! client still gets through, and once the flood is gone the process is back
//! to its baseline of descriptors, threads and memory.
//!
//! This is the bounded version for `cargo test` (a debug build on a small
//! machine): 300 silent and 50 random-byte connections. The soak tool runs
//! the full shape (10,000 silent) against a release build and checks the
//! 2-second time-to-echo target; here only completion is asserted and the
//! time is printed.

mod common;

use common::pt::TempDir;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use water_pt::{Dialer, Runtime, RuntimeConfig};

const SILENT: usize = 300;
const NOISY: usize = 50;
const MIB: usize = 1 << 20;
const PASSWORD: &str = "flood test secret";

/// Descriptors, threads and resident memory (KiB) of process `pid`.
fn usage(pid: u32) -> (usize, usize, u64) {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .unwrap()
            .count()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (count("fd"), count("task"), rss)
}

/// [`usage`] once the descriptor count has stopped changing (the server's side of a
/// connection the client just closed ends a moment later), waiting 5 s at most.
async fn steady_usage(pid: u32) -> (usize, usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = usage(pid);
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = usage(pid);
        same = if now.0 == last.0 { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Echoes 1 MiB of random bytes through `stream` and checks it came back intact.
async fn echo_one_mib(stream: water_pt::WaterStream) {
    let data = random_bytes(MIB, 42);
    let expected = sha256(&data);
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w
    });
    let mut back = vec![0u8; MIB];
    r.read_exact(&mut back).await.unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(sha256(&back), expected, "payload corrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_gets_through_a_flood_and_the_flood_leaves_nothing() {
    let echo = echo_server().await;
    let dir = TempDir::new("flood");
    let config = dir.path().join("server.json");
    std::fs::write(
        &config,
        format!(r#"{{"method":"chacha20-ietf-poly1305","password":"{PASSWORD}"}}"#),
    )
    .unwrap();
    let ss = module_path("shadowsocks");
    let echo_s = echo.to_string();
    let mut server = Child::spawn(&[
        "server",
        "--no-cache",
        "--wasm",
        ss.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--forward",
        &echo_s,
    ]);
    let addr = server.listening_addr();
    let pid = server.child.id();

    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let client_config = format!(
        r#"{{"method":"chacha20-ietf-poly1305","password":"{PASSWORD}","target":"{echo}"}}"#
    );
    let dialer = Dialer::new(&rt, rt.load(&module("shadowsocks")).unwrap())
        .with_config(Some(client_config.into_bytes()));
    // Baseline after one real connection, so the module is compiled and the
    // runtime's one-time allocations are made.
    echo_one_mib(dialer.dial("tcp", &addr.to_string()).await.unwrap()).await;
    rt.wait_idle().await;
    let base = steady_usage(pid).await;

    // Two floods: the second shows that what the first left resident is
    // reused, not leaked.
    let mut after = Vec::new();
    for round in 0..2 {
        after.push(flood_round(&dialer, addr, pid, base, round).await);
    }
    // Descriptors and threads are back to the baseline (checked per round). Memory is
    // back near it: the instance pool keeps at most its resident budget of unused slots
    // for the next connections, and the heap keeps the top of each arena; neither grows
    // with the flood (before the budget, each of the 350 slots kept about 74 KiB, 25 MB
    // in all). And the second flood adds nothing to the first.
    let (first, second) = (after[0].2, after[1].2);
    let allowed = base.2 + (water_pt::runtime::RESIDENT_BUDGET >> 10) as u64 + HEAP_SLACK_KIB;
    for (round, rss) in [first, second].into_iter().enumerate() {
        assert!(
            rss <= allowed,
            "RSS {rss} KiB after flood {round}: more than the baseline {} KiB + the pool's \
             budget + {HEAP_SLACK_KIB} KiB",
            base.2
        );
    }
    // A leak grows with the connections served, so the second flood is allowed a fixed amount
    // per connection over the first rather than a share of the whole process.
    let leak_allowed = LEAK_SLACK_KIB_PER_CONN * (SILENT + NOISY) as u64;
    assert!(
        second <= first + leak_allowed,
        "RSS grew from {first} KiB after the first flood to {second} KiB after the second: \
         more than {LEAK_SLACK_KIB_PER_CONN} KiB for each of its {} connections",
        SILENT + NOISY
    );
}

/// How much more the heap may keep after the second flood than after the first, per flood
/// connection. Where the allocator places what it keeps varies from run to run: the same
/// test alone measured the second flood 4,256 KiB above and 3,968 KiB below the first, and
/// 5,128 KiB above with other builds running (up to 15 KiB per connection). A leak of 24 KiB
/// or more per connection still shows.
const LEAK_SLACK_KIB_PER_CONN: u64 = 24;

/// What the heap may keep after a flood beyond the baseline: the tops of its
/// arenas (measured: 2-11 MB after floods of 2,200 and 10,200 connections).
const HEAP_SLACK_KIB: u64 = 12 << 10;

/// Opens the flood, echoes 1 MiB through it with a real client, closes it and
/// waits (bounded) until descriptors and threads are back to `base`; returns
/// the usage then.
async fn flood_round(
    dialer: &Dialer,
    addr: std::net::SocketAddr,
    pid: u32,
    base: (usize, usize, u64),
    round: usize,
) -> (usize, usize, u64) {
    // All connections open at once, the noisy ones having sent their bytes.
    let mut flood = Vec::with_capacity(SILENT + NOISY);
    for _ in 0..SILENT {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    for i in 0..NOISY {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&random_bytes(200 + i * 7, i as u64))
            .await
            .unwrap();
        flood.push(s);
    }

    let tried = Instant::now();
    let echoed = tokio::time::timeout(Duration::from_secs(60), async {
        let s = dialer.dial("tcp", &addr.to_string()).await.unwrap();
        echo_one_mib(s).await;
    })
    .await;
    let took = tried.elapsed();
    assert!(echoed.is_ok(), "no echo through the flood within 60 s");
    // Every flood connection accepted and served (one descriptor each at least), bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut during = usage(pid);
    while during.0 < base.0 + SILENT + NOISY && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        during = usage(pid);
    }
    eprintln!(
        "round {round}, flood of {SILENT} silent + {NOISY} noisy: 1 MiB echoed {took:?} after \
         trying; server fds/threads/RSS(KiB) {base:?} before, {during:?} during"
    );
    assert!(
        during.0 >= base.0 + SILENT + NOISY,
        "the flood connections were not all open: {during:?}"
    );

    drop(flood);
    // Session threads wait up to their keepalive (10 s) for new work before
    // they exit; descriptors go at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = usage(pid);
    while (now.0 > base.0 || now.1 > base.1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = usage(pid);
    }
    eprintln!("round {round}, after the flood: {now:?}");
    assert!(now.0 <= base.0, "descriptors left: {now:?} vs {base:?}");
    assert!(now.1 <= base.1, "threads left: {now:?} vs {base:?}");
    now
}
