//! The SIP004 stream format: `salt`, then chunks of
//! `[sealed 2-byte big-endian length][tag][sealed payload][tag]`.
//!
//! A [`Sealer`] turns plaintext into that format for one direction and an
//! [`Opener`] turns it back, for bytes arriving in arbitrary pieces.

use watm_sdk::Errno;

use crate::crypto::{Cipher, MasterKey, Method, TAG_LEN, random};

/// Largest payload of one chunk. The two top bits of the length are reserved
/// by SIP004, so a length above this is a protocol violation.
pub const MAX_PAYLOAD: usize = 0x3FFF;

/// Bytes of a chunk's sealed length including its tag.
const LEN_PART: usize = 2 + TAG_LEN;

/// Reserves room for `extra` more bytes, or reports `NOMEM` where a plain
/// `Vec` growth would abort the instance.
pub fn reserve(out: &mut Vec<u8>, extra: usize) -> Result<(), Errno> {
    out.try_reserve(extra).map_err(|_| Errno::NOMEM)
}

/// The sending half of a stream: a fresh salt and its cipher. The salt goes
/// out in front of the first chunk, not before, so a peer sees nothing at all
/// until there is something to say.
pub struct Sealer {
    cipher: Cipher,
    salt: [u8; 32],
    salt_len: usize,
    salt_sent: bool,
}

impl Sealer {
    /// Picks a random salt and derives the stream's subkey from it.
    pub fn new(method: Method, key: &MasterKey) -> Result<Self, Errno> {
        let salt_len = method.key_len();
        let mut salt = [0u8; 32];
        random(salt.get_mut(..salt_len).ok_or(Errno::INVAL)?)?;
        let cipher = Cipher::new(method, key, salt.get(..salt_len).ok_or(Errno::INVAL)?)?;
        Ok(Self {
            cipher,
            salt,
            salt_len,
            salt_sent: false,
        })
    }

    /// Appends `data` to `out` as chunks of at most [`MAX_PAYLOAD`] bytes
    /// (the salt first, on the first call). Empty `data` appends nothing.
    pub fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        let chunks = data.len().div_ceil(MAX_PAYLOAD);
        reserve(
            out,
            self.salt_len + data.len() + chunks * (LEN_PART + TAG_LEN),
        )?;
        if !self.salt_sent {
            out.extend_from_slice(self.salt.get(..self.salt_len).ok_or(Errno::INVAL)?);
            self.salt_sent = true;
        }
        for chunk in data.chunks(MAX_PAYLOAD) {
            // `chunks` bounds the length to MAX_PAYLOAD, which fits in u16.
            let len = u16::try_from(chunk.len()).map_err(|_| Errno::MSGSIZE)?;
            self.seal_part(&len.to_be_bytes(), out)?;
            self.seal_part(chunk, out)?;
        }
        Ok(())
    }

    /// Appends `part` sealed, then its tag.
    fn seal_part(&mut self, part: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        let start = out.len();
        out.extend_from_slice(part);
        let tag = self.cipher.seal(out.get_mut(start..).ok_or(Errno::IO)?)?;
        out.extend_from_slice(&tag);
        Ok(())
    }
}

/// Where an [`Opener`] is in the stream.
enum State {
    /// Waiting for the peer's salt.
    Salt,
    /// Waiting for a sealed length.
    Length(Cipher),
    /// Waiting for a sealed payload of this many bytes.
    Payload(Cipher, usize),
}

/// The receiving half of a stream.
pub struct Opener {
    method: Method,
    key: MasterKey,
    /// Bytes received but not yet consumed: at most one partial salt or
    /// chunk plus the latest read.
    buf: Vec<u8>,
    state: Option<State>,
}

impl Opener {
    /// An opener that expects the peer's salt first.
    pub fn new(method: Method, key: MasterKey) -> Self {
        Self {
            method,
            key,
            buf: Vec::new(),
            state: Some(State::Salt),
        }
    }

    /// Consumes `input`, appending the plaintext of every chunk it completes
    /// to `out`.
    ///
    /// [`Errno::PROTO`] means the stream is not authentic (wrong key, tampered
    /// or not Shadowsocks at all) or breaks the format; the opener is then
    /// dead and every later call fails too. Nothing of a chunk reaches `out`
    /// unless its tag verified.
    pub fn open(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
        reserve(&mut self.buf, input.len())?;
        self.buf.extend_from_slice(input);
        let mut used = 0;
        let result = self.consume(&mut used, out);
        // Compact once per call rather than once per chunk.
        self.buf.drain(..used.min(self.buf.len()));
        result
    }

