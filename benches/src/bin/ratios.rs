//! Prints the Wasm/native and Wasm/hand-written throughput ratios of grep and
//! of the wordcount map side over 1M records of 100 bytes, one Wasm call per
//! record against one per partition, and the cost of a call on an empty
//! batch (a fresh instance per call).
//!
//! `cargo run --release -p dstream-benches --bin ratios [-- --runs N]`
//!
//! Every variant runs once per round, for `N` rounds (default 7), so that a
//! noisy machine slows all variants alike; the table gives the median round.
//! Before any timing, the outputs of the Wasm, native and hand-written
//! variants are checked to be identical.
//!
//! `--only VARIANT` runs one variant only, `N` times (for `perf`): one of
//! `grep-wasm`, `grep-wasm-lent` (Linux), `grep-native`, `grep-hand`, `wordcount-wasm`,
//! `wordcount-native`, `wordcount-hand`, `grep-empty`, `wordcount-empty`;
//! or, on two threads at once (each over half the partitions),
//! `wordcount-wasm-2`, `wordcount-native-2`, `grep-wasm-2`.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use dstream_benches::{
    Grep, MATCH_PER_MILLE, PARTITION, PATTERN, PER_RECORD_SAMPLE, RECORD_LEN, RECORDS, WordCount,
    partitions, singletons,
};
use dstream_core::Batch;
use dstream_wasm::{Limits, Runtime};

/// Calls on an empty batch per instantiation run.
const EMPTY_CALLS: usize = 2_000;
/// Grep: minimum Wasm/native.
const GREP_TARGET: f64 = 0.8;
/// Wordcount map side: minimum Wasm/native.
const WORDCOUNT_TARGET: f64 = 0.9;

/// One variant: what it runs, over how many records (or calls), and the
/// time of each round.
struct Variant<'a> {
    name: &'static str,
    records: usize,
    run: Box<dyn FnMut() + 'a>,
    times: Vec<Duration>,
}

impl<'a> Variant<'a> {
    fn new(name: &'static str, records: usize, run: impl FnMut() + 'a) -> Self {
        Self {
            name,
            records,
            run: Box::new(run),
            times: Vec::new(),
        }
    }

    fn round(&mut self) {
        let start = Instant::now();
        (self.run)();
        self.times.push(start.elapsed());
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut t = self.times.clone();
        t.sort_unstable();
        t
    }

    fn median(&self) -> Duration {
        let t = self.sorted();
        t[t.len() / 2]
    }

    /// Records (or calls) per second at the median.
    fn rate(&self) -> f64 {
        self.records as f64 / self.median().as_secs_f64()
    }

    fn print(&self) {
        let t = self.sorted();
        println!(
            "  {:<36} {:>9.1} {:>9.1} {:>9.1} {:>14.0}",
            self.name,
            ms(self.median()),
            ms(t[0]),
            ms(t[t.len() - 1]),
            self.rate()
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn header(first: &str, last: &str) {
    println!(
        "  {first:<36} {:>9} {:>9} {:>9} {last:>14}",
        "median ms", "min ms", "max ms"
    );
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target { "meets" } else { "BELOW" }
}

/// Wasm/native and Wasm/hand-written throughput ratios of grep and the
/// wordcount map side over 1M records of 100 bytes (see benches/README.md).
#[derive(clap::Parser)]
struct Args {
    /// Rounds: every variant runs once per round, and the table gives the
    /// median round.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Run one variant only, RUNS times (for `perf`); the `-2` variants run
    /// on two threads at once, each over half the partitions.
    #[arg(long, value_name = "VARIANT", value_parser = [
        "grep-wasm", "grep-wasm-lent", "grep-native", "grep-hand", "wordcount-wasm", "wordcount-native",
        "wordcount-hand", "grep-empty", "wordcount-empty", "wordcount-wasm-2",
        "wordcount-native-2", "grep-wasm-2",
    ])]
    only: Option<String>,
    /// Instance slots of the Wasm runtime's pool (its address space is
    /// reserved up front, several GiB a slot): a few, such as 2, let the
    /// bench run under `valgrind --tool=callgrind`, whose instruction counts
    /// repeat from run to run on a noisy machine (see benches/README.md).
    #[arg(long, default_value_t = Limits::default().instances,
          value_parser = clap::value_parser!(u32).range(1..))]
    instances: u32,
}

