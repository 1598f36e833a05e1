use dstream_sdk as dstream;

// A map needs at least the value.
#[dstream::map]
fn constant() -> u64 {
    1
}

fn main() {}
