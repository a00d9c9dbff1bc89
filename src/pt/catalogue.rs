//! The modules built into the binary, found by name or by SHA-256 without touching the disk.
//!
//! A bridge line names its module with `water-wasm=` and pins it with `water-sha256=`. For the
//! project's own modules neither needs a file: a client given `water-sha256=<hex>` of a module
//! listed here runs the embedded bytes, so the line a bridge publishes works on any client with
//! the same catalogue. A module is added to the catalogue in one place, [`BUILTINS`].
//!
//! An entry may carry a [bridge-config declaration](super::bridge_config) for modules that do not
//! embed one themselves; it tells a bridge how to key itself (see [`super::secrets`]).

use std::sync::OnceLock;

use crate::runtime::sha256;

/// One embedded module.
#[derive(Debug)]
pub struct Builtin {
    /// The name a bridge line uses (`water-wasm=NAME` or `NAME.wasm`).
    pub name: &'static str,
    /// What it does, for `water-pt modules`.
    pub about: &'static str,
    /// The module's bytes.
    pub wasm: &'static [u8],
    /// A bridge-config declaration (JSON, see [`super::bridge_config`]) used when the module
    /// has no `watm-bridge-config-v1` custom section of its own.
    pub bridge_config: Option<&'static str>,
}

/// The Shadowsocks module's per-bridge keying: one 32-byte secret becomes the password on both
/// sides. The client's `target` is only echoed to the server in the first chunk (the bridge
/// ignores it: it always forwards to tor), so any well-formed address does.
const SHADOWSOCKS_BRIDGE_CONFIG: &str = r#"{
  "secrets": {"password": 32},
  "server": {"method": "chacha20-ietf-poly1305", "password": "{{password}}"},
  "client": {"method": "chacha20-ietf-poly1305", "password": "{{password}}", "target": "tor:9001"}
}"#;

/// Every built-in module. The first is the default for bridges that name none.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "plain",
        about: "passthrough: carries bytes unchanged (no encryption)",
        wasm: include_bytes!("../../watm/prebuilt/plain.wasm"),
        bridge_config: None,
    },
    Builtin {
        name: "shadowsocks",
        about: "Shadowsocks AEAD (chacha20-ietf-poly1305 / aes-256-gcm); self-keyed on bridges",
        wasm: include_bytes!("../../watm/prebuilt/shadowsocks.wasm"),
        bridge_config: Some(SHADOWSOCKS_BRIDGE_CONFIG),
    },
];

/// The built-in module used when a bridge names none.
pub fn default_module() -> &'static Builtin {
    &BUILTINS[0]
}

impl Builtin {
    /// The SHA-256 of [`Builtin::wasm`], computed once.
    pub fn sha256(&self) -> [u8; 32] {
        // Names are unique (a test checks), so the name finds this entry's digest.
        match BUILTINS.iter().position(|b| b.name == self.name) {
            Some(i) => digests()[i],
            None => sha256(self.wasm),
        }
    }

    /// [`Builtin::sha256`] in lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256())
    }
}

fn digests() -> &'static [[u8; 32]] {
    static DIGESTS: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    DIGESTS.get_or_init(|| BUILTINS.iter().map(|b| sha256(b.wasm)).collect())
}

/// The built-in module called `name`, with or without a `.wasm` suffix.
pub fn by_name(name: &str) -> Option<&'static Builtin> {
    let bare = name.strip_suffix(".wasm").unwrap_or(name);
    BUILTINS.iter().find(|b| b.name == bare)
}

/// The built-in module whose bytes have this SHA-256.
pub fn by_sha256(digest: &[u8; 32]) -> Option<&'static Builtin> {
    digests()
        .iter()
        .position(|d| d == digest)
        .map(|i| &BUILTINS[i])
}

/// How logs and statistics name a module: its built-in name, or the first 12 hex digits of its
/// SHA-256.
pub fn label(digest: &[u8; 32]) -> String {
    match by_sha256(digest) {
        Some(b) => b.name.to_owned(),
        None => hex::encode(&digest[..6]),
    }
}

/// The names of all built-in modules, for error messages: `plain, shadowsocks`.
pub fn names() -> String {
    BUILTINS
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_by_name_and_digest() {
        for b in BUILTINS {
            assert_eq!(by_name(b.name).unwrap().name, b.name);
            assert_eq!(by_name(&format!("{}.wasm", b.name)).unwrap().name, b.name);
            assert_eq!(by_sha256(&sha256(b.wasm)).unwrap().name, b.name);
            assert_eq!(b.sha256(), sha256(b.wasm));
        }
        assert!(by_name("plain.wasm.wasm").is_none());
        assert!(by_name("Plain").is_none());
        assert!(by_sha256(&[0; 32]).is_none());
        assert_eq!(default_module().name, "plain");
        assert_eq!(names(), "plain, shadowsocks");
    }

    #[test]
    fn names_are_unique_and_bytes_distinct() {
        for (i, a) in BUILTINS.iter().enumerate() {
            for b in &BUILTINS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.sha256(), b.sha256());
            }
        }
    }
}
