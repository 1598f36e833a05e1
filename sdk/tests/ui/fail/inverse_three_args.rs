use dstream_sdk as dstream;

// An inverse takes the current value and the leaving one, nothing else.
#[dstream::inverse]
fn unsum(current: u64, leaving: u64, entering: u64) -> u64 {
    current - leaving + entering
}

fn main() {}
