use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Pattern(String);

fn main() {}
