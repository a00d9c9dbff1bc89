//! `xor`: a WATM v1 that XORs every byte with a fixed key, both directions.
//!
//! A test fixture for a transforming transport whose wire bytes differ from
//! the caller's but which, unlike `reverse`, carries any stream intact
//! through a client and server pair. `xor-v0` is the same transport under the
//! v0 ABI; the two interoperate. The config is accepted and ignored.

#![forbid(unsafe_code)]

mod transform;

pub use transform::{KEY, Xor};

watm_sdk::export_transport!(Xor);
