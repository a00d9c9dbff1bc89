//! `shadowsocks`: a WATM speaking Shadowsocks AEAD (SIP004), interoperable
//! with other Shadowsocks implementations such as shadowsocks-rust.
//!
//! One module, two roles, chosen by the export the runtime calls:
//!
//! * **Client** (`watm_dial_v1`): the runtime dials the Shadowsocks server;
//!   the caller side is the application's plaintext. The first chunk sent
//!   starts with the target address header from the config's `target`.
//! * **Server** (`watm_accept_v1`): the network side is an inbound
//!   Shadowsocks connection, the caller side the plaintext upstream the
//!   runtime connected. The server authenticates and decrypts; nothing is
//!   forwarded before the client's first chunk verified and its target header
//!   passed the `expect_target` check.
//!
//! A connection that fails authentication (wrong key, garbage, a probe) is
//! never answered: the server keeps reading and discarding until
//! `reject_timeout_secs` after the connection opened, or until a random byte
//! budget is used up, then closes. A connection that is still incomplete at
//! that time (a few bytes, then silence) is closed at the same moment, so a
//! prober cannot tell "rejected" from "waiting for more". Upstream bytes
//! that arrive before authentication are held back for the same reason.
//!
//! The configuration is described in [`config`]. A missing or invalid one
//! fails `watm_init_v1` with `-EINVAL` and a one-line reason on stderr (which
//! the runtime logs).

#![forbid(unsafe_code)]

pub mod address;
pub mod chacha;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod poly1305;

use std::io::Write;
use std::time::{Duration, Instant};

use watm_sdk::{Errno, Role, Transport};

use crate::address::{Decoded, MAX_HEADER_LEN, Target};
use crate::codec::{Opener, Sealer, reserve};
use crate::config::Config;
use crate::crypto::random;

/// How long a client waits for the application's first bytes before it sends
/// the target header on its own. Sending it together with the first data is
/// the norm (one fewer, less distinctive packet), but an application that
/// waits for the server to speak first would otherwise wait forever.
pub const HEADER_DELAY: Duration = Duration::from_millis(100);

/// Most upstream bytes a server holds back while the client is not yet
/// authenticated. A real client authenticates with its first chunk, so only
/// an upstream that talks first and a lot runs into this.
pub const MAX_HELD: usize = 256 * 1024;

/// A rejected connection is closed after reading a random number of bytes in
/// `REJECT_BUDGET..2 * REJECT_BUDGET` (or after the timeout), so the point of
/// closing does not reveal a fixed protocol boundary.
pub const REJECT_BUDGET: usize = 64 * 1024;

/// Writes one line to stderr, which the runtime copies into its log. A
/// failure to write is ignored: logging must never end the connection.
fn log(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "shadowsocks: {args}");
}

/// The transport: the configuration, then the state of whichever role runs.
pub struct Shadowsocks {
    config: Config,
    conn: Conn,
}

enum Conn {
    /// Before `watm_start_v1`.
    Idle,
    Client(Client),
    Server(Server),
}

struct Client {
    sealer: Sealer,
    opener: Opener,
    /// The encoded target header until it has been sent.
    header: Option<Vec<u8>>,
    header_due: Instant,
}

struct Server {
    sealer: Sealer,
    opener: Opener,
    expect: Option<Target>,
    /// When a connection that has not authenticated by then is closed:
    /// `reject_timeout` after it started. Counting from the start, not from
    /// a failure, makes "still waiting for bytes" and "rejected" end alike.
    deadline: Instant,
    reject_timeout: Duration,
    phase: Phase,
    /// Upstream bytes not yet sent, held until the client authenticated.
    held: Vec<u8>,
}

enum Phase {
    /// Plaintext of the client's first chunk(s) until the header is whole.
    Header(Vec<u8>),
    /// Authenticated: bytes flow both ways.
    Open,
    /// Failed authentication: discard until the deadline or until `budget`
    /// runs out.
    Rejected { budget: usize },
}

impl Transport for Shadowsocks {
    /// Eight whole chunks: a full read of plaintext seals into full chunks
    /// only, rather than into full ones and a few bytes of a ninth (which
    /// would cost two more AEAD operations and 34 bytes on the wire).
    const READ_SIZE: usize = 8 * codec::MAX_PAYLOAD;

