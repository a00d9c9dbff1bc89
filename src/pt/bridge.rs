//! The `water-*` bridge arguments and the `Bridge water ...` lines that carry them.
//!
//! A client learns its arguments from the bridge line, via tor, per SOCKS connection
//! ([`crate::pt::args::parse_socks_args`]); a server learns them from
//! `ServerTransportOptions` ([`crate::pt::env::ServerEnv::options_for`]). Both end up as ordered
//! `(key, value)` pairs that [`BridgeArgs::from_pairs`] interprets. These arguments parse but may
//! still be unusable, so on the client a [`BridgeArgsError`] is a CONNECT-time failure (non-zero
//! REP), not an authentication failure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::args::{encode_socks_args, ArgsError, MAX_SOCKS_ARGS_LEN};
use super::module_ref::{ModuleRef, ModuleRefError};
use super::TRANSPORT_NAME;

/// `water-wasm=REF`: the module to run (see [`ModuleRef`]).
pub const KEY_WASM: &str = "water-wasm";
/// `water-sha256=HEX`: the SHA-256 the module must have (64 hex digits).
pub const KEY_SHA256: &str = "water-sha256";
/// `water-config=BASE64URL`: configuration bytes handed to the module.
pub const KEY_CONFIG: &str = "water-config";
/// `water-fetch=PORT`: the bridge's module-delivery port (see [`super::delivery`]).
pub const KEY_FETCH: &str = "water-fetch";
/// `water-fetch-key=BASE64URL`: the key of the bridge's module-delivery port.
pub const KEY_FETCH_KEY: &str = "water-fetch-key";
/// Every key we own; any other key starting with `water-` is a mistake worth reporting.
pub const KNOWN_KEYS: &[&str] = &[KEY_WASM, KEY_SHA256, KEY_CONFIG, KEY_FETCH, KEY_FETCH_KEY];

/// Base64 with the URL-safe alphabet, `=` padding accepted but not required.
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why bridge arguments cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeArgsError {
    /// A `water-*` key we do not know (keys are case-sensitive; `Water-Wasm` is caught here too).
    #[error(
        "unknown bridge argument {0:?} (known: water-wasm, water-sha256, water-config, \
         water-fetch, water-fetch-key)"
    )]
    UnknownKey(String),
    /// The same `water-*` key twice.
    #[error("bridge argument {0:?} is given more than once")]
    DuplicateKey(String),
    /// `water-wasm` was refused.
    #[error("bridge argument water-wasm: {0}")]
    Wasm(#[from] ModuleRefError),
    /// `water-sha256` is not 64 hex digits.
    #[error("bridge argument water-sha256: {0}")]
    Sha256(String),
    /// `water-config` is not URL-safe base64.
    #[error("bridge argument water-config: {0}")]
    Config(String),
    /// `water-fetch` or `water-fetch-key` is malformed, or one is given without the other.
    #[error("bridge argument {key}: {why}")]
    Fetch { key: &'static str, why: String },
}

/// Where a client can download the bridge's module: `water-fetch` and `water-fetch-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchArgs {
    /// The delivery port on the bridge's host.
    pub port: u16,
    /// The delivery key, as written in the line (unpadded base64url).
    pub key: String,
}

/// The `water-*` arguments of one bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeArgs {
    /// `water-wasm`: where the module is.
    pub wasm: Option<ModuleRef>,
    /// `water-sha256`: the digest the module file must have.
    pub sha256: Option<[u8; 32]>,
    /// `water-config`: bytes for the module's configuration.
    pub config: Option<Vec<u8>>,
    /// `water-fetch` and `water-fetch-key`: where to download a module the client lacks.
    pub fetch: Option<FetchArgs>,
}

impl BridgeArgs {
    /// Interprets `(key, value)` pairs. Keys not starting with `water-` belong to someone else
    /// and are ignored; unknown or repeated `water-*` keys are errors so a typo in a bridge line
    /// is reported instead of silently running the wrong module.
    pub fn from_pairs<K, V>(pairs: &[(K, V)]) -> Result<Self, BridgeArgsError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut out = BridgeArgs::default();
        let mut seen: Vec<&str> = Vec::new();
        let (mut fetch_port, mut fetch_key) = (None, None);
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            let owned = key
                .get(..6)
                .is_some_and(|p| p.eq_ignore_ascii_case("water-"));
            if !owned {
                continue;
            }
            if !KNOWN_KEYS.contains(&key) {
                return Err(BridgeArgsError::UnknownKey(key.to_owned()));
            }
            if seen.contains(&key) {
                return Err(BridgeArgsError::DuplicateKey(key.to_owned()));
            }
            seen.push(key);
            match key {
                KEY_WASM => out.wasm = Some(ModuleRef::parse(value)?),
                KEY_SHA256 => out.sha256 = Some(parse_sha256(value)?),
                KEY_FETCH => fetch_port = Some(parse_fetch_port(value)?),
                KEY_FETCH_KEY => fetch_key = Some(parse_fetch_key(value)?),
                _ => out.config = Some(parse_config(value)?),
            }
        }
        out.fetch = match (fetch_port, fetch_key) {
            (Some(port), Some(key)) => Some(FetchArgs { port, key }),
            (None, None) => None,
            (Some(_), None) => return Err(fetch_error(KEY_FETCH, "needs water-fetch-key too")),
            (None, Some(_)) => return Err(fetch_error(KEY_FETCH_KEY, "needs water-fetch too")),
        };
        Ok(out)
    }

    /// The module file to load: `water-wasm` resolved against `module_dir`, or, with only a
    /// `water-sha256` pin, the content-addressed `module_dir/<lowercase hex>.wasm`. `None` when
    /// the bridge names no module at all (the caller decides whether a default applies).
    ///
    /// Checking the file's digest against [`BridgeArgs::sha256`] is the loader's job.
    pub fn module_path(&self, module_dir: &Path) -> Option<PathBuf> {
        match (&self.wasm, &self.sha256) {
            (Some(r), _) => Some(r.resolve(module_dir)),
            (None, Some(pin)) => Some(module_dir.join(format!("{}.wasm", hex::encode(pin)))),
            (None, None) => None,
        }
    }

    /// The arguments as canonical pairs, for a bridge line or `SMETHOD ... ARGS:`: digest in
    /// lowercase hex, config in unpadded URL-safe base64 (padding `=` would need escaping in
    /// `ARGS:` and is copied raw into extra-info).
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(r) = &self.wasm {
            out.push((KEY_WASM.to_owned(), r.to_string()));
        }
        if let Some(pin) = &self.sha256 {
            out.push((KEY_SHA256.to_owned(), hex::encode(pin)));
        }
        if let Some(cfg) = &self.config {
            out.push((KEY_CONFIG.to_owned(), URL_SAFE_NO_PAD.encode(cfg)));
        }
        if let Some(fetch) = &self.fetch {
            out.push((KEY_FETCH.to_owned(), fetch.port.to_string()));
            out.push((KEY_FETCH_KEY.to_owned(), fetch.key.clone()));
        }
        out
    }
}

