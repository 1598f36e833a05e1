use dstream_sdk as dstream;

// A reduce folds values into one of the same type.
#[dstream::reduce]
fn add(a: u32, b: u32) -> Result<u64, String> {
    Ok(a as u64 + b as u64)
}

fn main() {}
