//! Key material and the AEAD ciphers of Shadowsocks AEAD (SIP004).
//!
//! * The *master key* comes from the password through OpenSSL's
//!   `EVP_BytesToKey` with MD5 and one round, because that is what every
//!   Shadowsocks implementation does for the non-2022 methods; it is weak as
//!   a password hash, which is why the password should be long and random.
//! * Each direction of each connection picks a random salt and derives its
//!   own *subkey* = HKDF-SHA1(ikm = master key, salt, info = "ss-subkey").
//!   So a nonce can start at zero for every stream without ever repeating
//!   under the same key.
//! * The nonce is a 12-byte little-endian counter, incremented after every
//!   seal or open. Both directions of a stream seal length and payload as two
//!   separate AEAD messages, so a chunk uses two nonces.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use hkdf::Hkdf;
use md5::{Digest, Md5};
use sha1::Sha1;
use watm_sdk::Errno;

use crate::chacha::ChaCha20Poly1305;

/// Length of the AEAD tag of both methods.
pub const TAG_LEN: usize = 16;
/// Length of the nonce of both methods.
const NONCE_LEN: usize = 12;

/// The supported methods. Both have 32-byte keys and so 32-byte salts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `chacha20-ietf-poly1305` (RFC 8439).
    ChaCha20Poly1305,
    /// `aes-256-gcm`.
    Aes256Gcm,
}

impl Method {
    /// Looks a method up by its Shadowsocks name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "chacha20-ietf-poly1305" => Some(Self::ChaCha20Poly1305),
            "aes-256-gcm" => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    /// Key length, which SIP004 also uses as the salt length.
    pub const fn key_len(self) -> usize {
        32
    }
}

/// A master key (at most 32 bytes, as both methods use).
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
    len: usize,
}

impl MasterKey {
    /// `EVP_BytesToKey(MD5, no salt, 1 round)`: D1 = MD5(password),
    /// Di = MD5(Di-1 || password), concatenated until there are enough bytes.
    pub fn from_password(method: Method, password: &[u8]) -> Self {
        let len = method.key_len();
        let mut bytes = [0u8; 32];
        let mut filled = 0;
        let mut previous: Option<[u8; 16]> = None;
        while filled < len {
            let mut md5 = Md5::new();
            if let Some(previous) = previous {
                md5.update(previous);
            }
            md5.update(password);
            let block: [u8; 16] = md5.finalize().into();
            for (dst, src) in bytes.iter_mut().skip(filled).take(len - filled).zip(block) {
                *dst = src;
            }
            filled += block.len();
            previous = Some(block);
        }
        Self { bytes, len }
    }

    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }
}

/// The AEAD state of one direction of one connection: subkey plus counter.
pub struct Cipher {
    aead: Aead,
    nonce: [u8; NONCE_LEN],
}

/// The method's cipher, keyed with a subkey. AES-GCM's key schedule is
/// several hundred bytes, so it is boxed to keep [`Cipher`] small either way.
enum Aead {
    ChaCha(ChaCha20Poly1305),
    Aes(Box<Aes256Gcm>),
}

impl Cipher {
    /// The cipher of the stream that starts with `salt`.
    pub fn new(method: Method, key: &MasterKey, salt: &[u8]) -> Result<Self, Errno> {
        let mut subkey = [0u8; 32];
        let subkey = subkey.get_mut(..method.key_len()).ok_or(Errno::INVAL)?;
        Hkdf::<Sha1>::new(Some(salt), key.as_slice())
            .expand(b"ss-subkey", subkey)
            .map_err(|_| Errno::INVAL)?;
        let aead = match method {
            Method::ChaCha20Poly1305 => Aead::ChaCha(ChaCha20Poly1305::new(
                &<[u8; 32]>::try_from(&*subkey).map_err(|_| Errno::INVAL)?,
            )),
            Method::Aes256Gcm => Aead::Aes(Box::new(
                Aes256Gcm::new_from_slice(subkey).map_err(|_| Errno::INVAL)?,
            )),
        };
        Ok(Self {
            aead,
            nonce: [0; NONCE_LEN],
        })
    }

