use dstream_sdk as dstream;

// A filter answers yes or no.
#[dstream::filter]
fn non_empty(line: &str) -> Option<&str> {
    (!line.is_empty()).then_some(line)
}

fn main() {}
