//! `reverse`: a WATM that reverses the bytes of every read, in both directions.
//!
//! This mirrors the reference `reverse` example: each read of up to
//! [`READ_SIZE`] bytes is reversed on its own. It is therefore *not* a
//! transform of the whole stream: "hello" only comes out as "olleh" when it
//! arrives in one read. Two reverse modules back to back give the original
//! bytes only if both see the same chunking, so tests should use messages
//! that fit in one read.
//!
//! Configuration: the same optional `dial=HOST:PORT` as `plain`.

#![forbid(unsafe_code)]

use watm_sdk::{Errno, Role, Transport, kv};

/// Where `watm_dial_fixed_v1` connects without a `dial=` setting.
pub const DEFAULT_REMOTE: &str = "localhost:7700";

/// Bytes per read, as in the reference example.
pub const READ_SIZE: usize = 1024;

/// The reversing transport.
#[derive(Debug)]
pub struct Reverse {
    remote: String,
}

impl Transport for Reverse {
    const READ_SIZE: usize = READ_SIZE;

    fn init(config: Option<Vec<u8>>) -> Result<Self, Errno> {
        let remote = kv::dial_address(config.as_deref(), DEFAULT_REMOTE)?;
        Ok(Self { remote })
    }

    fn fixed_remote(&self) -> Result<(&str, &str), Errno> {
        Ok(("tcp", &self.remote))
    }

    fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend(input.iter().rev());
        Ok(())
    }

    fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        out.extend(input.iter().rev());
        Ok(())
    }
}

watm_sdk::export_transport!(Reverse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverses_each_read() {
        let mut reverse = Reverse::init(None).unwrap();
        let mut out = Vec::new();
        reverse
            .caller_to_network(Role::Dialer, b"hello", &mut out)
            .unwrap();
        assert_eq!(out, b"olleh");
        out.clear();
        reverse
            .network_to_caller(Role::Dialer, b"dlrow", &mut out)
            .unwrap();
        assert_eq!(out, b"world");
    }

    #[test]
    fn dial_setting() {
        let reverse = Reverse::init(Some(b"dial = example.org:443".to_vec())).unwrap();
        assert_eq!(reverse.fixed_remote(), Ok(("tcp", "example.org:443")));
        assert_eq!(
            Reverse::init(Some(b"dial".to_vec())).unwrap_err(),
            Errno::INVAL
        );
    }
}
