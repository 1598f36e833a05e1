//! Support for the code the attributes generate. Not a public API.

use std::fmt::Display;

use hashbrown::HashMap;
use hashbrown::hash_map::Entry;

pub use crate::batch::{Batch, Records};
pub use crate::codec::{Decode, Emit, Encode, Encoding};
pub use crate::operator::{Kind, OpError, Operator, Runner};
pub use crate::params::{ParamSpec, Params, RawParams};

/// A fixed hasher: grouping never depends on a random seed.
type FixedState = foldhash::fast::FixedState;

fn table<'a, T>(capacity: usize) -> HashMap<&'a [u8], T, FixedState> {
    HashMap::with_capacity_and_hasher(capacity, FixedState::with_seed(0x0064_7374_7265_616d))
}

/// Decodes `bytes` (the `what` of record `i`) as `T`.
#[inline]
pub fn decode<'a, T: Decode<'a>>(bytes: &'a [u8], i: usize, what: &str) -> Result<T, OpError> {
    T::decode(bytes).map_err(|e| OpError::at(i, format!("cannot decode the {what}: {e}")))
}

/// Turns a user error at record `i` into an [`OpError`].
#[inline]
pub fn at<T, E: Display>(r: Result<T, E>, i: usize) -> Result<T, OpError> {
    r.map_err(|e| OpError::at(i, e))
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
    let mut slots: Vec<(&'a [u8], Option<V>)> = Vec::new();
    let mut index = table::<usize>(input.len().min(1 << 16));
    for (i, (k, v)) in input.iter().enumerate() {
        let v: V = decode(v, i, "value")?;
        match index.entry(k) {
            Entry::Occupied(e) => {
                let slot = &mut slots[*e.get()].1;
                let acc = slot.take().expect("slot holds a value between steps");
                *slot = Some(at(f(acc, v), i)?);
            }
            Entry::Vacant(e) => {
                e.insert(slots.len());
                slots.push((k, Some(v)));
            }
        }
    }
    for (k, v) in slots {
        out.push_encoded(k, &v.expect("slot holds a value"));
    }
    Ok(())
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
    struct Slot<'a, V> {
        key: &'a [u8],
        state: Option<&'a [u8]>,
        values: Vec<V>,
        first: usize,
    }
    let mut slots: Vec<Slot<'a, V>> = Vec::with_capacity(state.len());
    let mut index = table::<usize>(state.len() + input.len().min(1 << 16));
    for (i, (k, s)) in state.iter().enumerate() {
        match index.entry(k) {
            Entry::Occupied(_) => {
                return Err(OpError::new(format!(
                    "state record {i} repeats a key: state holds one record per key"
                )));
            }
            Entry::Vacant(e) => {
                e.insert(slots.len());
                slots.push(Slot {
                    key: k,
                    state: Some(s),
                    values: Vec::new(),
                    first: i,
                });
            }
        }
    }
    for (i, (k, v)) in input.iter().enumerate() {
        let v: V = decode(v, i, "value")?;
        match index.entry(k) {
            Entry::Occupied(e) => slots[*e.get()].values.push(v),
            Entry::Vacant(e) => {
                e.insert(slots.len());
                slots.push(Slot {
                    key: k,
                    state: None,
                    values: vec![v],
                    first: i,
                });
            }
        }
    }
    for slot in slots {
        let key: K = decode(slot.key, slot.first, "key")?;
        let old = match slot.state {
            Some(s) => Some(decode::<S>(s, slot.first, "state")?),
            None => None,
        };
        if let Some(new) = at(f(key, slot.values, old), slot.first)? {
            out.push_encoded(slot.key, &new);
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
