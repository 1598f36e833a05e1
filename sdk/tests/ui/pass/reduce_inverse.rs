// Reduce and inverse signatures: plain, with params, fallible.
use dstream::{Batch, Kind, Postcard};
use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Cap {
    /// The largest sum allowed.
    max: Option<u64>,
}

/// Adds two counts.
#[dstream::reduce]
fn sum(a: u64, b: u64) -> u64 {
    a + b
}

/// Adds two counts, up to a cap.
#[dstream::reduce]
fn capped(a: u64, b: u64, p: &Cap) -> Result<u64, String> {
    let s = a + b;
    match p.max {
        Some(max) if s > max => Err(format!("{s} is over {max}")),
        _ => Ok(s),
    }
}

/// The longer string.
#[dstream::reduce]
fn longest(a: String, b: String) -> String {
    if b.len() > a.len() { b } else { a }
}

/// Sums of pairs, as postcard.
#[dstream::reduce]
fn pairs(a: Postcard<(u32, u32)>, b: Postcard<(u32, u32)>) -> Postcard<(u32, u32)> {
    Postcard((a.0.0 + b.0.0, a.0.1 + b.0.1))
}

/// Undoes `sum`.
#[dstream::inverse]
fn unsum(current: u64, leaving: u64) -> u64 {
    current - leaving
}

/// Undoes `sum`, checked.
#[dstream::inverse]
fn unsum_checked(current: i64, leaving: i64, _p: &Cap) -> Result<i64, String> {
    current
        .checked_sub(leaving)
        .ok_or_else(|| "overflow".to_string())
}

dstream::plugin!(sum, capped, longest, pairs, unsum, unsum_checked);

fn main() {
    let mut b = Batch::new();
    b.push_encoded("a", &1u64);
    b.push_encoded("a", &2u64);
    let out = PLUGIN.call(Kind::Reduce, "sum", &[], &b).unwrap();
    assert_eq!(out.decode::<&str, u64>().unwrap(), vec![("a", 3)]);
    let e = PLUGIN
        .call(Kind::Reduce, "capped", &[("max", "2")], &b)
        .unwrap_err();
    assert_eq!(e.to_string(), "record 1: 3 is over 2");
}
