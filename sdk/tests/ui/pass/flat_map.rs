// Flat-map signatures: Vec, Option, impl Iterator, impl IntoIterator, in a
// Result or not, with key and params.
use dstream::{Batch, Kind};
use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Sep {
    /// The separator.
    #[param(default = ' ')]
    sep: char,
}

/// Words of a line.
#[dstream::flat_map]
fn words(line: &str) -> impl Iterator<Item = (&str, u64)> {
    line.split_whitespace().map(|w| (w, 1))
}

/// Fields, split at a parameter.
#[dstream::flat_map]
fn fields<'a>(line: &'a str, p: &Sep) -> Vec<&'a str> {
    line.split(p.sep).collect()
}

/// The number in a value, if any.
#[dstream::flat_map]
fn number(key: &str, value: &str) -> Option<(String, i64)> {
    value.parse().ok().map(|n| (key.to_string(), n))
}

/// Fallible, into-iterator.
#[dstream::flat_map]
fn repeat(
    key: Vec<u8>,
    n: u32,
    _p: &Sep,
) -> Result<impl IntoIterator<Item = (Vec<u8>, u32)>, String> {
    if n > 10 {
        return Err(format!("{n} is too many"));
    }
    Ok((0..n).map(move |i| (key.clone(), i)))
}

dstream::plugin!(words, fields, number, repeat);

fn main() {
    let out = PLUGIN
        .call(
            Kind::FlatMap,
            "words",
            &[],
            &Batch::from_values(["a b", "c"]),
        )
        .unwrap();
    assert_eq!(out.len(), 3);
    let out = PLUGIN
        .call(
            Kind::FlatMap,
            "fields",
            &[("sep", ",")],
            &Batch::from_values(["a,b"]),
        )
        .unwrap();
    assert_eq!(
        out.decode::<(), &str>().unwrap(),
        vec![((), "a"), ((), "b")]
    );
}
