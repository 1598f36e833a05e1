use dstream_sdk as dstream;

// A map takes a value, or a key and a value: not three.
#[dstream::map]
fn join(key: &str, value: &str, extra: &str) -> String {
    format!("{key}{value}{extra}")
}

fn main() {}
