//! The coordinator driven by a deterministic simulation: a virtual clock,
//! simulated workers that finish tasks after seeded delays and send
//! heartbeats, many intervals, no socket.

use std::collections::BTreeMap;
use std::time::Duration;

use dstream_core::coordinator::sim::Sim;
use dstream_core::job::{Job, JobFile};
use dstream_core::{Encoding, OperatorInfo, OperatorKind, PluginInfo};

fn job(partitions: u32, body: &str) -> Job {
    let u = Encoding::Utf8;
    let n = Encoding::U64;
    let op = |name: &str, kind, input, output| {
        OperatorInfo::new(name, kind, (Encoding::None, input), output)
    };
    let plugins = BTreeMap::from([(
        "wc".to_string(),
        PluginInfo {
            name: "wordcount".into(),
            version: "0".into(),
            operators: vec![
                op("split", OperatorKind::FlatMap, u, (u, n)),
                op("sum", OperatorKind::Reduce, n, (u, n)),
            ],
        },
    )]);
    let text = format!(
        "name = \"sim\"\ninterval = \"100ms\"\npartitions = {partitions}\n[plugins]\nwc = \"x\"\n[sources.lines]\nkind = \"generator\"\nrate = 1000\n{body}"
    );
    JobFile::parse(&text).unwrap().resolve(&plugins).unwrap()
}

const RUNNING: &str = "[streams.words]\nfrom = \"lines\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nrunning_reduce = \"sum\"\n";
const STATELESS: &str = "[streams.words]\nfrom = \"lines\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nreduce_by_key = \"sum\"\n";

#[test]
fn a_hundred_workers_run_many_intervals_in_order_with_state_in_place() {
    let mut sim = Sim::new(job(16, RUNNING), 100, 2, 1);
    let start = sim.now;
    sim.run_until(start + Duration::from_millis(100 * 200 + 50));
    assert_eq!(sim.done, (1..=200).collect::<Vec<_>>());
    let stats = sim.coord.stats().clone();
    // generate + shuffle-map + keyed = 3 x 16 tasks a batch.
    assert_eq!(stats.tasks_scheduled, 200 * 48);
    // Every state update ran where the previous state was.
    assert_eq!(sim.state_tasks.0, 199 * 16);
    assert_eq!(
        sim.state_tasks.1, sim.state_tasks.0,
        "{:?}",
        sim.state_tasks
    );
    assert!(sim.lost.is_empty());
}

#[test]
fn a_silent_worker_is_lost_and_no_longer_scheduled() {
    let mut sim = Sim::new(job(8, STATELESS), 10, 2, 2);
    let start = sim.now;
    sim.run_until(start + Duration::from_millis(1000));
    let victim = sim.workers[3];
    sim.silent.push(victim);
    sim.run_until(start + Duration::from_millis(6000));
    assert_eq!(sim.lost, vec![victim]);
    assert!(!sim.coord.workers().any(|w| w == victim));
    // Batches went on (the heartbeat timeout delays at most the batches
    // that waited on its tasks), in order, none skipped.
    let n = sim.done.len() as u64;
    assert!(n >= 50, "only {n} batches in 6 s");
    assert_eq!(sim.done, (1..=n).collect::<Vec<_>>());
}