    fn init(config: Option<Vec<u8>>) -> Result<Self, Errno> {
        let Some(bytes) = config else {
            log(format_args!(
                "no /conf/watm.cfg; a method and password are required"
            ));
            return Err(Errno::INVAL);
        };
        let config = Config::parse(&bytes).map_err(|why| {
            log(format_args!("invalid /conf/watm.cfg: {why}"));
            Errno::INVAL
        })?;
        Ok(Self {
            config,
            conn: Conn::Idle,
        })
    }

    fn on_start(&mut self, role: Role, _: &mut Vec<u8>, _: &mut Vec<u8>) -> Result<(), Errno> {
        let config = &self.config;
        let sealer = Sealer::new(config.method, &config.key)?;
        let opener = Opener::new(config.method, config.key.clone());
        self.conn = match (role, &config.target) {
            (Role::Dialer, Some(target)) => {
                let mut header = Vec::with_capacity(MAX_HEADER_LEN);
                target.encode(&mut header);
                Conn::Client(Client {
                    sealer,
                    opener,
                    header: Some(header),
                    header_due: Instant::now() + HEADER_DELAY,
                })
            }
            (Role::Listener, None) => Conn::Server(Server {
                sealer,
                opener,
                expect: config.expect_target.clone(),
                deadline: Instant::now() + config.reject_timeout,
                reject_timeout: config.reject_timeout,
                phase: Phase::Header(Vec::new()),
                held: Vec::new(),
            }),
            (Role::Dialer, None) => {
                log(format_args!(
                    "the client role needs \"target\" in the config"
                ));
                return Err(Errno::INVAL);
            }
            (Role::Listener, Some(_)) => {
                log(format_args!(
                    "the server role takes no \"target\" (a client config?)"
                ));
                return Err(Errno::INVAL);
            }
            (Role::FixedDialer | Role::Relay, _) => return Err(Errno::NOTSUP),
        };
        Ok(())
    }

    fn timer(&self) -> Option<Instant> {
        match &self.conn {
            Conn::Client(client) if client.header.is_some() => Some(client.header_due),
            Conn::Server(server) => match server.phase {
                Phase::Header(_) | Phase::Rejected { .. } => Some(server.deadline),
                Phase::Open if !server.held.is_empty() => Some(Instant::now()),
                Phase::Open => None,
            },
            _ => None,
        }
    }

    fn on_timer(
        &mut self,
        _: Role,
        _: &mut Vec<u8>,
        to_network: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        match &mut self.conn {
            Conn::Client(client) => {
                if let Some(header) = client.header.take() {
                    client.sealer.seal(&header, to_network)?;
                }
                Ok(())
            }
            Conn::Server(server) => match server.phase {
                Phase::Header(_) | Phase::Rejected { .. } => {
                    log(format_args!(
                        "closing an inbound connection that did not authenticate within {} s",
                        server.reject_timeout.as_secs()
                    ));
                    Err(Errno::TIMEDOUT)
                }
                Phase::Open => {
                    let held = std::mem::take(&mut server.held);
                    server.sealer.seal(&held, to_network)
                }
            },
            Conn::Idle => Err(Errno::NOTCONN),
        }
    }

    fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        match &mut self.conn {
            Conn::Client(client) => match client.header.take() {
                Some(mut header) => {
                    reserve(&mut header, input.len())?;
                    header.extend_from_slice(input);
                    client.sealer.seal(&header, out)
                }
                None => client.sealer.seal(input, out),
            },
            Conn::Server(server) => server.upstream_bytes(input, out),
            Conn::Idle => Err(Errno::NOTCONN),
        }
    }

    fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        match &mut self.conn {
            Conn::Client(client) => client.opener.open(input, out).inspect_err(|_| {
                log(format_args!(
                    "the server's reply failed authentication (wrong password or method?)"
                ));
            }),
            Conn::Server(server) => server.client_bytes(input, out),
            Conn::Idle => Err(Errno::NOTCONN),
        }
    }
}

