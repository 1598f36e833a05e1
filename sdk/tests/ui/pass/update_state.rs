// Update-state signatures: plain, with params, fallible, postcard state.
use dstream::{Batch, Kind, Postcard};
use dstream_sdk as dstream;

#[derive(dstream::Params)]
struct Limit {
    /// Drop a key whose total reaches this.
    #[param(default = 100)]
    limit: u64,
}

/// Running total per key.
#[dstream::update_state]
fn total(_key: &str, values: Vec<u64>, state: Option<u64>) -> Option<u64> {
    Some(state.unwrap_or(0) + values.iter().sum::<u64>())
}

/// Running total, dropped at a limit.
#[dstream::update_state]
fn limited(
    _key: &[u8],
    values: Vec<u64>,
    state: Option<u64>,
    p: &Limit,
) -> Result<Option<u64>, String> {
    let t = state.unwrap_or(0) + values.iter().sum::<u64>();
    Ok((t < p.limit).then_some(t))
}

/// Words seen per key.
#[dstream::update_state]
fn seen<'a>(
    _key: String,
    values: Vec<&'a str>,
    state: Option<Postcard<Vec<String>>>,
) -> Option<Postcard<Vec<String>>> {
    let mut all = state.map(|s| s.0).unwrap_or_default();
    all.extend(values.into_iter().map(str::to_string));
    Some(Postcard(all))
}

dstream::plugin!(total, limited, seen);

fn main() {
    let mut input = Batch::new();
    input.push_encoded("a", &1u64);
    input.push_encoded("a", &2u64);
    let out = PLUGIN
        .call2(Kind::UpdateState, "total", &[], &input, &Batch::new())
        .unwrap();
    assert_eq!(out.decode::<&str, u64>().unwrap(), vec![("a", 3)]);
    let out = PLUGIN
        .call2(
            Kind::UpdateState,
            "limited",
            &[("limit", "3")],
            &input,
            &Batch::new(),
        )
        .unwrap();
    assert!(out.is_empty());
}
