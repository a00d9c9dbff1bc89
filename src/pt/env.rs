//! The managed-proxy environment: the `TOR_PT_*` variables tor sets when it launches us.
//!
//! [`parse`] takes a lookup function instead of reading the process environment, so every rule can
//! be tested with a table of strings; [`from_process_env`] is the thin wrapper for `main`.
//!
//! Failures map one-to-one onto the two lines tor understands before `VERSION`:
//! [`EnvError::NoVersion`] becomes `VERSION-ERROR no-version` and [`EnvError::Invalid`] becomes
//! `ENV-ERROR msg` (see [`crate::pt::output::ProtocolWriter::report_env_error`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use super::TRANSPORT_NAME;

/// Every variable this module reads, in the order they are checked.
pub const VARIABLES: &[&str] = &[
    "TOR_PT_MANAGED_TRANSPORT_VER",
    "TOR_PT_STATE_LOCATION",
    "TOR_PT_EXIT_ON_STDIN_CLOSE",
    "TOR_PT_OUTBOUND_BIND_ADDRESS_V4",
    "TOR_PT_OUTBOUND_BIND_ADDRESS_V6",
    "TOR_PT_CLIENT_TRANSPORTS",
    "TOR_PT_PROXY",
    "TOR_PT_SERVER_TRANSPORTS",
    "TOR_PT_SERVER_BINDADDR",
    "TOR_PT_SERVER_TRANSPORT_OPTIONS",
    "TOR_PT_ORPORT",
    "TOR_PT_EXTENDED_SERVER_PORT",
    "TOR_PT_AUTH_COOKIE_FILE",
];

/// Why the environment cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// `TOR_PT_MANAGED_TRANSPORT_VER` is missing or does not list version `1`, the only version
    /// tor and arti speak. The caller answers `VERSION-ERROR no-version` and exits.
    #[error("no-version")]
    NoVersion,
    /// Anything else; the message names the variable. The caller answers `ENV-ERROR msg`.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(var: &str, why: impl std::fmt::Display) -> EnvError {
    EnvError::Invalid(format!("{var}: {why}"))
}

/// The parsed environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEnv {
    /// `TOR_PT_STATE_LOCATION`: where we may keep state. tor sends `<DataDirectory>/pt_state/`,
    /// which may not exist yet; creating it (mode 0700) is the caller's job.
    pub state_location: PathBuf,
    /// `TOR_PT_EXIT_ON_STDIN_CLOSE=1`: exit gracefully (as on the first SIGINT) when stdin
    /// reaches EOF (tor's exit closes our stdin).
    pub exit_on_stdin_close: bool,
    /// `TOR_PT_OUTBOUND_BIND_ADDRESS_V4`, only sent with `OutboundBindAddressPT`.
    pub outbound_bind_v4: Option<Ipv4Addr>,
    /// `TOR_PT_OUTBOUND_BIND_ADDRESS_V6` (sent bracketed, `[::1]`).
    pub outbound_bind_v6: Option<Ipv6Addr>,
    /// Present when `TOR_PT_CLIENT_TRANSPORTS` is set.
    pub client: Option<ClientEnv>,
    /// Present when `TOR_PT_SERVER_TRANSPORTS` is set.
    pub server: Option<ServerEnv>,
}

/// The client half of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnv {
    /// `TOR_PT_CLIENT_TRANSPORTS`, in tor's order; may name transports we do not have.
    pub transports: Vec<String>,
    /// `TOR_PT_PROXY` exactly as sent (even if empty). tor kills a proxy that does not answer
    /// `PROXY DONE` or `PROXY-ERROR` whenever it set this variable, so it is kept raw and validated
    /// by the caller, whose failures become `PROXY-ERROR`, not `ENV-ERROR`.
    pub proxy: Option<String>,
}

