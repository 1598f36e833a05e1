use dstream_sdk as dstream;

// update_state also takes the key, first.
#[dstream::update_state]
fn total(values: Vec<u64>, state: Option<u64>) -> Option<u64> {
    Some(state.unwrap_or(0) + values.iter().sum::<u64>())
}

fn main() {}
