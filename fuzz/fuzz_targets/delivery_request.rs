//! The bridge side of module delivery: `Request::parse` on arbitrary bytes.
//!
//! Properties: nothing panics; a parsed request encodes back to exactly the 42 bytes it was
//! parsed from; bytes that do not parse are refused with a reason that names a real flaw.
#![no_main]

use libfuzzer_sys::fuzz_target;
use water_pt::pt::delivery::wire::{Request, WireError, REQUEST_LEN};

fuzz_target!(|data: &[u8]| {
    match Request::parse(data) {
        Ok(req) => {
            assert_eq!(&req.encode()[..], &data[..REQUEST_LEN]);
            assert_ne!(req.max_len, 0);
        }
        Err(WireError::Short { got, need }) => {
            assert_eq!((got, need), (data.len(), REQUEST_LEN));
        }
        Err(WireError::Magic(m)) => assert_eq!(&m[..], &data[..4]),
        Err(WireError::Version(v)) => assert_eq!(v, data[4]),
        Err(WireError::Command(c)) => assert_eq!(c, data[5]),
        Err(WireError::ZeroLength) => assert_eq!(&data[6..10], &[0; 4]),
        Err(e @ WireError::Status(_)) => panic!("a request parse reported {e}"),
    }
});
