//! `plain`: a WATM that passes bytes through unchanged, in both directions.
//!
//! It is the baseline for measuring what running a transport inside the WATER
//! runtime costs, and the smallest useful example of the SDK.
//!
//! Configuration (optional, `key=value` text, see [`watm_sdk::kv`]):
//! `dial=HOST:PORT` sets the address `watm_dial_fixed_v1` connects to over
//! TCP; the default is [`DEFAULT_REMOTE`]. Anything else fails
//! `watm_init_v1` with `-EINVAL`.

#![forbid(unsafe_code)]

use watm_sdk::{Errno, Role, Transport, kv};

/// Where `watm_dial_fixed_v1` connects without a `dial=` setting; the same
/// address as the reference examples.
pub const DEFAULT_REMOTE: &str = "localhost:7700";

/// The passthrough transport.
#[derive(Debug)]
pub struct Plain {
    remote: String,
}

impl Transport for Plain {
    fn init(config: Option<Vec<u8>>) -> Result<Self, Errno> {
        let remote = kv::dial_address(config.as_deref(), DEFAULT_REMOTE)?;
        Ok(Self { remote })
    }

    fn fixed_remote(&self) -> Result<(&str, &str), Errno> {
        Ok(("tcp", &self.remote))
    }

    fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend_from_slice(input);
        Ok(())
    }

    fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend_from_slice(input);
        Ok(())
    }

    // Bytes are sent from the buffer they were read into, with no copy.
    const IN_PLACE: bool = true;

    // Bulk data in reads of up to 256 KiB (the SDK's default is 128 KiB): with no copy to
    // make, a larger read halves the read, write and poll calls per byte, and nothing else
    // grows with it. Measured with pt-bench on `plain`, five interleaved pairs on a busy
    // machine: PT CPU 1.06 s/GiB on average (0.95-1.21) against 1.18 (1.01-1.34).
    const READ_SIZE: usize = 256 * 1024;

    fn caller_to_network_in_place(&mut self, _: Role, _: &mut [u8]) -> Result<(), Errno> {
        Ok(())
    }

    fn network_to_caller_in_place(&mut self, _: Role, _: &mut [u8]) -> Result<(), Errno> {
        Ok(())
    }
}

watm_sdk::export_transport!(Plain);

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place transforms the I/O loop uses give exactly the bytes of the copying ones.
    #[test]
    fn in_place_transforms_match_the_copying_ones() {
        watm_sdk::testing::assert_in_place_matches::<Plain>(None);
    }

    #[test]
    fn passes_bytes_through() {
        let mut plain = Plain::init(None).unwrap();
        let mut out = Vec::new();
        plain
            .caller_to_network(Role::Dialer, b"hello", &mut out)
            .unwrap();
        assert_eq!(out, b"hello");
        out.clear();
        plain
            .network_to_caller(Role::Listener, b"world", &mut out)
            .unwrap();
        assert_eq!(out, b"world");
    }

    #[test]
    fn dial_setting() {
        let plain = Plain::init(None).unwrap();
        assert_eq!(plain.fixed_remote(), Ok(("tcp", DEFAULT_REMOTE)));
        let plain = Plain::init(Some(b"dial=127.0.0.1:9000\n".to_vec())).unwrap();
        assert_eq!(plain.fixed_remote(), Ok(("tcp", "127.0.0.1:9000")));
        assert_eq!(
            Plain::init(Some(b"speed=fast".to_vec())).unwrap_err(),
            Errno::INVAL
        );
        assert_eq!(
            Plain::init(Some(vec![0xff, 0xfe])).unwrap_err(),
            Errno::INVAL
        );
    }
}
