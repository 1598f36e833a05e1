//! The embedded engine's throughput: the highest generator rate at which a
//! job's batches finish within the interval 30 times in a row, at a 100 ms
//! and a 1 s interval, for a running WordCount and a Grep with the guest
//! examples' Wasm operators; and the ratio of the engine (on 2 threads) to a
//! hand-written single-thread loop of the same job over the same records.
//!
//! ```text
//! cargo run --release -p dstream-benches --bin engine [-- --quick]
//! cargo run --release -p dstream-benches --features timely --bin engine
//! ```
//!
//! With `--features timely` the same jobs also run on timely dataflow (the
//! peer: see `peer.rs`), on as many workers as the engine has threads, and
//! the table gives the engine's rate over timely's. The two searches take
//! turns, one trial each, so that both see the same stretch of a noisy
//! machine.
//!
//! `DSTREAM_BENCH_ONLY=grep` (or `wordcount`) runs one job,
//! `DSTREAM_BENCH_INTERVALS=100,1000` chooses the intervals (ms),
//! `DSTREAM_BENCH_STAGES=1` prints each trial's stage times,
//! `DSTREAM_BENCH_TIMES=1` the time of each of its batches,
//! `DSTREAM_BENCH_THREADS=N` runs the engine on `N` threads (default 2),
//! `DSTREAM_BENCH_PARTITIONS=P` cuts each batch into `P` partitions
//! (default: one per thread), and `DSTREAM_BENCH_RAW=1` only times the
//! Wasm split+sum over the WordCount job's records on 1 and 2 threads,
//! without the engine.
//!
//! Batches run back to back (the clock is not waited for), so a batch that
//! finishes within its interval is one the real-time driver would keep up
//! with. Generation of the records is part of each batch, in the engine
//! (as a source task) and in the hand-written loop alike.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "timely")]
mod peer;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use dstream_benches::rate::{Judge, Search};
use dstream_core::Batch;
use dstream_core::generate::Pool;
use dstream_core::job::{GenFormat, Generator, JobFile};
use dstream_runtime::local::Engine;
use dstream_runtime::plugins;
use dstream_wasm::{Limits, Plugin, Runtime};
use memchr::memmem::Finder;
use rustc_hash::FxHashMap;

/// As the `dstream` binary: mimalloc, keeping what one batch frees for the
/// next (see `dstream_runtime::alloc`).
#[global_allocator]
static ALLOC: dstream_runtime::alloc::Allocator = dstream_runtime::alloc::Allocator;

/// The positive number in environment variable `name`, if set.
fn env_count(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|t| *t > 0)
}

/// Engine threads (and partitions per batch): 2, or `DSTREAM_BENCH_THREADS`.
fn threads() -> usize {
    env_count("DSTREAM_BENCH_THREADS").unwrap_or(2)
}
const PATTERN: &str = "kaka";

/// Partitions per batch: one per thread unless `DSTREAM_BENCH_PARTITIONS`
/// says otherwise. (A big partition is cut into
/// pieces of at most `Limits::call_input()` bytes per Wasm call by the engine,
/// so it stays under the sandbox's memory limit.)
fn partitions(_interval_ms: u64) -> usize {
    env_count("DSTREAM_BENCH_PARTITIONS").unwrap_or_else(threads)
}

fn wordcount_job(interval_ms: u64, rate: u64) -> String {
    format!(
        r#"name = "bench-wordcount"
interval = "{interval_ms}ms"
checkpoint_interval = "{}ms"
partitions = {}
[plugins]
wc = "{}"
[sources.lines]
kind = "generator"
format = "words"
rate = {rate}
record_bytes = 100
[streams.words]
from = "lines"
flat_map = "wc/split"
[streams.counts]
from = "words"
running_reduce = "{reducer}"
"#,
        interval_ms * 10,
        partitions(interval_ms),
        dstream_artifacts::WORDCOUNT,
        reducer = std::env::var("DSTREAM_BENCH_REDUCER").unwrap_or_else(|_| "wc/sum".into()),
    )
}

