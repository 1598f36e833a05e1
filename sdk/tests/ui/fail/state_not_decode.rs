use dstream_sdk as dstream;

// The state of update_state is stored as bytes too.
#[dstream::update_state]
fn last(_key: &str, values: Vec<u64>, state: Option<Vec<u64>>) -> Option<Vec<u64>> {
    let mut s = state.unwrap_or_default();
    s.extend(values);
    Some(s)
}

fn main() {}
