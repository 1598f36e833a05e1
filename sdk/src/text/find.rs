//! Substring search, over one haystack or over a whole partition.
//!
//! Natively this is memchr's `memmem` (AVX2 where the CPU has it). In the
//! sandbox, memchr's `simd128` searcher compiles under Cranelift to a loop
//! that reloads its vectors and counters from the stack on every 16 bytes
//! (one big function with many paths); [`Finder`] runs its own small loop
//! there instead: three bytes of the needle (memchr's pick of its two
//! rarest, and its first or last byte) compared at 64 starting positions
//! per iteration, out of line so that the loop's values stay in registers,
//! and with the deadline check on its back-edge paid once per 64 bytes.
//! A block with a candidate leaves the loop to compare the whole needle.

use crate::Records;

/// A substring searcher, built once and used on many haystacks.
///
/// ```
/// let f = dstream_sdk::text::Finder::new(b"needle");
/// assert_eq!(f.find(b"haystack with a needle in it"), Some(16));
/// assert_eq!(f.find(b"no needl here"), None);
/// ```
#[derive(Clone, Debug)]
pub struct Finder {
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    inner: memchr::memmem::Finder<'static>,
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    inner: simd::Finder,
}

impl Finder {
    /// A searcher for `needle`.
    pub fn new(needle: &[u8]) -> Self {
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        let inner = memchr::memmem::Finder::new(needle).into_owned();
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        let inner = simd::Finder::new(needle);
        Self { inner }
    }

    /// The needle it looks for.
    pub fn needle(&self) -> &[u8] {
        self.inner.needle()
    }

    /// Where `needle` first occurs in `haystack`. An empty needle occurs at
    /// 0.
    #[inline]
    pub fn find(&self, haystack: &[u8]) -> Option<usize> {
        self.inner.find(haystack)
    }
}

/// The indices (ascending) of the records of `input` whose value contains
/// `finder`'s needle: what a grep-like filter keeps, found by searching the
/// partition's bytes in one pass rather than record by record (a match that
/// lies in a key, or across two records, is skipped).
///
/// ```
/// use dstream_sdk::{Batch, text::{Finder, values_containing}};
///
/// let lines = Batch::from_values(["a needle", "hay", "needles", "need le"]);
/// let f = Finder::new(b"needle");
/// let kept: Vec<u32> = values_containing(lines.records(), &f).collect();
/// assert_eq!(kept, [0, 2]);
/// ```
pub fn values_containing<'a>(input: Records<'a>, finder: &'a Finder) -> ValuesContaining<'a> {
    let (data, bounds) = input.raw_parts();
    let n = input.len();
    ValuesContaining {
        data,
        bounds,
        finder,
        at: if n == 0 { 0 } else { bounds[1] as usize },
        end: if n == 0 { 0 } else { bounds[2 * n] as usize },
        next: 0,
        n,
    }
}

/// The iterator of [`values_containing`].
#[derive(Clone, Debug)]
pub struct ValuesContaining<'a> {
    data: &'a [u8],
    bounds: &'a [u32],
    finder: &'a Finder,
    /// Where the search goes on.
    at: usize,
    /// The end of the last record.
    end: usize,
    /// The first record that may still be kept.
    next: usize,
    /// Records.
    n: usize,
}

