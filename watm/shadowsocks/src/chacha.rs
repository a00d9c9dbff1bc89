//! `chacha20-ietf-poly1305` (RFC 8439) with a ChaCha20 core that computes
//! four blocks at once.
//!
//! RustCrypto's `chacha20` has SIMD backends for x86 (SSE2, AVX2) and aarch64
//! (NEON) only. On wasm32 it uses its portable backend, which computes one
//! 64-byte block at a time with scalar operations; in a bulk transfer that
//! was two thirds of the module's CPU time. Here each of the 16 state words
//! is a [`Lanes`] value holding that word of four consecutive blocks, so
//! every step of a round is one lane-wise operation on four blocks. The
//! rounds are written once; with the `simd128` target feature (which
//! `scripts/build-watm.sh` turns on) a [`Lanes`] is a wasm SIMD vector,
//! elsewhere an array, which is what the native unit tests run against the
//! `chacha20poly1305` crate. The SIMD version runs in the interop tests
//! (`tests/shadowsocks.rs`) against shadowsocks-rust.
//!
//! The MAC is Poly1305 (see [`crate::poly1305`] for why it is not
//! RustCrypto's either) keyed with the first 32 bytes of block 0, over the
//! ciphertext padded to 16 bytes, then the two lengths. Shadowsocks seals
//! without associated data, so the AAD is always empty here.

use subtle::ConstantTimeEq;

use crate::crypto::TAG_LEN;
use crate::poly1305::Poly1305;

/// "expand 32-byte k", the first row of every ChaCha state.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// Bytes of one ChaCha block.
const BLOCK: usize = 64;
/// Blocks computed together.
const LANES: usize = 4;
/// Keystream bytes of one call of [`blocks`].
const STRIDE: usize = BLOCK * LANES;

use lanes::Lanes;

/// One state word of four consecutive blocks (lane `i` belongs to block
/// `counter + i`), as a wasm SIMD vector: every operation is a few SIMD
/// instructions on all four blocks. Written with the intrinsics because LLVM
/// does not vectorise the portable version by itself (it judges four scalar
/// `i32.rotl` cheaper than a vector rotation).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use core::arch::wasm32::{
        i32x4_add, i32x4_shl, u32x4, u32x4_extract_lane, u32x4_shr, u32x4_splat, v128, v128_or,
        v128_xor,
    };

    /// Four lanes of 32 bits.
    #[derive(Clone, Copy)]
    pub struct Lanes(v128);

    impl Lanes {
        /// `word` in every lane.
        #[inline(always)]
        pub fn splat(word: u32) -> Self {
            Self(u32x4_splat(word))
        }

        /// The block counters `counter..counter + 4`.
        #[inline(always)]
        pub fn counters(counter: u32) -> Self {
            Self(u32x4(
                counter,
                counter.wrapping_add(1),
                counter.wrapping_add(2),
                counter.wrapping_add(3),
            ))
        }

        /// Lane-wise wrapping addition.
        #[inline(always)]
        pub fn add(self, other: Self) -> Self {
            Self(i32x4_add(self.0, other.0))
        }

        /// Lane-wise `(self ^ other).rotate_left(BITS)`, as two shifts and
        /// an or for every rotation. The byte-sized ones (16, 8) could be one
        /// `i8x16.shuffle`, but Wasmtime compiles that to a constant load and
        /// a two-source byte permute on x86-64, which measured slower.
        #[inline(always)]
        pub fn xor_rotl<const BITS: u32>(self, other: Self) -> Self {
            let x = v128_xor(self.0, other.0);
            Self(v128_or(i32x4_shl(x, BITS), u32x4_shr(x, 32 - BITS)))
        }

        /// The four lanes.
        #[inline(always)]
        pub fn to_array(self) -> [u32; 4] {
            [
                u32x4_extract_lane::<0>(self.0),
                u32x4_extract_lane::<1>(self.0),
                u32x4_extract_lane::<2>(self.0),
                u32x4_extract_lane::<3>(self.0),
            ]
        }
    }
}

/// One state word of four consecutive blocks (lane `i` belongs to block
/// `counter + i`), for targets without wasm SIMD: the same operations on an
/// array, which is what the native unit tests run.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    /// Four lanes of 32 bits.
    #[derive(Clone, Copy)]
    pub struct Lanes([u32; 4]);

    impl Lanes {
        /// `word` in every lane.
        #[inline(always)]
        pub fn splat(word: u32) -> Self {
            Self([word; 4])
        }

        /// The block counters `counter..counter + 4`.
        #[inline(always)]
        pub fn counters(counter: u32) -> Self {
            Self(std::array::from_fn(|i| counter.wrapping_add(i as u32)))
        }

        /// Lane-wise wrapping addition.
        #[inline(always)]
        pub fn add(self, other: Self) -> Self {
            Self(std::array::from_fn(|i| self.0[i].wrapping_add(other.0[i])))
        }

        /// Lane-wise `(self ^ other).rotate_left(BITS)`.
        #[inline(always)]
        pub fn xor_rotl<const BITS: u32>(self, other: Self) -> Self {
            Self(std::array::from_fn(|i| {
                (self.0[i] ^ other.0[i]).rotate_left(BITS)
            }))
        }

        /// The four lanes.
        #[inline(always)]
        pub fn to_array(self) -> [u32; 4] {
            self.0
        }
    }
}

