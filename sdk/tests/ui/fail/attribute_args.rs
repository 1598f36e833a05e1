use dstream_sdk as dstream;

// The operator is named after the function: the attribute takes nothing.
#[dstream::map(name = "shout")]
fn shout(line: &str) -> String {
    line.to_uppercase()
}

fn main() {}
