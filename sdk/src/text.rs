//! Text helpers for operators, written for the sandbox.
//!
//! In Wasm, every loop iteration also checks the call's deadline and
//! Cranelift keeps fewer values in registers than LLVM, so a loop over bytes
//! costs more than natively. [`words`] classifies 16 bytes at a time (Wasm
//! `simd128` in the sandbox, SSE2 natively, plain code elsewhere) and walks
//! the resulting bit masks: a few iterations per word instead of one per
//! byte. The output is the same everywhere. [`Finder`] and
//! [`values_containing`] search for a substring (see `find.rs` for how).

mod find;

pub use find::{Finder, ValuesContaining, values_containing};

/// The words of `s`: its runs of characters other than ASCII whitespace,
/// exactly as [`str::split_ascii_whitespace`] gives them, found 16 bytes at a
/// time.
///
/// ```
/// let words: Vec<&str> = dstream_sdk::text::words("  to be,\tor not\nto be ").collect();
/// assert_eq!(words, ["to", "be,", "or", "not", "to", "be"]);
/// ```
#[inline(always)]
pub fn words(s: &str) -> Words<'_> {
    let mut w = Words {
        s,
        base: 0,
        ws: 0,
        starts: 0,
    };
    w.ws = w.mask(0);
    // Before the first byte: as if whitespace.
    w.starts = starts(w.ws, 1);
    w
}

/// The iterator of [`words`].
#[derive(Debug, Clone)]
pub struct Words<'a> {
    s: &'a str,
    /// Start of the 64-byte window `ws` describes.
    base: usize,
    /// Bit i set when byte `base + i` is ASCII whitespace or past the end.
    ws: u64,
    /// Bit i set when a word not yet given starts at byte `base + i`.
    starts: u64,
}

/// The bits of the bytes that start a word in a window whose whitespace
/// mask is `ws`, given whether the byte before the window (bit 0 of
/// `before`) was whitespace: bytes that are not whitespace right after
/// whitespace.
#[inline(always)]
fn starts(ws: u64, before: u64) -> u64 {
    !ws & ((ws << 1) | before)
}

impl<'a> Words<'a> {
    /// The whitespace mask of the 64 bytes from `base` (bytes past the end
    /// count as whitespace).
    #[inline(always)]
    fn mask(&self, base: usize) -> u64 {
        let bytes = self.s.as_bytes();
        let mut m = 0;
        for i in 0..4 {
            let at = base + 16 * i;
            let bits = match bytes.get(at..at + 16) {
                Some(chunk) => ws16(chunk.try_into().expect("16 bytes")),
                None => {
                    let rest = bytes.len().saturating_sub(at);
                    m |= u64::from(tail_ws(bytes, rest)) << (16 * i);
                    // Past the end: whitespace.
                    m |= (!0u64)
                        .checked_shl(16 * i as u32 + rest as u32)
                        .unwrap_or(0);
                    break;
                }
            };
            m |= u64::from(bits) << (16 * i);
        }
        m
    }

    /// Moves to the next window; false past the end.
    #[inline(always)]
    fn advance(&mut self) -> bool {
        self.base += 64;
        if self.base >= self.s.len() {
            self.ws = !0;
            self.starts = 0;
            return false;
        }
        let before = self.ws >> 63;
        self.ws = self.mask(self.base);
        self.starts = starts(self.ws, before);
        true
    }

    /// Moves to the next window with a word start; false past the end.
    #[inline(always)]
    fn advance_to_start(&mut self) -> bool {
        self.advance() && (self.starts != 0 || self.out_of_line(Self::skip_blank))
    }

    /// Runs a rare step out of line on a copy of `self`, then takes the
    /// copy back: `self` itself never has its address taken, so it stays
    /// in locals (in Wasm, a struct whose address escapes lives on the
    /// shadow stack in linear memory, and every use of a field is a load).
    #[inline(always)]
    fn out_of_line<R>(&mut self, step: fn(Self) -> (Self, R)) -> R {
        let (w, r) = step(self.clone());
        *self = w;
        r
    }

    /// Moves past windows with no word start (out of line: rare).
    #[inline(never)]
    fn skip_blank(mut self) -> (Self, bool) {
        while self.starts == 0 {
            if !self.advance() {
                return (self, false);
            }
        }
        (self, true)
    }

