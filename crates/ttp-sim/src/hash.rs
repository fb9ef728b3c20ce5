//! Deterministic "random" decisions.
//!
//! The simulator decides per filter (clearing or not, which elements, which pseudonym) and per
//! request (fault or not). Those decisions must be reproducible across runs, machines and Rust
//! releases, so they come from a small hash defined here rather than from `std`'s
//! `DefaultHasher` (whose algorithm may change) or from an RNG whose state depends on the order
//! in which concurrent requests happen to arrive.
//!
//! The hash is FNV-1a over a domain tag and the input, keyed by the seed and finished with the
//! SplitMix64 mixer, which spreads FNV's weak low bits over the whole word. It is not
//! cryptographic and need not be: nothing here is a secret.

/// A 64-bit hash of `data` under `seed`, separated by `domain` so that, for example, the
/// clearing decision and the element choice for the same filter are independent.
pub(crate) fn hash(seed: u64, domain: &str, data: &[u8]) -> u64 {
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325 ^ splitmix64(seed);
    // The 0xff separator cannot occur in a UTF-8 tag, so ("ab", "c") and ("a", "bc") differ.
    for byte in domain.bytes().chain([0xff]).chain(data.iter().copied()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    splitmix64(h)
}

/// Whether an event of probability `p` happens, for this (seed, domain, data).
/// `p = 0` never happens, `p = 1` always does.
pub(crate) fn chance(seed: u64, domain: &str, data: &[u8], p: f64) -> bool {
    unit(hash(seed, domain, data)) < p
}

/// Maps a hash to `[0, 1)` using its top 53 bits (all an `f64` mantissa holds).
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Crockford's base32 alphabet: no I, L, O, U, so pseudonyms survive being read aloud.
const BASE32: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// `<study>_<6 base32 characters>` taken from the low 30 bits of `h`.
pub(crate) fn pseudonym(study: &str, h: u64) -> String {
    let mut out = String::with_capacity(study.len() + 7);
    out.push_str(study);
    out.push('_');
    for i in (0..6).rev() {
        let index = ((h >> (5 * i)) & 31) as usize;
        out.push(char::from(BASE32[index]));
    }
    out
}

/// A UUID-shaped id (version 4 layout) from two hashes.
pub(crate) fn uuid_like(high: u64, low: u64) -> String {
    let high = (high & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_separates_inputs() {
        assert_eq!(hash(0, "clearing", b"abc"), hash(0, "clearing", b"abc"));
        assert_ne!(hash(0, "clearing", b"abc"), hash(1, "clearing", b"abc"));
        assert_ne!(hash(0, "clearing", b"abc"), hash(0, "elements", b"abc"));
        assert_ne!(hash(0, "ab", b"c"), hash(0, "a", b"bc"));
        // Pinned: a change here silently changes every recorded simulator run.
        assert_eq!(hash(42, "clearing", b"filter"), 0xea6d_ef55_4a78_9e00);
    }

    #[test]
    fn chance_matches_its_probability_roughly_and_exactly_at_the_ends() {
        let hits = (0u32..10_000)
            .filter(|i| chance(7, "t", &i.to_le_bytes(), 0.3))
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits} of 10000 at p = 0.3");
        assert!((0u32..1000).all(|i| !chance(7, "t", &i.to_le_bytes(), 0.0)));
        assert!((0u32..1000).all(|i| chance(7, "t", &i.to_le_bytes(), 1.0)));
    }

    #[test]
    fn pseudonym_has_the_documented_shape() {
        let p = pseudonym("mii", hash(0, "psn", b"filter"));
        let (study, code) = p.split_once('_').expect("underscore");
        assert_eq!(study, "mii");
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| BASE32.contains(&b)), "{p}");
        assert_eq!(pseudonym("s", 0), "s_000000");
        assert_eq!(pseudonym("s", 0x3fff_ffff), "s_ZZZZZZ");
    }

    #[test]
    fn uuid_like_has_uuid_shape() {
        let id = uuid_like(u64::MAX, u64::MAX);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = uuid_like(0, 0);
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");
    }
}
