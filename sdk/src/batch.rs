//! Partitions as flat buffers, on the plugin's side of the boundary.

use crate::codec::{Decode, Encode};

/// An owned partition being built: one data buffer plus offsets, the layout of
/// `batch` in the WIT contract (record `i` has key
/// `data[bounds[2i]..bounds[2i+1]]` and value `data[bounds[2i+1]..bounds[2i+2]]`).
///
/// ```
/// use dstream_sdk::Batch;
///
/// let mut b = Batch::new();
/// b.push(b"url", b"/index.html");
/// assert_eq!(b.records().get(0), (&b"url"[..], &b"/index.html"[..]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Keys and values back to back.
    pub data: Vec<u8>,
    /// `2n + 1` offsets into `data`, the first one 0.
    pub bounds: Vec<u32>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(0, 0)
    }

    /// An empty batch with room for `records` records of `bytes` bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut bounds = Vec::with_capacity(2 * records + 1);
        bounds.push(0);
        Self {
            data: Vec::with_capacity(bytes),
            bounds,
        }
    }

    /// Builds a batch from (key, value) pairs.
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut b = Self::new();
        for (k, v) in pairs {
            b.push(k.as_ref(), v.as_ref());
        }
        b
    }

    /// Builds a batch of unkeyed records.
    pub fn from_values<V: AsRef<[u8]>>(values: impl IntoIterator<Item = V>) -> Self {
        Self::from_pairs(values.into_iter().map(|v| (b"", v)))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.bounds.len() / 2
    }

    /// True when there is no record.
    pub fn is_empty(&self) -> bool {
        self.bounds.len() <= 1
    }

    /// Appends a record of raw bytes.
    #[inline]
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.push_encoded(key, value)
    }

    /// Appends a record, encoding key and value in place.
    #[inline]
    pub fn push_encoded<K: Encode + ?Sized, V: Encode + ?Sized>(&mut self, key: &K, value: &V) {
        key.encode(&mut self.data);
        self.bounds.push(self.data.len() as u32);
        value.encode(&mut self.data);
        self.bounds.push(self.data.len() as u32);
    }

    /// Removes every record, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.bounds.clear();
        self.bounds.push(0);
    }

    /// A read-only view of the records.
    pub fn records(&self) -> Records<'_> {
        Records {
            data: &self.data,
            bounds: &self.bounds,
        }
    }

    /// Decodes every record as `(K, V)`, for tests of operators.
    pub fn decode<'a, K: Decode<'a>, V: Decode<'a>>(
        &'a self,
    ) -> Result<Vec<(K, V)>, crate::DecodeError> {
        self.records()
            .iter()
            .map(|(k, v)| Ok((K::decode(k)?, V::decode(v)?)))
            .collect()
    }
}

/// A borrowed partition: what an operator reads.
#[derive(Clone, Copy, Debug)]
pub struct Records<'a> {
    data: &'a [u8],
    bounds: &'a [u32],
}

impl<'a> Records<'a> {
    /// A view over raw parts (as received from the host).
    ///
    /// An empty `bounds` is read as an empty batch. Malformed offsets make
    /// [`Records::get`] panic, which the host reports as a trap.
    pub fn new(data: &'a [u8], bounds: &'a [u32]) -> Self {
        Self { data, bounds }
    }

    /// Number of records.
    #[inline]
    pub fn len(&self) -> usize {
        self.bounds.len() / 2
    }

    /// True when there is no record.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `i` as (key, value).
    #[inline]
    pub fn get(&self, i: usize) -> (&'a [u8], &'a [u8]) {
        let b = &self.bounds[2 * i..2 * i + 3];
        (
            &self.data[b[0] as usize..b[1] as usize],
            &self.data[b[1] as usize..b[2] as usize],
        )
    }

    /// The records in order, as (key, value).
    #[inline]
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        let this = *self;
        (0..self.len()).map(move |i| this.get(i))
    }

    /// The data buffer and the offsets, as given to [`Records::new`].
    pub(crate) fn raw_parts(&self) -> (&'a [u8], &'a [u32]) {
        (self.data, self.bounds)
    }

    /// Size of all keys and values in bytes.
    pub fn byte_len(&self) -> usize {
        match (self.bounds.first(), self.bounds.last()) {
            (Some(a), Some(b)) => (b - a) as usize,
            _ => 0,
        }
    }

    /// The bytes of all keys and values, if every one of them is ASCII (one
    /// check for the whole input, instead of one UTF-8 check per record).
    #[doc(hidden)]
    pub fn ascii(&self) -> Option<crate::codec::Ascii<'a>> {
        match (self.bounds.first(), self.bounds.last()) {
            (Some(&a), Some(&b)) => {
                crate::codec::Ascii::check(self.data.get(a as usize..b as usize)?)
            }
            _ => None,
        }
    }

    /// The end of a window of records from `start` (`< len()`): the first
    /// record after `start` that begins at least `bytes` past its beginning,
    /// or `len()`. (Found by bisection; offsets that do not grow give some
    /// end past `start`.)
    #[doc(hidden)]
    pub fn window_end(&self, start: usize, bytes: u32) -> usize {
        let from = self.bounds[2 * start];
        let (mut lo, mut hi) = (start + 1, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.bounds[2 * mid].wrapping_sub(from) < bytes {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Records `start..end` (offsets stay absolute, so no copy).
    ///
    /// # Panics
    /// If `start > end` or `end > self.len()`.
    pub fn slice(&self, start: usize, end: usize) -> Records<'a> {
        assert!(
            start <= end && end <= self.len(),
            "slice {start}..{end} of {}",
            self.len()
        );
        Records {
            data: self.data,
            bounds: &self.bounds[2 * start..2 * end + 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_record_once_each_as_small_as_allowed() {
        let mut b = Batch::new();
        for i in 0..500usize {
            // Sizes from 0 to 96 bytes, and one record bigger than a window.
            let size = if i == 300 { 100 } else { (i * 37) % 97 };
            b.push(b"k", &vec![b'x'; size]);
        }
        let r = b.records();
        let bytes = |s: usize, e: usize| r.slice(s, e).byte_len() as u32;
        let mut start = 0;
        let mut windows = 0;
        while start < r.len() {
            let end = r.window_end(start, 64);
            assert!(end > start);
            // As many records as fit (a single record may not).
            assert!(end == start + 1 || bytes(start, end - 1) < 64);
            assert!(end == r.len() || bytes(start, end) >= 64);
            start = end;
            windows += 1;
        }
        assert!(windows > 500 / 3, "{windows}");
        assert_eq!(r.window_end(0, u32::MAX), r.len());
        assert_eq!(r.window_end(r.len() - 1, 1), r.len());
    }
}
