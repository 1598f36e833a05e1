use dstream_sdk as dstream;
use std::collections::HashMap;

// A returned value must be a type the SDK can encode (or wrapped in Postcard).
#[dstream::map]
fn counts(line: &str) -> HashMap<u8, u8> {
    let _ = line;
    HashMap::new()
}

fn main() {}