impl Server {
    /// Plaintext from the upstream, to be sealed for the client.
    fn upstream_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        match self.phase {
            Phase::Open => {
                if !self.held.is_empty() {
                    let held = std::mem::take(&mut self.held);
                    self.sealer.seal(&held, out)?;
                }
                self.sealer.seal(input, out)
            }
            Phase::Header(_) => {
                if self.held.len() + input.len() > MAX_HELD {
                    log(format_args!(
                        "the upstream sent too much before the client authenticated"
                    ));
                    return Err(Errno::MSGSIZE);
                }
                reserve(&mut self.held, input.len())?;
                self.held.extend_from_slice(input);
                Ok(())
            }
            // Never sent anywhere.
            Phase::Rejected { .. } => Ok(()),
        }
    }

    /// Bytes from the Shadowsocks client, to be opened for the upstream.
    fn client_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        match &mut self.phase {
            Phase::Open => self.opener.open(input, out).inspect_err(|_| {
                log(format_args!(
                    "a chunk from the client failed authentication; closing"
                ));
            }),
            Phase::Rejected { budget, .. } => {
                *budget = budget.saturating_sub(input.len());
                if *budget == 0 {
                    log(format_args!(
                        "closing a rejected connection (byte budget used up)"
                    ));
                    return Err(Errno::PROTO);
                }
                Ok(())
            }
            Phase::Header(plain) => {
                if self.opener.open(input, plain).is_err() {
                    return self.reject("failed authentication");
                }
                match address::decode(plain) {
                    Decoded::Incomplete => Ok(()),
                    Decoded::Invalid => self.reject("sent no valid target header"),
                    Decoded::Complete(target, used) => {
                        if let Some(expected) = &self.expect {
                            if !target.matches(expected) {
                                log(format_args!(
                                    "refusing target {target}: expect_target is {expected}"
                                ));
                                return Err(Errno::ACCES);
                            }
                        }
                        let rest = plain.get(used..).unwrap_or_default();
                        reserve(out, rest.len())?;
                        out.extend_from_slice(rest);
                        self.phase = Phase::Open;
                        Ok(())
                    }
                }
            }
        }
    }

    /// Stops forwarding for good and starts discarding, without a word to the
    /// client.
    fn reject(&mut self, why: &str) -> Result<(), Errno> {
        let mut noise = [0u8; 8];
        random(&mut noise)?;
        let extra = usize::try_from(u64::from_le_bytes(noise) % REJECT_BUDGET as u64).unwrap_or(0);
        self.phase = Phase::Rejected {
            budget: REJECT_BUDGET + extra,
        };
        self.held = Vec::new();
        log(format_args!(
            "an inbound connection {why}; discarding its bytes until {} s after it opened",
            self.reject_timeout.as_secs()
        ));
        Ok(())
    }
}

watm_sdk::export_transport!(Shadowsocks);

#[cfg(test)]
mod tests {
    use super::*;

    fn start(config: &str, role: Role) -> Shadowsocks {
        let mut t = Shadowsocks::init(Some(config.as_bytes().to_vec())).unwrap();
        t.on_start(role, &mut Vec::new(), &mut Vec::new()).unwrap();
        t
    }

    fn client(method: &str, password: &str, target: &str) -> Shadowsocks {
        let cfg = format!(r#"{{"method":"{method}","password":"{password}","target":"{target}"}}"#);
        start(&cfg, Role::Dialer)
    }

    fn server(method: &str, password: &str, expect: &str) -> Shadowsocks {
        let cfg =
            format!(r#"{{"method":"{method}","password":"{password}","expect_target":{expect}}}"#);
        start(&cfg, Role::Listener)
    }

    fn up(t: &mut Shadowsocks, input: &[u8]) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        t.caller_to_network(Role::Dialer, input, &mut out)
            .map(|()| out)
    }

    fn down(t: &mut Shadowsocks, input: &[u8]) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        t.network_to_caller(Role::Dialer, input, &mut out)
            .map(|()| out)
    }

