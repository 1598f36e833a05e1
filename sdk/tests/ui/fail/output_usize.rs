use dstream_sdk as dstream;

// usize differs between Wasm and the host: it is no record type.
#[dstream::map]
fn len(line: &str) -> usize {
    line.len()
}

fn main() {}
