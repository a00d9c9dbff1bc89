//! The SOCKS5 server handshake (`socks::accept`) fed arbitrary client bytes over an in-memory
//! duplex, in fuzzer-chosen chunks, followed by EOF.
//!
//! Properties: nothing panics; the handshake always ends once the client has sent everything
//! and closed (never by the timeout); credentials handed to `parse_auth` are exactly the bytes
//! of the RFC 1929 message in the input.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use water_pt::pt::args::parse_socks_args;
use water_pt::pt::bridge::BridgeArgs;
use water_pt::socks::{accept_with_timeout, Reply, SocksError};

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

type Creds = Option<(Vec<u8>, Vec<u8>)>;

fuzz_target!(|data: &[u8]| {
    let Some(([chunk, mode], input)) = data.split_first_chunk::<2>().map(|(h, r)| (*h, r)) else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    rt().block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serve = async {
            let mut seen: Creds = None;
            let res = accept_with_timeout(server, Duration::from_secs(20), |creds| {
                seen = creds.map(|(u, p)| (u.to_vec(), p.to_vec()));
                // Half the runs use the real argument parser, as the transport does.
                if mode & 1 == 1 {
                    if let Some((u, p)) = creds {
                        let pairs = parse_socks_args(u, p).map_err(|e| e.to_string())?;
                        BridgeArgs::from_pairs(&pairs).map_err(|e| e.to_string())?;
                    }
                }
                if mode & 2 == 2 {
                    return Err("refused by the fuzzer".into());
                }
                Ok(())
            })
            .await;
            match res {
                Ok(req) => {
                    if mode & 4 == 4 {
                        let _ = req.reply_success().await;
                    } else {
                        let _ = req.reply_failure(Reply::GeneralFailure).await;
                    }
                    Some(seen)
                }
                Err(SocksError::Timeout(_)) => {
                    panic!("handshake did not end after the client's EOF")
                }
                Err(_) => None,
            }
        };
        let talk = async {
            for piece in input.chunks(chunk) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        };
        let (accepted, _answer) = tokio::join!(serve, talk);
        if let Some(Some((user, pass))) = accepted {
            check_credentials(input, &user, &pass);
        }
    });
});

/// The credentials must be the RFC 1929 fields that follow the greeting `05 N methods...`.
fn check_credentials(input: &[u8], user: &[u8], pass: &[u8]) {
    let n = usize::from(input[1]);
    let sub = &input[2 + n..];
    assert_eq!(sub[0], 1, "sub-negotiation version");
    let ulen = usize::from(sub[1]);
    assert_eq!(&sub[2..2 + ulen], user);
    let plen = usize::from(sub[2 + ulen]);
    assert_eq!(&sub[3 + ulen..3 + ulen + plen], pass);
}
