//! Pure pieces of the Extended ORPort protocol (tor's ext-orport-spec): the cookie file
//! layout, the SAFE_COOKIE hashes and the command framing. No I/O here, so every byte can be
//! checked by vector tests.

use std::net::SocketAddr;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The cookie file starts with this 32-byte header, followed by the 32-byte cookie.
pub(crate) const COOKIE_HEADER: &[u8; 32] = b"! Extended ORPort Auth Cookie !\n";
/// Header plus cookie: a cookie file of any other length is not one tor wrote.
pub(crate) const COOKIE_FILE_LEN: usize = 64;
/// Authentication type 1, SAFE_COOKIE: the only one tor implements.
pub(crate) const AUTH_SAFE_COOKIE: u8 = 1;
/// The HMAC labels from the spec; they bind each hash to its direction.
const SERVER_HASH_LABEL: &[u8] = b"ExtORPort authentication server-to-client hash";
const CLIENT_HASH_LABEL: &[u8] = b"ExtORPort authentication client-to-server hash";

/// Command types (ext-orport-spec section 3.1). PT -> tor: DONE, USERADDR, TRANSPORT;
/// tor -> PT: OKAY, DENY.
pub(crate) const CMD_DONE: u16 = 0x0000;
pub(crate) const CMD_USERADDR: u16 = 0x0001;
pub(crate) const CMD_TRANSPORT: u16 = 0x0002;
pub(crate) const CMD_OKAY: u16 = 0x1000;
pub(crate) const CMD_DENY: u16 = 0x1001;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256(cookie, label | ClientNonce | ServerNonce), still open for verification.
fn keyed(
    cookie: &[u8; 32],
    label: &[u8],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
) -> HmacSha256 {
    // RFC 2104: a key shorter than the 64-byte SHA-256 block is zero-padded to the block
    // size, so passing the padded block to the infallible fixed-size constructor computes the
    // same MAC as `new_from_slice(cookie)` without an error path that can never be taken.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(cookie);
    let mut mac = <HmacSha256 as KeyInit>::new(&block.into());
    mac.update(label);
    mac.update(client_nonce);
    mac.update(server_nonce);
    mac
}

/// Checks tor's ServerHash in constant time (`Mac::verify_slice`), proving tor knows the cookie
/// before we reveal anything derived from it.
pub(crate) fn verify_server_hash(
    cookie: &[u8; 32],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
    server_hash: &[u8],
) -> bool {
    keyed(cookie, SERVER_HASH_LABEL, client_nonce, server_nonce)
        .verify_slice(server_hash)
        .is_ok()
}

