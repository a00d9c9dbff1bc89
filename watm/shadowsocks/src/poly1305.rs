//! Poly1305 (RFC 8439, section 2.5) as ChaCha20-Poly1305 uses it: every
//! input is zero-padded to whole 16-byte blocks.
//!
//! The arithmetic is the usual one for 32-bit machines (the accumulator and
//! `r` in five 26-bit limbs, products in 64 bits), which is also what
//! RustCrypto's `poly1305` does on wasm32. The difference is the loop:
//! that crate hands its portable backend one block per (not inlined) call,
//! which loads the accumulator and `r` from memory, recomputes `5 * r`, and
//! stores the accumulator back, for every 16 bytes. Here a whole message is
//! absorbed in one loop with all of that in locals, i.e. in registers once
//! the runtime has compiled the module. The unit tests check it against the
//! crate.

/// The five 26-bit limbs of a number below 2^130 (limb 0 least significant).
type Limbs = [u32; 5];

/// Mask of one 26-bit limb.
const LIMB: u32 = 0x3ff_ffff;

/// A Poly1305 computation under one one-time key.
pub struct Poly1305 {
    /// The clamped `r` of the key.
    r: Limbs,
    /// The accumulator.
    h: Limbs,
    /// `s`, the second half of the key, added at the end.
    pad: [u32; 4],
}

/// The little-endian `u32` at `bytes[at..at + 4]` (0 past the end, which the
/// callers never reach).
#[inline(always)]
fn le32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

impl Poly1305 {
    /// Starts a computation under the 32-byte one-time key `r || s`.
    pub fn new(key: &[u8; 32]) -> Self {
        // `r` is clamped (RFC 8439, 2.5.1) while being split into limbs.
        Self {
            r: [
                le32(key, 0) & 0x3ff_ffff,
                (le32(key, 3) >> 2) & 0x3ff_ff03,
                (le32(key, 6) >> 4) & 0x3ff_c0ff,
                (le32(key, 9) >> 6) & 0x3f0_3fff,
                (le32(key, 12) >> 8) & 0x00f_ffff,
            ],
            h: [0; 5],
            pad: [le32(key, 16), le32(key, 20), le32(key, 24), le32(key, 28)],
        }
    }

    /// Absorbs `data`, zero-padded to a multiple of 16 bytes; every block,
    /// the padded last one too, counts as a full block.
    pub fn update_padded(&mut self, data: &[u8]) {
        let chunks = data.chunks_exact(16);
        let tail = chunks.remainder();
        let mut h = self.h;
        for block in chunks {
            h = self.block(h, block);
        }
        if !tail.is_empty() {
            let mut last = [0u8; 16];
            if let Some(dst) = last.get_mut(..tail.len()) {
                dst.copy_from_slice(tail);
            }
            h = self.block(h, &last);
        }
        self.h = h;
    }

    /// `(h + block + 2^128) * r mod 2^130 - 5`, partially reduced.
    #[inline(always)]
    fn block(&self, h: Limbs, block: &[u8]) -> Limbs {
        let [r0, r1, r2, r3, r4] = self.r.map(u64::from);
        // 2^130 = 5 (mod p): products that reach past limb 4 wrap around
        // times five.
        let (s1, s2, s3, s4) = (r1 * 5, r2 * 5, r3 * 5, r4 * 5);
        let h0 = u64::from(h[0] + (le32(block, 0) & LIMB));
        let h1 = u64::from(h[1] + ((le32(block, 3) >> 2) & LIMB));
        let h2 = u64::from(h[2] + ((le32(block, 6) >> 4) & LIMB));
        let h3 = u64::from(h[3] + ((le32(block, 9) >> 6) & LIMB));
        let h4 = u64::from(h[4] + ((le32(block, 12) >> 8) | (1 << 24)));

        let d0 = h0 * r0 + h1 * s4 + h2 * s3 + h3 * s2 + h4 * s1;
        let d1 = h0 * r1 + h1 * r0 + h2 * s4 + h3 * s3 + h4 * s2;
        let d2 = h0 * r2 + h1 * r1 + h2 * r0 + h3 * s4 + h4 * s3;
        let d3 = h0 * r3 + h1 * r2 + h2 * r1 + h3 * r0 + h4 * s4;
        let d4 = h0 * r4 + h1 * r3 + h2 * r2 + h3 * r1 + h4 * r0;

        // Carry through the limbs, the top one around to limb 0 (times 5).
        let d1 = d1 + (d0 >> 26);
        let d2 = d2 + (d1 >> 26);
        let d3 = d3 + (d2 >> 26);
        let d4 = d4 + (d3 >> 26);
        let top = (d4 >> 26) as u32;
        let h0 = (d0 as u32 & LIMB) + top * 5;
        [
            h0 & LIMB,
            (d1 as u32 & LIMB) + (h0 >> 26),
            d2 as u32 & LIMB,
            d3 as u32 & LIMB,
            d4 as u32 & LIMB,
        ]
    }