    /// Encrypts `buf` in place and returns the tag to send after it.
    pub fn seal(&mut self, buf: &mut [u8]) -> Result<[u8; TAG_LEN], Errno> {
        let tag = match &self.aead {
            Aead::ChaCha(c) => c.seal(&self.nonce, buf).map_err(|_| Errno::MSGSIZE)?,
            Aead::Aes(c) => c
                .encrypt_in_place_detached(&self.nonce.into(), &[], buf)
                .map_err(|_| Errno::MSGSIZE)?
                .into(),
        };
        self.advance();
        Ok(tag)
    }

    /// Decrypts `buf` in place if `tag` authenticates it. On failure `buf` is
    /// unspecified and the counter does not move (the stream is dead anyway).
    pub fn open(&mut self, buf: &mut [u8], tag: &[u8]) -> Result<(), Errno> {
        let tag = <[u8; TAG_LEN]>::try_from(tag).map_err(|_| Errno::PROTO)?;
        match &self.aead {
            Aead::ChaCha(c) => c.open(&self.nonce, buf, &tag).map_err(|_| Errno::PROTO)?,
            Aead::Aes(c) => c
                .decrypt_in_place_detached(&self.nonce.into(), &[], buf, &Tag::from(tag))
                .map_err(|_| Errno::PROTO)?,
        }
        self.advance();
        Ok(())
    }

    /// Little-endian increment with carry; wrapping after 2^96 messages is
    /// unreachable in practice.
    fn advance(&mut self) {
        for byte in &mut self.nonce {
            let (next, carry) = byte.overflowing_add(1);
            *byte = next;
            if !carry {
                break;
            }
        }
    }
}

/// Fills `buf` from the host's random source (WASI `random_get`).
pub fn random(buf: &mut [u8]) -> Result<(), Errno> {
    getrandom::fill(buf).map_err(|_| Errno::IO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn evp_bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -k password -nosalt -md md5 -P` prints
        // this key: MD5("password") || MD5(MD5("password") || "password").
        let key = MasterKey::from_password(Method::Aes256Gcm, b"password");
        assert_eq!(
            hex(key.as_slice()),
            "5f4dcc3b5aa765d61d8327deb882cf992b95990a9151374abd8ff8c5a7a0fe08"
        );
    }

    #[test]
    fn nonce_counts_little_endian() {
        let key = MasterKey::from_password(Method::ChaCha20Poly1305, b"k");
        let mut c = Cipher::new(Method::ChaCha20Poly1305, &key, &[0; 32]).unwrap();
        c.nonce = [0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c.advance();
        assert_eq!(c.nonce, [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn seal_then_open_both_methods() {
        for method in [Method::ChaCha20Poly1305, Method::Aes256Gcm] {
            let key = MasterKey::from_password(method, b"secret");
            let salt = [7u8; 32];
            let mut tx = Cipher::new(method, &key, &salt).unwrap();
            let mut rx = Cipher::new(method, &key, &salt).unwrap();
            for msg in [&b"first"[..], b"second"] {
                let mut buf = msg.to_vec();
                let tag = tx.seal(&mut buf).unwrap();
                assert_ne!(buf, msg);
                rx.open(&mut buf, &tag).unwrap();
                assert_eq!(buf, msg);
            }
            // Out of order (wrong nonce) or tampered: refused.
            let mut buf = b"third".to_vec();
            let tag = tx.seal(&mut buf).unwrap();
            let _ = tx.seal(&mut [0u8; 1]).unwrap();
            let mut other = buf.clone();
            other[0] ^= 1;
            assert_eq!(rx.open(&mut other, &tag), Err(Errno::PROTO));
        }
    }
}
