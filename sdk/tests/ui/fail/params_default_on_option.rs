use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Top {
    /// How many to keep.
    #[param(default = 3)]
    k: Option<usize>,
}

fn main() {}
