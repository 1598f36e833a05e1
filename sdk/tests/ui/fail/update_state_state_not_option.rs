use dstream_sdk as dstream;

// A new key has no state yet: the state comes as an Option.
#[dstream::update_state]
fn total(_key: &str, values: Vec<u64>, state: u64) -> Option<u64> {
    Some(state + values.iter().sum::<u64>())
}

fn main() {}
