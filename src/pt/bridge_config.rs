//! How a module declares its per-bridge secrets, so that a bridge can key itself.
//!
//! A bridge operator should not have to invent a password and copy it into two configs: the
//! module says which parts of its config are per-bridge secrets, and the bridge generates them
//! once (see [`super::secrets`]), runs with the server config and publishes the client config.
//!
//! The declaration is a small JSON document, independent of the module's own config format:
//!
//! ```json
//! {
//!   "secrets": {"password": 32},
//!   "server": {"method": "chacha20-ietf-poly1305", "password": "{{password}}"},
//!   "client": {"method": "chacha20-ietf-poly1305", "password": "{{password}}", "target": "tor:9001"}
//! }
//! ```
//!
//! * `secrets`: name -> number of random bytes (16..=64). Each secret is generated as that many
//!   bytes from the OS's random source and written as unpadded URL-safe base64 (so it needs no
//!   escaping in JSON, TOML, YAML or a bridge line).
//! * `server`, `client`: the config the bridge's module and the clients' module get, as a JSON
//!   value (serialised compactly) or, for modules whose config is not JSON, a string taken as
//!   the config's text. Every `{{name}}` is replaced by the secret `name`; a placeholder naming
//!   no declared secret is an error, so a typo cannot publish a line with a literal `{{...}}`.
//!
//! A module carries it in a custom section named [`SECTION`] (any tool that adds a custom section
//! works; from Rust, a `#[link_section = "watm-bridge-config-v1"]` static). For built-in modules
//! the catalogue may supply it instead ([`super::catalogue::Builtin::bridge_config`]).

use std::collections::BTreeMap;

use serde_json::Value;

/// The custom section holding a module's declaration.
pub const SECTION: &str = "watm-bridge-config-v1";

/// The accepted sizes of a secret, in bytes: at least 128 bits, and short enough that the
/// client config still fits in a bridge line.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// A module's declaration of its per-bridge secrets and config templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfigDecl {
    /// Secret name -> size in bytes.
    pub secrets: BTreeMap<String, usize>,
    /// The server's config, with `{{name}}` placeholders.
    pub server: String,
    /// The clients' config, with `{{name}}` placeholders.
    pub client: String,
}

impl BridgeConfigDecl {
    /// Parses and checks a declaration; the error says what to fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err("expected a JSON object".into());
        };
        for key in map.keys() {
            if !matches!(key.as_str(), "secrets" | "server" | "client") {
                return Err(format!(
                    "unknown key {key:?} (expected secrets, server, client)"
                ));
            }
        }
        let mut secrets = BTreeMap::new();
        match map.get("secrets") {
            Some(Value::Object(s)) => {
                for (name, size) in s {
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        return Err(format!(
                            "secret name {name:?} must be letters, digits, '_' or '-'"
                        ));
                    }
                    let size = size
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| SECRET_BYTES.contains(n))
                        .ok_or_else(|| {
                            format!(
                                "secret {name:?}: size must be a number of bytes in {}..={}",
                                SECRET_BYTES.start(),
                                SECRET_BYTES.end()
                            )
                        })?;
                    secrets.insert(name.clone(), size);
                }
            }
            _ => return Err("\"secrets\" must be an object of name: bytes".into()),
        }
        let template = |key: &str| -> Result<String, String> {
            let text = match map.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Object(_)) => v.to_string(),
                _ => return Err(format!("\"{key}\" must be a JSON object or a string")),
            };
            for name in placeholders(&text) {
                if !secrets.contains_key(name) {
                    return Err(format!(
                        "\"{key}\" uses {{{{{name}}}}}, which is not a declared secret"
                    ));
                }
            }
            Ok(text)
        };
        Ok(Self {
            server: template("server")?,
            client: template("client")?,
            secrets,
        })
    }

    /// The declaration in a module's [`SECTION`] custom section, if it has one.
    pub fn from_module(wasm: &[u8]) -> Result<Option<Self>, String> {
        let Some(data) = custom_section(wasm, SECTION)? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(data)
            .map_err(|_| format!("custom section {SECTION} is not UTF-8"))?;
        Self::parse(text)
            .map(Some)
            .map_err(|e| format!("custom section {SECTION}: {e}"))
    }

    /// The server's and the client's config with every placeholder replaced by its secret.
    /// `secrets` must hold every declared name (see [`super::secrets::SecretFile::ensure`]).
    pub fn render(&self, secrets: &BTreeMap<String, String>) -> (Vec<u8>, Vec<u8>) {
        let fill = |template: &str| {
            let mut out = template.to_owned();
            for (name, value) in secrets {
                out = out.replace(&format!("{{{{{name}}}}}"), value);
            }
            out.into_bytes()
        };
        (fill(&self.server), fill(&self.client))
    }
}

/// The names inside `{{...}}` in `text`.
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    out
}

/// The payload of the first custom section called `name`.
fn custom_section<'a>(wasm: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, String> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(reader)) if reader.name() == name => {
                return Ok(Some(reader.data()));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read the module's sections: {e}")),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECL: &str = r#"{"secrets": {"pw": 16},
        "server": {"password": "{{pw}}"},
        "client": "password={{pw}} target=x"}"#;

    #[test]
    fn parses_and_renders() {
        let d = BridgeConfigDecl::parse(DECL).unwrap();
        assert_eq!(d.secrets.get("pw"), Some(&16));
        let secrets = BTreeMap::from([("pw".to_owned(), "S3cr3t".to_owned())]);
        let (server, client) = d.render(&secrets);
        assert_eq!(server, br#"{"password":"S3cr3t"}"#);
        assert_eq!(client, b"password=S3cr3t target=x");
    }

    #[test]
    fn refuses_what_would_publish_a_broken_line() {
        for (text, needle) in [
            ("[]", "JSON object"),
            ("{", "not valid JSON"),
            (
                r#"{"secrets":{},"server":{},"client":{},"x":1}"#,
                "unknown key",
            ),
            (r#"{"secrets":{"pw":8},"server":{},"client":{}}"#, "16..=64"),
            (
                r#"{"secrets":{"p w":16},"server":{},"client":{}}"#,
                "letters",
            ),
            (
                r#"{"secrets":{"pw":16},"server":1,"client":{}}"#,
                "\"server\"",
            ),
            (
                r#"{"secrets":{"pw":16},"server":{},"client":"{{pq}}"}"#,
                "{{pq}}",
            ),
            (r#"{"server":{},"client":{}}"#, "\"secrets\""),
        ] {
            let e = BridgeConfigDecl::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn read_from_a_custom_section() {
        let with = wat::parse_str(format!(
            "(module (@custom \"{SECTION}\" {:?}))",
            DECL.replace('\n', " ")
        ))
        .unwrap();
        let d = BridgeConfigDecl::from_module(&with).unwrap().unwrap();
        assert_eq!(d.secrets.len(), 1);
        let without = wat::parse_str("(module)").unwrap();
        assert_eq!(BridgeConfigDecl::from_module(&without).unwrap(), None);
        let bad = wat::parse_str(format!("(module (@custom \"{SECTION}\" \"nope\"))")).unwrap();
        let e = BridgeConfigDecl::from_module(&bad).unwrap_err();
        assert!(e.contains(SECTION), "{e}");
    }
}