fn grep_job(interval_ms: u64, rate: u64) -> String {
    format!(
        r#"name = "bench-grep"
interval = "{interval_ms}ms"
partitions = {}
[plugins]
grep = "{}"
[sources.lines]
kind = "generator"
format = "words"
rate = {rate}
record_bytes = 100
[streams.hits]
from = "lines"
filter = "grep/grep"
params = {{ pattern = "{PATTERN}" }}
"#,
        partitions(interval_ms),
        dstream_artifacts::GREP
    )
}

struct Bench {
    runtime: Runtime,
}

impl Bench {
    fn engine(&self, text: &str) -> Engine {
        let file = JobFile::parse(text).expect("bench job parses");
        let loaded: BTreeMap<String, Plugin> = file
            .plugins()
            .map(|(n, l)| {
                let p = plugins::load(&self.runtime, n, l, Path::new("."), file.plugin_wasi(n))
                    .expect("plugin loads");
                (n.to_string(), p)
            })
            .collect();
        let job = file
            .resolve(&plugins::infos(&loaded))
            .expect("bench job resolves");
        Engine::new(job, loaded, threads()).expect("engine starts")
    }

    /// Whether the engine sustains `rate` (see [`Judge`]), and its median
    /// batch time.
    fn sustained(
        &self,
        job: &dyn Fn(u64, u64) -> String,
        interval_ms: u64,
        rate: u64,
    ) -> (bool, Duration) {
        let engine = self.engine(&job(interval_ms, rate));
        let mut judge = Judge::new(Duration::from_millis(interval_ms));
        let mut last = None;
        let mut times = Vec::new();
        for n in 1.. {
            let t = Instant::now();
            last = Some(engine.run_batch(n, BTreeMap::new()).expect("batch runs"));
            engine.finish_batch(n);
            times.push(t.elapsed());
            if !judge.go_on(t.elapsed()) {
                break;
            }
        }
        if std::env::var_os("DSTREAM_BENCH_TIMES").is_some() {
            let ms: Vec<String> = times
                .iter()
                .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
                .collect();
            eprintln!("    batch ms: {}", ms.join(" "));
        }
        if std::env::var_os("DSTREAM_BENCH_STAGES").is_some() {
            let stages: Vec<String> = last
                .expect("a batch ran")
                .stage_times
                .iter()
                .map(|(k, d)| format!("{k} {:.1} ms", d.as_secs_f64() * 1e3))
                .collect();
            eprintln!("    stages: {}", stages.join(", "));
        }
        judge.verdict()
    }
}

/// Whether something sustains a rate at an interval (ms, rec/s), and its
/// median batch time.
type Trial<'a> = &'a dyn Fn(u64, u64) -> (bool, Duration);

