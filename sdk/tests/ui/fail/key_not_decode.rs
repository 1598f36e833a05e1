use dstream_sdk as dstream;

// A key must be a type the SDK can decode.
#[dstream::filter]
fn small(key: char, value: u64) -> bool {
    key.is_ascii() && value < 10
}

fn main() {}