    /// The tag: `h mod p`, plus `s`, mod 2^128.
    pub fn finalize(self) -> [u8; 16] {
        let [mut h0, mut h1, mut h2, mut h3, mut h4] = self.h;
        // Full carry.
        h2 += h1 >> 26;
        h1 &= LIMB;
        h3 += h2 >> 26;
        h2 &= LIMB;
        h4 += h3 >> 26;
        h3 &= LIMB;
        h0 += (h4 >> 26) * 5;
        h4 &= LIMB;
        h1 += h0 >> 26;
        h0 &= LIMB;

        // g = h + 5 - 2^130 = h - p; h >= p exactly when g does not go
        // negative. Chosen by mask, without a branch.
        let g0 = h0 + 5;
        let g1 = h1 + (g0 >> 26);
        let g2 = h2 + (g1 >> 26);
        let g3 = h3 + (g2 >> 26);
        let g4 = (h4 + (g3 >> 26)).wrapping_sub(1 << 26);
        let use_g = (g4 >> 31).wrapping_sub(1);
        let pick = |h: u32, g: u32| (h & !use_g) | (g & LIMB & use_g);
        let (h0, h1, h2, h3) = (pick(h0, g0), pick(h1, g1), pick(h2, g2), pick(h3, g3));
        let h4 = (h4 & !use_g) | (g4 & use_g);

        // Back to four 32-bit words (mod 2^128), then add s.
        let words = [
            h0 | (h1 << 26),
            (h1 >> 6) | (h2 << 20),
            (h2 >> 12) | (h3 << 14),
            (h3 >> 18) | (h4 << 8),
        ];
        let mut tag = [0u8; 16];
        let mut carry = 0u64;
        for ((word, pad), out) in words.iter().zip(self.pad).zip(tag.chunks_exact_mut(4)) {
            let sum = u64::from(*word) + u64::from(pad) + carry;
            out.copy_from_slice(&(sum as u32).to_le_bytes());
            carry = sum >> 32;
        }
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poly1305::universal_hash::{KeyInit, UniversalHash};

    fn reference(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 16] {
        let mut mac = poly1305::Poly1305::new(key.into());
        for part in parts {
            mac.update_padded(part);
        }
        mac.finalize().into()
    }

    fn ours(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 16] {
        let mut mac = Poly1305::new(key);
        for part in parts {
            mac.update_padded(part);
        }
        mac.finalize()
    }

    #[test]
    fn matches_the_poly1305_crate() {
        // Keys that clamp to the largest r, to nothing, and something in
        // between; messages of all-ones bytes push every carry.
        let keys: [[u8; 32]; 4] = [
            [0xff; 32],
            [0; 32],
            std::array::from_fn(|i| (i * 37 + 11) as u8),
            std::array::from_fn(|i| if i < 16 { 0xff } else { i as u8 }),
        ];
        let ones = [0xffu8; 300];
        let mixed: Vec<u8> = (0..300u32).map(|i| (i * 97 + 3) as u8).collect();
        for key in &keys {
            for len in [0, 1, 15, 16, 17, 31, 32, 33, 64, 255, 256, 300] {
                for data in [&ones[..len], &mixed[..len]] {
                    assert_eq!(ours(key, &[data]), reference(key, &[data]), "{len} bytes");
                    // Two pieces, as a ciphertext and its lengths block.
                    let lengths = [0xffu8; 16];
                    assert_eq!(
                        ours(key, &[data, &lengths]),
                        reference(key, &[data, &lengths]),
                        "{len} bytes and lengths"
                    );
                }
            }
        }
    }

    #[test]
    fn rfc_8439_key_on_whole_blocks() {
        // The key of RFC 8439, 2.5.2, over a message of whole blocks: the
        // result equals the crate's (the RFC's own message ends in a partial
        // block, which ChaCha20-Poly1305 never feeds in).
        let key: [u8; 32] = [
            0x85, 0xd6, 0xbe, 0x78, 0x57, 0x55, 0x6d, 0x33, 0x7f, 0x44, 0x52, 0xfe, 0x42, 0xd5,
            0x06, 0xa8, 0x01, 0x03, 0x80, 0x8a, 0xfb, 0x0d, 0xb2, 0xfd, 0x4a, 0xbf, 0xf6, 0xaf,
            0x41, 0x49, 0xf5, 0x1b,
        ];
        let message = b"Cryptographic Forum Research Group and more";
        assert_eq!(ours(&key, &[message]), reference(&key, &[message]));
        assert_ne!(ours(&key, &[message]), ours(&key, &[&message[1..]]));
    }
}
