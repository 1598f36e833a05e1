use dstream_sdk as dstream;

#[derive(dstream::Params)]
enum Mode {
    Fast,
    Slow,
}

fn main() {}
