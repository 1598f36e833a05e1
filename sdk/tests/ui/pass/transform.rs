// Transform signatures: every return form of flat_map, with params, fallible.
use dstream::{Batch, Kind};
use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Top {
    /// How many records to keep.
    #[param(default = 1)]
    n: usize,
}

/// The records sorted by value.
#[dstream::transform]
fn sorted(mut records: Vec<(String, u64)>) -> Vec<(String, u64)> {
    records.sort_by_key(|r| r.1);
    records
}

/// The first `n` values.
#[dstream::transform]
fn first<'a>(records: Vec<((), &'a str)>, p: &Top) -> impl Iterator<Item = &'a str> {
    records.into_iter().take(p.n).map(|(_, v)| v)
}

/// The number of records, unless empty.
#[dstream::transform]
fn count(records: Vec<(&[u8], &[u8])>) -> Result<Option<u64>, String> {
    if records.is_empty() {
        return Err("empty partition".into());
    }
    Ok(Some(records.len() as u64))
}

dstream::plugin!(sorted, first, count);

fn main() {
    let values = Batch::from_values(["x", "y"]);
    let out = PLUGIN.call(Kind::Transform, "first", &[], &values).unwrap();
    assert_eq!(out.decode::<(), &str>().unwrap(), vec![((), "x")]);
    let e = PLUGIN
        .call(Kind::Transform, "count", &[], &Batch::new())
        .unwrap_err();
    assert_eq!(e.to_string(), "empty partition");
}
