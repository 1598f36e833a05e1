//! Flat buffers vs a list of per-record lists across the Wasm boundary.
//!
//! The same map (ASCII upper-case of every value) over 1M records of 100
//! bytes in partitions of 100k, one call per partition in a fresh instance
//! (as dstream runs operators), with the partition passed as one data buffer
//! plus offsets, and as `list<record { key: list<u8>, value: list<u8> }>`.
//! The outputs are checked to be equal first; the median of 7 rounds is shown.
//!
//! `cargo run --release -p layout-host --bin layout`
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../layout-probe/wit",
        world: "layout-probe",
    });
}

use bindings::LayoutProbePre;
use bindings::exports::dstream::layout_probe::probe::{Batch, Rec};

const RECORDS: usize = 1_000_000;
const PARTITION: usize = 100_000;
const KEY: usize = 8;
const VALUE: usize = 92;
const ROUNDS: usize = 7;

fn data(seed: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut x = seed;
    let mut byte = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b'a' + (x % 26) as u8
    };
    (0..RECORDS)
        .map(|_| {
            (
                (0..KEY).map(|_| byte()).collect(),
                (0..VALUE).map(|_| byte()).collect(),
            )
        })
        .collect()
}

fn flat(records: &[(Vec<u8>, Vec<u8>)]) -> Batch {
    let mut b = Batch {
        data: Vec::new(),
        bounds: vec![0],
    };
    for (k, v) in records {
        b.data.extend_from_slice(k);
        b.bounds.push(b.data.len() as u32);
        b.data.extend_from_slice(v);
        b.bounds.push(b.data.len() as u32);
    }
    b
}

fn median(mut t: Vec<Duration>) -> Duration {
    t.sort_unstable();
    t[t.len() / 2]
}

fn main() -> wasmtime::Result<()> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, dstream_artifacts::LAYOUT_PROBE)?;
    let linker = Linker::<()>::new(&engine);
    let pre = LayoutProbePre::new(linker.instantiate_pre(&component)?)?;

    let records = data(42);
    let flats: Vec<Batch> = records.chunks(PARTITION).map(flat).collect();
    let nesteds: Vec<Vec<Rec>> = records
        .chunks(PARTITION)
        .map(|c| {
            c.iter()
                .map(|(k, v)| Rec {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect()
        })
        .collect();

    let call_flat = |b: &Batch| -> wasmtime::Result<Batch> {
        let mut store = Store::new(&engine, ());
        let p = pre.instantiate(&mut store)?;
        p.dstream_layout_probe_probe().call_map_flat(&mut store, b)
    };
    let call_nested = |r: &[Rec]| -> wasmtime::Result<Vec<Rec>> {
        let mut store = Store::new(&engine, ());
        let p = pre.instantiate(&mut store)?;
        p.dstream_layout_probe_probe()
            .call_map_nested(&mut store, r)
    };

    // Same output both ways, and right.
    for (f, n) in flats.iter().zip(&nesteds) {
        let a = call_flat(f)?;
        let b = call_nested(n)?;
        let b_flat = flat(&b.into_iter().map(|r| (r.key, r.value)).collect::<Vec<_>>());
        assert!(
            a.data == b_flat.data && a.bounds == b_flat.bounds,
            "outputs differ"
        );
        assert_eq!(a.data.len(), f.data.len());
        assert!(
            a.data
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_lowercase())
        );
    }

    let (mut tf, mut tn) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let s = Instant::now();
        for f in &flats {
            std::hint::black_box(call_flat(f)?);
        }
        tf.push(s.elapsed());
        let s = Instant::now();
        for n in &nesteds {
            std::hint::black_box(call_nested(n)?);
        }
        tn.push(s.elapsed());
    }
    let (f, n) = (median(tf), median(tn));
    let rate = |d: Duration| RECORDS as f64 / d.as_secs_f64() / 1e6;
    println!(
        "map over {RECORDS} records of {} bytes, {PARTITION} per call, median of {ROUNDS}:",
        KEY + VALUE
    );
    println!(
        "  flat buffers (data + offsets)  {:>8.2} M records/s  ({f:?})",
        rate(f)
    );
    println!(
        "  list<record{{key, value}}>      {:>8.2} M records/s  ({n:?})",
        rate(n)
    );
    println!(
        "  flat / nested                  {:>8.2}x",
        n.as_secs_f64() / f.as_secs_f64()
    );
    Ok(())
}
