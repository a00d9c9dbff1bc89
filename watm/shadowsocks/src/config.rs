//! `/conf/watm.cfg`: one JSON object.
//!
//! ```json
//! {"method": "chacha20-ietf-poly1305", "password": "...", "target": "example.com:443"}
//! {"method": "aes-256-gcm", "password": "...", "expect_target": "127.0.0.1:9001"}
//! ```
//!
//! * `method` (required): `chacha20-ietf-poly1305` or `aes-256-gcm`.
//! * `password` (required, non-empty): the master key is derived from it.
//! * `target` (client only, required there): `host:port` the Shadowsocks
//!   server is asked to connect to.
//! * `expect_target` (server only, optional): `host:port` the client's target
//!   header must name; `null` or absent accepts any target. The server never
//!   connects anywhere itself (the runtime connected the upstream before the
//!   module ran), so this is a check that the client meant *this* upstream.
//! * `reject_timeout_secs` (server only, optional, 1..=3600, default 60): how
//!   long after it opened an inbound connection must have authenticated
//!   (sent a verified first chunk with its target header). One that has not,
//!   or that failed authentication, is read and discarded until then and
//!   closed.
//!
//! Unknown keys are refused, so a misspelled key is an error, not a default.

use std::time::Duration;

use serde::Deserialize;

use crate::address::Target;
use crate::crypto::{MasterKey, Method};

/// Default of `reject_timeout_secs`.
pub const DEFAULT_REJECT_TIMEOUT: Duration = Duration::from_secs(60);

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    method: String,
    password: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    expect_target: Option<String>,
    #[serde(default)]
    reject_timeout_secs: Option<u64>,
}

/// The checked configuration.
#[derive(Clone)]
pub struct Config {
    /// The AEAD method.
    pub method: Method,
    /// The master key derived from the password.
    pub key: MasterKey,
    /// Present exactly for a client configuration.
    pub target: Option<Target>,
    /// The server's allowed target, if restricted.
    pub expect_target: Option<Target>,
    /// How long an inbound connection may take to authenticate.
    pub reject_timeout: Duration,
}

impl Config {
    /// Parses and checks the file; the error is a one-line reason for the
    /// log.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not valid: {e}"))?;
        let method = Method::from_name(&raw.method).ok_or_else(|| {
            format!(
                "unsupported method {:?} (use chacha20-ietf-poly1305 or aes-256-gcm)",
                raw.method
            )
        })?;
        if raw.password.is_empty() {
            return Err("empty password".into());
        }
        let address = |key: &str, value: Option<String>| match value {
            None => Ok(None),
            Some(text) => Target::parse(&text)
                .map(Some)
                .ok_or_else(|| format!("{key} {text:?} is not host:port")),
        };
        let target = address("target", raw.target)?;
        let expect_target = address("expect_target", raw.expect_target)?;
        if target.is_some() && (expect_target.is_some() || raw.reject_timeout_secs.is_some()) {
            return Err("target (client) mixed with server settings".into());
        }
        let reject_timeout = match raw.reject_timeout_secs {
            None => DEFAULT_REJECT_TIMEOUT,
            Some(secs @ 1..=3600) => Duration::from_secs(secs),
            Some(secs) => return Err(format!("reject_timeout_secs {secs} not in 1..=3600")),
        };
        Ok(Self {
            key: MasterKey::from_password(method, raw.password.as_bytes()),
            method,
            target,
            expect_target,
            reject_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_configs() {
        let c =
            Config::parse(br#"{"method":"aes-256-gcm","password":"p","target":"example.com:443"}"#)
                .unwrap();
        assert_eq!(c.method, Method::Aes256Gcm);
        assert_eq!(c.target, Target::parse("example.com:443"));
        let s = Config::parse(
            br#"{"method":"chacha20-ietf-poly1305","password":"p","expect_target":null}"#,
        )
        .unwrap();
        assert!(s.target.is_none() && s.expect_target.is_none());
        assert_eq!(s.reject_timeout, DEFAULT_REJECT_TIMEOUT);
        let s = Config::parse(
            br#"{"method":"aes-256-gcm","password":"p","expect_target":"[::1]:1","reject_timeout_secs":2}"#,
        )
        .unwrap();
        assert_eq!(s.expect_target, Target::parse("[::1]:1"));
        assert_eq!(s.reject_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_configs_say_why() {
        for (text, why) in [
            (&b""[..], "not valid"),
            (b"[]", "not valid"),
            (br#"{"method":"aes-256-gcm"}"#, "password"),
            (
                br#"{"method":"rc4-md5","password":"p"}"#,
                "unsupported method",
            ),
            (
                br#"{"method":"aes-256-gcm","password":""}"#,
                "empty password",
            ),
            (
                br#"{"method":"aes-256-gcm","password":"p","target":"x"}"#,
                "host:port",
            ),
            (
                br#"{"method":"aes-256-gcm","password":"p","targte":"a:1"}"#,
                "unknown field",
            ),
            (
                br#"{"method":"aes-256-gcm","password":"p","target":"a:1","expect_target":"a:1"}"#,
                "mixed",
            ),
            (
                br#"{"method":"aes-256-gcm","password":"p","reject_timeout_secs":0}"#,
                "1..=3600",
            ),
        ] {
            let err = Config::parse(text).err().unwrap();
            assert!(err.contains(why), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