/// The runtime every Wasm variant runs in: default limits (lending on)
/// but for the number of instance slots.
fn runtime(instances: u32) -> Runtime {
    Runtime::new(Limits {
        instances,
        ..Limits::default()
    })
    .expect("a runtime")
}

fn main() {
    let Args {
        runs,
        only,
        instances,
    } = clap::Parser::parse();
    let runs = runs as usize;
    if let Some(variant) = only {
        return profile(&variant, runs, instances);
    }

    println!(
        "machine: {} cores (nproc), {}; load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        load_average()
    );
    println!(
        "build: {}; single-threaded, one partition at a time",
        if cfg!(debug_assertions) {
            "DEBUG (numbers are meaningless; use --release)"
        } else {
            "release"
        }
    );

    let start = Instant::now();
    let parts = partitions(RECORDS, PARTITION);
    let sample = partitions(PER_RECORD_SAMPLE, PER_RECORD_SAMPLE).remove(0);
    let sample_singletons = singletons(&sample);
    let generated = start.elapsed();

    let runtime = runtime(instances);
    let start = Instant::now();
    let grep = Grep::new(&runtime);
    let grep_load = start.elapsed();
    let start = Instant::now();
    let wordcount = WordCount::new(&runtime);
    let wordcount_load = start.elapsed();

    // Correctness first: the three ways must agree, and so must one call per
    // record with one call per partition.
    let kept = grep.check(&parts, &sample);
    let (words, distinct) = wordcount.check(&parts, &sample);
    println!(
        "data: {RECORDS} records x {RECORD_LEN} B in {} partitions of {PARTITION} \
         (generated in {:.0} ms)",
        parts.len(),
        ms(generated)
    );
    println!(
        "      grep {PATTERN:?} keeps {kept} records ({:.2}%, planted in ~{:.1}%); \
         {words} words, {distinct} distinct",
        100.0 * kept as f64 / RECORDS as f64,
        MATCH_PER_MILLE as f64 / 10.0
    );
    println!("check: wasm, native and hand-written outputs identical: ok");
    #[cfg(target_os = "linux")]
    if !dstream_wasm::PagedBatch::lending_supported() {
        println!("WARNING: this kernel cannot lend pages: the lent variant copies");
    }
    println!("rounds: {runs}, every variant once per round (interleaved); median round reported");
    println!();

    let empty = Batch::new();
    let each = |f: &dyn Fn(&Batch)| parts.iter().for_each(f);
    // Lent input: the same partitions in pages of their own, made before
    // any timing (a source would fill them in place of a `Batch`).
    #[cfg(target_os = "linux")]
    let paged = paged(&parts);
    #[cfg(target_os = "linux")]
    let mut grep_lent = Some(Variant::new(
        "grep / wasm, input lent (copy-on-write)",
        RECORDS,
        || {
            paged
                .iter()
                .for_each(|p| drop(black_box(grep.wasm_lent(p))))
        },
    ));
    #[cfg(not(target_os = "linux"))]
    let mut grep_lent: Option<Variant<'_>> = None;
    let mut variants = [
        Variant::new("grep / wasm (1 instance per partition)", RECORDS, || {
            each(&|p| drop(black_box(grep.wasm(p))))
        }),
        Variant::new("grep / native (SDK)", RECORDS, || {
            each(&|p| drop(black_box(grep.native(p))))
        }),
        Variant::new("grep / hand-written", RECORDS, || {
            each(&|p| drop(black_box(grep.by_hand(p))))
        }),
        Variant::new("wordcount / wasm (pipeline split+sum)", RECORDS, || {
            each(&|p| drop(black_box(wordcount.wasm(p))))
        }),
        Variant::new("wordcount / native (SDK pipeline)", RECORDS, || {
            each(&|p| drop(black_box(wordcount.native(p))))
        }),
        Variant::new("wordcount / hand-written", RECORDS, || {
            each(&|p| drop(black_box(wordcount.by_hand(p))))
        }),
        Variant::new("grep / 1 call per record", PER_RECORD_SAMPLE, || {
            sample_singletons
                .iter()
                .for_each(|r| drop(black_box(grep.wasm(r))))
        }),
        Variant::new("grep / 1 call for all", PER_RECORD_SAMPLE, || {
            drop(black_box(grep.wasm(&sample)))
        }),
        Variant::new("wordcount / 1 call per record", PER_RECORD_SAMPLE, || {
            sample_singletons
                .iter()
                .for_each(|r| drop(black_box(wordcount.wasm(r))))
        }),
        Variant::new("wordcount / 1 call for all", PER_RECORD_SAMPLE, || {
            drop(black_box(wordcount.wasm(&sample)))
        }),
        Variant::new("grep filter", EMPTY_CALLS, || {
            (0..EMPTY_CALLS).for_each(|_| drop(black_box(grep.wasm(&empty))))
        }),
        Variant::new("wordcount pipeline", EMPTY_CALLS, || {
            (0..EMPTY_CALLS).for_each(|_| drop(black_box(wordcount.wasm(&empty))))
        }),
    ];
    for _ in 0..runs {
        // Lent grep runs right after copied grep, under the same conditions.
        let (first, rest) = variants.split_at_mut(1);
        for v in first.iter_mut().chain(grep_lent.as_mut()).chain(rest) {
            v.round();
        }
    }
    let [
        grep_wasm,
        grep_native,
        grep_hand,
        wc_wasm,
        wc_native,
        wc_hand,
        grep_per_record,
        grep_one_call,
        wc_per_record,
        wc_one_call,
        grep_empty,
        wc_empty,
    ] = &variants;

    header(&format!("variant ({RECORDS} records)"), "records/s");
    for v in [grep_wasm].into_iter().chain(grep_lent.as_ref()).chain([
        grep_native,
        grep_hand,
        wc_wasm,
        wc_native,
        wc_hand,
    ]) {
        v.print();
    }
    println!();
    header(
        &format!("wasm calls ({PER_RECORD_SAMPLE} records)"),
        "records/s",
    );
    for v in [grep_per_record, grep_one_call, wc_per_record, wc_one_call] {
        v.print();
    }
    println!();
    header(
        &format!("empty batch, {EMPTY_CALLS} calls (instantiation)"),
        "us/call",
    );
    for v in [grep_empty, wc_empty] {
        let t = v.sorted();
        let us = |d: Duration| d.as_secs_f64() * 1e6 / EMPTY_CALLS as f64;
        println!(
            "  {:<36} {:>9.1} {:>9.1} {:>9.1} {:>14.1}",
            v.name,
            ms(v.median()),
            ms(t[0]),
            ms(t[t.len() - 1]),
            us(v.median())
        );
    }
    println!(
        "component load (validate + compile + describe): grep {:.0} ms, wordcount {:.0} ms",
        ms(grep_load),
        ms(wordcount_load)
    );
    println!();

    let ratio = |a: &Variant<'_>, b: &Variant<'_>| a.rate() / b.rate();
    let g_native = ratio(grep_wasm, grep_native);
    let w_native = ratio(wc_wasm, wc_native);
    println!("ratios (throughput at the median; for wasm, higher is better):");
    println!(
        "  grep       wasm/native            {g_native:>7.3}   (target >= {GREP_TARGET}: {})",
        verdict(g_native, GREP_TARGET)
    );
    if let Some(lent) = &grep_lent {
        let g_lent = ratio(lent, grep_native);
        println!(
            "  grep       wasm lent/native       {g_lent:>7.3}   (target >= {GREP_TARGET}: {})",
            verdict(g_lent, GREP_TARGET)
        );
    }
    println!(
        "  grep       wasm/hand-written      {:>7.3}",
        ratio(grep_wasm, grep_hand)
    );
    println!(
        "  grep       native/hand-written    {:>7.3}",
        ratio(grep_native, grep_hand)
    );
    println!(
        "  wordcount  wasm/native            {w_native:>7.3}   (target >= {WORDCOUNT_TARGET}: {})",
        verdict(w_native, WORDCOUNT_TARGET)
    );
    println!(
        "  wordcount  wasm/hand-written      {:>7.3}",
        ratio(wc_wasm, wc_hand)
    );
    println!(
        "  wordcount  native/hand-written    {:>7.3}",
        ratio(wc_native, wc_hand)
    );
    println!(
        "  grep       wasm per-record/per-partition ({PARTITION} per call) {:>9.5}",
        ratio(grep_per_record, grep_wasm)
    );
    println!(
        "  wordcount  wasm per-record/per-partition ({PARTITION} per call) {:>9.5}",
        ratio(wc_per_record, wc_wasm)
    );
    #[cfg(target_os = "linux")]
    if grep_lent.is_some() {
        let stats = paged.iter().map(|p| p.lend_stats());
        let sum = |f: fn(dstream_wasm::LendStats) -> u64| stats.clone().map(f).sum::<u64>();
        println!(
            "lent: {} windows, {} checked page by page after a fault, {} pages copied by a write",
            sum(|s| s.windows),
            sum(|s| s.checked),
            sum(|s| s.dropped_pages)
        );
    }
    println!("load average after: {}", load_average());
}

