use dstream_sdk as dstream;

// Arguments are plain names.
#[dstream::map]
fn first(dstream::Postcard((a, _)): dstream::Postcard<(u32, u32)>) -> u32 {
    a
}

fn main() {}
