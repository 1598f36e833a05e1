//! The coordinator's decision rate: its own CPU time per second of a
//! simulated cluster (virtual clock, simulated workers), for 100 workers and
//! a running WordCount at a 100 ms interval, at 16 partitions and more.
//!
//! ```text
//! cargo run --release -p dstream-benches --bin coordinator
//! ```

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Duration;

use dstream_core::coordinator::sim::Sim;
use dstream_core::job::{Job, JobFile};
use dstream_core::{Encoding, OperatorInfo, OperatorKind, PluginInfo};

fn job(partitions: u32) -> Job {
    let op = |name: &str, kind, input, output| {
        OperatorInfo::new(name, kind, (Encoding::None, input), output)
    };
    let (u, n) = (Encoding::Utf8, Encoding::U64);
    let plugins = BTreeMap::from([(
        "wc".to_string(),
        PluginInfo {
            name: "wordcount".into(),
            version: "0".into(),
            operators: vec![op("split", OperatorKind::FlatMap, u, (u, n))],
        },
    )]);
    let text = format!(
        "name = \"sim\"\ninterval = \"100ms\"\npartitions = {partitions}\n[plugins]\nwc = \"x\"\n[sources.lines]\nkind = \"generator\"\nrate = 1000\n[streams.words]\nfrom = \"lines\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nrunning_reduce = \"sum\"\n"
    );
    JobFile::parse(&text)
        .expect("parses")
        .resolve(&plugins)
        .expect("resolves")
}

/// The coordinator's own CPU per second of a simulated 100-worker cluster
/// running WordCount at a 100 ms interval, at 16, 64 and 256 partitions.
#[derive(clap::Parser)]
struct Args {}

fn main() {
    let Args {} = clap::Parser::parse();
    println!("| workers | partitions | tasks/s | coordinator CPU per second | share of one core |");
    println!("|---|---|---|---|---|");
    for (workers, partitions, seconds) in [(100, 16, 20), (100, 64, 10), (100, 256, 5)] {
        let mut sim = Sim::new(job(partitions), workers, 2, 7);
        let start = sim.now;
        sim.run_until(start + Duration::from_millis(seconds * 1000 + 50));
        assert_eq!(sim.done.len() as u64, seconds * 10, "every batch finished");
        let tasks = sim.coord.stats().tasks_scheduled as f64 / seconds as f64;
        let cpu = sim.busy / seconds as u32;
        println!(
            "| {workers} | {partitions} | {tasks:.0} | {:.2} ms | {:.2}% |",
            cpu.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 100.0
        );
    }
}
