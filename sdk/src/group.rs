//! Grouping records by key: the hash table behind reduce and update-state.
//!
//! Written for short keys (words, URLs, ids) and for the Wasm sandbox, where
//! code is compiled by Cranelift rather than LLVM and where some things cost
//! more than natively:
//!
//! - a key of up to 16 bytes is held in the table itself, as two integers
//!   and its length, so finding it is one probe of one entry: no second,
//!   dependent load of a key or a slot, and no call to `memcmp` (a byte
//!   loop in Wasm);
//! - when the key lies inside a buffer the table is told about (the
//!   partition it came from), its two integers are read with two 8-byte
//!   loads and masked to its length, with no branch on the length: with
//!   words of mixed lengths such branches are guessed wrong often, and a
//!   wrong guess also stops the next words' probes from starting early;
//! - the hash uses 64-bit wrapping multiplies only (foldhash's 64x64->128
//!   product is four multiplies on wasm32);
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

/// `MASKS[n]` keeps the bytes of a key of `n` bytes (`n` <= 16) in its two
/// 8-byte parts: one load from a small table (in L1) instead of shifts.
static MASKS: [[u64; 2]; 17] = {
    let mut m = [[0u64; 2]; 17];
    let mut n = 0;
    while n <= 16 {
        m[n][0] = if n >= 8 { u64::MAX } else { (1 << (8 * n)) - 1 };
        m[n][1] = if n >= 16 {
            u64::MAX
        } else if n <= 8 {
            0
        } else {
            (1 << (8 * (n - 8))) - 1
        };
        n += 1;
    }
    m
};

/// `x` shifted down by `n` bytes (`n` in 0..=8), zero for 8.
#[inline(always)]
fn down(x: u64, n: usize) -> u64 {
    (x >> (4 * n)) >> (4 * n)
}

