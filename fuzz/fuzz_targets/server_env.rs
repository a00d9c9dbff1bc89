//! The managed-proxy environment parsers with fuzzer-chosen values.
//!
//! The input is text shaped like an environment dump, one `NAME=value` per line. Every value is
//! also given to `parse_bindaddr` and `parse_server_transport_options` on its own, and the
//! whole set to `env::parse`.
//!
//! Properties: nothing panics; what `parse_bindaddr` and `parse_server_transport_options`
//! accept, written back in tor's syntax, parses to the same thing.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use libfuzzer_sys::fuzz_target;
use water_pt::pt::env::{self, parse_bindaddr, parse_server_transport_options};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut vars = HashMap::new();
    for line in text.split('\n') {
        check_bindaddr(line);
        check_options(line);
        if let Some((name, value)) = line.split_once('=') {
            check_bindaddr(value);
            check_options(value);
            vars.insert(name.to_owned(), value.to_owned());
        }
    }
    if let Ok(parsed) = env::parse(|name| vars.get(name).cloned()) {
        if let Some(server) = &parsed.server {
            for (name, _) in &server.bind_addrs {
                assert!(env::is_transport_name(name), "{name:?}");
            }
            assert!(server.orport.is_some() || server.ext_orport.is_some());
        }
        assert!(parsed.client.is_some() || parsed.server.is_some());
    }
});

fn check_bindaddr(s: &str) {
    let Ok(entries) = parse_bindaddr(s) else {
        return;
    };
    let text = entries
        .iter()
        .map(|(name, addr)| format!("{name}-{addr}"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(parse_bindaddr(&text).as_ref(), Ok(&entries), "{text:?}");
}

/// tor's escaping inside one `k=v` of `TOR_PT_SERVER_TRANSPORT_OPTIONS`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ':' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn check_options(s: &str) {
    let Ok(options) = parse_server_transport_options(s) else {
        return;
    };
    let text = options
        .iter()
        .flat_map(|(name, kvs)| {
            kvs.iter()
                .map(move |(k, v)| format!("{name}:{}={}", escape(k), escape(v)))
        })
        .collect::<Vec<_>>()
        .join(";");
    let again: Result<BTreeMap<_, _>, _> = parse_server_transport_options(&text);
    assert_eq!(again.as_ref(), Ok(&options), "{text:?}");
}
