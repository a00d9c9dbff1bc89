//! `xor-v0`: the `xor` transport under the WATM v0 ABI.
//!
//! The transform is `xor`'s own source file, so both generations put the
//! same bytes on the wire and a v0 client works with a v1 server.

#![forbid(unsafe_code)]

#[path = "../../xor/src/transform.rs"]
mod transform;

pub use transform::{KEY, Xor};

watm_sdk::export_transport_v0!(Xor);