/// `parts` copied into pages of their own, for lending.
#[cfg(target_os = "linux")]
fn paged(parts: &[Batch]) -> Vec<dstream_wasm::PagedBatch> {
    parts
        .iter()
        .map(|p| dstream_wasm::PagedBatch::new(p).expect("pages for a partition"))
        .collect()
}

/// Runs `f` over the first half of `parts` on one thread and over the
/// second half on another, at once.
fn halves(parts: &[Batch], f: &(dyn Fn(&Batch) + Sync)) {
    let (a, b) = parts.split_at(parts.len() / 2);
    std::thread::scope(|s| {
        s.spawn(|| a.iter().for_each(f));
        b.iter().for_each(f);
    });
}

/// Runs one variant `runs` times and prints the median, for profiling.
fn profile(variant: &str, runs: usize, instances: u32) {
    let parts = partitions(RECORDS, PARTITION);
    let runtime = runtime(instances);
    let grep = Grep::new(&runtime);
    let wordcount = WordCount::new(&runtime);
    let empty = Batch::new();
    let each = |f: &dyn Fn(&Batch)| parts.iter().for_each(f);
    #[cfg(target_os = "linux")]
    let paged = paged(&parts);
    let mut v = Variant::new("", RECORDS, || match variant {
        #[cfg(target_os = "linux")]
        "grep-wasm-lent" => paged
            .iter()
            .for_each(|p| drop(black_box(grep.wasm_lent(p)))),
        "grep-wasm" => each(&|p| drop(black_box(grep.wasm(p)))),
        "grep-native" => each(&|p| drop(black_box(grep.native(p)))),
        "grep-hand" => each(&|p| drop(black_box(grep.by_hand(p)))),
        "wordcount-wasm" => each(&|p| drop(black_box(wordcount.wasm(p)))),
        "wordcount-native" => each(&|p| drop(black_box(wordcount.native(p)))),
        "wordcount-hand" => each(&|p| drop(black_box(wordcount.by_hand(p)))),
        "wordcount-wasm-2" => halves(&parts, &|p| drop(black_box(wordcount.wasm(p)))),
        "wordcount-native-2" => halves(&parts, &|p| drop(black_box(wordcount.native(p)))),
        "grep-wasm-2" => halves(&parts, &|p| drop(black_box(grep.wasm(p)))),
        "grep-empty" => (0..EMPTY_CALLS).for_each(|_| drop(black_box(grep.wasm(&empty)))),
        "wordcount-empty" => (0..EMPTY_CALLS).for_each(|_| drop(black_box(wordcount.wasm(&empty)))),
        other => panic!("unknown variant {other:?}"),
    });
    for _ in 0..runs {
        v.round();
    }
    println!(
        "{variant}: median {:.1} ms, min {:.1} ms over {runs} runs",
        ms(v.median()),
        ms(v.sorted()[0])
    );
}
