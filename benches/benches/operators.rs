//! Criterion benches: grep and the wordcount map side over 1M records of 100
//! bytes, as a Wasm component through the host (grep also with its input
//! pages lent, on Linux), natively through the SDK, and as a hand-written
//! loop; one Wasm call per record against one per
//! partition; and the cost of a call on an empty batch (instantiation).
//!
//! `cargo bench -p dstream-benches --bench operators`. For the ratios in one
//! table, run the `ratios` binary instead.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use dstream_benches::{
    Grep, PARTITION, PER_RECORD_SAMPLE, RECORDS, WordCount, partitions, singletons,
};
use dstream_core::Batch;
use dstream_wasm::{Limits, Runtime};

/// A group for runs of tens of milliseconds to seconds: ten flat samples in
/// about `seconds`.
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    elements: usize,
    seconds: u64,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(elements as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(seconds));
    g
}

fn operators(c: &mut Criterion) {
    let runtime = Runtime::new(Limits::default()).expect("a runtime");
    let parts = partitions(RECORDS, PARTITION);
    let sample = partitions(PER_RECORD_SAMPLE, PER_RECORD_SAMPLE).remove(0);
    let sample_singletons = singletons(&sample);
    let grep = Grep::new(&runtime);
    let wordcount = WordCount::new(&runtime);
    // Never time wrong answers.
    grep.check(&parts, &sample);
    wordcount.check(&parts, &sample);

    let mut g = group(c, "grep", RECORDS, 4);
    g.bench_function("wasm", |b| {
        b.iter(|| parts.iter().for_each(|p| drop(black_box(grep.wasm(p)))))
    });
    #[cfg(target_os = "linux")]
    {
        let paged: Vec<dstream_wasm::PagedBatch> = parts
            .iter()
            .map(|p| dstream_wasm::PagedBatch::new(p).expect("pages for a partition"))
            .collect();
        g.bench_function("wasm-lent", |b| {
            b.iter(|| {
                paged
                    .iter()
                    .for_each(|p| drop(black_box(grep.wasm_lent(p))))
            })
        });
    }
    g.bench_function("native", |b| {
        b.iter(|| parts.iter().for_each(|p| drop(black_box(grep.native(p)))))
    });
    g.bench_function("hand-written", |b| {
        b.iter(|| parts.iter().for_each(|p| drop(black_box(grep.by_hand(p)))))
    });
    g.finish();

    let mut g = group(c, "wordcount-map-side", RECORDS, 25);
    g.bench_function("wasm", |b| {
        b.iter(|| {
            parts
                .iter()
                .for_each(|p| drop(black_box(wordcount.wasm(p))))
        })
    });
    g.bench_function("native", |b| {
        b.iter(|| {
            parts
                .iter()
                .for_each(|p| drop(black_box(wordcount.native(p))))
        })
    });
    g.bench_function("hand-written", |b| {
        b.iter(|| {
            parts
                .iter()
                .for_each(|p| drop(black_box(wordcount.by_hand(p))))
        })
    });
    g.finish();

    let mut g = group(c, "wasm-calls", PER_RECORD_SAMPLE, 20);
    g.bench_function("grep/per-record", |b| {
        b.iter(|| {
            sample_singletons
                .iter()
                .for_each(|r| drop(black_box(grep.wasm(r))))
        })
    });
    g.bench_function("grep/per-partition", |b| {
        b.iter(|| black_box(grep.wasm(&sample)))
    });
    g.bench_function("wordcount/per-record", |b| {
        b.iter(|| {
            sample_singletons
                .iter()
                .for_each(|r| drop(black_box(wordcount.wasm(r))))
        })
    });
    g.bench_function("wordcount/per-partition", |b| {
        b.iter(|| black_box(wordcount.wasm(&sample)))
    });
    g.finish();

    let empty = Batch::new();
    let mut g = c.benchmark_group("empty-call");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("grep", |b| b.iter(|| black_box(grep.wasm(&empty))));
    g.bench_function("wordcount", |b| {
        b.iter(|| black_box(wordcount.wasm(&empty)))
    });
    g.finish();
}

criterion::criterion_group!(benches, operators);
criterion::criterion_main!(benches);
