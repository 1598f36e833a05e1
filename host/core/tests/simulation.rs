//! The coordinator driven by a deterministic simulation: a virtual clock,
//! simulated workers that finish tasks after seeded delays and send
//! heartbeats, many intervals, no socket.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use dstream_core::coordinator::{Command, Config, Coordinator};
use dstream_core::job::{Job, JobFile};
use dstream_core::plan::{BlockId, Work};
use dstream_core::wire::WorkerId;
use dstream_core::{Encoding, OperatorInfo, OperatorKind, PluginInfo};

fn job(partitions: u32, body: &str) -> Job {
    let u = Encoding::Utf8;
    let n = Encoding::U64;
    let op = |name: &str, kind, input, output| OperatorInfo {
        name: name.into(),
        kind,
        description: String::new(),
        params: Vec::new(),
        input: (Encoding::None, input),
        output,
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

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A simulated cluster around a coordinator.
struct Sim {
    coord: Coordinator,
    now: Instant,
    rng: Rng,
    /// (finish time, worker, block) of running tasks.
    finishing: BinaryHeap<Reverse<(Instant, WorkerId, BlockId)>>,
    /// Workers that stopped answering.
    silent: Vec<WorkerId>,
    workers: Vec<WorkerId>,
    next_heartbeat: Instant,
    /// Where each computed block was computed.
    computed_on: HashMap<BlockId, WorkerId>,
    done: Vec<u64>,
    lost: Vec<WorkerId>,
    /// State tasks and whether they ran where their state was.
    state_tasks: (u64, u64),
    /// Wall time spent inside the coordinator.
    busy: Duration,
    slow: Option<WorkerId>,
}

impl Sim {
    fn new(job: Job, workers: u32, slots: u32, seed: u64) -> Self {
        let now = Instant::now();
        let mut coord = Coordinator::new(job, Config::default(), now);
        let ids = (0..workers)
            .map(|_| coord.handle_register(slots, now))
            .collect();
        Self {
            coord,
            now,
            rng: Rng(seed),
            finishing: BinaryHeap::new(),
            silent: Vec::new(),
            workers: ids,
            next_heartbeat: now + Duration::from_millis(500),
            computed_on: HashMap::new(),
            done: Vec::new(),
            lost: Vec::new(),
            state_tasks: (0, 0),
            busy: Duration::ZERO,
            slow: None,
        }
    }

    fn drain(&mut self) {
        let t = Instant::now();
        let mut cmds = Vec::new();
        while let Some(c) = self.coord.poll_command() {
            cmds.push(c);
        }
        self.busy += t.elapsed();
        for c in cmds {
            match c {
                Command::RunTask {
                    worker,
                    task,
                    sources,
                } => {
                    assert!(
                        !self.lost.contains(&worker),
                        "task sent to lost worker {worker}"
                    );
                    for (b, holders) in &sources {
                        assert!(!holders.is_empty(), "{b} has no holder");
                    }
                    if let Work::Keyed {
                        has_state: true, ..
                    } = task.work
                    {
                        let state = task.inputs.last().unwrap().block;
                        self.state_tasks.0 += 1;
                        if self.computed_on.get(&state) == Some(&worker) {
                            self.state_tasks.1 += 1;
                        }
                    }
                    let mut ms = 1 + self.rng.next() % 4;
                    if Some(worker) == self.slow {
                        ms *= 10;
                    }
                    self.finishing.push(Reverse((
                        self.now + Duration::from_millis(ms),
                        worker,
                        task.output,
                    )));
                }
                Command::BatchDone { batch, .. } => self.done.push(batch),
                Command::WorkerLost { worker } => self.lost.push(worker),
                Command::Drop { .. } => {}
            }
        }
    }

    /// Runs until virtual time `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.drain();
            let next_finish = self.finishing.peek().map(|r| r.0.0);
            let timeout = self.coord.poll_timeout();
            let next = [next_finish, timeout, Some(self.next_heartbeat)]
                .into_iter()
                .flatten()
                .min()
                .unwrap();
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            let t = Instant::now();
            if next_finish == Some(next) {
                let Reverse((_, worker, block)) = self.finishing.pop().unwrap();
                if !self.silent.contains(&worker) {
                    self.computed_on.insert(block, worker);
                    self.coord.handle_task_done(worker, block, 1000, self.now);
                }
            } else if next == self.next_heartbeat {
                for w in &self.workers {
                    if !self.silent.contains(w) {
                        self.coord.handle_heartbeat(*w, self.now);
                    }
                }
                self.next_heartbeat += Duration::from_millis(500);
            } else {
                self.coord.handle_timeout(self.now);
            }
            self.busy += t.elapsed();
        }
    }
}

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

#[test]
fn decisions_are_cheap() {
    // 100 workers x 16 partitions at a 100 ms interval: the coordinator's
    // own CPU per simulated second (printed; the bench reports it).
    let mut sim = Sim::new(job(16, RUNNING), 100, 2, 3);
    let start = sim.now;
    sim.run_until(start + Duration::from_millis(20_050));
    let per_second = sim.busy / 20;
    eprintln!(
        "coordinator CPU: {:?} per simulated second ({} tasks)",
        per_second,
        sim.coord.stats().tasks_scheduled
    );
    assert_eq!(sim.done.len(), 200);
}
