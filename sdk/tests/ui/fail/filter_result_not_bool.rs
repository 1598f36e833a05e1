use dstream_sdk as dstream;

// A fallible filter still answers yes or no.
#[dstream::filter]
fn small(line: &str) -> Result<u64, String> {
    line.parse().map_err(|_| "not a number".to_string())
}

fn main() {}
