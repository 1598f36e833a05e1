use dstream_sdk as dstream;

// The new state is an Option: None drops the key.
#[dstream::update_state]
fn total(_key: &str, values: Vec<u64>, state: Option<u64>) -> u64 {
    state.unwrap_or(0) + values.iter().sum::<u64>()
}

fn main() {}
