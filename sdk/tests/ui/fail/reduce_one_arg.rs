use dstream_sdk as dstream;

// A reduce combines two values.
#[dstream::reduce]
fn double(a: u64) -> u64 {
    a * 2
}

fn main() {}
