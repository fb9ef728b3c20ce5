//! Key derivation and the two ways clkhash turns a token into bit positions.
//!
//! # Keys
//! One HKDF call yields `2 · features · keySize` bytes; feature `f` (schema position, ignored
//! features included) gets the `2f`-th and `2f+1`-th `keySize`-byte slices.
//!
//! # `doubleHash` (Schnell et al.)
//! `h1 = HMAC-SHA1(K0, t) mod L`, `h2 = HMAC-MD5(K1, t) mod L` (digests read big-endian),
//! positions `(h1 + i·h2) mod L`. With `prevent_singularity` a zero `h2` is replaced by
//! `HMAC-MD5(K1, t ‖ UTF-8(chr(i))) mod L` for `i = 0, 1, …` until non-zero.
//!
//! # `blakeHash`
//! `D_j = BLAKE2b-512(key = K0, salt = str(j), t)` for `j = 0 .. ⌈k/32⌉`, each read as 32
//! little-endian `u16`; position `i` is `u16[i] mod L`.
//!
//! # Speed
//! The keys never change, so the work that depends only on them is done once per feature:
//! `Hmac` already keeps the inner and outer states after absorbing the padded key, and for
//! BLAKE2b this module compresses the key block itself (keyed BLAKE2b hashes the zero-padded
//! key as a first, non-final block) and keeps one state per salt. Hashing a token (always
//! shorter than a block in practice) then costs two compressions per HMAC and one per BLAKE2b
//! digest, with no allocation.

use std::io::Write as _;

use blake2::Blake2bVarCore;
use blake2::digest::block_api::{Block, Buffer, UpdateCore, VariableOutputCore};
use blake2::digest::{KeyInit, Mac, Output};
use hmac::Hmac;
use md5::Md5;
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use zeroize::{Zeroize as _, Zeroizing};

use super::schema::{HashKind, KdfConfig, KdfHash};

/// Derives the key material for `feature_count` features (two keys each).
///
/// The schema guarantees the length is within HKDF's limit for the chosen hash.
pub(crate) fn derive_keys(
    kdf: &KdfConfig,
    secret: &[u8],
    feature_count: usize,
) -> Zeroizing<Vec<u8>> {
    let mut okm = Zeroizing::new(vec![0u8; 2 * feature_count * kdf.key_size]);
    let salt = kdf.salt.as_deref();
    let result = match kdf.hash {
        KdfHash::Sha256 => hkdf::Hkdf::<Sha256>::new(salt, secret).expand(&kdf.info, &mut okm),
        KdfHash::Sha512 => hkdf::Hkdf::<Sha512>::new(salt, secret).expand(&kdf.info, &mut okm),
    };
    // ClkSchema::from_json rejects schemas whose key material exceeds 255 hash lengths, the
    // only way expand can fail.
    assert!(result.is_ok(), "HKDF output length validated by the schema");
    okm
}

/// Reduction modulo the filter length `L` (at most 2^24, checked by the schema).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Modulus {
    /// `L` is a power of two: keep the low bits.
    PowerOfTwo {
        mask: u64,
    },
    Other {
        l: u64,
    },
}

impl Modulus {
    pub(crate) fn new(l: usize) -> Modulus {
        let l = l as u64;
        if l.is_power_of_two() {
            Modulus::PowerOfTwo { mask: l - 1 }
        } else {
            Modulus::Other { l }
        }
    }

    /// `int.from_bytes(digest, "big") % L`.
    fn reduce_be(self, digest: &[u8]) -> u64 {
        match self {
            Modulus::PowerOfTwo { mask } => {
                let tail = &digest[digest.len().saturating_sub(8)..];
                tail.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) & mask
            }
            // Horner's rule in 32-bit steps: r < L ≤ 2^24, so r·2^32 + chunk fits in u64.
            Modulus::Other { l } => digest.chunks(4).fold(0u64, |r, chunk| {
                let chunk_value = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
                ((r << (8 * chunk.len())) | chunk_value) % l
            }),
        }
    }

    fn reduce(self, value: u64) -> u64 {
        match self {
            Modulus::PowerOfTwo { mask } => value & mask,
            Modulus::Other { l } => value % l,
        }
    }

    fn l(self) -> u64 {
        match self {
            Modulus::PowerOfTwo { mask } => mask + 1,
            Modulus::Other { l } => l,
        }
    }
}

