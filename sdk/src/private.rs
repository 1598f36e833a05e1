//! Support for the code the attributes generate. Not a public API.

use std::fmt::Display;

pub use crate::batch::{Batch, Records};
pub use crate::codec::{Ascii, Decode, Emit, Encode, Encoding, Out};
use crate::group::{Arena, Groups, Keys};
pub use crate::operator::{
    Combine, Fused, FusedError, Kind, OpError, Operator, Refused, Runner, Sink,
};
pub use crate::params::{ParamSpec, Params, RawParams};

/// Keys a grouping table has room for before it first grows: most
/// partitions repeat their keys, so start small rather than at one slot per
/// record.
const FIRST_KEYS: usize = 256;

/// Decodes `bytes` (the `what` of record `i`) as `T`.
#[inline]
pub fn decode<'a, T: Decode<'a>>(bytes: &'a [u8], i: usize, what: &str) -> Result<T, OpError> {
    decode_in(bytes, None, i, what)
}

/// [`decode`] of bytes that may lie within `ascii` (see [`windows`]).
#[inline(always)]
pub fn decode_in<'a, T: Decode<'a>>(
    bytes: &'a [u8],
    ascii: Option<Ascii<'a>>,
    i: usize,
    what: &str,
) -> Result<T, OpError> {
    match T::try_decode_in(bytes, ascii) {
        Some(t) => Ok(t),
        None => Err(undecodable::<T>(bytes, i, what)),
    }
}

/// Input bytes per window of [`windows`]: few enough to stay in the core's
/// L1 cache from the ASCII check to the reading of the records (a check of
/// a whole partition first would read it from memory twice).
const WINDOW_BYTES: u32 = 16 << 10;

/// `input` in windows of consecutive records, each with its first record's
/// number and, when an operator reading keys and values encoded as
/// `encodings` takes text and the window's bytes are all ASCII, those bytes
/// (see [`Ascii`]): then no record needs a UTF-8 check of its own. Input
/// that is not text is one window.
#[inline]
pub fn windows<'a>(
    input: Records<'a>,
    encodings: [Encoding; 2],
) -> impl Iterator<Item = (usize, Records<'a>, Option<Ascii<'a>>)> {
    let text = encodings.contains(&Encoding::Utf8);
    let n = input.len();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= n {
            return None;
        }
        let end = if text {
            input.window_end(start, WINDOW_BYTES)
        } else {
            n
        };
        let part = input.slice(start, end);
        let first = std::mem::replace(&mut start, end);
        Some((first, part, if text { part.ascii() } else { None }))
    })
}

/// The error of record `i`, whose `what` does not decode as `T` (out of
/// line: decoding again says why).
#[cold]
#[inline(never)]
pub(crate) fn undecodable<'a, T: Decode<'a>>(bytes: &'a [u8], i: usize, what: &str) -> OpError {
    match T::decode(bytes) {
        Err(e) => OpError::at(i, format!("cannot decode the {what}: {e}")),
        Ok(_) => OpError::at(i, format!("cannot decode the {what}")),
    }
}

/// Turns a user error at record `i` into an [`OpError`].
#[inline]
pub fn at<T, E: Display>(r: Result<T, E>, i: usize) -> Result<T, OpError> {
    r.map_err(|e| OpError::at(i, e))
}

/// Appends the indices a filter over a partition of `n` records returned,
/// checking that they ascend and are in range.
pub fn keep(
    n: usize,
    kept: impl IntoIterator<Item = u32>,
    out: &mut Vec<u32>,
) -> Result<(), OpError> {
    let first = out.len();
    for i in kept {
        if i as usize >= n {
            return Err(OpError::new(format!(
                "the filter kept record {i}, but the partition has {n} records"
            )));
        }
        if let Some(&prev) = out[first..].last()
            && prev >= i
        {
            return Err(OpError::new(format!(
                "the filter kept record {i} after record {prev}: indices must ascend"
            )));
        }
        out.push(i);
    }
    Ok(())
}

