use dstream_sdk as dstream;

// A reduce whose values are taken by reference: the last `&u64` reads as
// parameters.
#[dstream::reduce]
fn add(a: &u64, b: &u64) -> u64 {
    a + b
}

fn main() {}
