//! Bench-only guest: the same map (ASCII upper-case of every value) over a
//! partition passed as flat buffers and as a list of per-record lists.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: "wit",
    world: "layout-probe",
});

use exports::dstream::layout_probe::probe::{Batch, Guest, Rec};

struct Probe;

impl Guest for Probe {
    fn map_flat(input: Batch) -> Batch {
        let mut data = Vec::with_capacity(input.data.len());
        let mut bounds = Vec::with_capacity(input.bounds.len());
        bounds.push(0);
        for r in 0..input.bounds.len() / 2 {
            let b = &input.bounds[2 * r..2 * r + 3];
            data.extend_from_slice(&input.data[b[0] as usize..b[1] as usize]);
            bounds.push(data.len() as u32);
            data.extend(
                input.data[b[1] as usize..b[2] as usize]
                    .iter()
                    .map(u8::to_ascii_uppercase),
            );
            bounds.push(data.len() as u32);
        }
        Batch { data, bounds }
    }

    fn map_nested(input: Vec<Rec>) -> Vec<Rec> {
        input
            .into_iter()
            .map(|r| Rec {
                key: r.key,
                value: r.value.iter().map(u8::to_ascii_uppercase).collect(),
            })
            .collect()
    }
}

export!(Probe);