/// Parses the parameters of one call.
#[inline]
pub fn params<P: Params>(raw: &RawParams<'_>) -> Result<P, OpError> {
    P::from_params(raw).map_err(OpError::new)
}

/// The type of a field of `#[derive(Params)]`: anything `FromStr` with a
/// `Display` error. A trait of its own so that a type that does not parse is
/// one error, pointing at the field's type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a parameter: it must implement `FromStr` with a `Display` error",
    label = "not a parameter type",
    note = "parameters are text from the job: use String, a number, bool, char or another `FromStr` type"
)]
pub trait Param: Sized {
    /// Parses the value of `name`, if given.
    fn param(raw: &RawParams<'_>, name: &str) -> Result<Option<Self>, String>;
}

impl<T: std::str::FromStr> Param for T
where
    T::Err: Display,
{
    #[inline]
    fn param(raw: &RawParams<'_>, name: &str) -> Result<Option<Self>, String> {
        raw.parse(name)
    }
}

/// Parses the parameter `name` as `T`, if given.
#[inline]
pub fn param<T: Param>(raw: &RawParams<'_>, name: &str) -> Result<Option<T>, String> {
    T::param(raw, name)
}

/// Encodings of a type as an input.
pub const fn input_encoding<'a, T: Decode<'a>>() -> Encoding {
    T::ENCODING
}

/// Groups `input` by key and folds the values of each key with `f`; one output
/// record per key, in order of first appearance.
pub fn reduce<'a, V, E, F>(input: Records<'a>, out: &mut Batch, mut f: F) -> Result<(), OpError>
where
    V: Decode<'a> + Encode,
    E: Display,
    F: FnMut(V, V) -> Result<V, E>,
{
    let mut groups = Groups::with_capacity(input.len().min(FIRST_KEYS), Vec::new());
    groups.add_all(input, &mut f)?;
    groups.write(out);
    Ok(())
}

/// A reduce fed piece by piece: the groups, the function folding them, how
/// many records it was given, the error of a failed push, and the buffer
/// the keys pushed to it are likely to lie in (see [`Keys::find_in`]).
struct Combining<'w, V, F> {
    groups: Groups<Arena, V>,
    f: F,
    seen: usize,
    failed: Option<OpError>,
    within: &'w [u8],
}

impl<V, E, F> Sink for Combining<'_, V, F>
where
    V: for<'x> Decode<'x> + Encode,
    E: Display,
    F: FnMut(V, V) -> Result<V, E>,
{
    #[inline]
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), Refused> {
        self.fold(key, value)
    }
}

impl<V, E, F> Combining<'_, V, F>
where
    V: for<'x> Decode<'x> + Encode,
    E: Display,
    F: FnMut(V, V) -> Result<V, E>,
{
    /// Folds one record into its group: [`Sink::push`], and inlined into
    /// the loop of a fused feed ([`Out`]).
    #[inline(always)]
    fn fold(&mut self, key: &[u8], value: &[u8]) -> Result<(), Refused> {
        let i = self.seen;
        self.seen += 1;
        let Some(v) = V::try_decode(value) else {
            return self.refuse(undecodable::<V>(value, i, "value"));
        };
        match self.groups.fold(self.within, key, v, &mut self.f) {
            Ok(()) => Ok(()),
            Err(e) => self.refuse(OpError::at(i, e)),
        }
    }
}

impl<V, F> Combining<'_, V, F> {
    /// Keeps why a record was refused (out of line).
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, e: OpError) -> Result<(), Refused> {
        self.failed = Some(e);
        Err(Refused)
    }
}

impl<V, E, F> Combine for Combining<'_, V, F>
where
    V: for<'x> Decode<'x> + Encode,
    E: Display,
    F: FnMut(V, V) -> Result<V, E>,
{
    fn add(&mut self, chunk: Records<'_>) -> Result<(), OpError> {
        let first = self.seen;
        self.seen += chunk.len();
        self.groups.add_all(chunk, &mut self.f).map_err(|mut e| {
            e.record = e.record.map(|r| r + first as u32);
            e
        })
    }

    fn take_error(&mut self) -> Option<OpError> {
        self.failed.take()
    }

    fn finish(&mut self, out: &mut Batch) {
        self.groups.write(out)
    }
}

