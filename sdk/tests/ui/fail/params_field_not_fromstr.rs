use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Grep {
    /// The words to look for.
    words: Vec<String>,
}

fn main() {}