fn fetch_error(key: &'static str, why: impl Into<String>) -> BridgeArgsError {
    BridgeArgsError::Fetch {
        key,
        why: why.into(),
    }
}

fn parse_fetch_port(value: &str) -> Result<u16, BridgeArgsError> {
    value
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0 && !value.starts_with('+'))
        .ok_or_else(|| fetch_error(KEY_FETCH, format!("{value:?} is not a port (1-65535)")))
}

/// A delivery key: unpadded URL-safe base64 of 16 to 64 bytes, kept as written (it is the
/// delivery session's password).
fn parse_fetch_key(value: &str) -> Result<String, BridgeArgsError> {
    let len = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| fetch_error(KEY_FETCH_KEY, "not unpadded URL-safe base64"))?
        .len();
    if !(16..=64).contains(&len) {
        return Err(fetch_error(
            KEY_FETCH_KEY,
            format!("{len} bytes; a delivery key has 16 to 64"),
        ));
    }
    Ok(value.to_owned())
}

fn parse_sha256(value: &str) -> Result<[u8; 32], BridgeArgsError> {
    if value.len() != 64 {
        return Err(BridgeArgsError::Sha256(format!(
            "expected 64 hex digits, got {} characters",
            value.chars().count()
        )));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out)
        .map_err(|_| BridgeArgsError::Sha256(format!("{value:?} is not hexadecimal")))?;
    Ok(out)
}

/// Decodes a `water-config` value (URL-safe base64, padding optional).
pub fn parse_config(value: &str) -> Result<Vec<u8>, BridgeArgsError> {
    if value.contains(['+', '/']) {
        return Err(BridgeArgsError::Config(
            "uses the standard base64 alphabet ('+' or '/'); use the URL-safe one ('-' and '_')"
                .into(),
        ));
    }
    B64URL_LENIENT
        .decode(value)
        .map_err(|e| BridgeArgsError::Config(format!("not valid URL-safe base64: {e}")))
}

/// Why a bridge line cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeLineError {
    /// The fingerprint is not 40 hex digits.
    #[error("fingerprint {0:?} is not 40 hex digits")]
    Fingerprint(String),
    /// A key or value tor's bridge-line parser would split or reject.
    #[error("bridge argument {key:?}: {why}")]
    Arg {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The arguments would not fit in SOCKS authentication.
    #[error(transparent)]
    Socks(#[from] ArgsError),
}

/// Builds `Bridge water ADDR [FINGERPRINT] k=v ...` for the bridge-line file.
///
/// tor splits a bridge line on spaces and needs `=` in each argument, so keys must be non-empty
/// and free of `=`, and neither keys nor values may hold whitespace or control characters. The
/// client's tor will pack the arguments into SOCKS5 authentication, so their escaped form must fit
/// in [`MAX_SOCKS_ARGS_LEN`] bytes. The fingerprint is written in uppercase.
pub fn bridge_line<K, V>(
    addr: SocketAddr,
    fingerprint: Option<&str>,
    args: &[(K, V)],
) -> Result<String, BridgeLineError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut line = format!("Bridge {TRANSPORT_NAME} {addr}");
    if let Some(fp) = fingerprint {
        if fp.len() != 40 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BridgeLineError::Fingerprint(fp.to_owned()));
        }
        line.push(' ');
        line.push_str(&fp.to_ascii_uppercase());
    }
    for (k, v) in args {
        let (k, v) = (k.as_ref(), v.as_ref());
        let bad = |why| BridgeLineError::Arg {
            key: k.to_owned(),
            why,
        };
        if k.is_empty() {
            return Err(bad("keys cannot be empty"));
        }
        if k.contains('=') {
            return Err(bad("keys cannot contain '='"));
        }
        if k.chars()
            .chain(v.chars())
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad(
                "bridge lines cannot carry spaces or control characters",
            ));
        }
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(v);
    }
    let encoded = encode_socks_args(args)?;
    if encoded.len() > MAX_SOCKS_ARGS_LEN {
        return Err(ArgsError::TooLong { len: encoded.len() }.into());
    }
    Ok(line)
}

#[cfg(test)]
#[path = "bridge_tests.rs"]
mod tests;
