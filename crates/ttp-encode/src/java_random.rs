//! A bit-exact port of `java.util.Random`.
//!
//! The Mainzelliste fTTP filter derives every hash position from `java.util.Random` seeded with a
//! configured per-field seed, so interoperating with sites that run the Java library means
//! reproducing that generator *exactly*, including its quirks:
//!
//! * the state is a 48-bit linear congruential generator (Knuth, TAOCP 3.2.1), scrambled once at
//!   construction by XOR with the multiplier;
//! * `next(bits)` returns the *top* `bits` of the 48-bit state as a signed 32-bit int;
//! * `nextInt(bound)` has two paths: for a power-of-two bound it scales the top 31 bits
//!   (the low bits of an LCG are weak), otherwise it takes `next(31) % bound` and *rejects* draws
//!   from the incomplete last bucket, detected by signed 32-bit overflow. A rejected draw consumes
//!   state, so skipping or "simplifying" the rejection changes every later value.
//!
//! Only the methods the encoders need (plus the cheap neighbours useful for cross-checking against
//! a JVM) are provided. This is *not* a cryptographic generator; in the fTTP scheme the secrecy
//! lies entirely in the seeds.

/// The LCG multiplier, `0x5DEECE66D` (also the scrambling mask applied to the seed).
const MULTIPLIER: u64 = 0x5_DEEC_E66D;
/// The LCG increment.
const ADDEND: u64 = 0xB;
/// The state is 48 bits wide.
const MASK: u64 = (1 << 48) - 1;
/// `0x1.0p-53`, the spacing of the doubles `next_double` produces.
const DOUBLE_UNIT: f64 = 1.0 / (1u64 << 53) as f64;

/// `java.util.Random`, bit for bit. Not `Clone`-by-accident: cloning a generator duplicates a
/// stream, which is occasionally useful in tests, so it is explicit.
#[derive(Clone)]
pub struct JavaRandom {
    state: u64,
}

impl JavaRandom {
    /// `new Random(seed)`: only the low 48 bits of the seed matter, as in Java.
    pub fn new(seed: i64) -> JavaRandom {
        JavaRandom {
            state: (seed as u64 ^ MULTIPLIER) & MASK,
        }
    }

    /// `next(bits)`: advances the LCG and returns its top `bits` bits as a signed 32-bit int
    /// (for `bits == 32` the result may be negative, exactly as in Java).
    ///
    /// # Panics
    /// If `bits` is not in `1..=32` (Java leaves this unchecked and returns garbage; here it is a
    /// programming error).
    pub fn next(&mut self, bits: u32) -> i32 {
        assert!(
            (1..=32).contains(&bits),
            "JavaRandom::next: bits must be in 1..=32"
        );
        self.state = (self.state.wrapping_mul(MULTIPLIER).wrapping_add(ADDEND)) & MASK;
        // The shift leaves at most 32 significant bits; Java's `(int)` cast keeps their pattern.
        (self.state >> (48 - bits)) as u32 as i32
    }

    /// `nextInt()`: 32 uniformly distributed bits.
    pub fn next_i32(&mut self) -> i32 {
        self.next(32)
    }

    /// `nextInt(bound)`: uniform in `0..bound`, with Java's power-of-two and rejection paths.
    ///
    /// # Panics
    /// If `bound <= 0`, where Java throws `IllegalArgumentException`. Callers validate bounds
    /// that come from configuration before constructing tables.
    pub fn next_int(&mut self, bound: i32) -> i32 {
        assert!(bound > 0, "JavaRandom::next_int: bound must be positive");
        let mut r = self.next(31);
        let m = bound - 1;
        if bound & m == 0 {
            // Power of two: take the high bits, `(int)((bound * (long) r) >> 31)`.
            return ((i64::from(bound) * i64::from(r)) >> 31) as i32;
        }
        // `for (int u = r; u - (r = u % bound) + m < 0; u = next(31));` — the sum overflows
        // (goes negative in Java's wrapping arithmetic) exactly when `u` lies in the last,
        // incomplete multiple of `bound`, and that draw is rejected.
        let mut u = r;
        loop {
            r = u % bound;
            if u.wrapping_sub(r).wrapping_add(m) >= 0 {
                return r;
            }
            u = self.next(31);
        }
    }

    /// `nextLong()`: `((long) next(32) << 32) + next(32)`, the second half added *signed*.
    pub fn next_i64(&mut self) -> i64 {
        let high = i64::from(self.next(32));
        let low = i64::from(self.next(32));
        (high << 32).wrapping_add(low)
    }

