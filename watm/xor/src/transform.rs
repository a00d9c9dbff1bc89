//! The XOR transform, shared by the `xor` (v1) and `xor-v0` modules so the
//! two generations speak the same wire format.
//!
//! Every byte is XORed with [`KEY`], in both directions. Unlike `reverse`,
//! this is a transform of the whole stream: the output does not depend on
//! how the bytes were split into reads, so any amount of data survives a
//! pair of XOR modules however the sockets chunk it. It hides nothing; it
//! exists to show that bytes on the wire differ from the caller's.

use watm_sdk::{Errno, Role, Transport};

/// The byte every byte is XORed with.
pub const KEY: u8 = 0x5a;

/// The XOR transport.
#[derive(Debug)]
pub struct Xor;

impl Transport for Xor {
    fn init(_config: Option<Vec<u8>>) -> Result<Self, Errno> {
        Ok(Self)
    }

    fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend(input.iter().map(|b| b ^ KEY));
        Ok(())
    }

    fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend(input.iter().map(|b| b ^ KEY));
        Ok(())
    }

    const IN_PLACE: bool = true;

    fn caller_to_network_in_place(&mut self, _: Role, data: &mut [u8]) -> Result<(), Errno> {
        data.iter_mut().for_each(|b| *b ^= KEY);
        Ok(())
    }

    fn network_to_caller_in_place(&mut self, _: Role, data: &mut [u8]) -> Result<(), Errno> {
        data.iter_mut().for_each(|b| *b ^= KEY);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place transforms the I/O loop uses give exactly the bytes of the copying ones.
    #[test]
    fn in_place_transforms_match_the_copying_ones() {
        watm_sdk::testing::assert_in_place_matches::<Xor>(None);
    }

    #[test]
    fn xor_is_its_own_inverse_across_chunks() {
        let mut xor = Xor::init(None).unwrap();
        let data: Vec<u8> = (0..=255).collect();
        let mut wire = Vec::new();
        for chunk in data.chunks(7) {
            xor.caller_to_network(Role::Dialer, chunk, &mut wire)
                .unwrap();
        }
        assert_ne!(wire, data);
        let mut back = Vec::new();
        for chunk in wire.chunks(13) {
            xor.network_to_caller(Role::Listener, chunk, &mut back)
                .unwrap();
        }
        assert_eq!(back, data);
    }
}
