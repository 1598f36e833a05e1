use dstream_sdk as dstream;

// A transform takes (key, value) pairs, even when it only uses the values.
#[dstream::transform]
fn sorted(mut values: Vec<u64>) -> Vec<u64> {
    values.sort();
    values
}

fn main() {}
