use dstream_sdk as dstream;

// Forgot #[derive(dstream::Params)].
struct Min {
    min: usize,
}

#[dstream::filter]
fn long(line: &str, p: &Min) -> bool {
    line.len() >= p.min
}

fn main() {}
