//! Keyed data in native code: built-in reducers (sum, min, max, count of
//! integers), hash partitioning, joins, and the per-key record counts that
//! let a window drop a key exactly when its last record leaves.
//!
//! Everything keeps keys in order of first appearance, the order the SDK's
//! reduce follows too, so that a partition computed twice (or anywhere) gives
//! the same bytes.
//!
//! ```
//! use dstream_core::{Batch, Encoding};
//! use dstream_core::reduce::{Native, NativeFn};
//!
//! let sum = Native { fun: NativeFn::Sum, enc: Encoding::U64 };
//! let ones: Batch = [("a", 1u64), ("b", 1), ("a", 1)]
//!     .iter()
//!     .map(|(k, v)| (k.as_bytes(), v.to_le_bytes()))
//!     .collect();
//! let counts = sum.combine(&ones).unwrap();
//! assert_eq!(counts.get(0), (&b"a"[..], &2u64.to_le_bytes()[..]));
//! assert_eq!(counts.len(), 2);
//! ```

use std::hash::BuildHasher;

use hashbrown::HashMap;

use crate::{Batch, Encoding, Error};

/// The hasher of keys: fixed, so every process agrees on partitions and
/// iteration orders.
pub(crate) type FixedState = foldhash::fast::FixedState;

/// The fixed hasher's state.
pub(crate) fn hasher() -> FixedState {
    foldhash::fast::FixedState::with_seed(0x005e_edd5_7ea4)
}

/// The partition (of `partitions`) that `key` belongs to.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (hasher().hash_one(key) % u64::from(partitions)) as u32
}

/// Splits `input` into `partitions` batches by the hash of each key, keeping
/// the order of records within each.
pub fn split_by_key(input: &Batch, partitions: u32) -> Vec<Batch> {
    let per = input.len() / partitions as usize + 1;
    let bytes = input.byte_len() / partitions as usize + 1;
    let mut out: Vec<Batch> = (0..partitions)
        .map(|_| Batch::with_capacity(per, bytes))
        .collect();
    for (k, v) in input.iter() {
        out[partition_of(k, partitions) as usize].push(k, v);
    }
    out
}

/// Concatenates batches in order.
pub fn concat<'a>(parts: impl IntoIterator<Item = &'a Batch>) -> Batch {
    let parts: Vec<&Batch> = parts.into_iter().collect();
    let mut out = Batch::with_capacity(
        parts.iter().map(|b| b.len()).sum(),
        parts.iter().map(|b| b.byte_len()).sum(),
    );
    for p in parts {
        out.extend_from(p);
    }
    out
}

/// A built-in reducer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Native {
    /// What it computes.
    pub fun: NativeFn,
    /// Encoding of the values it combines (`u64` for count).
    pub enc: Encoding,
}

/// The built-in reducers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NativeFn {
    /// Sum (overflow is an error).
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Number of records (the values are ignored; the result is `u64`).
    Count,
}

impl NativeFn {
    /// Name in job files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Count => "count",
        }
    }
}

fn width(enc: Encoding) -> Option<(usize, bool)> {
    Some(match enc {
        Encoding::U8 => (1, false),
        Encoding::U16 => (2, false),
        Encoding::U32 => (4, false),
        Encoding::U64 => (8, false),
        Encoding::I8 => (1, true),
        Encoding::I16 => (2, true),
        Encoding::I32 => (4, true),
        Encoding::I64 => (8, true),
        _ => return None,
    })
}

impl Native {
    /// True when the built-in reducers work on values of `enc` (integers).
    pub fn supports(enc: Encoding) -> bool {
        width(enc).is_some()
    }

    fn decode(&self, v: &[u8]) -> Result<i128, Error> {
        let (w, signed) = width(self.enc)
            .ok_or_else(|| Error::BadValue(format!("{} is not an integer encoding", self.enc)))?;
        if v.len() != w {
            return Err(Error::BadValue(format!(
                "a {} value has {w} bytes, got {}",
                self.enc,
                v.len()
            )));
        }
        let mut b = [0u8; 16];
        b[..w].copy_from_slice(v);
        if signed && v[w - 1] & 0x80 != 0 {
            b[w..].fill(0xff);
        }
        Ok(i128::from_le_bytes(b))
    }

