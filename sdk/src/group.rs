//! Grouping records by key: the hash table behind reduce and update-state.
//!
//! Written for short keys (words, URLs, ids) and for the Wasm sandbox, where
//! code is compiled by Cranelift rather than LLVM and where some things cost
//! more than natively:
//!
//! - the hash uses 64-bit wrapping multiplies only (foldhash's 64x64->128
//!   product is four multiplies on wasm32);
//! - keys of up to 8 bytes are compared as one integer kept next to their
//!   value, and longer ones with a few loads, never with a call to `memcmp`
//!   (a byte loop in Wasm);
//! - the probe loop is plain inlined code (hashbrown calls its key
//!   comparison through a `dyn FnMut` in every probe, a call in Wasm).
//!
//! Grouping never depends on the hash: groups come out in order of first
//! appearance, so the output is the same on every target.

use std::fmt::Display;

use crate::batch::{Batch, Records};
use crate::codec::{Decode, Encode};
use crate::operator::OpError;

/// Seed of the hash: fixed, so grouping never depends on a random seed.
const SEED: u64 = 0x0064_7374_7265_616d;
/// Odd constants from splitmix64 and murmur3's finaliser.
const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xff51_afd7_ed55_8ccd;
const K3: u64 = 0xc4ce_b9fe_1a85_ec53;

#[inline(always)]
fn read8(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn read4(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// murmur3's 64-bit finaliser: every input bit reaches every output bit, so
/// both the low bits (the bucket) and the high bits (the tag) vary.
#[inline(always)]
fn fmix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(K2);
    x ^= x >> 33;
    x = x.wrapping_mul(K3);
    x ^ (x >> 33)
}

/// The first `min(len, 8)` bytes of `k` as a little-endian integer, zero
/// above: with the length, the whole of a key of up to 8 bytes. Read with at
/// most two (overlapping) loads.
#[inline(always)]
fn head(k: &[u8]) -> u64 {
    let n = k.len();
    if n >= 8 {
        read8(k, 0)
    } else if n >= 4 {
        read4(k, 0) | (read4(k, n - 4) << (8 * (n - 4)))
    } else if n > 0 {
        // First, middle and last byte: all of them.
        u64::from(k[0])
            | (u64::from(k[n / 2]) << (8 * (n / 2)))
            | (u64::from(k[n - 1]) << (8 * (n - 1)))
    } else {
        0
    }
}

/// The hash of key `k` whose [`head`] is `h`.
#[inline(always)]
fn hash(k: &[u8], h: u64) -> u64 {
    let n = k.len();
    let x = if n <= 8 {
        h
    } else if n <= 16 {
        h ^ read8(k, n - 8).wrapping_mul(K1).rotate_left(32)
    } else {
        let mut x = h;
        let mut at = 8;
        while at + 8 < n {
            x = (x ^ read8(k, at)).wrapping_mul(K1).rotate_left(29);
            at += 8;
        }
        x ^ read8(k, n - 8).wrapping_mul(K2)
    };
    fmix(x ^ SEED ^ (n as u64).wrapping_mul(K1))
}

/// Whether two keys of one length `n > 8`, with equal heads, are equal: the
/// bytes after the head, with at most one more load each up to 16 bytes.
#[inline(always)]
fn same_tail(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n <= 16 {
        read8(a, n - 8) == read8(b, n - 8)
    } else {
        a[8..] == b[8..]
    }
}

/// Where the keys of a [`Keys`] live.
pub(crate) trait Store<'k> {
    /// Key number `i`.
    fn key(&self, i: usize) -> &[u8];
    /// Adds a key (number `len()` before the call).
    fn push(&mut self, key: &'k [u8]);
}

/// Keys borrowed from the records they came from.
impl<'k> Store<'k> for Vec<&'k [u8]> {
    #[inline]
    fn key(&self, i: usize) -> &[u8] {
        self[i]
    }
    #[inline]
    fn push(&mut self, key: &'k [u8]) {
        Vec::push(self, key)
    }
}