    fn consume(&mut self, used: &mut usize, out: &mut Vec<u8>) -> Result<(), Errno> {
        loop {
            let rest = self.buf.get(*used..).unwrap_or_default();
            // Taken out so a failure leaves the opener dead (`None`).
            let state = self.state.take().ok_or(Errno::PROTO)?;
            let next = match state {
                State::Salt => {
                    let Some(salt) = rest.get(..self.method.key_len()) else {
                        self.state = Some(State::Salt);
                        return Ok(());
                    };
                    *used += salt.len();
                    State::Length(Cipher::new(self.method, &self.key, salt)?)
                }
                State::Length(mut cipher) => {
                    let (Some(sealed), Some(tag)) = (rest.get(..2), rest.get(2..LEN_PART)) else {
                        self.state = Some(State::Length(cipher));
                        return Ok(());
                    };
                    let mut len = [0u8; 2];
                    len.copy_from_slice(sealed);
                    cipher.open(&mut len, tag)?;
                    let len = usize::from(u16::from_be_bytes(len));
                    if len > MAX_PAYLOAD {
                        return Err(Errno::PROTO);
                    }
                    *used += LEN_PART;
                    State::Payload(cipher, len)
                }
                State::Payload(mut cipher, len) => {
                    let (Some(sealed), Some(tag)) = (rest.get(..len), rest.get(len..len + TAG_LEN))
                    else {
                        self.state = Some(State::Payload(cipher, len));
                        return Ok(());
                    };
                    let start = out.len();
                    reserve(out, len)?;
                    out.extend_from_slice(sealed);
                    if let Err(errno) = cipher.open(out.get_mut(start..).ok_or(Errno::IO)?, tag) {
                        out.truncate(start);
                        return Err(errno);
                    }
                    *used += len + TAG_LEN;
                    State::Length(cipher)
                }
            };
            self.state = Some(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(method: Method, tx_password: &[u8], rx_password: &[u8]) -> (Sealer, Opener) {
        let tx = Sealer::new(method, &MasterKey::from_password(method, tx_password)).unwrap();
        let rx = Opener::new(method, MasterKey::from_password(method, rx_password));
        (tx, rx)
    }

    #[test]
    fn any_split_of_the_stream_opens() {
        for method in [Method::ChaCha20Poly1305, Method::Aes256Gcm] {
            let (mut tx, _) = pair(method, b"pw", b"pw");
            let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
            let mut wire = Vec::new();
            tx.seal(&data[..100], &mut wire).unwrap();
            tx.seal(&data[100..], &mut wire).unwrap();
            // 40_000 bytes: salt + 1 + 3 chunks (two full ones and a tail).
            assert_eq!(wire.len(), 32 + data.len() + 4 * (LEN_PART + TAG_LEN));
            for piece in [1, 17, 18, 4096, wire.len()] {
                let (_, mut rx) = pair(method, b"pw", b"pw");
                let mut back = Vec::new();
                for part in wire.chunks(piece) {
                    rx.open(part, &mut back).unwrap();
                }
                assert_eq!(back, data, "{method:?} piece {piece}");
            }
        }
    }

    #[test]
    fn wrong_password_and_tampering_fail_without_output() {
        let method = Method::Aes256Gcm;
        let (mut tx, mut rx) = pair(method, b"right", b"wrong");
        let mut wire = Vec::new();
        tx.seal(b"secret", &mut wire).unwrap();
        let mut out = Vec::new();
        assert_eq!(rx.open(&wire, &mut out), Err(Errno::PROTO));
        assert!(out.is_empty());
        // Dead from then on.
        assert_eq!(rx.open(&[], &mut out), Err(Errno::PROTO));

        let (_, mut rx) = pair(method, b"right", b"right");
        let last = wire.len() - 1;
        wire[last] ^= 1; // payload tag
        assert_eq!(rx.open(&wire, &mut out), Err(Errno::PROTO));
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_length_is_refused() {
        // Seal a length of 0x4000 by hand with the sender's cipher.
        let method = Method::ChaCha20Poly1305;
        let key = MasterKey::from_password(method, b"pw");
        let salt = [1u8; 32];
        let mut cipher = Cipher::new(method, &key, &salt).unwrap();
        let mut len = 0x4000u16.to_be_bytes();
        let tag = cipher.seal(&mut len).unwrap();
        let mut wire = salt.to_vec();
        wire.extend_from_slice(&len);
        wire.extend_from_slice(&tag);
        let mut rx = Opener::new(method, key);
        assert_eq!(rx.open(&wire, &mut Vec::new()), Err(Errno::PROTO));
    }
}