/// The ClientHash we send back to prove we know the cookie.
pub(crate) fn client_hash(
    cookie: &[u8; 32],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
) -> [u8; 32] {
    keyed(cookie, CLIENT_HASH_LABEL, client_nonce, server_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Splits a cookie file into its cookie, or says what is wrong with it.
pub(crate) fn parse_cookie_file(contents: &[u8]) -> Result<[u8; 32], String> {
    if contents.len() != COOKIE_FILE_LEN {
        return Err(format!(
            "is {} bytes long, expected exactly {COOKIE_FILE_LEN} \
             (32-byte header + 32-byte cookie)",
            contents.len()
        ));
    }
    let (header, cookie) = contents.split_at(32);
    if header != COOKIE_HEADER {
        return Err("does not start with the header \"! Extended ORPort Auth Cookie !\\n\"".into());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(cookie);
    Ok(out)
}

/// One Extended ORPort command: `type (u16 BE) | length (u16 BE) | body`. The constructors
/// keep the body within what the 16-bit length can describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    kind: u16,
    body: Vec<u8>,
}

impl Command {
    /// USERADDR carries the client's address as text, `1.2.3.4:5678` or `[::1]:5678`. An IPv6
    /// scope id is left out: it means nothing to tor and its address parser rejects `%`.
    pub(crate) fn user_addr(addr: SocketAddr) -> Self {
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; tor would count
        // those as IPv6 users with no country. Send the IPv4 address, as goptlib does.
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let text = match addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        Command {
            kind: CMD_USERADDR,
            body: text.into_bytes(),
        }
    }

    /// TRANSPORT carries the transport name, which tor requires to be a C identifier (it also
    /// appears in `SMETHOD` lines and tor's statistics).
    pub(crate) fn transport(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let valid_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_start || !valid_rest || name.len() > 255 {
            return Err(format!("transport name {name:?} is not a C identifier"));
        }
        Ok(Command {
            kind: CMD_TRANSPORT,
            body: name.as_bytes().to_vec(),
        })
    }

    /// DONE: no more commands from our side; tor answers OKAY or DENY.
    pub(crate) fn done() -> Self {
        Command {
            kind: CMD_DONE,
            body: Vec::new(),
        }
    }

    /// Appends the framed command to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        // Constructors bound the body far below 65535 bytes; saturating keeps this total.
        let len = u16::try_from(self.body.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.body[..usize::from(len)]);
    }
}

/// Splits a 4-byte command header into (type, body length).
pub(crate) fn parse_header(header: [u8; 4]) -> (u16, u16) {
    (
        u16::from_be_bytes([header[0], header[1]]),
        u16::from_be_bytes([header[2], header[3]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    fn encode(cmd: &Command) -> Vec<u8> {
        let mut v = Vec::new();
        cmd.encode_into(&mut v);
        v
    }

    #[test]
    fn useraddr_vectors() {
        let v4 = Command::user_addr("1.2.3.4:5678".parse().unwrap());
        assert_eq!(encode(&v4), b"\x00\x01\x00\x0c1.2.3.4:5678");
        let v6 = Command::user_addr("[::1]:5678".parse().unwrap());
        assert_eq!(encode(&v6), b"\x00\x01\x00\x0a[::1]:5678");
        // An IPv4 client seen through a dual-stack socket is sent as IPv4.
        let mapped = Command::user_addr("[::ffff:1.2.3.4]:5678".parse().unwrap());
        assert_eq!(encode(&mapped), b"\x00\x01\x00\x0c1.2.3.4:5678");
        let scoped = SocketAddrV6::new("fe80::1".parse::<Ipv6Addr>().unwrap(), 443, 0, 7);
        assert_eq!(
            encode(&Command::user_addr(scoped.into())),
            b"\x00\x01\x00\x0d[fe80::1]:443"
        );
    }

    #[test]
    fn transport_and_done_vectors() {
        assert_eq!(
            encode(&Command::transport("water").unwrap()),
            b"\x00\x02\x00\x05water"
        );
        assert_eq!(
            encode(&Command::transport("_a1").unwrap()),
            b"\x00\x02\x00\x03_a1"
        );
        assert_eq!(encode(&Command::done()), [0, 0, 0, 0]);
        let mut all = Vec::new();
        Command::transport("x").unwrap().encode_into(&mut all);
        Command::done().encode_into(&mut all);
        assert_eq!(all, b"\x00\x02\x00\x01x\x00\x00\x00\x00");
    }

    #[test]
    fn transport_names_must_be_c_identifiers() {
        for bad in [
            "",
            "9lives",
            "wa ter",
            "wa-ter",
            "wäter",
            "a\n",
            &"a".repeat(256),
        ] {
            assert!(Command::transport(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_vectors() {
        assert_eq!(parse_header([0x10, 0x00, 0x00, 0x00]), (CMD_OKAY, 0));
        assert_eq!(parse_header([0x10, 0x01, 0x01, 0x02]), (CMD_DENY, 258));
        assert_eq!(parse_header([0xff, 0xff, 0xff, 0xff]), (0xffff, 0xffff));
    }

    #[test]
    fn hashes_match_independent_vectors() {
        // Computed with Python's hmac module over the same inputs.
        let cookie: [u8; 32] = std::array::from_fn(|i| i as u8);
        let (cn, sn) = ([0xaa; 32], [0xbb; 32]);
        let server =
            hex::decode("34a2f4df83ed4f9af94fffe0d29f0b6787179d05bb71ff4ea167691ea47ec949")
                .unwrap();
        let client =
            hex::decode("38a6c9f8e1b622cc8809d7b2e1e148244da9a695d85ccf4b5d0b060d219bf095")
                .unwrap();
        assert!(verify_server_hash(&cookie, &cn, &sn, &server));
        assert_eq!(client_hash(&cookie, &cn, &sn).to_vec(), client);
        // Either direction's hash is useless for the other, and any flipped bit fails.
        assert!(!verify_server_hash(&cookie, &cn, &sn, &client));
        let mut flipped = server.clone();
        flipped[31] ^= 1;
        assert!(!verify_server_hash(&cookie, &cn, &sn, &flipped));
        assert!(!verify_server_hash(&cookie, &cn, &sn, &server[..31]));
        assert!(!verify_server_hash(&cookie, &sn, &cn, &server));
    }

    #[test]
    fn cookie_file_vectors() {
        let mut good = COOKIE_HEADER.to_vec();
        good.extend(1..=32u8);
        let cookie = parse_cookie_file(&good).unwrap();
        assert_eq!(cookie[0], 1);
        assert_eq!(cookie[31], 32);
        assert!(parse_cookie_file(&good[..63])
            .unwrap_err()
            .contains("63 bytes"));
        assert!(parse_cookie_file(&[]).unwrap_err().contains("0 bytes"));
        let mut long = good.clone();
        long.push(b'\n');
        assert!(parse_cookie_file(&long).unwrap_err().contains("65 bytes"));
        let mut bad = good.clone();
        bad[0] = b'?';
        assert!(parse_cookie_file(&bad).unwrap_err().contains("header"));
    }
}