    fn encode(&self, x: i128, out: &mut [u8; 16]) -> Result<usize, Error> {
        let (w, signed) = width(self.enc).expect("decoded before");
        let bits = 8 * w as u32;
        let (lo, hi) = if signed {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        };
        if x < lo || x > hi {
            return Err(Error::BadValue(format!(
                "{} of {} values overflows: {x}",
                self.fun.name(),
                self.enc
            )));
        }
        *out = x.to_le_bytes();
        Ok(w)
    }

    fn apply(&self, a: i128, b: i128) -> i128 {
        match self.fun {
            NativeFn::Sum | NativeFn::Count => a + b,
            NativeFn::Min => a.min(b),
            NativeFn::Max => a.max(b),
        }
    }

    fn fold(
        &self,
        input: &Batch,
        value: impl Fn(&[u8]) -> Result<i128, Error>,
    ) -> Result<Batch, Error> {
        let mut index: HashMap<&[u8], usize, _> = HashMap::with_hasher(hasher());
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut acc: Vec<i128> = Vec::new();
        for (k, v) in input.iter() {
            let x = value(v)?;
            match index.get(k) {
                Some(&i) => acc[i] = self.apply(acc[i], x),
                None => {
                    index.insert(k, keys.len());
                    keys.push(k);
                    acc.push(x);
                }
            }
        }
        let mut out = Batch::with_capacity(keys.len(), input.byte_len().min(keys.len() * 24));
        let mut buf = [0u8; 16];
        for (k, x) in keys.iter().zip(acc) {
            let n = self.encode(x, &mut buf)?;
            out.push(k, &buf[..n]);
        }
        Ok(out)
    }

    /// Combines raw records: one record per key, in order of first
    /// appearance. For count, the values are ignored and counted.
    pub fn combine(&self, input: &Batch) -> Result<Batch, Error> {
        match self.fun {
            NativeFn::Count => self.fold(input, |_| Ok(1)),
            _ => self.fold(input, |v| self.decode(v)),
        }
    }

    /// Merges partial results of [`combine`](Self::combine) (for count: sums
    /// the counts).
    pub fn merge(&self, partials: &Batch) -> Result<Batch, Error> {
        self.fold(partials, |v| self.decode(v))
    }