/// The first `min(len, 8)` bytes of a key of fewer than 8 bytes as a
/// little-endian integer, zero above. Read with at most two (overlapping)
/// loads.
#[inline(always)]
fn short(k: &[u8]) -> u64 {
    let n = k.len();
    if n >= 4 {
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

/// The first 16 bytes of `k` as two little-endian integers, zero past its
/// end: with its length, the whole of a key of up to 16 bytes.
#[inline(always)]
fn parts(k: &[u8]) -> (u64, u64) {
    let n = k.len();
    if n >= 16 {
        (read8(k, 0), read8(k, 8))
    } else if n >= 8 {
        // Bytes n-8..n, shifted so that byte 8 comes lowest.
        (read8(k, 0), down(read8(k, n - 8), 16 - n))
    } else {
        (short(k), 0)
    }
}

/// [`parts`] of `buf[at..at + n]`, where `buf` has 16 bytes from `at`:
/// two loads and two masks, whatever `n`.
#[inline(always)]
fn parts_at(buf: &[u8], at: usize, n: usize) -> (u64, u64) {
    let m = &MASKS[n.min(16)];
    (read8(buf, at) & m[0], read8(buf, at + 8) & m[1])
}

/// The hash of a key of `n` bytes whose [`parts`] are `(k1, k2)`; `k` is
/// the key itself, read only past its first 16 bytes. The table uses its
/// high bits, and the high bits of a product depend on every bit of the
/// multiplicand: for a key of up to 16 bytes two independent multiplies
/// are enough.
#[inline(always)]
fn hash(k1: u64, k2: u64, n: usize, k: &[u8]) -> u64 {
    let x = (k1 ^ SEED ^ n as u64).wrapping_mul(K1) ^ k2.wrapping_mul(K2);
    if n > 16 { long(x, k) } else { x }
}

/// Folds the bytes of a key past its first 16 into `x` (out of line: most
/// keys are short).
#[inline(never)]
fn long(mut x: u64, k: &[u8]) -> u64 {
    let n = k.len();
    let mut at = 16;
    while at + 8 < n {
        x = (x ^ read8(k, at)).wrapping_mul(K1).rotate_left(29);
        at += 8;
    }
    x = (x ^ read8(k, n - 8)).wrapping_mul(K2);
    (x ^ (x >> 29)).wrapping_mul(K3)
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

/// The length of an empty [`Slot`]: no key has it (a batch holds less
/// than 4 GiB).
const EMPTY: u32 = u32::MAX;

/// One entry of the table: a key's [`parts`], its length, its number and
/// what is kept for it, side by side so that finding and updating a key
/// touches one place. A key of up to 16 bytes is all there; a longer one is
/// compared with the store when its first 16 bytes and length match.
#[derive(Debug)]
struct Slot<T> {
    k1: u64,
    k2: u64,
    len: u32,
    num: u32,
    /// `None` when the slot is empty (or while a fold has taken it).
    data: Option<T>,
}

impl<T> Slot<T> {
    const VACANT: Self = Self {
        k1: 0,
        k2: 0,
        len: EMPTY,
        num: 0,
        data: None,
    };
}

fn vacant<T>(n: usize) -> Vec<Slot<T>> {
    std::iter::repeat_with(|| Slot::VACANT).take(n).collect()
}

/// Where a key that is not there goes: found while probing for it.
pub(crate) struct Vacant {
    at: usize,
    k1: u64,
    k2: u64,
}

/// A key's place in the table (see [`Keys::find`]), valid until the next
/// insert.
pub(crate) type At = usize;

/// Distinct keys numbered in order of first appearance, each with a `T`,
/// found by hash.
///
/// The table is open addressing with linear probing over a power-of-two
/// array at most half full, the high bits of the hash picking the first
/// slot to look at.
#[derive(Debug)]
pub(crate) struct Keys<S, T> {
    table: Vec<Slot<T>>,
    /// 64 minus log2 of the table's length: the hash shifted down by it is
    /// a slot.
    shift: u32,
    /// The slot of key number `i`.
    order: Vec<u32>,
    store: S,
}

impl<'k, S: Store<'k>, T> Keys<S, T> {
    /// No keys, with room for `n` before the table first grows. It doubles
    /// as keys come: start small when most keys repeat.
    pub(crate) fn with_capacity(n: usize, store: S) -> Self {
        let size = (2 * n).next_power_of_two().max(16);
        Self {
            table: vacant(size),
            shift: 64 - size.trailing_zeros(),
            order: Vec::with_capacity(n),
            store,
        }
    }

    /// Number of distinct keys.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Key number `i`.
    #[inline]
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        self.store.key(i)
    }

    /// The number of the key at `at`.
    #[cfg(test)]
    fn number(&self, at: At) -> usize {
        self.table[at].num as usize
    }

    /// What is kept for key number `i`.
    #[inline]
    pub(crate) fn data(&self, i: usize) -> &T {
        let at = self.order[i] as usize;
        self.table[at].data.as_ref().expect("a slot holds a value")
    }

    /// What is kept for the key at `at`, to change it; `None` only while a
    /// fold has taken it.
    #[inline(always)]
    pub(crate) fn slot_mut(&mut self, at: At) -> &mut Option<T> {
        &mut self.table[at].data
    }

    /// What is kept for the key at `at`, to change it.
    #[inline]
    pub(crate) fn data_mut(&mut self, at: At) -> &mut T {
        self.slot_mut(at).as_mut().expect("a slot holds a value")
    }

    /// What is kept for each key, in order of first appearance.
    pub(crate) fn into_data(mut self) -> impl Iterator<Item = T> {
        let order = std::mem::take(&mut self.order);
        order.into_iter().map(move |at| {
            self.table[at as usize]
                .data
                .take()
                .expect("a slot holds a value")
        })
    }

    /// Where `key` is, or where to [`Keys::insert`] it. When the key lies
    /// inside `buf` (the records it came from) with 16 bytes of `buf` from
    /// its start, its parts are read from `buf` with no branch on its
    /// length; any other key (`buf` may be empty) is found all the same.
    #[inline(always)]
    pub(crate) fn find_in(&self, buf: &[u8], key: &[u8]) -> Result<At, Vacant> {
        // Where the key starts in `buf`, if it does (a pointer comparison).
        let at = (key.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        let (k1, k2) = match buf.len().checked_sub(16) {
            Some(last) if at <= last => parts_at(buf, at, key.len()),
            _ => parts(key),
        };
        self.probe(k1, k2, key)
    }

    #[inline(always)]
    fn probe(&self, k1: u64, k2: u64, key: &[u8]) -> Result<At, Vacant> {
        let n = key.len();
        let h = hash(k1, k2, n, key);
        let mask = self.table.len() - 1;
        let mut at = (h >> self.shift) as usize;
        loop {
            let e = &self.table[at];
            if (e.k1 ^ k1) | (e.k2 ^ k2) | u64::from(e.len ^ n as u32) == 0 {
                if n <= 16 || self.store.key(e.num as usize) == key {
                    return Ok(at);
                }
            } else if e.len == EMPTY {
                return Err(Vacant { at, k1, k2 });
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds `key` (not there: `v` says where it goes) with `data`; returns
    /// its number. Out of line: most records find their key.
    #[inline(never)]
    pub(crate) fn insert(&mut self, v: Vacant, key: &'k [u8], data: T) -> usize {
        let i = self.order.len();
        self.table[v.at] = Slot {
            k1: v.k1,
            k2: v.k2,
            len: key.len() as u32,
            num: i as u32,
            data: Some(data),
        };
        self.order.push(v.at as u32);
        self.store.push(key);
        if 2 * self.order.len() > self.table.len() {
            self.grow();
        }
        i
    }

    /// Doubles the table, placing every key again.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let size = 2 * self.table.len();
        let old = std::mem::replace(&mut self.table, vacant(size));
        self.shift = 64 - size.trailing_zeros();
        for e in old.into_iter().filter(|e| e.len != EMPTY) {
            let h = hash(e.k1, e.k2, e.len as usize, self.store.key(e.num as usize));
            let mut at = (h >> self.shift) as usize;
            while self.table[at].len != EMPTY {
                at = (at + 1) & (size - 1);
            }
            self.order[e.num as usize] = at as u32;
            self.table[at] = e;
        }
    }
}

/// The values of each key folded with a reduce function: the state of a
/// reduce, fed record by record, then written once. A value is taken out of
/// its slot while the function runs.
pub(crate) type Groups<S, V> = Keys<S, V>;

impl<'k, S: Store<'k>, V> Keys<S, V> {
    /// Folds `v` into the group of `key` with `f`; `key` may lie inside
    /// `buf` (see [`Keys::find_in`]).
    #[inline(always)]
    pub(crate) fn fold<E>(
        &mut self,
        buf: &[u8],
        key: &'k [u8],
        v: V,
        f: &mut impl FnMut(V, V) -> Result<V, E>,
    ) -> Result<(), E> {
        match self.find_in(buf, key) {
            Ok(s) => {
                let slot = self.slot_mut(s);
                let acc = slot.take().expect("a slot holds a value between steps");
                *slot = Some(f(acc, v)?);
            }
            Err(vacant) => {
                self.insert(vacant, key, v);
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
        let buf = input.raw_parts().0;
        for (i, (k, v)) in input.iter().enumerate() {
            let v = crate::__private::decode(v, i, "value")?;
            self.fold(buf, k, v, f).map_err(|e| OpError::at(i, e))?;
        }
        Ok(())
    }

    /// Writes one record per key, in order of first appearance.
    pub(crate) fn write(&self, out: &mut Batch)
    where
        V: Encode,
    {
        for i in 0..self.len() {
            out.push_encoded(self.key(i), self.data(i));
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

    /// The first 16 bytes of `k`, zero past its end, as two integers.
    fn first16(k: &[u8]) -> (u64, u64) {
        let mut first = [0u8; 16];
        let n = k.len().min(16);
        first[..n].copy_from_slice(&k[..n]);
        (read8(&first, 0), read8(&first, 8))
    }

    #[test]
    fn parts_are_the_first_16_bytes_wherever_they_are_read() {
        for k in keys() {
            assert_eq!(parts(&k), first16(&k), "{k:?}");
            // Inside a buffer of other bytes, at several offsets, and with
            // the buffer ending right after the 16 bytes read or later.
            for at in [0, 1, 7, 8, 13] {
                let mut buf = vec![0xa5u8; at + k.len().max(16) + 3];
                buf[at..at + k.len()].copy_from_slice(&k);
                let inside = &buf[at..at + k.len()];
                assert_eq!(parts_at(&buf, at, k.len()), first16(&k), "{k:?} at {at}");
                let keys: Keys<Vec<&[u8]>, ()> = Keys::with_capacity(1, Vec::new());
                // Same hash and same entry whichever way the parts were read.
                let (a, b) = (keys.find_in(&buf, inside), keys.find_in(&[], &k));
                let (Err(a), Err(b)) = (a, b) else {
                    panic!("found in an empty table")
                };
                assert_eq!((a.at, a.k1, a.k2), (b.at, b.k1, b.k2), "{k:?} at {at}");
            }
        }
    }

    #[test]
    fn keys_are_found_by_their_bytes_in_order_of_first_appearance() {
        let keys = keys();
        let mut index: Keys<Vec<&[u8]>, usize> = Keys::with_capacity(1, Vec::new());
        let mut arena: Keys<Arena, usize> = Keys::with_capacity(1, Arena::default());
        for round in 0..2 {
            for (n, k) in keys.iter().enumerate() {
                for (name, found) in [
                    ("borrowed", index.find_in(&[], k)),
                    ("arena", arena.find_in(&[], k)),
                ] {
                    match (round, found) {
                        (0, Err(_)) | (1, Ok(_)) => {}
                        (_, r) => panic!("{name}: key {n} {k:?} in round {round}: {:?}", r.ok()),
                    }
                }
                if let Err(v) = index.find_in(&[], k) {
                    assert_eq!(index.insert(v, k, n), n);
                }
                if let Err(v) = arena.find_in(&[], k) {
                    assert_eq!(arena.insert(v, k, n), n);
                }
            }
        }
        assert_eq!(index.len(), keys.len());
        // The keys back to back in one buffer, found through it.
        let buf: Vec<u8> = keys.concat();
        let mut at = 0;
        for (n, k) in keys.iter().enumerate() {
            let number = |r: Result<At, Vacant>| r.ok().map(|at| index.number(at));
            assert_eq!(number(index.find_in(&[], k)), Some(n));
            assert_eq!(number(index.find_in(&buf, &buf[at..at + k.len()])), Some(n));
            at += k.len();
            assert_eq!((arena.key(n), *arena.data(n)), (&k[..], n));
        }
    }
}
