use dstream_sdk as dstream;

// Both values of a reduce and its result have one type.
#[dstream::reduce]
fn add(a: u64, b: u32) -> u64 {
    a + b as u64
}

fn main() {}