/// The ChaCha quarter round on words `a`, `b`, `c`, `d` of all four blocks.
#[inline(always)]
fn quarter_round(x: &mut [Lanes; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].add(x[b]);
    x[d] = x[d].xor_rotl::<16>(x[a]);
    x[c] = x[c].add(x[d]);
    x[b] = x[b].xor_rotl::<12>(x[c]);
    x[a] = x[a].add(x[b]);
    x[d] = x[d].xor_rotl::<8>(x[a]);
    x[c] = x[c].add(x[d]);
    x[b] = x[b].xor_rotl::<7>(x[c]);
}

/// A column round, then a diagonal round.
#[inline(always)]
fn double_round(x: &mut [Lanes; 16]) {
    quarter_round(x, 0, 4, 8, 12);
    quarter_round(x, 1, 5, 9, 13);
    quarter_round(x, 2, 6, 10, 14);
    quarter_round(x, 3, 7, 11, 15);
    quarter_round(x, 0, 5, 10, 15);
    quarter_round(x, 1, 6, 11, 12);
    quarter_round(x, 2, 7, 8, 13);
    quarter_round(x, 3, 4, 9, 14);
}

/// The keystream of blocks `counter..counter + 4` under `key` and `nonce`,
/// block after block.
fn blocks(key: &[u32; 8], nonce: &[u32; 3], counter: u32) -> [u8; STRIDE] {
    let mut init = [Lanes::splat(0); 16];
    for (word, constant) in init.iter_mut().zip(SIGMA) {
        *word = Lanes::splat(constant);
    }
    for (word, key) in init.iter_mut().skip(4).zip(key) {
        *word = Lanes::splat(*key);
    }
    init[12] = Lanes::counters(counter);
    for (word, nonce) in init.iter_mut().skip(13).zip(nonce) {
        *word = Lanes::splat(*nonce);
    }
    let mut x = init;
    // Written out rather than looped: a loop would carry the sixteen state
    // vectors from one iteration to the next through the stack in the code
    // Cranelift generates; unrolled, they stay in registers as far as those
    // go.
    double_round(&mut x);
    double_round(&mut x);
    double_round(&mut x);
    double_round(&mut x);
    double_round(&mut x);
    double_round(&mut x);
    double_round(&mut x);
    double_round(&mut x);
    double_round(&mut x);
    double_round(&mut x);
    let mut out = [0u8; STRIDE];
    for (w, (mixed, init)) in x.iter().zip(&init).enumerate() {
        let word = mixed.add(*init).to_array();
        for (lane, value) in word.iter().enumerate() {
            let at = lane * BLOCK + w * 4;
            if let Some(dst) = out.get_mut(at..at + 4) {
                dst.copy_from_slice(&value.to_le_bytes());
            }
        }
    }
    out
}

/// XORs `keystream` into `buf` (as far as the shorter one goes).
#[inline(always)]
fn xor_into(buf: &mut [u8], keystream: &[u8]) {
    for (byte, key) in buf.iter_mut().zip(keystream) {
        *byte ^= key;
    }
}

/// Little-endian words of `bytes`.
fn words<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut out = [0u32; N];
    for (word, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        let mut le = [0u8; 4];
        le.copy_from_slice(chunk);
        *word = u32::from_le_bytes(le);
    }
    out
}

/// The message is longer than the 32-bit block counter can cover.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong;

/// The tag did not authenticate the message.
#[derive(Debug, PartialEq, Eq)]
pub struct Forged;

/// `chacha20-ietf-poly1305` keyed with one subkey.
pub struct ChaCha20Poly1305 {
    key: [u32; 8],
}

impl ChaCha20Poly1305 {
    /// The cipher under a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self { key: words(key) }
    }

    /// Encrypts `buf` in place and returns its tag.
    pub fn seal(&self, nonce: &[u8; 12], buf: &mut [u8]) -> Result<[u8; TAG_LEN], TooLong> {
        let mac = self.apply_keystream(nonce, buf)?;
        Ok(tag(mac, buf))
    }

    /// Checks `tag` over the ciphertext in `buf`, then decrypts it in place.
    /// On failure `buf` is left as it was.
    pub fn open(
        &self,
        nonce: &[u8; 12],
        buf: &mut [u8],
        expected: &[u8; TAG_LEN],
    ) -> Result<(), Forged> {
        check_length(buf).map_err(|TooLong| Forged)?;
        let nonce_words = words(nonce);
        let first = blocks(&self.key, &nonce_words, 0);
        let computed = tag(mac_for(&first), buf);
        if !bool::from(computed.ct_eq(expected)) {
            return Err(Forged);
        }
        self.xor_keystream(&nonce_words, &first, buf);
        Ok(())
    }

    /// Encrypts or decrypts `buf` in place; returns the MAC keyed for this
    /// nonce.
    fn apply_keystream(&self, nonce: &[u8; 12], buf: &mut [u8]) -> Result<Poly1305, TooLong> {
        check_length(buf)?;
        let nonce_words = words(nonce);
        let first = blocks(&self.key, &nonce_words, 0);
        self.xor_keystream(&nonce_words, &first, buf);
        Ok(mac_for(&first))
    }

    /// XORs the keystream from block 1 on into `buf`: the rest of `first`
    /// (blocks 1 to 3), then four blocks per call of [`blocks`].
    fn xor_keystream(&self, nonce: &[u32; 3], first: &[u8; STRIDE], buf: &mut [u8]) {
        let (head, rest) = buf.split_at_mut(buf.len().min(STRIDE - BLOCK));
        xor_into(head, first.get(BLOCK..).unwrap_or_default());
        let mut counter = LANES as u32;
        for chunk in rest.chunks_mut(STRIDE) {
            xor_into(chunk, &blocks(&self.key, nonce, counter));
            counter = counter.wrapping_add(LANES as u32);
        }
    }
}

