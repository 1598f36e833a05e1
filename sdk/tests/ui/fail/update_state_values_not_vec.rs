use dstream_sdk as dstream;

// The new values of a key come as a Vec, not one by one.
#[dstream::update_state]
fn total(_key: &str, value: u64, state: Option<u64>) -> Option<u64> {
    Some(state.unwrap_or(0) + value)
}

fn main() {}
