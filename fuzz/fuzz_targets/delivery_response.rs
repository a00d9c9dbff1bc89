//! The client side of module delivery: `read_response` over arbitrary bridge bytes, in
//! fuzzer-chosen chunks, with a fuzzer-chosen size limit.
//!
//! Properties: nothing panics; a module is returned only if the head announced exactly its
//! length and that length is within the limit; a refusal is returned only for a head that
//! parses with a non-OK status; the reader never reads past the announced module.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use water_pt::pt::delivery::wire::{
    read_response, ReadError, Response, ResponseHead, Status, RESPONSE_HEAD_LEN,
};

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // [chunk size][limit: u16 LE][what the bridge sends]
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let Some((limit, bytes)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let limit = u32::from(u16::from_le_bytes(*limit));
    let chunk = usize::from(chunk).max(1);
    let bytes = bytes.to_vec();
    rt().block_on(async move {
        let (mut bridge, mut client) = tokio::io::duplex(64);
        let sent = bytes.clone();
        let writer = tokio::spawn(async move {
            for part in sent.chunks(chunk) {
                if bridge.write_all(part).await.is_err() {
                    return;
                }
            }
        });
        let result = read_response(&mut client, limit).await;
        drop(client);
        let _ = writer.await;
        let head = ResponseHead::parse(&bytes);
        match result {
            Ok(Response::Module(m)) => {
                let head = head.expect("a module came with a valid head");
                assert_eq!(head.status, Status::Ok);
                assert_eq!(head.value as usize, m.len());
                assert!(m.len() as u32 <= limit);
                assert_eq!(
                    &bytes[RESPONSE_HEAD_LEN..RESPONSE_HEAD_LEN + m.len()],
                    &m[..]
                );
            }
            Ok(Response::Refused(status, value)) => {
                let head = head.expect("a refusal came with a valid head");
                assert_ne!(status, Status::Ok);
                assert_eq!((head.status, head.value), (status, value));
            }
            Err(ReadError::TooLarge { declared, limit: l }) => {
                assert_eq!(l, limit);
                assert!(declared > limit);
            }
            Err(ReadError::Truncated { got, need }) => {
                assert!(got < need);
                assert_eq!(got as usize, bytes.len());
            }
            Err(ReadError::Malformed(_)) => assert!(head.is_err()),
            Err(ReadError::Io(e)) => panic!("in-memory stream failed: {e}"),
        }
    });
});