    /// Where the word that starts in the current window ends, when it runs
    /// past the window (out of line: words are short).
    #[inline(never)]
    fn end_after(mut self) -> (Self, usize) {
        loop {
            if !self.advance() {
                let end = self.s.len();
                return (self, end);
            }
            if self.ws != 0 {
                let end = self.base + self.ws.trailing_zeros() as usize;
                return (self, end);
            }
        }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    #[inline(always)]
    fn next(&mut self) -> Option<&'a str> {
        // No loop here (in Wasm entering a loop checks the call's
        // deadline): a window with no word start is rare.
        if self.starts == 0 && !self.advance_to_start() {
            return None;
        }
        let i = self.starts.trailing_zeros();
        self.starts &= self.starts - 1;
        let start = self.base + i as usize;
        // The first whitespace bit after the start (bytes past the end of
        // `s` count as whitespace), or none in this window.
        let after = self.ws >> i;
        let end = if after != 0 {
            start + after.trailing_zeros() as usize
        } else {
            self.out_of_line(Self::end_after)
        };
        debug_assert!(start < end && end <= self.s.len());
        debug_assert!(self.s.is_char_boundary(start) && self.s.is_char_boundary(end));
        // SAFETY: `start < end <= s.len()`; `start` is 0 or follows an
        // ASCII whitespace byte, and `end` is an ASCII whitespace byte or
        // the end of `s`, so both are char boundaries.
        Some(unsafe { self.s.get_unchecked(start..end) })
    }
}

/// The whitespace bits of the last `rest` bytes of `bytes` (`rest` < 16),
/// bit 0 for the first of them, bits `rest..16` clear.
///
/// When `bytes` has 16 bytes or more, the last 16 are classified at once
/// and the mask shifted down; copying the tail into a padded chunk instead
/// is a `memory.copy` of variable length in Wasm, which wasmtime runs as a
/// call out of the sandbox (once per record, for records whose length is
/// not a multiple of 16).
#[inline(always)]
fn tail_ws(bytes: &[u8], rest: usize) -> u16 {
    if rest == 0 {
        return 0;
    }
    match bytes.last_chunk::<16>() {
        Some(last) => ws16(last) >> (16 - rest),
        None => {
            let mut m = 0u16;
            for (i, b) in bytes[bytes.len() - rest..].iter().enumerate() {
                m |= u16::from(b.is_ascii_whitespace()) << i;
            }
            m
        }
    }
}

/// Bit i set when `chunk[i]` is ASCII whitespace (space, tab, line feed,
/// form feed, carriage return: [`u8::is_ascii_whitespace`]).
#[inline(always)]
fn ws16(chunk: &[u8; 16]) -> u16 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::*;
        // A byte b is whitespace when TABLE[b & 15] == b: the table holds
        // each whitespace byte at its low nibble, and elsewhere a byte whose
        // low nibble differs from its index (so never equal).
        const TABLE: v128 = u8x16(
            b' ', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'\t', b'\n', 0xff, 0x0c, b'\r',
            0xff, 0x00,
        );
        // SAFETY: `chunk` is 16 readable bytes; v128_load has no alignment
        // requirement.
        let v = unsafe { v128_load(chunk.as_ptr().cast()) };
        let expected = u8x16_swizzle(TABLE, v128_and(v, u8x16_splat(0x0f)));
        u8x16_bitmask(u8x16_eq(v, expected))
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        use core::arch::x86_64::*;
        // SAFETY: `chunk` is 16 readable bytes; _mm_loadu_si128 has no
        // alignment requirement, and SSE2 is enabled (checked above).
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
            let m = _mm_or_si128(
                _mm_or_si128(eq(b' '), eq(b'\t')),
                _mm_or_si128(_mm_or_si128(eq(b'\n'), eq(0x0c)), eq(b'\r')),
            );
            _mm_movemask_epi8(m) as u16
        }
    }
    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        all(target_arch = "x86_64", target_feature = "sse2")
    )))]
    {
        let mut m = 0u16;
        for (i, b) in chunk.iter().enumerate() {
            m |= u16::from(b.is_ascii_whitespace()) << i;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) {
        let ours: Vec<&str> = words(s).collect();
        let std: Vec<&str> = s.split_ascii_whitespace().collect();
        assert_eq!(ours, std, "{s:?}");
    }

    #[test]
    fn words_are_those_of_split_ascii_whitespace() {
        for s in [
            "",
            " ",
            "a",
            " a ",
            "\t\n\x0c\r ",
            "a\x0bb", // vertical tab is not ASCII whitespace
            "héllo wörld  ünïcode",
        ] {
            check(s);
        }
        // Whole 64-byte windows with no word start, one or several in a
        // row, before, between and after words.
        for (a, b, c) in [(64, 1, 0), (130, 64, 64), (63, 129, 200), (0, 192, 1)] {
            check(&format!(
                "{}x{}yz{}",
                " ".repeat(a),
                "\t".repeat(b),
                "\n".repeat(c)
            ));
            check(&format!("{}{}", "w".repeat(a + 1), " ".repeat(b + c)));
        }
        // Words and gaps of every length around the 16- and 64-byte
        // edges, from a seeded generator.
        let mut x: u64 = 0x1234_5678;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let pieces = [" ", "\t", "\n", "\r", "\x0c", "\x0b", "a", "é", "xyz", "0"];
        for _ in 0..5_000 {
            let len = (next() % 200) as usize;
            let mut s = String::new();
            while s.len() < len {
                let run = (next() % 70) as usize;
                let p = pieces[(next() % pieces.len() as u64) as usize];
                for _ in 0..run.min(len - s.len()).max(1) {
                    s.push_str(p);
                }
            }
            check(&s);
        }
    }
}