/// A peer's name and trial.
type Peer = (&'static str, Box<dyn Fn(u64, u64) -> (bool, Duration)>);

/// The peers run beside the engine for job `i` of the table: timely with
/// `--features timely`, otherwise none.
fn peers(i: usize) -> Vec<Peer> {
    #[cfg(feature = "timely")]
    {
        peer::check(peer::JOBS[i]);
        vec![(
            "timely dataflow",
            Box::new(move |interval_ms, rate| peer::sustained(peer::JOBS[i], interval_ms, rate)),
        )]
    }
    #[cfg(not(feature = "timely"))]
    {
        let _ = i;
        Vec::new()
    }
}

/// Runs searches from `start` for each of `contenders` (a name and its
/// trial: whether it sustains a rate at `interval_ms`, and its median batch
/// time), taking turns one trial at a time; the highest sustained rate of
/// each, with its median batch time.
fn max_rates(
    contenders: &[(&str, Trial<'_>)],
    interval_ms: u64,
    start: u64,
) -> Vec<(u64, Duration)> {
    let mut searches: Vec<Search> = contenders.iter().map(|_| Search::new(start)).collect();
    loop {
        let mut tried = false;
        for ((name, sustained), search) in contenders.iter().zip(&mut searches) {
            let Some(rate) = search.next() else {
                continue;
            };
            tried = true;
            let (ok, median) = sustained(interval_ms, rate);
            eprintln!(
                "  {name:<24} {interval_ms:>6} ms interval, {rate:>10} rec/s: {} (median batch {:.1} ms)",
                if ok { "sustained" } else { "behind" },
                ms(median)
            );
            search.record(rate, ok, median);
        }
        if !tried {
            return searches.into_iter().map(|s| s.lo).collect();
        }
    }
}

fn generator(rate: u64) -> Pool {
    Pool::new(&Generator {
        rate,
        seed: 1,
        format: GenFormat::Words,
        record_bytes: 100,
    })
}

/// The running WordCount by hand, one thread: generate, split, count per
/// batch with FxHash, merge into the running totals.
fn wordcount_by_hand(batches: u64, rate: u64, interval: Duration, parts: u32) -> (f64, usize) {
    let pool = generator(rate);
    let mut totals: FxHashMap<Vec<u8>, u64> = FxHashMap::default();
    let t = Instant::now();
    let mut records = 0;
    for b in 1..=batches {
        let mut batch: FxHashMap<&[u8], u64> = FxHashMap::default();
        let data: Vec<Batch> = (0..parts)
            .map(|p| pool.partition(b, p, parts, interval))
            .collect();
        for part in &data {
            records += part.len();
            for (_, line) in part.iter() {
                for w in line.split(|c| *c == b' ').filter(|w| !w.is_empty()) {
                    *batch.entry(w).or_default() += 1;
                }
            }
        }
        for (w, c) in batch {
            match totals.get_mut(w) {
                Some(t) => *t += c,
                None => {
                    totals.insert(w.to_vec(), c);
                }
            }
        }
    }
    (records as f64 / t.elapsed().as_secs_f64(), totals.len())
}

/// Grep by hand, one thread: generate, keep the lines with the pattern.
fn grep_by_hand(batches: u64, rate: u64, interval: Duration, parts: u32) -> (f64, usize) {
    let pool = generator(rate);
    let finder = Finder::new(PATTERN);
    let t = Instant::now();
    let mut records = 0;
    let mut hits = 0;
    for b in 1..=batches {
        for p in 0..parts {
            let part = pool.partition(b, p, parts, interval);
            records += part.len();
            hits += dstream_benches::grep_by_hand(&finder, &part).len();
        }
    }
    (records as f64 / t.elapsed().as_secs_f64(), hits)
}

/// `DSTREAM_BENCH_RAW=1`: the Wasm split+sum alone over generated
/// partitions of the WordCount job, on 1 then 2 threads (no engine).
fn raw(runtime: &Runtime) {
    let plugin = plugins::load(
        runtime,
        "wc",
        dstream_artifacts::WORDCOUNT,
        Path::new("."),
        Default::default(),
    )
    .expect("plugin loads");
    let stages = [
        dstream_wasm::Stage {
            op: "split".into(),
            params: vec![],
        },
        dstream_wasm::Stage {
            op: "sum".into(),
            params: vec![],
        },
    ];
    let pool = generator(2_000_000);
    let parts: Vec<Batch> = (0..8)
        .map(|p| pool.partition(1, p, 8, Duration::from_secs(1)))
        .collect();
    let run = |ps: &[Batch]| {
        for p in ps {
            std::hint::black_box(plugin.pipeline(&stages, p).expect("runs"));
        }
    };
    for _ in 0..5 {
        let t = Instant::now();
        run(&parts);
        let one = t.elapsed();
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| run(&parts[..4]));
            run(&parts[4..]);
        });
        let two = t.elapsed();
        eprintln!(
            "raw split+sum over 2M records: 1 thread {:.0} ms ({:.2}M rec/s), 2 threads {:.0} ms ({:.2}M rec/s)",
            one.as_secs_f64() * 1e3,
            2.0 / one.as_secs_f64(),
            two.as_secs_f64() * 1e3,
            2.0 / two.as_secs_f64()
        );
    }
}

