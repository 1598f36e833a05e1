// Filter signatures: bool or Result<bool, E>, value or key and value, params.
use dstream::{Batch, Kind};
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

dstream::plugin!(non_empty, long, same, big);

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
}
