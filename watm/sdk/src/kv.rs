//! A minimal `key=value` configuration format for simple transports.
//!
//! The WATM configuration file belongs to the transport: the SDK hands its
//! bytes to [`Transport::init`](crate::Transport::init) untouched. Small
//! transports rarely need more than a few settings, so this module offers one
//! plain text format rather than pulling a serialization framework into every
//! module:
//!
//! ```text
//! # comment
//! dial = example.com:443
//! ```
//!
//! * UTF-8 text, one `key=value` per line (`\n` or `\r\n`);
//! * blank lines and lines starting with `#` are skipped;
//! * whitespace around keys and values is trimmed;
//! * a key may appear only once.
//!
//! Anything else is rejected with [`Errno::INVAL`], so a typo never silently
//! falls back to a default.

use crate::Errno;

/// Parses `bytes` into `(key, value)` pairs, in file order.
pub fn parse(bytes: &[u8]) -> Result<Vec<(&str, &str)>, Errno> {
    let text = core::str::from_utf8(bytes).map_err(|_| Errno::INVAL)?;
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(Errno::INVAL)?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || pairs.iter().any(|&(seen, _)| seen == key) {
            return Err(Errno::INVAL);
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Checks that `address` has the `host:port` shape the runtime's `water_dial`
/// expects: a non-empty host (an IPv6 literal in brackets) and a port in
/// 1..=65535. It does not resolve the name; the runtime does that.
pub fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').is_some_and(|ip| !ip.is_empty()),
        None => !host.is_empty() && !host.contains(':'),
    };
    let port_ok = !port.starts_with('+') && port.parse::<u16>().is_ok_and(|p| p != 0);
    host_ok && port_ok && !address.chars().any(char::is_whitespace)
}

/// Reads the configuration of a transport whose only setting is where
/// `watm_dial_fixed_v1` connects: an optional `dial=HOST:PORT` line.
///
/// No configuration, or one without `dial`, gives `default`. Any other key, a
/// malformed address or malformed text is [`Errno::INVAL`].
pub fn dial_address(config: Option<&[u8]>, default: &str) -> Result<String, Errno> {
    let mut address = default;
    for (key, value) in parse(config.unwrap_or_default())? {
        match key {
            "dial" if is_host_port(value) => address = value,
            _ => return Err(Errno::INVAL),
        }
    }
    Ok(address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{dial_address, is_host_port, parse};
    use crate::Errno;

    #[test]
    fn parses_pairs_comments_and_blank_lines() {
        let text = b"# settings\r\n\n dial = example.com:443 \nmode=fast\n";
        assert_eq!(
            parse(text),
            Ok(vec![("dial", "example.com:443"), ("mode", "fast")])
        );
        assert_eq!(parse(b""), Ok(vec![]));
        assert_eq!(parse(b"empty="), Ok(vec![("empty", "")]));
    }

    #[test]
    fn rejects_malformed_text() {
        assert_eq!(parse(b"no equals sign"), Err(Errno::INVAL));
        assert_eq!(parse(b"=value"), Err(Errno::INVAL));
        assert_eq!(parse(b"a=1\na=2"), Err(Errno::INVAL));
        assert_eq!(parse(&[b'a', b'=', 0xff]), Err(Errno::INVAL));
    }

    #[test]
    fn host_port_shapes() {
        for good in ["localhost:7700", "127.0.0.1:1", "[::1]:65535", "a.b:443"] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in [
            "",
            "host",
            ":80",
            "host:",
            "host:0",
            "host:65536",
            "host:+80",
            "::1:80",
            "[]:80",
            "[::1:80",
            "ho st:80",
            "host:8 0",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn dial_address_defaults_and_overrides() {
        assert_eq!(
            dial_address(None, "localhost:7700").as_deref(),
            Ok("localhost:7700")
        );
        assert_eq!(
            dial_address(Some(b"# nothing\n"), "d:1").as_deref(),
            Ok("d:1")
        );
        assert_eq!(
            dial_address(Some(b"dial=[::1]:9\n"), "d:1").as_deref(),
            Ok("[::1]:9")
        );
        assert_eq!(dial_address(Some(b"dial=nope"), "d:1"), Err(Errno::INVAL));
        assert_eq!(dial_address(Some(b"listen=a:1"), "d:1"), Err(Errno::INVAL));
    }
}