/// The embedded engine's throughput: the highest generator rate it sustains
/// (30 batches in a row within the interval) for a running WordCount and a
/// Grep, against a hand-written loop (and timely dataflow, built with
/// `--features timely`).
#[derive(clap::Parser)]
#[command(after_help = "Environment: DSTREAM_BENCH_ONLY=grep|wordcount, \
DSTREAM_BENCH_INTERVALS=100,1000 (ms), DSTREAM_BENCH_STAGES=1 (stage times), DSTREAM_BENCH_TIMES=1 (every batch time), \
DSTREAM_BENCH_THREADS=N (default 2), DSTREAM_BENCH_PARTITIONS=P (default: one per thread), \
DSTREAM_BENCH_RAW=1 (the Wasm split+sum alone, no engine). See benches/src/bin/engine/main.rs.")]
struct Args {
    /// A short run: the hand-written loop over 3 batches instead of 10,
    /// and only the 100 ms interval (unless DSTREAM_BENCH_INTERVALS is set).
    #[arg(long)]
    quick: bool,
}

fn main() {
    dstream_runtime::alloc::retain_freed_memory();
    let Args { quick } = clap::Parser::parse();
    if std::env::var_os("DSTREAM_BENCH_RAW").is_some() {
        raw(&Runtime::new(Limits::default()).expect("runtime"));
        return;
    }
    let bench = Bench {
        runtime: Runtime::new(Limits::default()).expect("runtime"),
    };
    let hand_batches = if quick { 3 } else { 10 };
    let mut rows = Vec::new();
    type JobFn = fn(u64, u64) -> String;
    type HandFn = fn(u64, u64, Duration, u32) -> (f64, usize);
    let jobs: [(&str, JobFn, HandFn); 2] = [
        ("wordcount (running)", wordcount_job, wordcount_by_hand),
        ("grep", grep_job, grep_by_hand),
    ];
    let only = std::env::var("DSTREAM_BENCH_ONLY").ok();
    let intervals: Vec<u64> = match std::env::var("DSTREAM_BENCH_INTERVALS") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) if quick => vec![100],
        Err(_) => vec![100, 1000],
    };
    for (i, (name, job, hand)) in jobs.into_iter().enumerate() {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        eprintln!("{name}:");
        let (hand_rate, _) = hand(hand_batches, 1_000_000, Duration::from_secs(1), 2);
        eprintln!("  hand-written loop, 1 thread: {hand_rate:.0} rec/s");
        let start = (hand_rate as u64 / 4).max(10_000);
        // Once per job (a peer checks its output when made).
        let peers = peers(i);
        let engine = |interval_ms, rate| bench.sustained(&job, interval_ms, rate);
        for &interval_ms in &intervals {
            let contenders: Vec<(&str, Trial<'_>)> =
                std::iter::once(("dstream engine", &engine as Trial<'_>))
                    .chain(
                        peers
                            .iter()
                            .map(|(name, trial)| (*name, trial.as_ref() as Trial<'_>)),
                    )
                    .collect();
            let found = max_rates(&contenders, interval_ms, start);
            let (rate, median) = found[0];
            let mut row = vec![
                name.to_string(),
                format!("{interval_ms} ms"),
                format!("{:.2}M", hand_rate / 1e6),
                format!("{:.2}M ({:.0} ms)", rate as f64 / 1e6, ms(median)),
                format!("{:.2}", rate as f64 / hand_rate),
            ];
            for &(peer_rate, median) in &found[1..] {
                row.push(format!(
                    "{:.2}M ({:.0} ms)",
                    peer_rate as f64 / 1e6,
                    ms(median)
                ));
                row.push(format!("{:.2}", rate as f64 / peer_rate as f64));
            }
            rows.push(row);
        }
    }
    println!();
    let peer_columns = if cfg!(feature = "timely") {
        format!(
            " timely, {} (rec/s, median batch) | engine/timely |",
            count(threads(), "worker")
        )
    } else {
        String::new()
    };
    println!(
        "| job | interval | hand loop, 1 thread (rec/s) | engine, {} (rec/s, median batch) | engine/hand |{peer_columns}",
        count(threads(), "thread")
    );
    println!(
        "|---|---|---|---|---|{}",
        if cfg!(feature = "timely") {
            "---|---|"
        } else {
            ""
        }
    );
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}

/// `n` `thing`s, in English.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
