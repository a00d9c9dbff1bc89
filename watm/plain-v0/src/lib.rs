//! `plain-v0`: the passthrough transport under the WATM v0 ABI.
//!
//! The same bytes-unchanged transport as `plain`, exported with
//! [`watm_sdk::export_transport_v0!`], so runtimes can be tested with (and
//! measured on) a v0 module that does nothing but move bytes. v0 has no
//! fixed dialer, so there is nothing to configure; a config is accepted and
//! ignored.

#![forbid(unsafe_code)]

use watm_sdk::{Errno, Role, Transport};

/// The passthrough transport.
#[derive(Debug)]
pub struct PlainV0;

impl Transport for PlainV0 {
    fn init(_config: Option<Vec<u8>>) -> Result<Self, Errno> {
        Ok(Self)
    }

    fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend_from_slice(input);
        Ok(())
    }

    fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend_from_slice(input);
        Ok(())
    }

    // As `plain`: bytes are sent from the buffer they were read into.
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

watm_sdk::export_transport_v0!(PlainV0);

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place transforms the I/O loop uses give exactly the bytes of the copying ones.
    #[test]
    fn in_place_transforms_match_the_copying_ones() {
        watm_sdk::testing::assert_in_place_matches::<PlainV0>(None);
    }

    #[test]
    fn passes_bytes_through() {
        let mut plain = PlainV0::init(Some(b"anything".to_vec())).unwrap();
        let mut out = Vec::new();
        plain
            .caller_to_network(Role::Dialer, b"hello", &mut out)
            .unwrap();
        assert_eq!(out, b"hello");
    }
}
