//! Module delivery: a bridge hands the module it runs to clients that hold only its line.
//!
//! A bridge whose module is not [built in](super::catalogue) also listens on a second port,
//! the delivery port, where each connection is a session of the built-in Shadowsocks module
//! keyed with a per-bridge delivery key (kept with the bridge's other
//! [secrets](super::secrets)). The bridge line carries the port and the key
//! (`water-fetch=PORT water-fetch-key=KEY`) beside the module's `water-sha256=` pin. A client
//! whose pinned module is neither built in nor cached dials the delivery port through the same
//! runtime and connector as any bridge connection (so tor's proxy and bind addresses apply),
//! asks for the module by its SHA-256 ([`wire`]), checks the bytes against the pin, loads them
//! as a WATM, caches them under the state directory and goes on with the connection.
//!
//! * [`wire`]: the request and response bytes.
//! * [`server`]: the bridge's delivery listener: which modules it serves, rate limits.
//! * [`fetch`]: the client's download, shared by concurrent requests for the same pin.

#[cfg(feature = "runtime")]
pub mod fetch;
#[cfg(feature = "runtime")]
pub mod plan;
#[cfg(feature = "runtime")]
pub mod rate;
#[cfg(feature = "runtime")]
pub mod server;
pub mod wire;

#[cfg(feature = "runtime")]
use std::sync::Arc;

#[cfg(feature = "runtime")]
use crate::runtime::{Error, Runtime, Watm};

/// The name of the delivery key in the bridge's secrets file.
pub const KEY_SECRET: &str = "water-fetch-key";
/// Bytes of a delivery key.
pub const KEY_BYTES: usize = 32;
/// The AEAD of delivery sessions.
const METHOD: &str = "chacha20-ietf-poly1305";

/// The module that carries delivery sessions: the built-in Shadowsocks one.
#[cfg(feature = "runtime")]
pub fn delivery_module(runtime: &Runtime) -> Result<Arc<Watm>, Error> {
    let ss = super::catalogue::by_name("shadowsocks").expect("shadowsocks is built in");
    runtime.load(ss.wasm)
}

/// The bridge's config for delivery sessions keyed with `key` (base64url, so it needs no
/// JSON escaping).
pub fn server_config(key: &str) -> Vec<u8> {
    format!(r#"{{"method":"{METHOD}","password":"{key}"}}"#).into_bytes()
}

/// The client's config for delivery sessions keyed with `key`. The Shadowsocks client sends
/// a target address in its first chunk; the bridge ignores it.
pub fn client_config(key: &str) -> Vec<u8> {
    format!(r#"{{"method":"{METHOD}","password":"{key}","target":"tor:9001"}}"#).into_bytes()
}
