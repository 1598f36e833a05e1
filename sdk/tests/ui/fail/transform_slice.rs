use dstream_sdk as dstream;

// A transform owns its partition: a Vec, not a slice.
#[dstream::transform]
fn count(records: &[(String, u64)]) -> Option<u64> {
    Some(records.len() as u64)
}

fn main() {}
