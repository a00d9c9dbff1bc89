//! The Extended ORPort client exchange against a fake tor whose answers the fuzzer chooses.
//!
//! Input: `flags(1) | auth_len(2, LE) | auth bytes | server nonce(32) | wrong hash(32) |
//! status(1) | command stream...`. The fake tor sends the auth type list, then either the
//! correct ServerHash (flags bit 0) or the fuzzer's, the status byte, then the command stream.
//!
//! Properties: nothing panics or hangs; the outcome matches an independent model of the spec
//! (which step fails and how); the ClientHash is the spec's HMAC and is only sent after a valid
//! ServerHash; the commands sent are USERADDR, TRANSPORT, DONE; and on success every byte tor
//! sent after OKAY is still unread in the stream.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use water_pt::extor::ExtOrError;
use water_pt::fuzzing::extor_handshake;

const COOKIE: [u8; 32] = [0x5a; 32];
const SERVER_LABEL: &[u8] = b"ExtORPort authentication server-to-client hash";
const CLIENT_LABEL: &[u8] = b"ExtORPort authentication client-to-server hash";

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn mac(label: &[u8], cn: &[u8], sn: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&COOKIE).unwrap();
    m.update(label);
    m.update(cn);
    m.update(sn);
    m.finalize().into_bytes().into()
}

struct Input<'a> {
    correct_hash: bool,
    client_addr: SocketAddr,
    auth: &'a [u8],
    server_nonce: [u8; 32],
    wrong_hash: [u8; 32],
    status: u8,
    rest: &'a [u8],
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Some(head)
}

fn decode(mut data: &[u8]) -> Option<Input<'_>> {
    let flags = take(&mut data, 1)?[0];
    let len = take(&mut data, 2)?;
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    let len = len.min(data.len());
    let auth = take(&mut data, len)?;
    let server_nonce = take(&mut data, 32)?.try_into().ok()?;
    let wrong_hash = take(&mut data, 32)?.try_into().ok()?;
    let status = take(&mut data, 1)?[0];
    let client_addr = if flags & 2 == 0 {
        "192.0.2.9:5555".parse().unwrap()
    } else {
        "[2001:db8::9]:443".parse().unwrap()
    };
    Some(Input {
        correct_hash: flags & 1 == 1,
        client_addr,
        auth,
        server_nonce,
        wrong_hash,
        status,
        rest: data,
    })
}

/// What the spec says the client must make of the input.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Success, with these bytes left for the client.
    Ok(Vec<u8>),
    Io,
    Protocol,
    NoSafeCookie,
    ServerHashMismatch,
    AuthRejected(u8),
    Denied,
}

fn model(input: &Input<'_>) -> (Expect, bool) {
    // Auth type list: types until a 0, at most 255 of them.
    let Some(end) = input.auth.iter().position(|&b| b == 0) else {
        let e = if input.auth.len() > 255 {
            Expect::Protocol
        } else {
            Expect::Io
        };
        return (e, false);
    };
    if end > 255 {
        return (Expect::Protocol, false);
    }
    if !input.auth[..end].contains(&1) {
        return (Expect::NoSafeCookie, false);
    }
    if !input.correct_hash {
        // Unless the fuzzer guessed the HMAC, which it will not.
        return (Expect::ServerHashMismatch, false);
    }
    if input.status != 1 {
        return (Expect::AuthRejected(input.status), true);
    }
    let mut rest = input.rest;
    loop {
        if rest.len() < 4 {
            return (Expect::Io, true);
        }
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if rest.len() < 4 + len {
            return (Expect::Io, true);
        }
        rest = &rest[4 + len..];
        match kind {
            0x1000 => return (Expect::Ok(rest.to_vec()), true),
            0x1001 => return (Expect::Denied, true),
            _ => {}
        }
    }
}

fn expected_commands(addr: SocketAddr) -> Vec<u8> {
    let text = addr.to_string().into_bytes();
    let mut out = vec![0, 1];
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(b"\x00\x02\x00\x05water\x00\x00\x00\x00");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = decode(data) else {
        return;
    };
    let (want, authenticates) = model(&input);
    rt().block_on(async {
        let (mut client_end, mut tor) = tokio::io::duplex(1 << 20);
        let client = async move {
            extor_handshake(&mut client_end, &COOKIE, input.client_addr, "water")
                .await
                .map(|()| client_end)
        };
        let fake_tor = async {
            let mut sent_client_hash = false;
            let _: std::io::Result<()> = async {
                // tor sends the list once, up to its terminating 0; a list without one is
                // all tor ever says.
                match input.auth.iter().position(|&b| b == 0) {
                    Some(end) => tor.write_all(&input.auth[..=end]).await?,
                    None => {
                        tor.write_all(input.auth).await?;
                        tor.shutdown().await?;
                    }
                }
                let mut hello = [0u8; 33];
                tor.read_exact(&mut hello).await?;
                assert_eq!(hello[0], 1, "the client picks SAFE_COOKIE");
                let cn = &hello[1..];
                let good = mac(SERVER_LABEL, cn, &input.server_nonce);
                let hash = if input.correct_hash {
                    good
                } else {
                    input.wrong_hash
                };
                tor.write_all(&hash).await?;
                tor.write_all(&input.server_nonce).await?;
                let mut client_hash = [0u8; 32];
                tor.read_exact(&mut client_hash).await?;
                sent_client_hash = true;
                assert_eq!(hash, good, "client hash sent after a wrong server hash");
                assert_eq!(client_hash, mac(CLIENT_LABEL, cn, &input.server_nonce));
                tor.write_all(&[input.status]).await?;
                if input.status == 1 {
                    let want = expected_commands(input.client_addr);
                    let mut got = vec![0u8; want.len()];
                    tor.read_exact(&mut got).await?;
                    assert_eq!(got, want);
                }
                tor.write_all(input.rest).await?;
                tor.shutdown().await?;
                Ok(())
            }
            .await;
            sent_client_hash
        };
        let run = async { tokio::join!(client, fake_tor) };
        let (result, sent_client_hash) = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the exchange ends once the fake tor has said everything");
        assert_eq!(sent_client_hash, authenticates, "{result:?}");
        match (result, want) {
            (Ok(mut stream), Expect::Ok(left)) => {
                let mut got = Vec::new();
                stream.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, left, "bytes after OKAY belong to the client");
            }
            (Err(ExtOrError::Io { .. }), Expect::Io)
            | (Err(ExtOrError::Protocol(_)), Expect::Protocol)
            | (Err(ExtOrError::NoSafeCookie(_)), Expect::NoSafeCookie)
            | (Err(ExtOrError::ServerHashMismatch), Expect::ServerHashMismatch)
            | (Err(ExtOrError::Denied), Expect::Denied) => {}
            (Err(ExtOrError::AuthRejected(a)), Expect::AuthRejected(b)) if a == b => {}
            (got, want) => panic!("got {got:?}, the spec says {want:?}"),
        }
    });
});