    #[test]
    fn client_and_server_talk() {
        for method in ["chacha20-ietf-poly1305", "aes-256-gcm"] {
            let mut c = client(method, "pw", "127.0.0.1:9");
            let mut s = server(method, "pw", r#""127.0.0.1:9""#);
            // The server holds upstream bytes until the client authenticated.
            assert_eq!(up(&mut s, b"banner").unwrap(), b"");
            // Only the authentication deadline is pending.
            assert!(
                s.timer()
                    .is_some_and(|at| at > Instant::now() + Duration::from_secs(50))
            );
            let wire = up(&mut c, b"hello").unwrap();
            assert_eq!(c.timer(), None, "header went out with the data");
            assert_eq!(down(&mut s, &wire).unwrap(), b"hello");
            // Now the held banner is due at once.
            assert!(s.timer().is_some_and(|at| at <= Instant::now()));
            let mut reply = Vec::new();
            s.on_timer(Role::Listener, &mut Vec::new(), &mut reply)
                .unwrap();
            reply.extend(up(&mut s, b" world").unwrap());
            assert_eq!(s.timer(), None);
            assert_eq!(down(&mut c, &reply).unwrap(), b"banner world");
        }
    }

    #[test]
    fn client_sends_the_header_alone_when_the_caller_is_silent() {
        let mut c = client("aes-256-gcm", "pw", "example.com:80");
        let mut s = server("aes-256-gcm", "pw", "null");
        assert!(c.timer().is_some());
        let mut wire = Vec::new();
        c.on_timer(Role::Dialer, &mut Vec::new(), &mut wire)
            .unwrap();
        assert_eq!(c.timer(), None);
        assert_eq!(down(&mut s, &wire).unwrap(), b"");
        let wire = up(&mut c, b"later").unwrap();
        assert_eq!(down(&mut s, &wire).unwrap(), b"later");
    }

    #[test]
    fn wrong_password_is_discarded_silently() {
        let mut c = client("aes-256-gcm", "right", "127.0.0.1:9");
        let mut s = server("aes-256-gcm", "wrong", "null");
        up(&mut s, b"upstream banner").unwrap();
        let wire = up(&mut c, b"secret").unwrap();
        assert_eq!(down(&mut s, &wire).unwrap(), b"");
        // Rejected: a deadline, and the upstream's bytes never go out.
        assert!(s.timer().is_some_and(|at| at > Instant::now()));
        assert_eq!(up(&mut s, b"more").unwrap(), b"");
        // More garbage is swallowed until the budget runs out.
        let junk = vec![0u8; 1024];
        let mut swallowed = 0;
        while down(&mut s, &junk).is_ok() {
            swallowed += junk.len();
            assert!(swallowed < 2 * REJECT_BUDGET);
        }
        assert!(swallowed >= REJECT_BUDGET - junk.len());
        assert_eq!(
            s.on_timer(Role::Listener, &mut Vec::new(), &mut Vec::new()),
            Err(Errno::TIMEDOUT)
        );
    }

    #[test]
    fn unexpected_target_is_refused() {
        let mut c = client("chacha20-ietf-poly1305", "pw", "127.0.0.1:10");
        let mut s = server("chacha20-ietf-poly1305", "pw", r#""127.0.0.1:9""#);
        let wire = up(&mut c, b"x").unwrap();
        assert_eq!(down(&mut s, &wire), Err(Errno::ACCES));
    }

    #[test]
    fn garbage_gets_no_reply() {
        let mut s = server("chacha20-ietf-poly1305", "pw", "null");
        assert_eq!(down(&mut s, &[0x16; 200]).unwrap(), b"");
        assert!(matches!(
            &s.conn,
            Conn::Server(Server {
                phase: Phase::Rejected { .. },
                ..
            })
        ));
    }

    #[test]
    fn init_and_roles_refuse_bad_setups() {
        assert_eq!(Shadowsocks::init(None).err(), Some(Errno::INVAL));
        assert_eq!(
            Shadowsocks::init(Some(b"{".to_vec())).err(),
            Some(Errno::INVAL)
        );
        let server_cfg = br#"{"method":"aes-256-gcm","password":"p"}"#.to_vec();
        let mut t = Shadowsocks::init(Some(server_cfg)).unwrap();
        assert_eq!(
            t.on_start(Role::Dialer, &mut Vec::new(), &mut Vec::new()),
            Err(Errno::INVAL)
        );
        assert_eq!(
            t.on_start(Role::Relay, &mut Vec::new(), &mut Vec::new()),
            Err(Errno::NOTSUP)
        );
    }
}
