//! The filter as a bit vector in clkhash's (bitarray's big-endian) bit order.
//!
//! Bit `i` lives in word `i / 64` at bit `63 − i % 64`, so writing the words big-endian gives
//! exactly clkhash's bytes: bit `i` is `(byte[i / 8] >> (7 − i % 8)) & 1`. A length that is
//! not a multiple of 8 is padded with zero bits, as `bitarray.tobytes()` does.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    pub(crate) fn zeros(len: usize) -> Bits {
        Bits {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// Sets bit `i`; callers only pass positions reduced modulo the length.
    #[inline]
    pub(crate) fn set(&mut self, i: usize) {
        debug_assert!(i < self.len);
        self.words[i / 64] |= 1u64 << (63 - i % 64);
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1u64 << (63 - i % 64)) != 0
    }

    /// One XOR fold: the first half XOR the second half (`len` is even: it is `l · 2^r`).
    pub(crate) fn fold(&mut self) {
        let half = self.len / 2;
        if half.is_multiple_of(64) {
            let (low, high) = self.words.split_at_mut(half / 64);
            for (a, b) in low.iter_mut().zip(high.iter()) {
                *a ^= *b;
            }
            self.words.truncate(half / 64);
        } else {
            let mut folded = Bits::zeros(half);
            for i in 0..half {
                if self.get(i) != self.get(i + half) {
                    folded.set(i);
                }
            }
            *self = folded;
        }
        self.len = half;
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.words.iter().flat_map(|w| w.to_be_bytes()).collect();
        out.truncate(self.len.div_ceil(8));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_positions(len: usize, positions: &[usize]) -> Bits {
        let mut b = Bits::zeros(len);
        for &p in positions {
            b.set(p);
        }
        b
    }

    #[test]
    fn bit_order_is_most_significant_first() {
        assert_eq!(from_positions(16, &[0, 9, 15]).to_bytes(), [0x80, 0x41]);
        // 12 bits serialise to 2 bytes with zero padding.
        assert_eq!(from_positions(12, &[11]).to_bytes(), [0x00, 0x10]);
    }

    #[test]
    fn word_aligned_fold() {
        // Bits 3 and 3+64 cancel, bit 5 and bit 64+7 survive.
        let mut b = from_positions(128, &[3, 5, 64 + 3, 64 + 7]);
        b.fold();
        assert_eq!(b, from_positions(64, &[5, 7]));
    }

    #[test]
    fn unaligned_fold_matches_the_definition() {
        let positions = [0, 1, 29, 30, 31, 59];
        let mut b = from_positions(60, &positions);
        b.fold();
        // Bit i of the result is bit i XOR bit i+30: {0,1,29} ^ {0,1,29} = {} (30→0, 31→1,
        // 59→29 cancel 0, 1, 29).
        assert_eq!(b, Bits::zeros(30));
        let mut b = from_positions(60, &[2, 33]);
        b.fold();
        assert_eq!(b, from_positions(30, &[2, 3]));
        assert_eq!(b.to_bytes().len(), 4);
    }

    #[test]
    fn two_folds() {
        let mut b = from_positions(1024, &[1, 257, 513, 1000]);
        b.fold();
        b.fold();
        // First fold: 513 cancels 1, 1000 moves to 488. Second: 257 → 1, 488 → 232.
        assert_eq!(b, from_positions(256, &[1, 232]));
    }
}