    /// `current[i] - leaving[i]`, keyed as `current[i]` (the inverse of sum
    /// and count, for windows).
    pub fn subtract(&self, current: &Batch, leaving: &Batch) -> Result<Batch, Error> {
        if current.len() != leaving.len() {
            return Err(Error::BadValue(
                "subtract needs batches of equal length".into(),
            ));
        }
        let mut out = Batch::with_capacity(current.len(), current.byte_len());
        let mut buf = [0u8; 16];
        for ((k, a), (_, b)) in current.iter().zip(leaving.iter()) {
            let n = self.encode(self.decode(a)? - self.decode(b)?, &mut buf)?;
            out.push(k, &buf[..n]);
        }
        Ok(out)
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn take_varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut n = 0usize;
    for (i, b) in bytes.iter().enumerate().take(10) {
        n |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// The value of a join: `(left, right)` as postcard encodes a pair of byte
/// strings (each a varint length, then the bytes).
pub fn pair(left: &[u8], right: &[u8], out: &mut Vec<u8>) {
    push_varint(out, left.len());
    out.extend_from_slice(left);
    push_varint(out, right.len());
    out.extend_from_slice(right);
}

/// Splits a [`pair`] back into its two values.
pub fn split_pair(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (n, rest) = take_varint(bytes)?;
    let (a, rest) = (rest.get(..n)?, rest.get(n..)?);
    let (m, rest) = take_varint(rest)?;
    if rest.len() != m {
        return None;
    }
    Some((a, rest))
}

/// Inner join of one partition: for each record of `left` (in order), one
/// record per record of `right` with the same key (in order), valued
/// [`pair`]`(left, right)`.
pub fn join(left: &Batch, right: &Batch) -> Batch {
    let mut index: HashMap<&[u8], Vec<u32>, _> = HashMap::with_hasher(hasher());
    for (i, (k, _)) in right.iter().enumerate() {
        index.entry(k).or_default().push(i as u32);
    }
    let mut out = Batch::new();
    let mut buf = Vec::new();
    for (k, lv) in left.iter() {
        if let Some(rs) = index.get(k) {
            for &r in rs {
                buf.clear();
                pair(lv, right.get(r as usize).1, &mut buf);
                out.push(k, &buf);
            }
        }
    }
    out
}

/// Number of records per key, in order of first appearance.
pub fn key_counts(input: &Batch) -> Vec<(&[u8], u64)> {
    let mut index: HashMap<&[u8], usize, _> = HashMap::with_hasher(hasher());
    let mut out: Vec<(&[u8], u64)> = Vec::new();
    for (k, _) in input.iter() {
        match index.get(k) {
            Some(&i) => out[i].1 += 1,
            None => {
                index.insert(k, out.len());
                out.push((k, 1));
            }
        }
    }
    out
}

/// Records whose values carry how many input records made them: `[count as
/// 8 LE bytes][value]`. Windows keep their contents this way, so a key
/// leaves the window exactly when its last record does, whatever the
/// reducer.
pub mod counted {
    use super::*;

    /// Attaches `counts` (aligned by key with `values`) to `values`.
    pub fn attach(values: &Batch, counts: &[(&[u8], u64)]) -> Result<Batch, Error> {
        if values.len() != counts.len() {
            return Err(Error::BadValue(format!(
                "a reduce gave {} keys for {} distinct input keys",
                values.len(),
                counts.len()
            )));
        }
        let mut out = Batch::with_capacity(values.len(), values.byte_len() + 8 * values.len());
        let mut buf = Vec::new();
        for ((k, v), (ck, c)) in values.iter().zip(counts) {
            if k != *ck {
                return Err(Error::BadValue(
                    "a reduce changed the order of keys (it must keep first appearance)".into(),
                ));
            }
            buf.clear();
            buf.extend_from_slice(&c.to_le_bytes());
            buf.extend_from_slice(v);
            out.push(k, &buf);
        }
        Ok(out)
    }

    /// Splits counted records into plain records and per-key counts.
    pub fn detach(input: &Batch) -> Result<(Batch, Vec<u64>), Error> {
        let mut values = Batch::with_capacity(input.len(), input.byte_len());
        let mut counts = Vec::with_capacity(input.len());
        for (k, v) in input.iter() {
            let (c, v) = v
                .split_first_chunk::<8>()
                .ok_or_else(|| Error::BadValue("a counted record without its count".into()))?;
            counts.push(u64::from_le_bytes(*c));
            values.push(k, v);
        }
        Ok((values, counts))
    }

    /// Drops the counts.
    pub fn strip(input: &Batch) -> Result<Batch, Error> {
        Ok(detach(input)?.0)
    }

    /// Sums the counts of each key, in order of first appearance.
    pub fn sum_counts(input: &Batch) -> Result<Vec<(&[u8], u64)>, Error> {
        let mut index: HashMap<&[u8], usize, _> = HashMap::with_hasher(hasher());
        let mut out: Vec<(&[u8], u64)> = Vec::new();
        for (k, v) in input.iter() {
            let c = v
                .first_chunk::<8>()
                .map(|c| u64::from_le_bytes(*c))
                .ok_or_else(|| Error::BadValue("a counted record without its count".into()))?;
            match index.get(k) {
                Some(&i) => out[i].1 += c,
                None => {
                    index.insert(k, out.len());
                    out.push((k, c));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(pairs: &[(&str, i64)], enc: Encoding) -> Batch {
        let (w, _) = width(enc).unwrap();
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_le_bytes()[..w].to_vec()))
            .collect()
    }

    #[test]
    fn built_in_reducers_match_a_loop() {
        let input = le(
            &[("a", 5), ("b", -3), ("a", -7), ("c", 0), ("b", 10)],
            Encoding::I32,
        );
        let run = |fun| {
            Native {
                fun,
                enc: Encoding::I32,
            }
            .combine(&input)
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    i32::from_le_bytes(v.try_into().unwrap_or([0; 4])),
                )
            })
            .collect::<Vec<_>>()
        };
        let s = |k: &str| k.to_string();
        assert_eq!(run(NativeFn::Sum), [(s("a"), -2), (s("b"), 7), (s("c"), 0)]);
        assert_eq!(
            run(NativeFn::Min),
            [(s("a"), -7), (s("b"), -3), (s("c"), 0)]
        );
        assert_eq!(run(NativeFn::Max), [(s("a"), 5), (s("b"), 10), (s("c"), 0)]);
        let counts = Native {
            fun: NativeFn::Count,
            enc: Encoding::U64,
        }
        .combine(&input)
        .unwrap();
        let c: Vec<u64> = counts
            .iter()
            .map(|(_, v)| u64::from_le_bytes(v.try_into().unwrap()))
            .collect();
        assert_eq!(c, [2, 2, 1]);
    }

    #[test]
    fn overflow_and_bad_widths_are_errors() {
        let sum = Native {
            fun: NativeFn::Sum,
            enc: Encoding::U8,
        };
        let input: Batch = [("a", [200u8]), ("a", [100u8])].into_iter().collect();
        assert!(
            sum.combine(&input)
                .unwrap_err()
                .to_string()
                .contains("overflows")
        );
        let bad: Batch = [("a", [1u8, 2])].into_iter().collect();
        assert!(
            sum.combine(&bad)
                .unwrap_err()
                .to_string()
                .contains("1 bytes")
        );
    }

    #[test]
    fn split_by_key_keeps_keys_together_and_order() {
        let input: Batch = (0..1000u32)
            .map(|i| ((i % 37).to_le_bytes(), i.to_le_bytes()))
            .collect();
        let parts = split_by_key(&input, 4);
        assert_eq!(parts.iter().map(Batch::len).sum::<usize>(), 1000);
        for (p, b) in parts.iter().enumerate() {
            let vals: Vec<u32> = b
                .iter()
                .map(|(_, v)| u32::from_le_bytes(v.try_into().unwrap()))
                .collect();
            assert!(vals.windows(2).all(|w| w[0] < w[1]));
            for (k, _) in b.iter() {
                assert_eq!(partition_of(k, 4) as usize, p);
            }
        }
        assert!(parts.iter().filter(|b| !b.is_empty()).count() > 1);
    }

    #[test]
    fn pairs_round_trip_as_postcard_does() {
        let mut out = Vec::new();
        let long = vec![7u8; 300];
        pair(b"ab", &long, &mut out);
        assert_eq!(&out[..3], &[2, b'a', b'b']);
        assert_eq!(&out[3..5], &[0xac, 0x02]); // 300 as a varint
        assert_eq!(split_pair(&out), Some((&b"ab"[..], &long[..])));
        assert_eq!(split_pair(&out[..out.len() - 1]), None);
    }

    #[test]
    fn join_pairs_every_match_in_order() {
        let l: Batch = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        let r: Batch = [("a", "x"), ("c", "y"), ("a", "z")].into_iter().collect();
        let j = join(&l, &r);
        let got: Vec<(String, (String, String))> = j
            .iter()
            .map(|(k, v)| {
                let (a, b) = split_pair(v).unwrap();
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    (
                        String::from_utf8(a.to_vec()).unwrap(),
                        String::from_utf8(b.to_vec()).unwrap(),
                    ),
                )
            })
            .collect();
        let e = |k: &str, a: &str, b: &str| (k.to_string(), (a.to_string(), b.to_string()));
        assert_eq!(
            got,
            [
                e("a", "1", "x"),
                e("a", "1", "z"),
                e("a", "3", "x"),
                e("a", "3", "z")
            ]
        );
    }

    #[test]
    fn counted_records_round_trip() {
        let values: Batch = [("a", "x"), ("b", "y")].into_iter().collect();
        let c = counted::attach(&values, &[(b"a", 3), (b"b", 1)]).unwrap();
        assert_eq!(
            counted::sum_counts(&c).unwrap(),
            [(&b"a"[..], 3), (&b"b"[..], 1)]
        );
        let (v, n) = counted::detach(&c).unwrap();
        assert_eq!(v, values);
        assert_eq!(n, [3, 1]);
        assert!(counted::attach(&values, &[(b"b", 1), (b"a", 3)]).is_err());
    }
}
