use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Limit<T> {
    /// The limit.
    max: T,
}

fn main() {}
