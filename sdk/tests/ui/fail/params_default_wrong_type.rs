use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Top {
    /// How many to keep.
    #[param(default = "three")]
    k: usize,
}

fn main() {}
