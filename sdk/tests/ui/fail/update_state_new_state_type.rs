use dstream_sdk as dstream;

// The new state is stored where the old one was: one type.
#[dstream::update_state]
fn total(_key: &str, values: Vec<u64>, state: Option<u64>) -> Option<u32> {
    Some((state.unwrap_or(0) + values.iter().sum::<u64>()) as u32)
}

fn main() {}
