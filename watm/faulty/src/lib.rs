//! `faulty`: a test fixture that fails the way a buggy module does, in the middle of a
//! connection rather than at set-up.
//!
//! It passes bytes through unchanged, in both directions, counting them together. Once the
//! count would go past `trap_after` it panics. Modules are built with `panic = "abort"`, so
//! the panic is a wasm trap (`unreachable`) after the panic message has been written to
//! stderr: the runtime must end that one connection, log why, and carry on with the others.
//!
//! Configuration (`key=value` text, see [`watm_sdk::kv`]): `trap_after=N` (required, bytes),
//! and optionally `dial=HOST:PORT` as in `plain`. Exactly the first N bytes are delivered;
//! the read that would carry the total past N is not.

#![forbid(unsafe_code)]

use watm_sdk::{Errno, Role, Transport, kv};

/// Where `watm_dial_fixed_v1` connects without a `dial=` setting.
pub const DEFAULT_REMOTE: &str = "localhost:7700";

/// The passthrough that gives up after `limit` bytes.
#[derive(Debug)]
pub struct Faulty {
    remote: String,
    limit: u64,
    seen: u64,
}

impl Faulty {
    /// Counts `input` and copies it to `out`, or panics when it would exceed the limit.
    fn pass(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        self.seen += input.len() as u64;
        if self.seen > self.limit {
            panic!(
                "faulty: trap_after={} reached ({} bytes seen)",
                self.limit, self.seen
            );
        }
        out.extend_from_slice(input);
        Ok(())
    }
}

impl Transport for Faulty {
    fn init(config: Option<Vec<u8>>) -> Result<Self, Errno> {
        let mut remote = DEFAULT_REMOTE.to_owned();
        let mut limit = None;
        for (key, value) in kv::parse(config.as_deref().unwrap_or_default())? {
            match key {
                "dial" if kv::is_host_port(value) => remote = value.to_owned(),
                "trap_after" => limit = Some(value.parse().map_err(|_| Errno::INVAL)?),
                _ => return Err(Errno::INVAL),
            }
        }
        Ok(Self {
            remote,
            limit: limit.ok_or(Errno::INVAL)?,
            seen: 0,
        })
    }

    fn fixed_remote(&self) -> Result<(&str, &str), Errno> {
        Ok(("tcp", &self.remote))
    }

    fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        self.pass(input, out)
    }

    fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        self.pass(input, out)
    }
}

watm_sdk::export_transport!(Faulty);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_needs_trap_after() {
        assert_eq!(Faulty::init(None).unwrap_err(), Errno::INVAL);
        assert_eq!(
            Faulty::init(Some(b"trap_after=x".to_vec())).unwrap_err(),
            Errno::INVAL
        );
        assert_eq!(
            Faulty::init(Some(b"trap_after=1\nspeed=2".to_vec())).unwrap_err(),
            Errno::INVAL
        );
        let f = Faulty::init(Some(b"trap_after=10\ndial=127.0.0.1:9".to_vec())).unwrap();
        assert_eq!(f.fixed_remote(), Ok(("tcp", "127.0.0.1:9")));
    }

    #[test]
    fn passes_exactly_the_limit_then_panics() {
        let mut f = Faulty::init(Some(b"trap_after=8".to_vec())).unwrap();
        let mut out = Vec::new();
        f.caller_to_network(Role::Dialer, b"abcd", &mut out).unwrap();
        f.network_to_caller(Role::Dialer, b"efgh", &mut out).unwrap();
        assert_eq!(out, b"abcdefgh");
        let past = std::panic::catch_unwind(move || {
            let mut out = Vec::new();
            let _ = f.caller_to_network(Role::Dialer, b"i", &mut out);
        });
        assert!(past.is_err());
    }
}