impl ValuesContaining<'_> {
    /// The end of record `i`.
    #[inline]
    fn end_of(&self, i: usize) -> usize {
        self.bounds[2 * i + 2] as usize
    }

    /// The record from `next` whose key or value holds byte `at` (`at <
    /// end`): first guessed from the mean record size (lines are often of
    /// similar length), then found by a few steps from the guess, or by
    /// bisection when the guess is far off.
    #[inline]
    fn record_at(&self, at: usize) -> usize {
        let (mut lo, mut hi) = (self.next, self.n - 1);
        let base = self.bounds[2 * lo] as usize;
        let span = (self.end - base).max(1) as u64;
        let guess = lo as u64 + (at - base) as u64 * (hi - lo + 1) as u64 / span;
        let mut i = (guess as usize).min(hi);
        for _ in 0..4 {
            if self.end_of(i) <= at {
                lo = i + 1;
                i += 1;
            } else if i > lo && self.end_of(i - 1) > at {
                hi = i - 1;
                i -= 1;
            } else {
                return i;
            }
        }
        // Bisection over lo..=hi, which holds the record.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.end_of(mid) <= at {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

impl Iterator for ValuesContaining<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let len = self.finder.needle().len();
        if len == 0 && self.next < self.n {
            // Every value contains the empty needle.
            self.next += 1;
            return Some(self.next as u32 - 1);
        }
        while self.next < self.n {
            let found = self.at + self.finder.find(self.data.get(self.at..self.end)?)?;
            let i = self.record_at(found);
            let (value, value_end) = (self.bounds[2 * i + 1] as usize, self.end_of(i));
            if found >= value && found + len <= value_end {
                self.next = i + 1;
                self.at = match self.bounds.get(2 * i + 3) {
                    Some(&v) => v as usize,
                    None => self.end,
                };
                return Some(i as u32);
            }
            // In a key, or across a boundary: search on from the next byte
            // (a match in record i's key may still be followed by one in its
            // value).
            self.next = i;
            self.at = found + 1;
        }
        None
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    /// How far ahead of the block it searches [`scan`] reads one byte, so
    /// that the cache line holding it is on its way by the time the search
    /// gets there. Wasm has no prefetch instruction, and a block of 64
    /// bytes takes about 55 instructions under Cranelift (native memchr:
    /// about 10 per 32 bytes), so a partition streamed from memory with
    /// only the search's own loads has few cache misses in flight at once:
    /// reading the line 4 KiB ahead (one more load per block) made lent grep
    /// 7% faster on a Xeon VM (1 KiB: 6%; 8 and 16 KiB: as 4 KiB; one touch
    /// per page instead of per line: no gain).
    const AHEAD: usize = 4096;

    /// The sandbox's searcher: candidates where three bytes of the needle
    /// are in place (memchr's pick of its two rarest, and its first or last
    /// byte), then a comparison of the whole needle.
    #[derive(Clone, Debug)]
    pub(super) struct Finder {
        needle: Box<[u8]>,
        /// Offsets in the needle of the bytes compared first.
        at: [usize; 3],
    }

    impl Finder {
        pub(super) fn new(needle: &[u8]) -> Self {
            let (i1, i2) = match memchr::arch::all::packedpair::Pair::new(needle) {
                Some(p) => (usize::from(p.index1()), usize::from(p.index2())),
                None => (0, 0),
            };
            // A third byte far from the pair (with text, two candidate
            // bytes still matched in 15% of 64-byte blocks).
            let last = needle.len().saturating_sub(1);
            let i3 = [0, last]
                .into_iter()
                .find(|i| *i != i1 && *i != i2)
                .unwrap_or(i1);
            Self {
                needle: needle.into(),
                at: [i1, i2, i3],
            }
        }

        pub(super) fn needle(&self) -> &[u8] {
            &self.needle
        }

        #[inline]
        pub(super) fn find(&self, hay: &[u8]) -> Option<usize> {
            let n = self.needle.len();
            if n == 0 {
                return Some(0);
            }
            let last = hay.len().checked_sub(n)?;
            let confirm = |at: usize, mut mask: u64| {
                while mask != 0 {
                    let start = at + mask.trailing_zeros() as usize;
                    if hay[start..start + n] == *self.needle {
                        return Some(start);
                    }
                    mask &= mask - 1;
                }
                None
            };
            let bytes = self.at.map(|i| self.needle[i]);
            let mut p = 0;
            // Blocks of 64 starts while they fit (`p + 63 <= last`)...
            while p + 63 <= last {
                match scan(hay, p, last, self.at, bytes) {
                    Ok((at, mask)) => match confirm(at, mask) {
                        Some(found) => return Some(found),
                        None => p = at + 64,
                    },
                    Err(end) => p = end,
                }
            }
            // ... then of 16, then one by one.
            let v = bytes.map(|b| u8x16_splat(b));
            while p + 15 <= last {
                // SAFETY: the highest byte loaded is
                // p + 15 + max(at) < p + 15 + n <= hay.len().
                let m = unsafe { block(hay.as_ptr().add(p), self.at, v) };
                if let Some(found) = confirm(p, u64::from(u8x16_bitmask(m))) {
                    return Some(found);
                }
                p += 16;
            }
            (p..=last).find(|&s| hay[s..s + n] == *self.needle)
        }
    }

    /// The candidates among the 16 starts from `p`: lanes where the needle's
    /// bytes `v` are at offsets `at`.
    ///
    /// # Safety
    /// The 16 bytes from `p + at[k]` are readable, for every k.
    #[inline(always)]
    unsafe fn block(p: *const u8, at: [usize; 3], v: [v128; 3]) -> v128 {
        // SAFETY: by the caller; v128_load has no alignment requirement.
        let eq = |k: usize| unsafe { u8x16_eq(v128_load(p.add(at[k]).cast()), v[k]) };
        v128_and(v128_and(eq(0), eq(1)), eq(2))
    }

    /// The first block of 64 starts from `p` (in steps of 64, while the block
    /// fits: `p + 63 <= last`) where the needle's `bytes` are in place at
    /// offsets `at` for some start: the block's first start and the mask of
    /// those starts; or, when no block has one, the first start of the first
    /// block that does not fit.
    ///
    /// Out of line and small, so that Cranelift keeps its values in
    /// registers: inlined into its caller, they were reloaded from the stack
    /// on every block.
    ///
    /// Each block also reads one byte [`AHEAD`] bytes further on (see there).
    #[inline(never)]
    fn scan(
        hay: &[u8],
        mut p: usize,
        last: usize,
        at: [usize; 3],
        bytes: [u8; 3],
    ) -> Result<(usize, u64), usize> {
        let v = bytes.map(|b| u8x16_splat(b));
        // Every byte loaded is in `hay`: the highest is
        // p + 63 + max(at) < p + 63 + n <= last + n = hay.len().
        assert!(last < hay.len() && at.iter().all(|&i| i < hay.len() - last));
        let q = at.map(|i| hay.as_ptr().wrapping_add(i));
        // Bytes read ahead (see AHEAD), kept so that the reads stay.
        let mut touch = 0u8;
        while p + 63 <= last {
            touch |= hay[(p + AHEAD).min(last)];
            // SAFETY: in bounds (above). (LLVM does not fold the constant
            // offsets into the loads' offset fields here: in the jitdump
            // each of the 12 loads has its own 32-bit address `lea`.)
            let r = q.map(|q| unsafe { q.add(p) });
            let m = |j: usize| unsafe {
                let eq = |k: usize| u8x16_eq(v128_load(r[k].add(16 * j).cast()), v[k]);
                v128_and(v128_and(eq(0), eq(1)), eq(2))
            };
            let (m0, m1, m2, m3) = (m(0), m(1), m(2), m(3));
            if v128_any_true(v128_or(v128_or(m0, m1), v128_or(m2, m3))) {
                let mask = u64::from(u8x16_bitmask(m0))
                    | u64::from(u8x16_bitmask(m1)) << 16
                    | u64::from(u8x16_bitmask(m2)) << 32
                    | u64::from(u8x16_bitmask(m3)) << 48;
                core::hint::black_box(touch);
                return Ok((p, mask));
            }
            p += 64;
        }
        core::hint::black_box(touch);
        Err(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;

    /// Every start of `needle` in `hay`, the plain way.
    fn naive(hay: &[u8], needle: &[u8]) -> Option<usize> {
        if needle.is_empty() {
            return Some(0);
        }
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn finds_what_a_plain_scan_finds() {
        let mut hay = Vec::new();
        let mut x = 7u32;
        for _ in 0..3000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            hay.push(b"abn e"[(x >> 16) as usize % 5]);
        }
        for needle in [&b""[..], b"n", b"ne", b"nee", b"e n", b"ab", b"bnbn", b"zz"] {
            let f = Finder::new(needle);
            for start in 0..200 {
                for end in [start, start + 1, start + 70, hay.len()] {
                    let h = &hay[start..end.min(hay.len())];
                    assert_eq!(f.find(h), naive(h, needle), "{needle:?} in {start}..{end}");
                }
            }
        }
    }

    /// Random partitions (keys and values from a small alphabet, sizes from
    /// 0 to a few hundred bytes, some huge) against a record-by-record scan.
    #[test]
    fn agrees_with_a_record_by_record_scan() {
        let mut x = 1u64;
        let mut rand = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % n
        };
        for round in 0..200 {
            let text = |len: u64, rand: &mut dyn FnMut(u64) -> u64| -> Vec<u8> {
                let mut v: Vec<u8> = (0..len).map(|_| b"nedl "[rand(5) as usize]).collect();
                if len >= 6 && rand(3) == 0 {
                    let at = rand(len - 5) as usize;
                    v[at..at + 6].copy_from_slice(b"needle");
                }
                v
            };
            let n = rand(60);
            let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                .map(|_| {
                    let key_len = if rand(4) == 0 { rand(12) } else { 0 };
                    let value_len = match rand(10) {
                        0 => rand(5000),
                        1 => 0,
                        _ => rand(200),
                    };
                    (text(key_len, &mut rand), text(value_len, &mut rand))
                })
                .collect();
            let batch = Batch::from_pairs(recs.iter().map(|(k, v)| (k, v)));
            for needle in [&b"needle"[..], b"ne", b"d", b"dle n"] {
                let f = Finder::new(needle);
                let kept: Vec<u32> = values_containing(batch.records(), &f).collect();
                let plain: Vec<u32> = (0..n as u32)
                    .filter(|&i| naive(&recs[i as usize].1, needle).is_some())
                    .collect();
                assert_eq!(kept, plain, "round {round}, needle {needle:?}");
            }
        }
    }

    #[test]
    fn keeps_the_values_that_contain_the_needle() {
        let recs = [
            (&b"needle"[..], &b"hay"[..]),
            (b"", b"needle at the start"),
            (b"key", b"ends with needle"),
            (b"", b"needl"),
            (b"e", b"split across"),
            (b"", b""),
            (b"needle", b"needle in both"),
            (b"", b"a needle and a needle"),
        ];
        let batch = Batch::from_pairs(recs);
        let f = Finder::new(b"needle");
        let kept: Vec<u32> = values_containing(batch.records(), &f).collect();
        let plain: Vec<u32> = (0..recs.len() as u32)
            .filter(|&i| naive(recs[i as usize].1, b"needle").is_some())
            .collect();
        assert_eq!(kept, plain);
        assert_eq!(kept, [1, 2, 6, 7]);
        // A slice keeps its absolute offsets; indices count from its start.
        let tail: Vec<u32> = values_containing(batch.records().slice(2, 7), &f).collect();
        assert_eq!(tail, [0, 4]);
        let none: Vec<u32> = values_containing(Batch::new().records(), &f).collect();
        assert!(none.is_empty());
        let empty = Finder::new(b"");
        let all: Vec<u32> = values_containing(batch.records(), &empty).collect();
        assert_eq!(all, (0..recs.len() as u32).collect::<Vec<_>>());
    }
}
