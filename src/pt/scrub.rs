//! Keeping addresses out of logs.
//!
//! A bridge's log must not say who its users are, and a client's log must not say which bridges
//! it uses: logs get shared in bug reports. Like obfs4proxy and lyrebird, water-pt therefore
//! replaces every IP address (v4 or v6, with or without a port) and every `host.name:port` in
//! what it logs, on stderr and in `LOG`/`STATUS` lines, with `[scrubbed]`, unless the operator
//! passes `--unsafe-logging`.
//!
//! The text is cut into words of the characters addresses are made of; each word (less trailing
//! punctuation) that the standard library parses as an address, or that looks like
//! `name.tld:port`, is replaced. Parsing instead of pattern matching means a time of day
//! (`05:14:31`) or a module export (`watm_init_v1`) is never mistaken for an address.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

/// The `tracing` target of log lines that name only addresses the operator configured (where
/// water-pt listens, where it forwards). They are not scrubbed: they name no peer, and a
/// standalone user needs to see the port chosen for `--listen 127.0.0.1:0`.
pub const CONFIGURED: &str = "water_pt::configured";

/// What an address is replaced by.
pub const SCRUBBED: &str = "[scrubbed]";

static UNSAFE_LOGGING: AtomicBool = AtomicBool::new(false);

/// `--unsafe-logging`: log addresses as they are, for the whole process.
pub fn set_unsafe_logging(on: bool) {
    UNSAFE_LOGGING.store(on, Ordering::Relaxed);
}

/// `text` as it may be logged: scrubbed unless `--unsafe-logging` was given.
pub fn for_log(text: &str) -> Cow<'_, str> {
    if UNSAFE_LOGGING.load(Ordering::Relaxed) {
        Cow::Borrowed(text)
    } else {
        scrub(text)
    }
}

/// `text` with every address replaced by [`SCRUBBED`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut last = 0;
    let mut changed = false;
    for (start, word) in words(text) {
        let core = word.trim_end_matches(['.', ':', ',', ';']);
        if is_address(core) {
            out.push_str(&text[last..start]);
            out.push_str(SCRUBBED);
            last = start + core.len();
            changed = true;
        }
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

/// Maximal runs of the characters addresses are written with, and where each starts.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_addr_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '%' | '-' | '_');
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = rest.peek() {
            if is_addr_char(c) {
                break;
            }
            rest.next();
        }
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some(&(i, c)) = rest.peek() {
            if !is_addr_char(c) {
                break;
            }
            end = i + c.len_utf8();
            rest.next();
        }
        Some((start, &text[start..end]))
    })
}

fn is_address(word: &str) -> bool {
    if word.parse::<SocketAddr>().is_ok() || word.parse::<IpAddr>().is_ok() {
        return true;
    }
    // `[v6]` without a port, or with a zone.
    if let Some(inner) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
        return inner
            .split('%')
            .next()
            .is_some_and(|a| a.parse::<IpAddr>().is_ok());
    }
    if let Some((ip, _zone)) = word.split_once('%') {
        return ip.parse::<IpAddr>().is_ok();
    }
    is_host_port(word)
}

/// `name.tld:port`: a dotted name with a letter in its last label, and a numeric port.
fn is_host_port(word: &str) -> bool {
    let Some((host, port)) = word.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let labels_ok = host.contains('.')
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let tld_ok = host
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()));
    port_ok && labels_ok && tld_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_scrubbed() {
        for (input, want) in [
            (
                "connection to bridge 192.0.2.7:443 failed",
                "connection to bridge [scrubbed] failed",
            ),
            ("from 10.1.2.3.", "from [scrubbed]."),
            (
                "dial [2001:db8::1]:9001: refused",
                "dial [scrubbed]: refused",
            ),
            ("peer 2001:db8::1 left", "peer [scrubbed] left"),
            (
                "[::1] and ::1 and fe80::1%eth0",
                "[scrubbed] and [scrubbed] and [scrubbed]",
            ),
            ("ADDRESS=127.0.0.1:5", "ADDRESS=[scrubbed]"),
            (
                "to bridge.example.org:443, retrying",
                "to [scrubbed], retrying",
            ),
            ("a=1.2.3.4:5,b=6.7.8.9:10", "a=[scrubbed],b=[scrubbed]"),
        ] {
            assert_eq!(scrub(input), want, "{input}");
        }
    }

    #[test]
    fn other_text_is_left_alone() {
        for text in [
            "05:14:31 watm_init_v1 returned -EINVAL",
            "module 4689635b.wasm: version 0.1.0",
            "tor:9001 localhost:80 file:///x.wasm water_pt::pt::server",
            "sha256 00ab:ff (not an address) 1.2.3",
            "",
        ] {
            assert!(matches!(scrub(text), Cow::Borrowed(_)), "{text}");
        }
    }
}