/// The keyed hash of one feature, ready to hash tokens.
#[derive(Clone)]
pub(crate) enum KeyedHash {
    Double {
        sha1: Hmac<Sha1>,
        md5: Hmac<Md5>,
        prevent_singularity: bool,
    },
    Blake {
        /// `states[j]`: BLAKE2b with salt `str(j)` after compressing the key block.
        states: Vec<Blake2bVarCore>,
        /// The key, for salts beyond `states` (a `bitsPerFeature` feature with a huge budget).
        key: Zeroizing<Vec<u8>>,
    },
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyedHash::Double { .. } => f.write_str("KeyedHash::Double(<keyed>)"),
            KeyedHash::Blake { .. } => f.write_str("KeyedHash::Blake(<keyed>)"),
        }
    }
}

/// Salted BLAKE2b states kept per feature; tokens needing more than 32·this positions derive
/// the further states on the fly.
const MAX_CACHED_BLAKE_STATES: usize = 8;

/// The 32 little-endian `u16` values of one BLAKE2b digest.
pub(crate) type Shorts = [u16; 32];

impl KeyedHash {
    /// Keys the hash. `max_k` (the most positions one token can need) decides how many salted
    /// BLAKE2b states are prepared. The schema guarantees a BLAKE2b key of 1..=64 bytes.
    pub(crate) fn new(hash: HashKind, key0: &[u8], key1: &[u8], max_k: u32) -> KeyedHash {
        match hash {
            HashKind::Double {
                prevent_singularity,
            } => KeyedHash::Double {
                // HMAC accepts keys of any length, so these cannot fail.
                sha1: <Hmac<Sha1> as KeyInit>::new_from_slice(key0)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
                md5: <Hmac<Md5> as KeyInit>::new_from_slice(key1)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length")),
                prevent_singularity,
            },
            HashKind::Blake => {
                let needed = (max_k as usize).div_ceil(32).min(MAX_CACHED_BLAKE_STATES);
                KeyedHash::Blake {
                    states: (0..needed).map(|j| blake_state(key0, j)).collect(),
                    key: Zeroizing::new(key0.to_vec()),
                }
            }
        }
    }

    /// Double hashing's `(h1, h2)`, both reduced modulo `L` (and `h2` made non-zero when
    /// `prevent_singularity` asks for it). Only for `Double`; `None` for `Blake`.
    pub(crate) fn double_pair(&self, token: &[u8], modulus: Modulus) -> Option<(u64, u64)> {
        let KeyedHash::Double {
            sha1,
            md5,
            prevent_singularity,
        } = self
        else {
            return None;
        };
        let h1 = modulus.reduce_be(&sha1.clone().chain_update(token).finalize().into_bytes());
        let mut h2 = modulus.reduce_be(&md5.clone().chain_update(token).finalize().into_bytes());
        if *prevent_singularity && h2 == 0 {
            h2 = non_singular_h2(md5, token, modulus);
        }
        Some((h1, h2))
    }

