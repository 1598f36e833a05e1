//! Support for the code the attributes generate. Not a public API.

use std::fmt::Display;

pub use crate::batch::{Batch, Records};
pub use crate::codec::{Ascii, Decode, Emit, Encode, Encoding, Out};
use crate::group::{Arena, Groups, Keys};
pub use crate::operator::{
    Combine, Fused, FusedError, Kind, OpError, Operator, Pieces, Refused, Runner, Sink,
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
/// many records it was given, and the error of a failed push.
struct Combining<V, F> {
    groups: Groups<Arena, V>,
    f: F,
    seen: usize,
    failed: Option<OpError>,
}

impl<V, E, F> Sink for Combining<V, F>
where
    V: for<'x> Decode<'x> + Encode,
    E: Display,
    F: FnMut(V, V) -> Result<V, E>,
{
    #[inline]
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), Refused> {
        self.fold_in(&[], key, value)
    }
}

/// A fold that takes a record's bytes with the buffer they likely lie in
/// (the input of the stage writing them), which lets it read a key faster
/// (see `Keys::find_in`); a record from anywhere else is folded all the
/// same.
pub trait FoldIn {
    /// Folds one record; a refused one keeps why (see
    /// [`Combine::take_error`]).
    fn fold_in(&mut self, buf: &[u8], key: &[u8], value: &[u8]) -> Result<(), Refused>;
}

impl<V, E, F> FoldIn for Combining<V, F>
where
    V: for<'x> Decode<'x> + Encode,
    E: Display,
    F: FnMut(V, V) -> Result<V, E>,
{
    /// Folds one record into its group: [`Sink::push`], and inlined into
    /// the loop of a fused feed ([`Within`]).
    #[inline(always)]
    fn fold_in(&mut self, buf: &[u8], key: &[u8], value: &[u8]) -> Result<(), Refused> {
        let i = self.seen;
        self.seen += 1;
        let Some(v) = V::try_decode(value) else {
            return self.refuse(undecodable::<V>(value, i, "value"));
        };
        match self.groups.fold(buf, key, v, &mut self.f) {
            Ok(()) => Ok(()),
            Err(e) => self.refuse(OpError::at(i, e)),
        }
    }
}

impl<V, F> Combining<V, F> {
    /// Keeps why a record was refused (out of line).
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, e: OpError) -> Result<(), Refused> {
        self.failed = Some(e);
        Err(Refused)
    }
}

impl<V, E, F> Combine for Combining<V, F>
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

/// A fold and the buffer holding the input of the stage that feeds it:
/// what a map or flat-map fused with the reduce after it (see
/// [`Stage::after`]) writes to, each record folded straight in with no
/// dynamic call.
pub struct Within<'w, C: ?Sized> {
    fold: &'w mut C,
    buf: &'w [u8],
}

impl<C: ?Sized> std::fmt::Debug for Within<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Within")
            .field("buf", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl<'w, C: FoldIn + ?Sized> Within<'w, C> {
    /// `fold`, fed by a stage whose input is `input`.
    #[inline(always)]
    pub fn new(fold: &'w mut C, input: &Records<'w>) -> Self {
        Self {
            fold,
            buf: input.raw_parts().0,
        }
    }
}

impl<C: FoldIn + ?Sized> Out for Within<'_, C> {
    #[inline(always)]
    fn record<K: Encode + ?Sized, W: Encode + ?Sized>(
        &mut self,
        key: &K,
        value: &W,
    ) -> Result<(), OpError> {
        let buf = self.buf;
        key.with_bytes(|k| value.with_bytes(|v| self.fold.fold_in(buf, k, v)))
            .map_err(|Refused| crate::codec::refused())
    }
}

/// A [`Combine`] folding the values of each key with `f`, for values that own
/// their data (so they outlive the chunk they came from; keys are copied in
/// once each). One output record per key, in order of first appearance, as
/// [`reduce`].
pub fn combining<V, E, F>(f: F) -> impl Combine + FoldIn + 'static
where
    V: for<'x> Decode<'x> + Encode + 'static,
    E: Display,
    F: FnMut(V, V) -> Result<V, E> + 'static,
{
    Combining {
        groups: Groups::with_capacity(FIRST_KEYS, Arena::default()),
        f,
        seen: 0,
        failed: None,
    }
}

