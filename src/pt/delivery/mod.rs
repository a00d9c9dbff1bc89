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

pub mod wire;