    /// Digest `j` (salt `str(j)`) of BLAKE2b hashing. Only for `Blake`; `None` for `Double`.
    pub(crate) fn blake_shorts(&self, token: &[u8], j: usize) -> Option<Shorts> {
        let KeyedHash::Blake { states, key } = self else {
            return None;
        };
        let digest = match states.get(j) {
            Some(state) => blake_finish(state.clone(), token),
            None => blake_finish(blake_state(key, j), token),
        };
        let mut shorts = [0u16; 32];
        for (short, pair) in shorts.iter_mut().zip(digest.chunks_exact(2)) {
            *short = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Some(shorts)
    }

    /// Calls `f` with the `k` positions of `token` in a filter of length `modulus.l()`, in
    /// clkhash's order.
    pub(crate) fn positions(&self, token: &[u8], k: u32, modulus: Modulus, f: impl FnMut(usize)) {
        if k == 0 {
            return;
        }
        if let Some((h1, h2)) = self.double_pair(token, modulus) {
            emit_double(h1, h2, k, modulus, f);
        } else {
            self.emit_blake_from(token, 0, k as usize, modulus, f);
        }
    }

    /// Positions `32·first_digest ..` of a `Blake` token, `remaining` of them.
    pub(crate) fn emit_blake_from(
        &self,
        token: &[u8],
        first_digest: usize,
        mut remaining: usize,
        modulus: Modulus,
        mut f: impl FnMut(usize),
    ) {
        let mut j = first_digest;
        while remaining > 0 {
            let Some(shorts) = self.blake_shorts(token, j) else {
                return;
            };
            emit_shorts(&shorts[..remaining.min(32)], modulus, &mut f);
            remaining = remaining.saturating_sub(32);
            j += 1;
        }
    }
}

/// `(h1 + i·h2) mod L` for `i` in `0..k`.
#[inline]
pub(crate) fn emit_double(h1: u64, h2: u64, k: u32, modulus: Modulus, mut f: impl FnMut(usize)) {
    let l = modulus.l();
    let mut g = h1;
    for _ in 0..k {
        f(g as usize);
        // h1, h2 < L, so one subtraction keeps g in range.
        g += h2;
        if g >= l {
            g -= l;
        }
    }
}

/// `short mod L` for each short.
#[inline]
pub(crate) fn emit_shorts(shorts: &[u16], modulus: Modulus, mut f: impl FnMut(usize)) {
    for &short in shorts {
        f(modulus.reduce(u64::from(short)) as usize);
    }
}

/// clkhash's retry for a zero `h2`: append `chr(i)` (UTF-8) to the token for `i = 0, 1, …`.
/// The schema requires `L ≥ 2`, so each try is zero with probability about `1/L` and running
/// out of code points (where Python would raise) is not a practical concern.
fn non_singular_h2(md5: &Hmac<Md5>, token: &[u8], modulus: Modulus) -> u64 {
    let mut buf = [0u8; 4];
    for i in 0..=u32::from(char::MAX) {
        let Some(c) = char::from_u32(i) else {
            // Python cannot encode a surrogate code point: clkhash fails here.
            break;
        };
        let digest = md5
            .clone()
            .chain_update(token)
            .chain_update(c.encode_utf8(&mut buf).as_bytes())
            .finalize()
            .into_bytes();
        let h2 = modulus.reduce_be(&digest);
        if h2 != 0 {
            return h2;
        }
    }
    0
}

/// BLAKE2b-512 keyed with `key` and salted with `str(j)`, after compressing the key block.
fn blake_state(key: &[u8], j: usize) -> Blake2bVarCore {
    // str(j) as the salt; BLAKE2b salts are at most 16 bytes, which covers 10^16 digests.
    let mut salt = [0u8; 16];
    let salt_len = {
        let mut cursor = &mut salt[..];
        let _ = write!(cursor, "{j}");
        16 - cursor.len()
    };
    let mut state = Blake2bVarCore::new_with_params(&salt[..salt_len], &[], key.len(), 64);
    let mut key_block = Block::<Blake2bVarCore>::default();
    key_block[..key.len()].copy_from_slice(key);
    state.update_blocks(std::slice::from_ref(&key_block));
    key_block.as_mut_slice().zeroize();
    state
}

/// Absorbs `data` into a keyed state from [`blake_state`] and returns the 64-byte digest.
///
/// Keyed BLAKE2b treats the key block as the final block when the data is empty; tokens are
/// never empty, and `Scratch` callers guarantee it, but the assertion documents the reliance.
fn blake_finish(mut state: Blake2bVarCore, data: &[u8]) -> Output<Blake2bVarCore> {
    debug_assert!(!data.is_empty(), "tokens are never empty");
    let mut buffer = Buffer::<Blake2bVarCore>::default();
    buffer.digest_blocks(data, |blocks| state.update_blocks(blocks));
    let mut out = Output::<Blake2bVarCore>::default();
    state.finalize_variable_core(&mut buffer, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use blake2::Blake2bMac512;

    #[test]
    fn precompressed_blake_state_equals_the_standard_keyed_mac() {
        let key: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37)).collect();
        for key_len in [1, 16, 63, 64] {
            for data_len in [1, 2, 20, 127, 128, 129, 300] {
                let data: Vec<u8> = (0..data_len).map(|i| (i * 7 + 3) as u8).collect();
                for j in [0, 1, 12] {
                    let salt = j.to_string();
                    let expected = Blake2bMac512::new_with_salt_and_personal(
                        Some(&key[..key_len]),
                        salt.as_bytes(),
                        &[],
                    )
                    .expect("valid parameters")
                    .chain_update(&data)
                    .finalize()
                    .into_bytes();
                    let got = blake_finish(blake_state(&key[..key_len], j), &data);
                    assert_eq!(
                        got[..],
                        expected[..],
                        "key {key_len} data {data_len} salt {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn reduce_be_matches_big_integer_modulo() {
        // 0x0102...14 mod 1000 and mod 1024, computed with Python's int.from_bytes.
        let digest: Vec<u8> = (1u8..=20).collect();
        assert_eq!(Modulus::new(1000).reduce_be(&digest), 860);
        assert_eq!(Modulus::new(1024).reduce_be(&digest), 0x314 & 1023);
        assert_eq!(Modulus::new(1).reduce_be(&digest), 0);
        assert_eq!(Modulus::new(999_983).reduce_be(&[0xff; 16]), 888_021);
    }

    #[test]
    fn double_hash_positions_form_an_arithmetic_sequence() {
        let hasher = KeyedHash::new(
            HashKind::Double {
                prevent_singularity: false,
            },
            b"k0",
            b"k1",
            20,
        );
        let modulus = Modulus::new(1000);
        let mut ps = Vec::new();
        hasher.positions(b"AN", 20, modulus, |p| ps.push(p as i64));
        assert_eq!(ps.len(), 20);
        let step = (ps[1] - ps[0]).rem_euclid(1000);
        for w in ps.windows(2) {
            assert_eq!((w[1] - w[0]).rem_euclid(1000), step);
        }
    }

    #[test]
    fn prevent_singularity_replaces_a_zero_step() {
        // With L = 2 about half the tokens have h2 = 0. Without the fix all their positions
        // coincide; with it the two positions differ (h2 = 1).
        let mut plain_singular = 0;
        for t in 0u32..64 {
            let token = t.to_string();
            let mut plain = Vec::new();
            let mut fixed = Vec::new();
            for (prevent, out) in [(false, &mut plain), (true, &mut fixed)] {
                KeyedHash::new(
                    HashKind::Double {
                        prevent_singularity: prevent,
                    },
                    b"key0",
                    b"key1",
                    2,
                )
                .positions(token.as_bytes(), 2, Modulus::new(2), |p| out.push(p));
            }
            assert_eq!(plain[0], fixed[0], "h1 is unchanged");
            assert_ne!(fixed[0], fixed[1], "token {token}");
            if plain[0] == plain[1] {
                plain_singular += 1;
            }
        }
        assert!(
            plain_singular > 10,
            "L = 2 must produce singular tokens ({plain_singular})"
        );
    }

    #[test]
    fn blake_needs_one_digest_per_32_positions() {
        let hasher = KeyedHash::new(HashKind::Blake, &[7u8; 64], &[9u8; 64], 40);
        let modulus = Modulus::new(1 << 16);
        let mut ps = Vec::new();
        hasher.positions(b"F", 40, modulus, |p| ps.push(p));
        let d0 = blake_finish(blake_state(&[7u8; 64], 0), b"F");
        let d1 = blake_finish(blake_state(&[7u8; 64], 1), b"F");
        let expected: Vec<usize> = d0
            .chunks_exact(2)
            .chain(d1.chunks_exact(2).take(8))
            .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])))
            .collect();
        assert_eq!(ps, expected);
        // States beyond the cache are derived on the fly with the same result.
        let uncached = KeyedHash::new(HashKind::Blake, &[7u8; 64], &[9u8; 64], 1);
        let mut ps2 = Vec::new();
        uncached.positions(b"F", 40, modulus, |p| ps2.push(p));
        assert_eq!(ps, ps2);
    }
}