/// Keys copied in, back to back, so that they outlive their records (a
/// pipeline's chunks are overwritten one after the other). Only distinct
/// keys are copied, once each.
#[derive(Debug)]
pub(crate) struct Arena {
    bytes: Vec<u8>,
    /// Key `i` is `bytes[ends[i]..ends[i + 1]]`.
    ends: Vec<u32>,
}

impl Default for Arena {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            ends: vec![0],
        }
    }
}

impl Store<'_> for Arena {
    #[inline]
    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.ends[i] as usize..self.ends[i + 1] as usize]
    }
    #[inline]
    fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len() as u32);
    }
}

/// One distinct key: its head and length (the whole key when it is 8 bytes
/// or less), and what the caller keeps for it, side by side so that finding
/// and updating a short key touches one slot.
#[derive(Debug)]
struct Slot<T> {
    head: u64,
    len: u32,
    data: T,
}

/// Where a key that is not there goes: found while probing for it.
pub(crate) struct Vacant {
    at: usize,
    hash: u64,
    head: u64,
}

/// Bits of a table entry holding the hash.
const TAG: u64 = !0xffff_ffff;

/// Distinct keys numbered in order of first appearance, each with a `T`,
/// found by hash.
///
/// The table is open addressing with linear probing over a power-of-two
/// array at most half full. An entry is 0 (empty) or the high 32 bits of its
/// key's hash above the key's slot number + 1, so that a probe looks at a
/// slot only when 32 bits of hash match; the low bits of the hash pick the
/// bucket.
#[derive(Debug)]
pub(crate) struct Keys<S, T> {
    table: Vec<u64>,
    slots: Vec<Slot<T>>,
    store: S,
}

impl<'k, S: Store<'k>, T> Keys<S, T> {
    /// No keys, with room for `n` before the table first grows. It doubles
    /// as keys come: start small when most keys repeat.
    pub(crate) fn with_capacity(n: usize, store: S) -> Self {
        Self {
            table: vec![0; (2 * n).next_power_of_two().max(16)],
            slots: Vec::with_capacity(n),
            store,
        }
    }