    /// `nextDouble()`: 53 random bits scaled into `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        let high = i64::from(self.next(26));
        let low = i64::from(self.next(27));
        ((high << 27) + low) as f64 * DOUBLE_UNIT
    }
}

/// The generator state is derived from a secret seed; printing it would print the seed.
impl std::fmt::Debug for JavaRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JavaRandom(<redacted>)")
    }
}

impl Drop for JavaRandom {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.state);
    }
}

#[cfg(test)]
mod tests {
    //! Expected values were produced by OpenJDK 17's `java.util.Random` and cross-checked by
    //! hand from the LCG definition where noted.
    use super::*;

    fn ints(seed: i64, bound: i32, n: usize) -> Vec<i32> {
        let mut r = JavaRandom::new(seed);
        (0..n).map(|_| r.next_int(bound)).collect()
    }

    #[test]
    fn next_int_unbounded_matches_java() {
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next_i32(), -1_170_105_035);
        assert_eq!(r.next_i32(), 234_785_527);
        assert_eq!(JavaRandom::new(0).next_i32(), -1_155_484_576);
    }

    #[test]
    fn next_int_bounded_general_path_matches_java() {
        // By hand: the first nextInt() of seed 42 is -1170105035, i.e. the 32 top bits
        // 0xBA419D35; next(31) drops the lowest of them: 1562431130, and 1562431130 % 100 = 30.
        assert_eq!(
            ints(42, 100, 10),
            vec![30, 63, 48, 84, 70, 25, 5, 18, 19, 93]
        );
    }

    #[test]
    fn negative_and_extreme_seeds_match_java() {
        assert_eq!(ints(-123_456_789, 1000, 5), vec![933, 861, 591, 408, 569]);
        assert_eq!(ints(i64::MIN, 1600, 5), vec![560, 348, 829, 1247, 315]);
    }

    #[test]
    fn power_of_two_bounds_take_the_high_bits() {
        assert_eq!(ints(7, 64, 5), vec![46, 40, 47, 0, 22]);
        assert_eq!(
            ints(i64::MAX, 1 << 30, 5),
            vec![
                288_774_956,
                471_976_112,
                13_174_789,
                588_447_719,
                710_907_802
            ]
        );
        // The power-of-two path is *not* `next(31) % bound`: it keeps the high bits.
        let mut raw = JavaRandom::new(7);
        let r31 = raw.next(31);
        assert_eq!((i64::from(r31) * 64) >> 31, 46);
        assert_ne!(r31 % 64, 46);
    }

    #[test]
    fn rejection_path_discards_draws_from_the_last_bucket() {
        // With bound 2^30 + 1, every next(31) >= bound lies in the incomplete second bucket and
        // is rejected. Raw next(31) of seed 1 (Java: nextInt() >>> 1):
        //   1569548985 (rejected), 215764588, 880641847, 874970313, 446064254, 77814904,
        //   714504434, 1414906606 (rejected), 2078239978 (rejected), 1526301748 (rejected), ...
        let bound = (1 << 30) + 1;
        assert_eq!(
            ints(1, bound, 7),
            vec![
                215_764_588,
                880_641_847,
                874_970_313,
                446_064_254,
                77_814_904,
                714_504_434,
                13_136_569,
            ]
        );
        // The raw stream confirms that exactly one draw was consumed by the first rejection.
        let mut raw = JavaRandom::new(1);
        assert_eq!(raw.next(31), 1_569_548_985);
        assert_eq!(raw.next(31), 215_764_588);
    }

    #[test]
    fn next_long_and_next_double_match_java() {
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next_i64(), -5_025_562_857_975_149_833);
        assert_eq!(r.next_i64(), -5_843_495_416_241_995_736);
        let mut r = JavaRandom::new(42);
        assert_eq!(r.next_f64(), 0.727_563_680_032_868_1);
        assert_eq!(r.next_f64(), 0.683_223_471_759_845_4);
    }

    #[test]
    fn only_the_low_48_bits_of_the_seed_matter() {
        assert_eq!(ints(5, 1000, 5), ints(5 + (1 << 48), 1000, 5));
        assert_ne!(ints(5, 1000, 5), ints(6, 1000, 5));
    }

    #[test]
    fn debug_does_not_reveal_the_state() {
        assert_eq!(
            format!("{:?}", JavaRandom::new(42)),
            "JavaRandom(<redacted>)"
        );
    }
}
