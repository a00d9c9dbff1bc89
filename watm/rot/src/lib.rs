//! `rot`: a WATM v1 that adds a fixed number to every byte it sends and
//! subtracts it from every byte it receives, on both sides.
//!
//! It is deliberately not in water-pt's built-in catalogue: it is the module a
//! bridge operator deploys on their own, which clients obtain from the bridge
//! through module delivery (see `pt-spec/README.md`). Like `xor` it carries
//! any stream intact through a client and server pair, and its wire bytes
//! differ from the caller's; unlike `xor` it is not its own inverse, so a
//! pair only works when both ends run it. The config is accepted and ignored.

#![forbid(unsafe_code)]

use watm_sdk::{Errno, Role, Transport};

/// The number added to every byte on the way out (modulo 256).
pub const SHIFT: u8 = 0x2b;

/// The rotating transport.
#[derive(Debug)]
pub struct Rot;

impl Transport for Rot {
    fn init(_config: Option<Vec<u8>>) -> Result<Self, Errno> {
        Ok(Self)
    }

    fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend(input.iter().map(|b| b.wrapping_add(SHIFT)));
        Ok(())
    }

    fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend(input.iter().map(|b| b.wrapping_sub(SHIFT)));
        Ok(())
    }

    const IN_PLACE: bool = true;

    fn caller_to_network_in_place(&mut self, _: Role, data: &mut [u8]) -> Result<(), Errno> {
        data.iter_mut().for_each(|b| *b = b.wrapping_add(SHIFT));
        Ok(())
    }

    fn network_to_caller_in_place(&mut self, _: Role, data: &mut [u8]) -> Result<(), Errno> {
        data.iter_mut().for_each(|b| *b = b.wrapping_sub(SHIFT));
        Ok(())
    }
}

watm_sdk::export_transport!(Rot);

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place transforms the I/O loop uses give exactly the bytes of the copying ones.
    #[test]
    fn in_place_transforms_match_the_copying_ones() {
        watm_sdk::testing::assert_in_place_matches::<Rot>(None);
    }

    #[test]
    fn a_pair_restores_the_stream_across_chunks() {
        let mut dialer = Rot::init(None).unwrap();
        let mut listener = Rot::init(None).unwrap();
        let data: Vec<u8> = (0..=255).collect();
        let mut wire = Vec::new();
        for chunk in data.chunks(7) {
            dialer
                .caller_to_network(Role::Dialer, chunk, &mut wire)
                .unwrap();
        }
        assert_ne!(wire, data);
        let mut back = Vec::new();
        for chunk in wire.chunks(13) {
            listener
                .network_to_caller(Role::Listener, chunk, &mut back)
                .unwrap();
        }
        assert_eq!(back, data);
    }
}