/// The server half of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEnv {
    /// `TOR_PT_SERVER_TRANSPORTS`, in tor's order.
    pub transports: Vec<String>,
    /// `TOR_PT_SERVER_BINDADDR`: where each transport should listen, in tor's order.
    pub bind_addrs: Vec<(String, SocketAddr)>,
    /// `TOR_PT_SERVER_TRANSPORT_OPTIONS`: per transport, its `k=v` options in order (duplicates
    /// kept; the consumer decides whether they are an error).
    pub options: BTreeMap<String, Vec<(String, String)>>,
    /// `TOR_PT_ORPORT`: plain ORPort, used only when there is no Extended ORPort.
    pub orport: Option<SocketAddr>,
    /// `TOR_PT_EXTENDED_SERVER_PORT`; tor sets it to the empty string when there is none.
    pub ext_orport: Option<SocketAddr>,
    /// `TOR_PT_AUTH_COOKIE_FILE`: the Extended ORPort cookie, always present with `ext_orport`.
    pub auth_cookie_file: Option<PathBuf>,
}

impl ServerEnv {
    /// Where `transport` should listen: tor's `TOR_PT_SERVER_BINDADDR` entry, or tor's own
    /// default `0.0.0.0:0` (any address, port of our choosing) when there is none.
    pub fn bind_addr(&self, transport: &str) -> SocketAddr {
        self.bind_addrs
            .iter()
            .find(|(name, _)| name == transport)
            .map(|(_, addr)| *addr)
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The `ServerTransportOptions` for `transport`, empty when none were configured.
    pub fn options_for(&self, transport: &str) -> &[(String, String)] {
        self.options
            .get(transport)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The variables that name files. Their values are used as given, in any encoding: a
/// `DataDirectory` under a non-UTF-8 path is still a valid place for tor to run.
const PATH_VARIABLES: [&str; 2] = ["TOR_PT_STATE_LOCATION", "TOR_PT_AUTH_COOKIE_FILE"];

/// Reads [`VARIABLES`] from the process environment and parses them.
///
/// A variable other than a path whose value is not valid Unicode is an `ENV-ERROR` naming it,
/// rather than being silently treated as absent.
pub fn from_process_env() -> Result<ManagedEnv, EnvError> {
    for var in VARIABLES.iter().filter(|v| !PATH_VARIABLES.contains(v)) {
        if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(var) {
            return Err(invalid(var, "value is not valid UTF-8"));
        }
    }
    parse_with_paths(
        |name| std::env::var(name).ok(),
        |name| std::env::var_os(name),
    )
}

/// Parses the managed-proxy environment from `get` (variable name to value, `None` if unset).
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<ManagedEnv, EnvError> {
    parse_with_paths(&get, |name| get(name).map(OsString::from))
}

/// [`parse`], with the path variables ([`PATH_VARIABLES`]) read by `get_path`.
pub fn parse_with_paths(
    get: impl Fn(&str) -> Option<String>,
    get_path: impl Fn(&str) -> Option<OsString>,
) -> Result<ManagedEnv, EnvError> {
    // Version first: a launcher that speaks another version must get VERSION-ERROR, whatever
    // else is wrong. An unset variable cannot list `1` either.
    let versions = get("TOR_PT_MANAGED_TRANSPORT_VER").unwrap_or_default();
    if !versions.split(',').any(|v| v.trim() == "1") {
        return Err(EnvError::NoVersion);
    }

    let state_location = match get_path("TOR_PT_STATE_LOCATION") {
        Some(s) if !s.is_empty() => PathBuf::from(s),
        Some(_) => return Err(invalid("TOR_PT_STATE_LOCATION", "is empty")),
        None => return Err(invalid("TOR_PT_STATE_LOCATION", "is not set")),
    };

    // Only `1` asks for it; any other value means "don't", as in goptlib, so a launcher that
    // writes `true` or `yes` still gets a working transport.
    let exit_on_stdin_close = get("TOR_PT_EXIT_ON_STDIN_CLOSE").as_deref() == Some("1");

    let outbound_bind_v4 = match non_empty(get("TOR_PT_OUTBOUND_BIND_ADDRESS_V4")) {
        None => None,
        Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| {
            invalid(
                "TOR_PT_OUTBOUND_BIND_ADDRESS_V4",
                format_args!("{s:?} is not an IPv4 address"),
            )
        })?),
    };
    let outbound_bind_v6 = match non_empty(get("TOR_PT_OUTBOUND_BIND_ADDRESS_V6")) {
        None => None,
        Some(s) => Some(parse_bracketed_v6(&s).ok_or_else(|| {
            invalid(
                "TOR_PT_OUTBOUND_BIND_ADDRESS_V6",
                format_args!("{s:?} is not an IPv6 address"),
            )
        })?),
    };

    let client = get("TOR_PT_CLIENT_TRANSPORTS").map(|list| ClientEnv {
        transports: split_list(&list),
        proxy: get("TOR_PT_PROXY"),
    });

    let server = match get("TOR_PT_SERVER_TRANSPORTS") {
        None => None,
        Some(list) => Some(parse_server(split_list(&list), &get, &get_path)?),
    };

    if client.is_none() && server.is_none() {
        return Err(EnvError::Invalid(
            "neither TOR_PT_CLIENT_TRANSPORTS nor TOR_PT_SERVER_TRANSPORTS is set".into(),
        ));
    }

    Ok(ManagedEnv {
        state_location,
        exit_on_stdin_close,
        outbound_bind_v4,
        outbound_bind_v6,
        client,
        server,
    })
}

fn parse_server(
    transports: Vec<String>,
    get: &impl Fn(&str) -> Option<String>,
    get_path: &impl Fn(&str) -> Option<OsString>,
) -> Result<ServerEnv, EnvError> {
    let bind_addrs = match non_empty(get("TOR_PT_SERVER_BINDADDR")) {
        None => Vec::new(),
        Some(s) => parse_bindaddr(&s).map_err(|why| invalid("TOR_PT_SERVER_BINDADDR", why))?,
    };
    let options = match get("TOR_PT_SERVER_TRANSPORT_OPTIONS") {
        None => BTreeMap::new(),
        Some(s) => parse_server_transport_options(&s)
            .map_err(|why| invalid("TOR_PT_SERVER_TRANSPORT_OPTIONS", why))?,
    };
    let orport = parse_socket_addr_var("TOR_PT_ORPORT", get)?;
    // tor always sets this one, to the empty string when no ExtORPort is configured.
    let ext_orport = parse_socket_addr_var("TOR_PT_EXTENDED_SERVER_PORT", get)?;
    let auth_cookie_file = get_path("TOR_PT_AUTH_COOKIE_FILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);

    if ext_orport.is_some() && auth_cookie_file.is_none() {
        return Err(EnvError::Invalid(
            "TOR_PT_EXTENDED_SERVER_PORT is set but TOR_PT_AUTH_COOKIE_FILE is not".into(),
        ));
    }
    if ext_orport.is_none() && orport.is_none() {
        return Err(EnvError::Invalid(
            "server mode needs TOR_PT_ORPORT or TOR_PT_EXTENDED_SERVER_PORT; neither is set".into(),
        ));
    }
    Ok(ServerEnv {
        transports,
        bind_addrs,
        options,
        orport,
        ext_orport,
        auth_cookie_file,
    })
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

fn parse_socket_addr_var(
    var: &str,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SocketAddr>, EnvError> {
    match non_empty(get(var)) {
        None => Ok(None),
        Some(s) => s.parse::<SocketAddr>().map(Some).map_err(|_| {
            invalid(
                var,
                format_args!("{s:?} is not an IP:PORT address (IPv6 in brackets)"),
            )
        }),
    }
}

/// tor decorates the V6 bind address with brackets; a bare address is accepted as well.
fn parse_bracketed_v6(s: &str) -> Option<Ipv6Addr> {
    let inner = match s.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None => s,
    };
    inner.parse().ok()
}

/// Splits a comma list of transport names. Empty items (which tor never sends) are skipped.
fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `name` is a C identifier, the shape tor requires of transport names.
pub fn is_transport_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The transports from tor's list that we implement, in tor's order and without repeats.
/// Names we do not know are skipped silently: tor may hand one process several transports.
pub fn supported_transports(requested: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for name in requested {
        if name == TRANSPORT_NAME && !out.contains(&TRANSPORT_NAME) {
            out.push(TRANSPORT_NAME);
        }
    }
    out
}

/// Parses `TOR_PT_SERVER_BINDADDR`: `name-ip:port` entries separated by commas, IPv6 bracketed
/// (`water-[::1]:0`). Transport names cannot contain `-`, so the first `-` ends the name.
pub fn parse_bindaddr(s: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut out: Vec<(String, SocketAddr)> = Vec::new();
    for entry in s.split(',') {
        let Some((name, addr)) = entry.split_once('-') else {
            return Err(format!(
                "entry {entry:?} is not of the form transport-IP:PORT"
            ));
        };
        if !is_transport_name(name) {
            return Err(format!(
                "entry {entry:?}: {name:?} is not a valid transport name"
            ));
        }
        let addr: SocketAddr = addr.parse().map_err(|_| {
            format!("entry {entry:?}: {addr:?} is not an IP:PORT address (IPv6 in brackets)")
        })?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("transport {name:?} is listed twice"));
        }
        out.push((name.to_owned(), addr));
    }
    Ok(out)
}

/// Parses `TOR_PT_SERVER_TRANSPORT_OPTIONS`: `name:k=v` items separated by `;`.
///
/// tor escapes `:`, `;` and `\` with a backslash inside each `k=v` (never `=`), so: items split on
/// unescaped `;`, the name ends at the first unescaped `:`, the key at the first `=`, and `\x`
/// stands for `x` (any `x`, which is a superset of what tor produces). An empty string means no
/// options.
pub fn parse_server_transport_options(
    s: &str,
) -> Result<BTreeMap<String, Vec<(String, String)>>, String> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    if s.is_empty() {
        return Ok(out);
    }
    for (index, item) in split_unescaped(s, ';')?.into_iter().enumerate() {
        if item.is_empty() {
            return Err(format!("item {} is empty", index + 1));
        }
        let shown = item.clone();
        let Some((name, kv)) = split_first_unescaped(&item, ':') else {
            return Err(format!(
                "item {shown:?} has no ':' after the transport name"
            ));
        };
        let name = unescape(name)?;
        if !is_transport_name(&name) {
            return Err(format!(
                "item {shown:?}: {name:?} is not a valid transport name"
            ));
        }
        let kv = unescape(kv)?;
        let Some((key, value)) = kv.split_once('=') else {
            return Err(format!("item {shown:?} has no '=' in its k=v"));
        };
        if key.is_empty() {
            return Err(format!("item {shown:?} has an empty key"));
        }
        out.entry(name)
            .or_default()
            .push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// Splits on `sep` where it is not preceded by an escaping backslash; pieces stay escaped.
fn split_unescaped(s: &str, sep: char) -> Result<Vec<String>, String> {
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let Some(next) = chars.next() else {
                return Err("ends with a lone backslash".into());
            };
            cur.push(c);
            cur.push(next);
        } else if c == sep {
            pieces.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    pieces.push(cur);
    Ok(pieces)
}

/// The text before and after the first unescaped `sep`, both still escaped.
fn split_first_unescaped(s: &str, sep: char) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            return Some((s.get(..i)?, s.get(i + c.len_utf8()..)?));
        }
    }
    None
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().ok_or("ends with a lone backslash")?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
