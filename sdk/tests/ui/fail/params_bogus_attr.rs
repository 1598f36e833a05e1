use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Top {
    /// How many to keep.
    #[param(bogus = 1)]
    k: usize,
}

fn main() {}
