use dstream_sdk as dstream;
use std::collections::HashMap;

// A value must be a type the SDK can decode (or wrapped in Postcard).
#[dstream::map]
fn size(counts: HashMap<String, u64>) -> u64 {
    counts.len() as u64
}

fn main() {}