/// What every operator module the attributes make has, as `__Stage`: how it
/// runs fused with its neighbour in a pipeline, when it can. A map or
/// flat-map [`Stage::FEEDS`]; a reduce of values that own their data
/// [`Stage::FOLDS`]. `plugin!` makes [`fused`] for every pair of its
/// operators, and a two-stage pipeline of a feeding stage then a folding one
/// runs as ONE monomorphic loop: each record the first writes is folded by
/// inlined code, not handed over by a dynamic call (in Wasm an indirect call
/// with its checks, a prologue and arguments on the stack).
pub trait Stage: 'static {
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

    /// Starts `first` (a stage that feeds) and this reduce as [`Pieces`]:
    /// [`Stage::after`] over an input that comes piece by piece.
    fn start_after<First: Stage>(
        first: &RawParams<'_>,
        raw: &RawParams<'_>,
    ) -> Result<Box<dyn Pieces>, FusedError> {
        let _ = (first, raw);
        unreachable!("only a stage that folds runs `start_after`")
    }
}

/// Runs `First` over `input` into `fold` (a reduce's groups): the loop of
/// [`Stage::after`] and of [`Pieces::push`]. Out of line, so that the two
/// share one copy of it, and the code that folds each record (closures
/// LLVM inlines only where they are called once) is inlined into it.
#[inline(never)]
fn feed_fused<First: Stage, C: Combine + FoldIn>(
    input: Records<'_>,
    first: &RawParams<'_>,
    fold: &mut C,
) -> Result<(), FusedError> {
    // As unfused: over no records the first stage never runs (its
    // parameters are not even read).
    if input.is_empty() {
        return Ok(());
    }
    First::each(input, first, &mut Within::new(fold, &input)).map_err(|e| {
        // A record refused by the fold is the fold's error.
        match fold.take_error() {
            Some(e) => FusedError { stage: 1, error: e },
            None => FusedError { stage: 0, error: e },
        }
    })
}

/// Runs `First` over `input` into `fold` (a reduce's groups), then writes
/// the groups to `out`: the body of [`Stage::after`].
#[inline(always)]
pub fn run_fused<First: Stage, C: Combine + FoldIn>(
    input: Records<'_>,
    first: &RawParams<'_>,
    mut fold: C,
    out: &mut Batch,
) -> Result<(), FusedError> {
    feed_fused::<First, C>(input, first, &mut fold)?;
    fold.finish(out);
    Ok(())
}

/// [`Pieces`] of `First` then the reduce whose groups are `fold`: the first
/// stage's parameters (owned), and the fold.
struct FusedPieces<First, C> {
    first: Vec<(String, String)>,
    fold: C,
    _first: std::marker::PhantomData<fn() -> First>,
}

impl<First: Stage, C: Combine + FoldIn> Pieces for FusedPieces<First, C> {
    fn push(&mut self, input: Records<'_>) -> Result<(), FusedError> {
        feed_fused::<First, C>(input, &RawParams::new(&self.first), &mut self.fold)
    }

    fn finish(&mut self, out: &mut Batch) {
        self.fold.finish(out)
    }
}

/// The body of [`Stage::start_after`]: `First`, with its parameters, then
/// the reduce whose groups are `fold`.
pub fn start_fused<First: Stage, C: Combine + FoldIn + 'static>(
    first: &RawParams<'_>,
    fold: C,
) -> Box<dyn Pieces> {
    Box::new(FusedPieces::<First, C> {
        first: first.pairs().to_vec(),
        fold,
        _first: std::marker::PhantomData,
    })
}

/// `Second` after `First` if `First` feeds and `Second` folds: an entry of
/// the table `plugin!` makes.
pub const fn fused<First: Stage, Second: Stage>() -> Option<Fused> {
    if First::FEEDS && Second::FOLDS {
        Some(Fused {
            run: Second::after::<First>,
            start: Second::start_after::<First>,
        })
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