/// Refuses messages the 32-bit block counter (starting at 1) cannot cover.
fn check_length(buf: &[u8]) -> Result<(), TooLong> {
    if (buf.len() as u64).div_ceil(BLOCK as u64) >= u64::from(u32::MAX) {
        return Err(TooLong);
    }
    Ok(())
}

/// Poly1305 keyed with the first 32 bytes of block 0.
fn mac_for(first: &[u8; STRIDE]) -> Poly1305 {
    let mut key = [0u8; 32];
    key.copy_from_slice(first.get(..32).unwrap_or(&[0; 32]));
    Poly1305::new(&key)
}

/// The tag over `ciphertext` with empty associated data.
fn tag(mut mac: Poly1305, ciphertext: &[u8]) -> [u8; TAG_LEN] {
    mac.update_padded(ciphertext);
    let mut lengths = [0u8; 16];
    // The associated data is empty: its length (the first 8 bytes) is 0.
    if let Some(len) = lengths.get_mut(8..) {
        len.copy_from_slice(&(ciphertext.len() as u64).to_le_bytes());
    }
    mac.update_padded(&lengths);
    mac.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};

    /// Lengths around every boundary: the padding of the MAC (16), a block
    /// (64), the first call's three keystream blocks (192), a whole call
    /// (256) and a full Shadowsocks chunk.
    const LENGTHS: [usize; 16] = [
        0, 1, 2, 15, 16, 17, 63, 64, 65, 191, 192, 193, 255, 256, 257, 0x3FFF,
    ];

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn matches_the_chacha20poly1305_crate() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0x5a);
        let ours = ChaCha20Poly1305::new(&key);
        let reference = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
        for (n, len) in LENGTHS.into_iter().enumerate() {
            // A nonce with every word in use, as a long-lived counter gets.
            let nonce: [u8; 12] = std::array::from_fn(|i| (n * 13 + i * 29) as u8);
            let mut ours_buf = message(len);
            let tag = ours.seal(&nonce, &mut ours_buf).unwrap();
            let mut reference_buf = message(len);
            let reference_tag = reference
                .encrypt_in_place_detached(&nonce.into(), &[], &mut reference_buf)
                .unwrap();
            assert_eq!(ours_buf, reference_buf, "ciphertext, {len} bytes");
            assert_eq!(tag, <[u8; 16]>::from(reference_tag), "tag, {len} bytes");
            ours.open(&nonce, &mut ours_buf, &tag).unwrap();
            assert_eq!(ours_buf, message(len), "round trip, {len} bytes");
        }
    }

    #[test]
    fn forged_messages_are_refused_untouched() {
        let cipher = ChaCha20Poly1305::new(&[9; 32]);
        let nonce = [1; 12];
        let mut sealed = message(300);
        let tag = cipher.seal(&nonce, &mut sealed).unwrap();
        let mut bad_tag = tag;
        bad_tag[15] ^= 0x80;
        let mut buf = sealed.clone();
        assert_eq!(cipher.open(&nonce, &mut buf, &bad_tag), Err(Forged));
        assert_eq!(buf, sealed);
        buf[200] ^= 1;
        assert_eq!(cipher.open(&nonce, &mut buf, &tag), Err(Forged));
        let mut buf = sealed.clone();
        assert_eq!(cipher.open(&[2; 12], &mut buf, &tag), Err(Forged));
    }

    #[test]
    fn counter_lanes_are_consecutive_blocks() {
        // Block 5 computed as lane 1 of the call at counter 4 equals block 5
        // computed as lane 0 of the call at counter 5.
        let key = [7u32; 8];
        let nonce = [1, 2, 3];
        let at_four = blocks(&key, &nonce, 4);
        let at_five = blocks(&key, &nonce, 5);
        assert_eq!(at_four[BLOCK..2 * BLOCK], at_five[..BLOCK]);
        assert_ne!(at_four[..BLOCK], at_five[..BLOCK]);
    }
}
