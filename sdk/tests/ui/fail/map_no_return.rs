use dstream_sdk as dstream;

// Forgot the return type.
#[dstream::map]
fn shout(line: &str) {
    let _ = line.to_uppercase();
}

fn main() {}
