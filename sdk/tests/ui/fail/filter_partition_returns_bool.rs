use dstream_sdk as dstream;
use dstream::Records;

// A filter over a partition returns the indices it keeps, not a yes or no.
#[dstream::filter]
fn all(records: Records<'_>) -> bool {
    !records.is_empty()
}

fn main() {}