    /// Number of distinct keys.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Key number `i`.
    #[inline]
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        self.store.key(i)
    }

    /// What is kept for key number `i`.
    #[inline]
    pub(crate) fn data(&self, i: usize) -> &T {
        &self.slots[i].data
    }

    /// What is kept for key number `i`, to change it.
    #[inline]
    pub(crate) fn data_mut(&mut self, i: usize) -> &mut T {
        &mut self.slots[i].data
    }

    /// What is kept for each key, in order of first appearance.
    pub(crate) fn into_data(self) -> impl Iterator<Item = T> {
        self.slots.into_iter().map(|s| s.data)
    }

    /// The number of `key`, or where to [`Keys::insert`] it.
    #[inline(always)]
    pub(crate) fn find(&self, key: &[u8]) -> Result<usize, Vacant> {
        let h = head(key);
        let hash = hash(key, h);
        let n = key.len();
        let mask = self.table.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let e = self.table[at];
            if e == 0 {
                return Err(Vacant { at, hash, head: h });
            }
            if e & TAG == hash & TAG {
                let i = (e as u32 - 1) as usize;
                let s = &self.slots[i];
                if s.head == h && s.len as usize == n && (n <= 8 || same_tail(self.key(i), key)) {
                    return Ok(i);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds `key` (not there: `v` says where it goes) with `data`; returns
    /// its number. Out of line: most records find their key.
    #[inline(never)]
    pub(crate) fn insert(&mut self, v: Vacant, key: &'k [u8], data: T) -> usize {
        let i = self.slots.len();
        self.table[v.at] = (v.hash & TAG) | (i as u64 + 1);
        self.slots.push(Slot {
            head: v.head,
            len: key.len() as u32,
            data,
        });
        self.store.push(key);
        if 2 * self.slots.len() > self.table.len() {
            self.grow();
        }
        i
    }

    /// Doubles the table, placing every key again.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let mut table = vec![0u64; 2 * self.table.len()];
        let mask = table.len() - 1;
        for (i, s) in self.slots.iter().enumerate() {
            let hash = hash(self.store.key(i), s.head);
            let mut at = hash as usize & mask;
            while table[at] != 0 {
                at = (at + 1) & mask;
            }
            table[at] = (hash & TAG) | (i as u64 + 1);
        }
        self.table = table;
    }
}

/// The values of each key folded with a reduce function: the state of a
/// reduce, fed record by record, then written once. A value is taken out of
/// its slot while the function runs.
pub(crate) type Groups<S, V> = Keys<S, Option<V>>;

impl<'k, S: Store<'k>, V> Keys<S, Option<V>> {
    /// Folds `v` into the group of `key` with `f`.
    #[inline(always)]
    pub(crate) fn fold<E>(
        &mut self,
        key: &'k [u8],
        v: V,
        f: &mut impl FnMut(V, V) -> Result<V, E>,
    ) -> Result<(), E> {
        match self.find(key) {
            Ok(s) => {
                let slot = self.data_mut(s);
                let acc = slot.take().expect("a slot holds a value between steps");
                *slot = Some(f(acc, v)?);
            }
            Err(vacant) => {
                self.insert(vacant, key, Some(v));
            }
        }
        Ok(())
    }

    /// Decodes every record of `input` and folds it in.
    #[inline]
    pub(crate) fn add_all<'a, E: Display>(
        &mut self,
        input: Records<'a>,
        f: &mut impl FnMut(V, V) -> Result<V, E>,
    ) -> Result<(), OpError>
    where
        'a: 'k,
        V: Decode<'a>,
    {
        for (i, (k, v)) in input.iter().enumerate() {
            let v = crate::__private::decode(v, i, "value")?;
            self.fold(k, v, f).map_err(|e| OpError::at(i, e))?;
        }
        Ok(())
    }

    /// Writes one record per key, in order of first appearance.
    pub(crate) fn write(&self, out: &mut Batch)
    where
        V: Encode,
    {
        for i in 0..self.len() {
            let v = self.data(i).as_ref().expect("a slot holds a value");
            out.push_encoded(self.key(i), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of every length from 0 to 40, and keys equal but for one byte.
    fn keys() -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for n in 0..=40usize {
            let k: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            for at in 0..n {
                let mut other = k.clone();
                other[at] = b'#';
                keys.push(other);
            }
            keys.push(k);
        }
        keys
    }

    #[test]
    fn heads_are_the_first_bytes() {
        for k in keys() {
            let mut first = [0u8; 8];
            let n = k.len().min(8);
            first[..n].copy_from_slice(&k[..n]);
            assert_eq!(head(&k), u64::from_le_bytes(first), "{k:?}");
        }
    }

    #[test]
    fn keys_are_found_by_their_bytes_in_order_of_first_appearance() {
        let keys = keys();
        let mut index: Keys<Vec<&[u8]>, usize> = Keys::with_capacity(1, Vec::new());
        let mut arena: Keys<Arena, usize> = Keys::with_capacity(1, Arena::default());
        for round in 0..2 {
            for (n, k) in keys.iter().enumerate() {
                for (name, found) in [("borrowed", index.find(k)), ("arena", arena.find(k))] {
                    match (round, found) {
                        (0, Err(_)) | (1, Ok(_)) => {}
                        (_, r) => panic!("{name}: key {n} {k:?} in round {round}: {:?}", r.ok()),
                    }
                }
                if let Err(v) = index.find(k) {
                    assert_eq!(index.insert(v, k, n), n);
                }
                if let Err(v) = arena.find(k) {
                    assert_eq!(arena.insert(v, k, n), n);
                }
            }
        }
        assert_eq!(index.len(), keys.len());
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(index.find(k).ok(), Some(n));
            assert_eq!((arena.key(n), *arena.data(n)), (&k[..], n));
        }
    }
}
