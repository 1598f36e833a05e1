// Map signatures: value only, key and value, params, Result, pair output,
// borrowed and owned types, named lifetimes, Postcard.
use dstream::{Batch, Kind, Postcard};
use dstream_sdk as dstream;

/// Parameters.
#[derive(dstream::Params)]
pub struct Suffix {
    /// Appended to every value.
    #[param(default = "!")]
    pub suffix: String,
}

/// Value in, value out.
#[dstream::map]
fn len(line: &str) -> u64 {
    line.len() as u64
}

/// Key and value in, pair out.
#[dstream::map]
fn swap<'a>(key: &'a [u8], value: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    (value, key)
}

/// With params.
#[dstream::map]
fn shout(line: String, p: &Suffix) -> String {
    line.to_uppercase() + &p.suffix
}

/// Key, value and params, fallible.
#[dstream::map]
pub fn parse(key: &str, value: &str, p: &Suffix) -> Result<(String, u64), String> {
    let n = value.parse::<u64>().map_err(|e| e.to_string())?;
    Ok((format!("{key}{}", p.suffix), n))
}

/// Fallible with any Display error, postcard output, unused argument.
#[dstream::map]
fn wrap(_: bool) -> Result<Postcard<(u8, String)>, std::fmt::Error> {
    Ok(Postcard((1, "one".into())))
}

dstream::plugin!(len, swap, shout, parse, wrap);

fn main() {
    let lines = Batch::from_values(["ab", "c"]);
    let out = PLUGIN.call(Kind::Map, "len", &[], &lines).unwrap();
    assert_eq!(out.decode::<(), u64>().unwrap(), vec![((), 2), ((), 1)]);
    let out = PLUGIN
        .call(Kind::Map, "shout", &[("suffix", "?")], &lines)
        .unwrap();
    assert_eq!(
        out.decode::<(), &str>().unwrap(),
        vec![((), "AB?"), ((), "C?")]
    );
    let pairs = Batch::from_pairs([("a", "1"), ("b", "x")]);
    let err = PLUGIN.call(Kind::Map, "parse", &[], &pairs).unwrap_err();
    assert_eq!(err.to_string(), "record 1: invalid digit found in string");
    assert_eq!(swap(b"k", b"v"), (&b"v"[..], &b"k"[..]));
}