/// The records a feed writes, folded straight in: what a map or flat-map
/// fused with the reduce after it (see [`Stage::after`]) writes to, with no
/// dynamic call per record.
impl<V, E, F> Out for Combining<'_, V, F>
where
    V: for<'x> Decode<'x> + Encode,
    E: Display,
    F: FnMut(V, V) -> Result<V, E>,
{
    #[inline(always)]
    fn record<K: Encode + ?Sized, W: Encode + ?Sized>(
        &mut self,
        key: &K,
        value: &W,
    ) -> Result<(), OpError> {
        key.with_bytes(|k| value.with_bytes(|v| self.fold(k, v)))
            .map_err(|Refused| crate::codec::refused())
    }
}

/// A [`Combine`] folding the values of each key with `f`, for values that own
/// their data (so they outlive the chunk they came from; keys are copied in
/// once each). One output record per key, in order of first appearance, as
/// [`reduce`]. Keys pushed to it that lie inside `within` (the input of the
/// stage feeding it, see [`data_of`]) are read faster; any other key is
/// grouped all the same.
pub fn combining<'w, V, E, F>(within: &'w [u8], f: F) -> impl Combine + Out + 'w
where
    V: for<'x> Decode<'x> + Encode + 'w,
    E: Display,
    F: FnMut(V, V) -> Result<V, E> + 'w,
{
    Combining {
        groups: Groups::with_capacity(FIRST_KEYS, Arena::default()),
        f,
        seen: 0,
        failed: None,
        within,
    }
}

/// The bytes holding the keys and values of `input`.
#[inline]
pub fn data_of<'a>(input: &Records<'a>) -> &'a [u8] {
    input.raw_parts().0
}

/// What every operator module the attributes make has, as `__Stage`: how it
/// runs fused with its neighbour in a pipeline, when it can. A map or
/// flat-map [`Stage::FEEDS`]; a reduce of values that own their data
/// [`Stage::FOLDS`]. `plugin!` makes [`fused`] for every pair of its
/// operators, and a two-stage pipeline of a feeding stage then a folding one
/// runs as ONE monomorphic loop: each record the first writes is folded by
/// inlined code, not handed over by a dynamic call (in Wasm an indirect call
/// with its checks, a prologue and arguments on the stack).
pub trait Stage {
    /// Runs as [`Stage::each`].
    const FEEDS: bool = false;
    /// Runs as [`Stage::after`].
    const FOLDS: bool = false;

    /// Runs this map or flat-map over `input`, writing to `out`.
    #[inline(always)]
    fn each<O: Out + ?Sized>(
        input: Records<'_>,
        raw: &RawParams<'_>,
        out: &mut O,
    ) -> Result<(), OpError> {
        let _ = (input, raw, out);
        unreachable!("only a stage that feeds runs `each`")
    }

    /// Runs `first` (a stage that feeds) over `input` and this reduce over
    /// what it writes, appending the groups to `out`.
    fn after<First: Stage>(
        input: Records<'_>,
        first: &RawParams<'_>,
        raw: &RawParams<'_>,
        out: &mut Batch,
    ) -> Result<(), FusedError> {
        let _ = (input, first, raw, out);
        unreachable!("only a stage that folds runs `after`")
    }
}

/// Runs `First` over `input` into `fold` (a reduce's groups), then writes
/// the groups to `out`: the body of [`Stage::after`].
#[inline(always)]
pub fn run_fused<First: Stage, C: Combine + Out>(
    input: Records<'_>,
    first: &RawParams<'_>,
    mut fold: C,
    out: &mut Batch,
) -> Result<(), FusedError> {
    // As unfused: over no records the first stage never runs (its
    // parameters are not even read); the reduce's were, to start `fold`.
    if input.is_empty() {
        fold.finish(out);
        return Ok(());
    }
    match First::each(input, first, &mut fold) {
        Ok(()) => {
            fold.finish(out);
            Ok(())
        }
        // A record refused by the fold is the fold's error.
        Err(e) => Err(match fold.take_error() {
            Some(e) => FusedError { stage: 1, error: e },
            None => FusedError { stage: 0, error: e },
        }),
    }
}

