//! WATM v0 modules in every role, in-process: the `plain-v0` and `xor-v0`
//! modules as dialer, listener and relay, 1 MiB hash-checked each way, and
//! mixed pairs of a v0 and a v1 module of the same transport.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use water_pt::runtime::{Generation, SessionEnd};
use water_pt::{Dialer, Listener, Relay, Role, Runtime};

const MIB: usize = 1 << 20;
/// The byte the `xor` modules XOR every byte with.
const XOR_KEY: u8 = 0x5a;

fn xor(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b ^ XOR_KEY).collect()
}

/// What a module puts on the wire for `data`.
fn wire(module: &str, data: &[u8]) -> Vec<u8> {
    if module.starts_with("xor") {
        xor(data)
    } else {
        data.to_vec()
    }
}

/// Sends `a_sends` from `a` and `b_sends` from `b` at once; checks by hash
/// that `b` reads `b_expects` and `a` reads `a_expects`.
async fn exchange<A, B>(
    a: A,
    b: B,
    a_sends: &[u8],
    b_expects: &[u8],
    b_sends: &[u8],
    a_expects: &[u8],
) where
    A: AsyncRead + AsyncWrite + Send + 'static,
    B: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (ab, ba) = (a_sends.to_vec(), b_sends.to_vec());
    let wa = tokio::spawn(async move { aw.write_all(&ab).await.map(|_| aw) });
    let wb = tokio::spawn(async move { bw.write_all(&ba).await.map(|_| bw) });
    let mut got_b = vec![0u8; b_expects.len()];
    let mut got_a = vec![0u8; a_expects.len()];
    let (rb, ra) = tokio::join!(br.read_exact(&mut got_b), ar.read_exact(&mut got_a));
    rb.expect("read at b");
    ra.expect("read at a");
    wa.await.unwrap().expect("write at a");
    wb.await.unwrap().expect("write at b");
    assert_eq!(sha256(&got_b), sha256(b_expects), "a -> b");
    assert_eq!(sha256(&got_a), sha256(a_expects), "b -> a");
}

/// A water client (`client` module, dialer) to a water server (`server`
/// module, listener) carrying 1 MiB each way.
async fn pair_carries_one_mib(rt: &Runtime, client: &str, server: &str) {
    let listener = Listener::bind(
        rt,
        rt.load(&module(server)).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let dialer = Dialer::new(rt, rt.load(&module(client)).unwrap());
    let c = dialer.dial("tcp", &addr.to_string()).await.unwrap();
    let s = accepted.await.unwrap().unwrap();
    let (up, down) = (random_bytes(MIB, 11), random_bytes(MIB, 12));
    exchange(c, s, &up, &up, &down, &down).await;
}

#[tokio::test]
async fn generation_is_told_by_the_exports() {
    let rt = runtime();
    for name in ["plain-v0", "xor-v0"] {
        let watm = rt.load(&module(name)).unwrap();
        assert_eq!(watm.generation(), Generation::V0, "{name}");
        assert_eq!(
            watm.roles(),
            &[Role::Dialer, Role::Listener, Role::Relay],
            "{name}: v0 has no fixed dialer"
        );
    }
    for name in ["plain", "xor"] {
        assert_eq!(
            rt.load(&module(name)).unwrap().generation(),
            Generation::V1,
            "{name}"
        );
    }
    // A v0 module asked for the one role v0 lacks is refused by name.
    let err = Dialer::new(&rt, rt.load(&module("plain-v0")).unwrap())
        .dial_fixed()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fixed dialer") && err.contains("watm_dial_fixed_v1"),
        "{err}"
    );
}

#[tokio::test]
async fn v0_dialer_to_v0_listener_carries_one_mib_each_way() {
    let rt = runtime();
    pair_carries_one_mib(&rt, "plain-v0", "plain-v0").await;
    pair_carries_one_mib(&rt, "xor-v0", "xor-v0").await;
}

#[tokio::test]
async fn mixed_pairs_of_v0_and_v1_modules_of_one_transport() {
    let rt = runtime();
    pair_carries_one_mib(&rt, "xor-v0", "xor").await;
    pair_carries_one_mib(&rt, "plain-v0", "plain").await;
    pair_carries_one_mib(&rt, "xor", "xor-v0").await;
}

/// The v0 dialer and listener put the transformed bytes on the wire: a raw
/// TCP peer sees (and must send) exactly what the transport makes of them.
#[tokio::test]
async fn v0_dialer_and_listener_transform_the_wire() {
    let rt = runtime();
    for name in ["plain-v0", "xor-v0"] {
        let watm = rt.load(&module(name)).unwrap();
        let (data, reply) = (random_bytes(MIB, 21), random_bytes(MIB, 22));

        let (w_data, w_reply) = (wire(name, &data), wire(name, &reply));

        // Dialer: the raw server reads the wire form and answers in it.
        let raw = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = raw.local_addr().unwrap();
        let dialer = Dialer::new(&rt, watm.clone());
        let target = addr.to_string();
        let (c, accepted) = tokio::join!(dialer.dial("tcp", &target), raw.accept());
        let (server, _) = accepted.unwrap();
        exchange(c.unwrap(), server, &data, &w_data, &w_reply, &reply).await;

        // Listener: a raw client speaks the wire form; the stream is decoded.
        let listener = Listener::bind(&rt, watm, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (decoded, _) = accepted.unwrap();
        exchange(client.unwrap(), decoded, &w_data, &data, &reply, &w_reply).await;
    }
}

#[tokio::test]
async fn v0_relay_carries_one_mib_each_way() {
    let rt = runtime();
    for name in ["plain-v0", "xor-v0"] {
        let (data, reply) = (random_bytes(MIB, 31), random_bytes(MIB, 32));
        let remote = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::new(
            &rt,
            rt.load(&module(name)).unwrap(),
            "tcp",
            &remote.local_addr().unwrap().to_string(),
        )
        .unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client, inbound) = tokio::join!(
            TcpStream::connect(front.local_addr().unwrap()),
            front.accept()
        );
        let (session, far) = tokio::join!(relay.serve(inbound.unwrap().0), remote.accept());
        let session = session.unwrap();
        // The relay's accepted side is the caller side: the client's bytes
        // are encoded towards the remote, the remote's decoded back.
        exchange(
            client.unwrap(),
            far.unwrap().0,
            &data,
            &wire(name, &data),
            &wire(name, &reply),
            &reply,
        )
        .await;
        let end = tokio::time::timeout(Duration::from_secs(10), session.finished())
            .await
            .expect("the relay ends once both sides closed");
        assert_eq!(end, SessionEnd::Closed, "{name}");
    }
}

#[tokio::test]
async fn v0_sessions_stop_when_asked() {
    let rt = runtime();
    let echo = echo_server().await;
    let dialer = Dialer::new(&rt, rt.load(&module("xor-v0")).unwrap());
    let mut open = Vec::new();
    for i in 0..8u64 {
        let mut s = dialer.dial("tcp", &echo.to_string()).await.unwrap();
        let msg = random_bytes(4096, i);
        assert_eq!(roundtrip(&mut s, &msg).await, msg);
        open.push(s);
    }
    assert_eq!(rt.live_connections(), 8);
    for s in &open {
        s.session().stop();
    }
    for s in &open {
        let end = tokio::time::timeout(Duration::from_secs(5), s.session().finished())
            .await
            .expect("a v0 module honours its cancel fd");
        assert_eq!(end, SessionEnd::Cancelled);
    }
    drop(open);
    tokio::time::timeout(Duration::from_secs(5), rt.wait_idle())
        .await
        .expect("every slot is released");
}
