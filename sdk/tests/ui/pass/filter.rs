// Filter signatures: bool or Result<bool, E>, value or key and value, params;
// and over a whole partition, returning the indices it keeps.
use dstream::{Batch, Kind, Records};
use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Min {
    /// The smallest length kept.
    min: usize,
}

/// Non-empty lines.
#[dstream::filter]
fn non_empty(line: &[u8]) -> bool {
    !line.is_empty()
}

/// Long enough lines.
#[dstream::filter]
fn long(line: &str, p: &Min) -> bool {
    line.len() >= p.min
}

/// Keys that match their value, fallibly.
#[dstream::filter]
fn same(key: &str, value: &str) -> Result<bool, String> {
    if value.is_empty() {
        return Err("empty value".into());
    }
    Ok(key == value)
}

/// All arguments, fallible.
#[dstream::filter]
fn big(_key: (), value: u64, p: &Min) -> Result<bool, &'static str> {
    Ok(value >= p.min as u64)
}

/// Every other record, from the first.
#[dstream::filter]
fn even(records: Records<'_>) -> Vec<u32> {
    (0..records.len() as u32).step_by(2).collect()
}

/// Values at least `min` long, as an iterator over the partition.
#[dstream::filter]
fn long_values<'a>(records: Records<'a>, p: &'a Min) -> impl Iterator<Item = u32> + 'a {
    records
        .iter()
        .enumerate()
        .filter(move |(_, (_, v))| v.len() >= p.min)
        .map(|(i, _)| i as u32)
}

/// Keeps what it is told to, which may be out of order or out of range.
#[dstream::filter]
fn told(_records: Records<'_>, p: &Told) -> Result<Vec<u32>, String> {
    p.keep
        .split(',')
        .map(|i| i.parse().map_err(|e| format!("{i:?}: {e}")))
        .collect()
}

#[derive(dstream::Params)]
struct Told {
    /// Indices, comma-separated.
    keep: String,
}

dstream::plugin!(non_empty, long, same, big, even, long_values, told);

fn main() {
    let lines = Batch::from_values(["", "abc", "a"]);
    assert_eq!(
        PLUGIN
            .call(Kind::Filter, "non_empty", &[], &lines)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        PLUGIN
            .call(Kind::Filter, "long", &[("min", "2")], &lines)
            .unwrap()
            .len(),
        1
    );
    let e = PLUGIN.call(Kind::Filter, "long", &[], &lines).unwrap_err();
    assert_eq!(e.to_string(), "missing required parameter `min`");
    let values = |b: Batch| -> Vec<Vec<u8>> { b.records().iter().map(|(_, v)| v.to_vec()).collect() };
    let kept = PLUGIN.call(Kind::Filter, "even", &[], &lines).unwrap();
    assert_eq!(values(kept), [&b""[..], b"a"]);
    let kept = PLUGIN.call(Kind::Filter, "long_values", &[("min", "1")], &lines).unwrap();
    assert_eq!(values(kept), [&b"abc"[..], b"a"]);
    let kept = PLUGIN.call(Kind::Filter, "told", &[("keep", "0,2")], &lines).unwrap();
    assert_eq!(values(kept), [&b""[..], b"a"]);
    let e = PLUGIN.call(Kind::Filter, "told", &[("keep", "2,1")], &lines).unwrap_err();
    assert_eq!(e.to_string(), "the filter kept record 1 after record 2: indices must ascend");
    let e = PLUGIN.call(Kind::Filter, "told", &[("keep", "0,3")], &lines).unwrap_err();
    assert_eq!(e.to_string(), "the filter kept record 3, but the partition has 3 records");
    let e = PLUGIN.call(Kind::Filter, "told", &[("keep", "x")], &lines).unwrap_err();
    assert!(e.to_string().contains("\"x\""), "{e}");
}
