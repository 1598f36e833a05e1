use dstream_sdk as dstream;

// The attribute goes on the function, not on its parameters.
#[dstream::filter]
struct Min {
    min: usize,
}

fn main() {}