/// `Second::after::<First>` if `First` feeds and `Second` folds: an entry
/// of the table `plugin!` makes.
pub const fn fused<First: Stage, Second: Stage>() -> Option<Fused> {
    if First::FEEDS && Second::FOLDS {
        Some(Second::after::<First>)
    } else {
        None
    }
}

/// Pairs `current[i]` with `leaving[i]` and applies `f`; keys from `current`.
pub fn inverse<'a, V, E, F>(
    current: Records<'a>,
    leaving: Records<'a>,
    out: &mut Batch,
    mut f: F,
) -> Result<(), OpError>
where
    V: Decode<'a> + Encode,
    E: Display,
    F: FnMut(V, V) -> Result<V, E>,
{
    if current.len() != leaving.len() {
        return Err(OpError::new(format!(
            "inverse needs batches of equal length, got {} and {}",
            current.len(),
            leaving.len()
        )));
    }
    for i in 0..current.len() {
        let (k, a) = current.get(i);
        let (_, b) = leaving.get(i);
        let r = at(
            f(
                decode(a, i, "current value")?,
                decode(b, i, "leaving value")?,
            ),
            i,
        )?;
        out.push_encoded(k, &r);
    }
    Ok(())
}

/// Applies `f(key, new values, old state)` to every key of `state` (in order)
/// and then every new key of `input` (in order of first appearance); keeps the
/// keys whose new state is `Some`.
pub fn update_state<'a, K, V, S, E, F>(
    input: Records<'a>,
    state: Records<'a>,
    out: &mut Batch,
    mut f: F,
) -> Result<(), OpError>
where
    K: Decode<'a>,
    V: Decode<'a>,
    S: Decode<'a> + Encode,
    E: Display,
    F: FnMut(K, Vec<V>, Option<S>) -> Result<Option<S>, E>,
{
    struct Group<'a, V> {
        key: &'a [u8],
        state: Option<&'a [u8]>,
        values: Vec<V>,
        first: usize,
    }
    let mut groups: Keys<Vec<&'a [u8]>, Group<'a, V>> =
        Keys::with_capacity(state.len() + input.len().min(FIRST_KEYS), Vec::new());
    let (in_state, in_input) = (state.raw_parts().0, input.raw_parts().0);
    for (i, (k, s)) in state.iter().enumerate() {
        let Err(vacant) = groups.find_in(in_state, k) else {
            return Err(OpError::new(format!(
                "state record {i} repeats a key: state holds one record per key"
            )));
        };
        let group = Group {
            key: k,
            state: Some(s),
            values: Vec::new(),
            first: i,
        };
        groups.insert(vacant, k, group);
    }
    for (i, (k, v)) in input.iter().enumerate() {
        let v: V = decode(v, i, "value")?;
        match groups.find_in(in_input, k) {
            Ok(g) => groups.data_mut(g).values.push(v),
            Err(vacant) => {
                let group = Group {
                    key: k,
                    state: None,
                    values: vec![v],
                    first: i,
                };
                groups.insert(vacant, k, group);
            }
        }
    }
    for group in groups.into_data() {
        let key: K = decode(group.key, group.first, "key")?;
        let old = match group.state {
            Some(s) => Some(decode::<S>(s, group.first, "state")?),
            None => None,
        };
        if let Some(new) = at(f(key, group.values, old), group.first)? {
            out.push_encoded(group.key, &new);
        }
    }
    Ok(())
}

/// Decodes a whole partition as `(K, V)` pairs, for transforms.
pub fn decode_all<'a, K: Decode<'a>, V: Decode<'a>>(
    input: Records<'a>,
) -> Result<Vec<(K, V)>, OpError> {
    input
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Ok((decode(k, i, "key")?, decode(v, i, "value")?)))
        .collect()
}

#[cfg(target_arch = "wasm32")]
pub use crate::guest::*;
