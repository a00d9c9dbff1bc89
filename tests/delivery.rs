//! Module delivery with real processes and sockets: a `water-pt` client that lacks a pinned
//! module downloads it from a bridge's delivery port (a Shadowsocks session on loopback).
//!
//! Client side: a delivery port in this test process answers as a hostile or broken bridge
//! would (tampered, oversized, truncated, silent, malformed), and each download fails that
//! SOCKS request with a non-zero reply and a log line naming the cause, while the client keeps
//! serving other connections. Concurrent requests for one pin share one download.
//! Bridge side: a real `water-pt` bridge keeps serving downloads and connections while a
//! silent client, garbage, malformed and unknown requests hit its delivery port, serves the
//! module it ran before (rotation), and refuses an address past its rate.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::pt::*;
use common::test_proxies::{socks5_server, spawn_proxy, BND_V4};
use common::{echo_server, module, module_path, roundtrip, runtime, sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use water_pt::pt::delivery::wire::{
    read_full, read_response, Request, Response, ResponseHead, Status, REQUEST_LEN,
};
use water_pt::pt::delivery::{client_config, delivery_module, server_config};
use water_pt::{Dialer, Listener, Runtime};

/// 32 bytes as unpadded base64url, like a bridge's delivery key.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

/// What the test's delivery port does after reading a request.
#[derive(Clone)]
enum Answer {
    /// Sends these bytes as the module, once `go` is notified (if given).
    Module(Arc<Vec<u8>>, Option<Arc<Notify>>),
    /// Sends these bytes as they are.
    Raw(Vec<u8>),
    /// Says nothing and keeps the connection open.
    Silence,
}

/// A delivery port keyed with [`KEY`] answering every request with `answer`; its address
/// and the number of requests it has read.
async fn delivery_port(rt: &Runtime, answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    let ss = delivery_module(rt).unwrap();
    let listener = Listener::bind(rt, ss, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_config(Some(server_config(KEY)));
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (answer, count) = (answer.clone(), count.clone());
            tokio::spawn(async move {
                let mut req = [0u8; REQUEST_LEN];
                if read_full(&mut s, &mut req).await.unwrap_or(0) < REQUEST_LEN {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Answer::Module(bytes, go) => {
                        if let Some(go) = go {
                            go.notified().await;
                        }
                        let head = ResponseHead::new(Status::Ok, bytes.len() as u32);
                        let _ = s.write_all(&head.encode()).await;
                        let _ = s.write_all(&bytes).await;
                    }
                    Answer::Raw(bytes) => {
                        let _ = s.write_all(&bytes).await;
                    }
                    Answer::Silence => {
                        let mut rest = Vec::new();
                        let _ = s.read_to_end(&mut rest).await;
                        return;
                    }
                }
                let _ = s.shutdown().await;
                // Hold the session until the client closes.
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    (addr, requests)
}

/// A bridge running `rot` whose decoded connections are echoed: the place a client that
/// downloaded `rot` connects to.
async fn rot_bridge(rt: &Runtime) -> SocketAddr {
    let rot = rt.load(&module("rot")).unwrap();
    let listener = Listener::bind(rt, rot, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn rot_pin() -> String {
    hex::encode(sha256(&module("rot")))
}

/// The SOCKS arguments of a line pinning `rot` with its delivery port at `fetch`.
fn line_args(fetch: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("water-sha256", rot_pin()),
        ("water-fetch", fetch.port().to_string()),
        ("water-fetch-key", KEY.to_string()),
    ]
}

async fn socks_line(socks: SocketAddr, fetch: SocketAddr, target: SocketAddr) -> Socks {
    let args = line_args(fetch);
    let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
    socks_with_args(socks, &args, target).await
}

/// A plain connection through the client still works.
async fn client_still_serves(socks: SocketAddr, echo: SocketAddr) {
    let mut s = socks_connect(socks, None, Target::Ip(echo)).await.stream();
    assert_eq!(roundtrip(&mut s, b"still here").await, b"still here");
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_broken_delivery_ports_fail_only_their_request() {
    let rt = runtime();
    let echo = echo_server().await;
    let bridge = rot_bridge(&rt).await;
    let dir = TempDir::new("delivery-hostile");
    let env = client_env(&dir.state());
    let mut client = PtChild::spawn(&env_refs(&env), &["--fetch-timeout-secs", "2"]);
    let socks = client.client_ready();
    let state = std::path::PathBuf::from(dir.state());

    // Tampered: a valid module, but not the pinned one. Refused before it is loaded: it is
    // neither kept nor compiled (the compiled-module cache has no entry for it).
    let tampered = module("xor");
    let (port, _) = delivery_port(&rt, Answer::Module(Arc::new(tampered.clone()), None)).await;
    let r = socks_line(socks, port, bridge).await;
    assert!(matches!(r, Socks::Refused(1)), "{r:?}");
    client.wait_stderr("not the pinned one; refused");
    let xor_hex = hex::encode(sha256(&tampered));
    assert!(
        !files_in(&state.join("cache"))
            .iter()
            .any(|f| f.starts_with(&xor_hex)),
        "the tampered module was compiled: {:?}",
        files_in(&state.join("cache"))
    );
    assert!(files_in(&state.join("watm")).is_empty());
    client_still_serves(socks, echo).await;

    // Oversized: the head announces more than 16 MiB; refused from the head alone.
    let mut huge = ResponseHead::new(Status::Ok, (16 << 20) + 1)
        .encode()
        .to_vec();
    huge.extend_from_slice(&[0; 1000]);
    let (port, _) = delivery_port(&rt, Answer::Raw(huge)).await;
    let r = socks_line(socks, port, bridge).await;
    assert!(matches!(r, Socks::Refused(1)), "{r:?}");
    client.wait_stderr("the limit is 16777216");
    client_still_serves(socks, echo).await;

    // Truncated: half of the announced module, then the end.
    let rot = module("rot");
    let mut half = ResponseHead::new(Status::Ok, rot.len() as u32)
        .encode()
        .to_vec();
    half.extend_from_slice(&rot[..rot.len() / 2]);
    let (port, _) = delivery_port(&rt, Answer::Raw(half)).await;
    let r = socks_line(socks, port, bridge).await;
    assert!(matches!(r, Socks::Refused(1)), "{r:?}");
    client.wait_stderr("the response ended after");
    client_still_serves(socks, echo).await;

    // Malformed: not a delivery response at all.
    let (port, _) =
        delivery_port(&rt, Answer::Raw(b"HTTP/1.1 200 OK\r\n\r\nmodule".to_vec())).await;
    let r = socks_line(socks, port, bridge).await;
    assert!(matches!(r, Socks::Refused(1)), "{r:?}");
    client.wait_stderr("malformed response");
    client_still_serves(socks, echo).await;

    // A refusal is passed on with the bridge's reason.
    let (port, _) = delivery_port(
        &rt,
        Answer::Raw(ResponseHead::new(Status::RateLimited, 60).encode().to_vec()),
    )
    .await;
    let r = socks_line(socks, port, bridge).await;
    assert!(matches!(r, Socks::Refused(1)), "{r:?}");
    client.wait_stderr("too many downloads from this address");

    // Slow: the bridge never answers. While that download waits, other connections are
    // served; then it fails at the --fetch-timeout-secs limit.
    let (port, asked) = delivery_port(&rt, Answer::Silence).await;
    let slow = tokio::spawn(async move { socks_line(socks, port, bridge).await });
    client.wait_stderr("downloading it from the bridge's delivery port");
    client_still_serves(socks, echo).await;
    let r = slow.await.unwrap();
    assert!(matches!(r, Socks::Refused(1)), "{r:?}");
    client.wait_stderr("no complete answer within 2s");
    assert_eq!(asked.load(Ordering::SeqCst), 1);

    // Nothing was kept, and the module still is not there for a line without water-fetch.
    assert!(files_in(&state.join("watm")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_download_then_use_the_cached_module() {
    let rt = runtime();
    let bridge = rot_bridge(&rt).await;
    let go = Arc::new(Notify::new());
    let (port, requests) = delivery_port(
        &rt,
        Answer::Module(Arc::new(module("rot")), Some(go.clone())),
    )
    .await;
    let dir = TempDir::new("delivery-shared");
    let env = client_env(&dir.state());
    let mut client = PtChild::spawn(&env_refs(&env), &[]);
    let socks = client.client_ready();

    let first = tokio::spawn(async move { socks_line(socks, port, bridge).await });
    let second = tokio::spawn(async move { socks_line(socks, port, bridge).await });
    // Both are waiting: one for the bridge, the other for that same download.
    client.wait_stderr("waiting for the download already under way");
    go.notify_one();
    for request in [first, second] {
        let mut s = request.await.unwrap().stream();
        assert_eq!(roundtrip(&mut s, b"through rot").await, b"through rot");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1, "one download for both");
    let kept = std::path::Path::new(&dir.state()).join(format!("watm/{}.wasm", rot_pin()));
    assert_eq!(std::fs::read(&kept).unwrap(), module("rot"));

    // A new client process with the same state directory finds the module on disk.
    drop(client);
    let mut client = PtChild::spawn(&env_refs(&env), &[]);
    let socks = client.client_ready();
    let mut s = socks_line(socks, port, bridge).await.stream();
    assert_eq!(roundtrip(&mut s, b"cached").await, b"cached");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "no second download");
}

/// One request on the bridge's delivery port at `fetch`, through the library's dialer.
async fn ask(rt: &Runtime, fetch: SocketAddr, key: &str, request: &[u8]) -> Response {
    let ss = delivery_module(rt).unwrap();
    let mut s = Dialer::new(rt, ss)
        .with_config(Some(client_config(key)))
        .dial("tcp", &fetch.to_string())
        .await
        .unwrap();
    s.write_all(request).await.unwrap();
    tokio::time::timeout(WAIT, read_response(&mut s, 16 << 20))
        .await
        .expect("the bridge answers")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_serves_downloads_beside_bad_clients_and_limits_each_address() {
    let rt = runtime();
    let orport = echo_server().await;
    let dir = TempDir::new("delivery-bridge");
    let mut env = server_env(&dir.state(), &orport.to_string());
    env.push((
        "TOR_PT_SERVER_TRANSPORT_OPTIONS",
        format!(
            "water:water-wasm={};water:water-serve-also={};water:water-fetch-rate=7",
            module_path("rot").display(),
            module_path("xor").display()
        ),
    ));
    let mut bridge = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(bridge.line(), "VERSION 1");
    let (addr, args) = bridge.smethod();
    let arg = |k: &str| {
        args.split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {args}"))
            .to_owned()
    };
    assert_eq!(arg("water-sha256"), rot_pin());
    let fetch = SocketAddr::new(addr.ip(), arg("water-fetch").parse().unwrap());
    let key = arg("water-fetch-key");
    let pin: [u8; 32] = sha256(&module("rot"));

    // 1: a client that connects and says nothing, held open for the whole test.
    let _silent = TcpStream::connect(fetch).await.unwrap();
    // 2: bytes that are not a Shadowsocks session: the bridge closes the connection.
    let mut garbage = TcpStream::connect(fetch).await.unwrap();
    garbage.write_all(&[0x5a; 300]).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(WAIT, garbage.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "garbage is dropped");
    // 3: a session whose request is not one.
    let junk = [b'x'; REQUEST_LEN];
    assert_eq!(
        ask(&rt, fetch, &key, &junk).await,
        Response::Refused(Status::BadRequest, 0)
    );
    // 4: a module the bridge does not serve: no file names, only hashes.
    let unknown = Request {
        max_len: 1 << 20,
        sha256: sha256(b"/etc/passwd"),
    };
    assert_eq!(
        ask(&rt, fetch, &key, &unknown.encode()).await,
        Response::Refused(Status::UnknownModule, 0)
    );
    // 5: the module, but smaller than it is.
    let small = Request {
        max_len: 100,
        sha256: pin,
    };
    assert_eq!(
        ask(&rt, fetch, &key, &small.encode()).await,
        Response::Refused(Status::TooLarge, module("rot").len() as u32)
    );
    // 6: rotation: the module named by water-serve-also (the one a bridge ran before) is
    // served too, for lines that still pin it.
    let previous = Request {
        max_len: 1 << 20,
        sha256: sha256(&module("xor")),
    };
    assert_eq!(
        ask(&rt, fetch, &key, &previous.encode()).await,
        Response::Module(module("xor"))
    );
    // 7: a real client with nothing but the line downloads the module and gets through.
    let client_dir = TempDir::new("delivery-bridge-client");
    let cenv = client_env(&client_dir.state());
    let mut client = PtChild::spawn(&env_refs(&cenv), &[]);
    let socks = client.client_ready();
    let pairs: Vec<(String, String)> = args
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut s = socks_with_args(socks, &pairs, addr).await.stream();
    assert_eq!(roundtrip(&mut s, b"via rot").await, b"via rot");
    let logged = loop {
        let line = bridge.line();
        if line.contains("2 downloads since start") {
            break line;
        }
    };
    assert!(logged.starts_with("LOG SEVERITY=notice"), "{logged}");
    assert!(
        logged.contains(&format!("module {} sent", &rot_pin()[..12])),
        "{logged}"
    );
    assert!(!logged.contains("127.0.0.1"), "no client address: {logged}");
    // 8: past the rate: refused, saying how long to wait.
    let full = Request {
        max_len: 1 << 20,
        sha256: pin,
    };
    match ask(&rt, fetch, &key, &full.encode()).await {
        Response::Refused(Status::RateLimited, secs) => assert!(secs > 3000, "{secs}"),
        other => panic!("not rate limited: {other:?}"),
    }
    // The transport itself is untouched by all of it.
    let mut s = socks_with_args(socks, &pairs, addr).await.stream();
    assert_eq!(roundtrip(&mut s, b"again").await, b"again");
}

/// The download is dialed like any bridge connection: through tor's `TOR_PT_PROXY`. (The test
/// proxy puts a banner in front of the bridge's bytes, which no Shadowsocks session survives,
/// so the download then fails; what matters is where it went.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_goes_through_tor_pt_proxy() {
    let rt = runtime();
    let (port, _) = delivery_port(&rt, Answer::Module(Arc::new(module("rot")), None)).await;
    let (proxy, asked) = spawn_proxy(port, socks5_server(None, 0, BND_V4.to_vec()));
    let dir = TempDir::new("delivery-proxy");
    let mut env = client_env(&dir.state());
    env.push(("TOR_PT_PROXY", format!("socks5://{proxy}")));
    let mut client = PtChild::spawn(&env_refs(&env), &[]);
    assert_eq!(client.line(), "VERSION 1");
    assert_eq!(client.line(), "PROXY DONE");
    let socks = client.cmethod();
    let bridge: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let r = socks_line(socks, port, bridge).await;
    let record = asked.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(
        record,
        format!("socks5 method=0 atyp=1 target=127.0.0.1:{}", port.port())
    );
    assert!(matches!(r, Socks::Refused(1)), "{r:?}");
    client.wait_stderr("download from the bridge failed");
}
