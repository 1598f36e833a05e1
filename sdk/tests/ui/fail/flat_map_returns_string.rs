use dstream_sdk as dstream;

// The records of a flat_map must be visible in its return type.
#[dstream::flat_map]
fn chars(line: &str) -> String {
    line.chars().rev().collect()
}

fn main() {}
