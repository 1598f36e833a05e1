//! Partitions of records as flat buffers.
//!
//! A [`Batch`] is the in-memory form of one partition: every record is a key
//! and a value (bytes; an unkeyed record has an empty key), stored back to back
//! in one data buffer with one offset array. This is exactly the layout that
//! crosses the Wasm boundary (`batch` in `wit/dstream.wit`), so handing a
//! partition to an operator moves two vectors and copies nothing per record.
//!
//! ```
//! use dstream_core::batch::Batch;
//!
//! let mut b = Batch::new();
//! b.push(b"", b"GET /index.html");
//! b.push(b"url", b"/about");
//! assert_eq!(b.len(), 2);
//! let recs: Vec<_> = b.iter().collect();
//! assert_eq!(recs[1], (&b"url"[..], &b"/about"[..]));
//! ```

use crate::Error;

/// One partition of records: a data buffer plus offsets.
///
/// `bounds` has `2n + 1` ascending entries for `n` records, the first one 0:
/// record `i` has key `data[bounds[2i]..bounds[2i+1]]` and value
/// `data[bounds[2i+1]..bounds[2i+2]]`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Batch {
    data: Vec<u8>,
    bounds: Vec<u32>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("records", &self.len())
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self {
            data: Vec::new(),
            bounds: vec![0],
        }
    }

    /// An empty batch with room for `records` records and `bytes` bytes.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut bounds = Vec::with_capacity(2 * records + 1);
        bounds.push(0);
        Self {
            data: Vec::with_capacity(bytes),
            bounds,
        }
    }

    /// Takes raw parts, checking the layout (as received from a plugin or a
    /// peer): `bounds` must be non-empty, start at 0, ascend, have an odd
    /// length and end at `data.len()`.
    pub fn from_parts(data: Vec<u8>, bounds: Vec<u32>) -> Result<Self, Error> {
        let bad = |why: &str| Err(Error::BadBatch(why.to_string()));
        if bounds.len() % 2 != 1 {
            return bad("bounds must have 2n+1 entries");
        }
        if bounds[0] != 0 {
            return bad("bounds must start at 0");
        }
        if bounds.windows(2).any(|w| w[0] > w[1]) {
            return bad("bounds must ascend");
        }
        if *bounds.last().expect("non-empty") as usize != data.len() {
            return bad("the last bound must equal the data length");
        }
        Ok(Self { data, bounds })
    }

    /// The raw parts, for handing to a plugin or a peer without copying.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u32>) {
        (self.data, self.bounds)
    }

    /// The data buffer.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The offset array (`2n + 1` entries).
    pub fn bounds(&self) -> &[u32] {
        &self.bounds
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.bounds.len() / 2
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.bounds.len() == 1
    }

    /// Size of all keys and values in bytes.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// Appends a record.
    ///
    /// # Panics
    /// If the batch would exceed 4 GiB (offsets are `u32`, as in Wasm32).
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.data.extend_from_slice(key);
        self.bounds.push(self.offset());
        self.data.extend_from_slice(value);
        self.bounds.push(self.offset());
    }

    /// Appends an unkeyed record.
    pub fn push_value(&mut self, value: &[u8]) {
        self.push(b"", value);
    }

    fn offset(&self) -> u32 {
        u32::try_from(self.data.len()).expect("a batch holds at most 4 GiB")
    }

    /// Record `i` as (key, value).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> (&[u8], &[u8]) {
        let b = &self.bounds[2 * i..2 * i + 3];
        (
            &self.data[b[0] as usize..b[1] as usize],
            &self.data[b[1] as usize..b[2] as usize],
        )
    }

    /// The records in order, as (key, value).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// A new batch with the records at `indices` (ascending, in range), as
    /// returned by a filter operator.
    pub fn select(&self, indices: &[u32]) -> Result<Batch, Error> {
        Self::select_from(&self.data, &self.bounds, indices)
    }

    /// [`select`](Self::select) over records held elsewhere as `data` and
    /// `bounds` (laid out as in a batch, and valid: the caller's invariant).
    pub fn select_from(data: &[u8], bounds: &[u32], indices: &[u32]) -> Result<Batch, Error> {
        let len = bounds.len() / 2;
        let mut out = Batch::with_capacity(indices.len(), 0);
        let mut prev: Option<u32> = None;
        for &i in indices {
            if i as usize >= len || prev.is_some_and(|p| p >= i) {
                return Err(Error::BadBatch(format!(
                    "selection index {i} out of order or out of range (batch of {len})"
                )));
            }
            prev = Some(i);
            let i = 2 * i as usize;
            let [k, v, e] = [bounds[i], bounds[i + 1], bounds[i + 2]].map(|b| b as usize);
            out.push(&data[k..v], &data[v..e]);
        }
        Ok(out)
    }

    /// A new batch with the records in `range` (copied: one copy of their
    /// bytes, offsets rebased).
    ///
    /// # Panics
    /// If `range` is not within `0..self.len()`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Batch {
        let bounds = &self.bounds[2 * range.start..=2 * range.end];
        let base = bounds[0];
        Batch {
            data: self.data[base as usize..bounds[bounds.len() - 1] as usize].to_vec(),
            bounds: bounds.iter().map(|b| b - base).collect(),
        }
    }

    /// Consecutive ranges of records covering the batch, each holding at most
    /// `max_bytes` of keys and values (a record larger than that alone).
    pub fn cuts(&self, max_bytes: usize) -> Vec<std::ops::Range<usize>> {
        Self::cuts_of(&self.bounds, max_bytes)
    }

    /// [`cuts`](Self::cuts) of the records whose `bounds` (laid out as in a
    /// batch) are given.
    pub fn cuts_of(bounds: &[u32], max_bytes: usize) -> Vec<std::ops::Range<usize>> {
        let len = bounds.len() / 2;
        let mut out = Vec::new();
        let mut start = 0;
        while start < len {
            let base = bounds[2 * start] as usize;
            // The last record ending within the budget, at least one record
            // (record e - 1 ends at bounds[2e], ascending: a binary search).
            let (mut lo, mut hi) = (start + 1, len);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if bounds[2 * mid] as usize - base <= max_bytes {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            let end = lo;
            out.push(start..end);
            start = end;
        }
        out
    }

    /// Appends every record of `other`.
    pub fn extend_from(&mut self, other: &Batch) {
        let base = self.offset();
        self.data.extend_from_slice(&other.data);
        self.offset(); // panics past 4 GiB, like `push`
        self.bounds
            .extend(other.bounds[1..].iter().map(|b| base + *b));
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for Batch {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut b = Batch::new();
        for (k, v) in iter {
            b.push(k.as_ref(), v.as_ref());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_cover_the_batch_within_the_budget_and_slices_copy_them() {
        let b: Batch = (0..50)
            .map(|i| (format!("k{i}"), "v".repeat(i % 7)))
            .collect();
        for max in [0, 1, 5, 9, 20, 64, 1 << 20] {
            let cuts = b.cuts(max);
            let mut joined = Batch::new();
            let mut next = 0;
            for r in cuts {
                assert_eq!(r.start, next, "contiguous");
                assert!(!r.is_empty());
                let piece = b.slice(r.clone());
                assert!(piece.byte_len() <= max || piece.len() == 1, "max {max}");
                // As long as it can be: one more record would not fit.
                if r.end < b.len() {
                    assert!(b.slice(r.start..r.end + 1).byte_len() > max, "max {max}");
                }
                assert_eq!(
                    piece.iter().collect::<Vec<_>>(),
                    b.iter().skip(r.start).take(r.len()).collect::<Vec<_>>()
                );
                joined.extend_from(&piece);
                next = r.end;
            }
            assert_eq!(next, b.len());
            assert_eq!(joined, b);
        }
        assert!(Batch::new().cuts(10).is_empty());
        assert_eq!(b.slice(3..3), Batch::new());
    }

    #[test]
    fn push_get_iter_round_trip() {
        let mut b = Batch::new();
        assert!(b.is_empty());
        b.push(b"k1", b"v1");
        b.push_value(b"");
        b.push(b"", b"v3");
        assert_eq!(b.len(), 3);
        assert_eq!(b.bounds(), &[0, 2, 4, 4, 4, 4, 6]);
        assert_eq!(b.get(0), (&b"k1"[..], &b"v1"[..]));
        assert_eq!(b.get(1), (&b""[..], &b""[..]));
        let (d, bo) = b.clone().into_parts();
        assert_eq!(Batch::from_parts(d, bo).unwrap(), b);
    }

    #[test]
    fn from_parts_rejects_bad_layouts() {
        for (data, bounds) in [
            (vec![], vec![]),
            (vec![1], vec![0, 1]),
            (vec![1], vec![1, 1, 1]),
            (vec![1, 2], vec![0, 2, 1]),
            (vec![1, 2], vec![0, 1, 1]),
        ] {
            assert!(Batch::from_parts(data, bounds).is_err());
        }
    }

    #[test]
    fn select_and_extend() {
        let b: Batch = (0..5u8).map(|i| ([i], [i, i])).collect();
        let s = b.select(&[1, 3]).unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![(&[1u8][..], &[1u8, 1][..]), (&[3][..], &[3, 3][..])]
        );
        assert!(b.select(&[3, 1]).is_err());
        assert!(b.select(&[5]).is_err());
        let mut e = s.clone();
        e.extend_from(&s);
        assert_eq!(e.len(), 4);
        assert_eq!(e.get(3), s.get(1));
    }
}
