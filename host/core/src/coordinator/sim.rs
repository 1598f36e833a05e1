//! A deterministic simulation of a cluster around the [`Coordinator`]: a
//! virtual clock, simulated workers with seeded task times, heartbeats that
//! can be silenced, a worker that can be made slow. No socket, no thread:
//! the coordinator logic is tested (and its decision rate measured) with
//! hundreds of workers in milliseconds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use super::{Command, Config, Coordinator, Holders};
use crate::generate::SplitMix64;
use crate::job::{Job, NodeId};
use crate::plan::{Aux, BlockId, DatasetId, Work};
use crate::wire::WorkerId;

/// A simulated cluster around a coordinator: workers finish tasks after
/// seeded delays of 1-4 ms (10x on the one marked slow), send heartbeats
/// every 500 ms unless silenced, and time is virtual.
#[derive(Debug)]
pub struct Sim {
    /// The coordinator under test.
    pub coord: Coordinator,
    /// Virtual time.
    pub now: Instant,
    rng: SplitMix64,
    /// (finish time, worker, block) of running tasks.
    finishing: BinaryHeap<Reverse<(Instant, WorkerId, BlockId)>>,
    /// Workers that stopped answering (push one to silence it).
    pub silent: Vec<WorkerId>,
    /// The workers, in registration order.
    pub workers: Vec<WorkerId>,
    next_heartbeat: Instant,
    /// Where each computed block was computed.
    pub computed_on: HashMap<BlockId, WorkerId>,
    /// Batches finished, in the order they finished.
    pub done: Vec<u64>,
    /// Workers the coordinator declared lost.
    pub lost: Vec<WorkerId>,
    /// State tasks and whether they ran where their state was.
    pub state_tasks: (u64, u64),
    /// Wall time spent inside the coordinator.
    pub busy: Duration,
    /// A worker whose tasks take 10x longer.
    pub slow: Option<WorkerId>,
    /// Every task sent: when, and to which worker.
    pub sent: Vec<(Instant, WorkerId)>,
    /// Receivers started: (source, worker).
    pub receivers_started: Vec<(NodeId, WorkerId)>,
    /// Input cuts: (batch, receiver's worker, replica).
    pub cuts: Vec<(u64, WorkerId, Option<WorkerId>)>,
    /// Why the job failed, if it did.
    pub failed: Vec<String>,
    /// Copies told to stop because another won.
    pub cancels: u64,
    /// Workers set aside as slow, in order.
    pub set_aside: Vec<WorkerId>,
    /// Each finished batch's processing time.
    pub times: Vec<Duration>,
    /// Checkpoints asked for, and whether they were written.
    pub checkpoints: Vec<(u64, bool)>,
    /// Blocks read back from a checkpoint.
    pub restores: u64,
    /// Leave checkpoints unwritten until [`write_checkpoints`](Self::write_checkpoints).
    pub hold_checkpoints: bool,
    writing: Vec<(u64, Holders)>,
}

impl Sim {
    /// A coordinator for `job` with `workers` workers of `slots` slots.
    pub fn new(job: Job, workers: u32, slots: u32, seed: u64) -> Self {
        Self::with_config(job, workers, slots, seed, Config::default())
    }

    /// [`new`](Self::new) with the coordinator's settings.
    pub fn with_config(job: Job, workers: u32, slots: u32, seed: u64, config: Config) -> Self {
        let now = Instant::now();
        let mut coord = Coordinator::new(job, config, now);
        let ids = (0..workers)
            .map(|_| coord.handle_register(slots, now))
            .collect();
        Self {
            coord,
            now,
            rng: SplitMix64::new(seed),
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
            sent: Vec::new(),
            receivers_started: Vec::new(),
            cuts: Vec::new(),
            failed: Vec::new(),
            cancels: 0,
            set_aside: Vec::new(),
            times: Vec::new(),
            checkpoints: Vec::new(),
            restores: 0,
            hold_checkpoints: false,
            writing: Vec::new(),
        }
    }

    /// Completes the checkpoints being written: each is written when every
    /// block has a holder that is not silent.
    pub fn write_checkpoints(&mut self) {
        for (batch, blocks) in std::mem::take(&mut self.writing) {
            let ok = blocks
                .iter()
                .all(|(_, h)| h.iter().any(|w| !self.silent.contains(w)));
            self.coord.handle_checkpoint_written(batch, ok);
            self.checkpoints.push((batch, ok));
        }
    }

    /// A worker (re)joins with `slots` slots; returns its id.
    pub fn add_worker(&mut self, slots: u32) -> WorkerId {
        let id = self.coord.handle_register(slots, self.now);
        self.workers.push(id);
        id
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
                    self.sent.push((self.now, worker));
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
                    if let Work::Restore { .. } = task.work {
                        self.restores += 1;
                    }
                    let mut ms = 1 + self.rng.below(4);
                    if Some(worker) == self.slow {
                        ms *= 10;
                    }
                    self.finishing.push(Reverse((
                        self.now + Duration::from_millis(ms),
                        worker,
                        task.output,
                    )));
                }
                Command::BatchDone {
                    batch, processing, ..
                } => {
                    self.times.push(processing);
                    // The simulated sinks write at once.
                    self.coord.handle_output_written(batch);
                    self.done.push(batch);
                }
                Command::WorkerLost { worker } => self.lost.push(worker),
                Command::Failed { message } => self.failed.push(message),
                Command::Cancel { .. } => self.cancels += 1,
                Command::WorkerSetAside { worker, .. } => self.set_aside.push(worker),
                Command::Checkpoint { batch, blocks } => {
                    self.writing.push((batch, blocks));
                    if !self.hold_checkpoints {
                        self.write_checkpoints();
                    }
                }
                Command::StartReceiver { worker, source } => {
                    self.receivers_started.push((source, worker));
                }
                Command::CutInput {
                    worker,
                    source,
                    batch,
                    replica,
                } => {
                    // The receiver cuts at once; a silent worker never
                    // answers.
                    if self.silent.contains(&worker) {
                        continue;
                    }
                    for part in 0..self.coord.job().partitions {
                        let block = BlockId {
                            dataset: DatasetId {
                                node: source,
                                batch,
                                aux: Aux::Main,
                            },
                            part,
                        };
                        for w in std::iter::once(worker).chain(replica) {
                            self.coord.handle_input(w, block, 1000, self.now);
                        }
                    }
                    self.cuts.push((batch, worker, replica));
                }
                Command::Drop { .. } => {}
            }
        }
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Instant) {
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
