//! The coordinator's decisions as a sans-IO state machine: which batch runs
//! when, which task goes to which worker, when a worker is lost.
//!
//! It owns no clock and no socket. The driver feeds it events with
//! `handle_*` (registrations, heartbeats, finished tasks, the time passing)
//! and takes out [`Command`]s with [`poll_command`](Coordinator::poll_command)
//! and the next moment it wants to be woken with
//! [`poll_timeout`](Coordinator::poll_timeout). Tests drive it with a
//! virtual clock and simulated workers ([`sim`]).
//!
//! Placement follows the data: a task that updates state runs where the
//! previous state partition is; any other task runs where most of its input
//! bytes are, if that worker has a free slot (or after a short locality wait,
//! anywhere); tasks without input (generators) go to the least loaded worker.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

pub mod sim;

use crate::job::{Job, NodeId};
use crate::plan::{Aux, BlockId, DatasetId, Planner, Task, Work};
use crate::reduce::FixedState;
use crate::wire::WorkerId;

/// Maps with a fixed hasher: fast, and the same decisions on every run.
type HashMap<K, V> = std::collections::HashMap<K, V, FixedState>;

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// A worker silent this long is lost.
    pub heartbeat_timeout: Duration,
    /// How long a task waits for a slot on the worker holding its data
    /// before it runs anywhere.
    pub locality_wait: Duration,
    /// Stop after this batch (`None`: run until stopped).
    pub last_batch: Option<u64>,
    /// A task running longer than this multiple of the median time of its
    /// stage's finished tasks gets a speculative copy on another worker
    /// (once at least half of the stage has finished); `None` turns
    /// speculation off.
    pub speculation: Option<f64>,
    /// Tasks running less than this are never copied (as Spark's
    /// `speculation.minTaskRuntime`): below it, a copy costs more than the
    /// wait.
    pub speculation_min: Duration,
    /// A worker whose tasks lost to speculative copies twice within this
    /// time, each after running at least [`SLOW_FACTOR`] times its stage's
    /// median and twice as long as the copy, with no task of its own
    /// finished in less between them, is set aside for this long (as
    /// Flink's `block-slow-node-duration`): it gets no new task while some
    /// live worker is not set aside (tasks wait for those rather than go to
    /// it), so a slow node stops delaying every batch by the time a copy
    /// takes. At most half the workers are set aside at once. Per job, and
    /// forgotten when the coordinator restarts. Zero turns it off.
    pub slow_block: Duration,
}

/// How many times its stage's median a task that lost to a copy had run
/// for its worker to be set aside as slow (see [`Config::slow_block`]):
/// well above the spread of healthy tasks.
pub const SLOW_FACTOR: u32 = 4;

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(3),
            locality_wait: Duration::from_millis(20),
            last_batch: None,
            speculation: Some(1.5),
            speculation_min: Duration::from_millis(100),
            slow_block: Duration::from_secs(60),
        }
    }
}

/// What the coordinator wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send a task to a worker; `sources` says where its inputs are.
    RunTask {
        /// The worker.
        worker: WorkerId,
        /// The task.
        task: Task,
        /// For each input block, the workers that hold it.
        sources: Vec<(BlockId, Vec<WorkerId>)>,
    },
    /// Every task of a batch finished. Its `outputs` (the partitions its
    /// sinks write, with the workers holding them) stay stored until
    /// [`handle_output_written`](Coordinator::handle_output_written).
    BatchDone {
        /// Batch number.
        batch: u64,
        /// From its start to its last task's end.
        processing: Duration,
        /// How late it started after its interval ended.
        delay: Duration,
        /// For each sink of the job that writes at this batch (in job
        /// order): its partitions, in order, and the workers holding each.
        outputs: Vec<SinkOutput>,
    },
    /// Blocks no later batch needs: the worker may drop them.
    Drop {
        /// The worker.
        worker: WorkerId,
        /// The blocks.
        blocks: Vec<BlockId>,
    },
    /// Run the receiver of `source` on `worker` (from now on its records
    /// go into that worker's inbox).
    StartReceiver {
        /// The worker.
        worker: WorkerId,
        /// The receiver source.
        source: NodeId,
    },
    /// Batch `batch` starts: the receiver of `source` on `worker` makes
    /// what it received since the last cut the batch's input blocks,
    /// copies them to `replica` (if any), and only then reports them
    /// ([`handle_input`](Coordinator::handle_input), once per holder).
    CutInput {
        /// The worker running the receiver.
        worker: WorkerId,
        /// The receiver source.
        source: NodeId,
        /// The batch.
        batch: u64,
        /// A second worker to hold a copy of the blocks.
        replica: Option<WorkerId>,
    },
    /// Batch `batch` is due for a checkpoint: write these blocks (each from
    /// one of its holders) to the checkpoint store, then call
    /// [`handle_checkpoint_written`](Coordinator::handle_checkpoint_written).
    /// They stay stored until then.
    Checkpoint {
        /// The batch.
        batch: u64,
        /// The blocks later batches need, with their holders.
        blocks: Vec<(BlockId, Vec<WorkerId>)>,
    },
    /// Another copy of the task won: the worker may stop computing
    /// `block` (its result will be dropped anyway).
    Cancel {
        /// The worker.
        worker: WorkerId,
        /// The task's output.
        block: BlockId,
    },
    /// The job cannot go on (a block that cannot be recomputed was lost).
    Failed {
        /// Why.
        message: String,
    },
    /// A worker missed its heartbeats and is out of scheduling.
    WorkerLost {
        /// The worker.
        worker: WorkerId,
    },
    /// A worker whose tasks lost to speculative copies by far, twice, is
    /// set aside: no task goes to it for `period` while others can take
    /// them ([`Config::slow_block`]).
    WorkerSetAside {
        /// The worker.
        worker: WorkerId,
        /// For how long.
        period: Duration,
    },
}

/// Blocks, each with the workers holding it.
pub type Holders = Vec<(BlockId, Vec<WorkerId>)>;

/// What one sink writes for a finished batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOutput {
    /// The sink (its index in [`Job::sinks`]).
    pub sink: usize,
    /// The partitions of the stream it writes, in order, with the workers
    /// holding each.
    pub parts: Vec<(BlockId, Vec<WorkerId>)>,
}

#[derive(Debug)]
struct Worker {
    slots: u32,
    running: u32,
    last_seen: Instant,
}

#[derive(Debug)]
struct Pending {
    task: Task,
    /// When it became runnable (for the locality wait).
    ready_since: Option<Instant>,
    /// When its locality wait ends, while it waits for a busy worker that
    /// holds its data.
    wake: Option<Instant>,
    /// The workers holding its data (worked out once), and whether the
    /// task must run there (it updates state they hold).
    preferred: Option<(Vec<WorkerId>, bool)>,
}

/// The number of a batch that only rebuilds lost blocks (asked for by
/// [`Coordinator::locate`] between batches).
const REBUILD: u64 = u64::MAX;

impl Batch {
    /// A batch with no task of its own, to rebuild lost blocks in.
    fn rebuild(now: Instant) -> Self {
        Self {
            number: REBUILD,
            started: now,
            delay: Duration::ZERO,
            pending: Vec::new(),
            blocked: HashMap::default(),
            waiters: HashMap::default(),
            running: HashMap::default(),
            stage_of: HashMap::default(),
            stages: Vec::new(),
            outputs: BTreeSet::new(),
            tasks: HashMap::default(),
        }
    }
}

/// A stage's tasks and the times of those finished (sorted), with their
/// median once half of the stage has finished; and its tasks running as a
/// single attempt, by start, the oldest first: the candidates for a
/// speculative copy, kept in order so that finding the next straggler never
/// scans every running task.
#[derive(Debug, Default)]
struct StageTimes {
    size: usize,
    done: Vec<Duration>,
    median: Option<Duration>,
    watch: BTreeSet<(Instant, BlockId)>,
}

impl StageTimes {
    fn finished(&mut self, t: Duration) {
        let at = self.done.partition_point(|d| *d < t);
        self.done.insert(at, t);
        if self.done.len() * 2 >= self.size {
            self.median = Some(self.done[self.done.len() / 2]);
        }
    }
}

/// A task sent to workers: the attempts running it (two when it was
/// speculated), each with its worker and start.
#[derive(Debug)]
struct Run {
    task: Task,
    attempts: Vec<(WorkerId, Instant)>,
    /// Its entry in its stage's watch list, if any.
    watched: Option<Instant>,
}

#[derive(Debug)]
struct Batch {
    number: u64,
    started: Instant,
    delay: Duration,
    /// Tasks whose inputs are all stored, waiting for a worker.
    pending: Vec<Pending>,
    /// Tasks waiting for inputs: the task and how many inputs it misses.
    blocked: HashMap<BlockId, (Task, usize)>,
    /// For each missing block, the tasks (by output) waiting for it.
    waiters: HashMap<BlockId, Vec<BlockId>>,
    running: HashMap<BlockId, Run>,
    /// Each planned task's stage (recovery tasks have none).
    stage_of: HashMap<BlockId, usize>,
    /// Per stage: tasks in it, and the times of those finished.
    stages: Vec<StageTimes>,
    outputs: BTreeSet<BlockId>,
    /// Every task of the batch by output: its lineage, to recompute a block
    /// lost with a worker.
    tasks: HashMap<BlockId, Task>,
}

impl Batch {
    /// Takes over the tasks of `r`, a batch that only rebuilds lost blocks
    /// (of earlier batches, so none is one of this batch's own).
    fn take_over(&mut self, r: Batch) {
        debug_assert_eq!(r.number, REBUILD);
        self.pending.extend(r.pending);
        self.blocked.extend(r.blocked);
        for (block, waiting) in r.waiters {
            self.waiters.entry(block).or_default().extend(waiting);
        }
        self.running.extend(r.running);
        self.outputs.extend(r.outputs);
        self.tasks.extend(r.tasks);
    }

    /// Puts `block`'s run in its stage's watch list while it runs as a
    /// single attempt, and takes it out otherwise.
    fn rewatch(&mut self, block: BlockId) {
        let Some(&stage) = self.stage_of.get(&block) else {
            return;
        };
        let watch = &mut self.stages[stage].watch;
        let Some(run) = self.running.get_mut(&block) else {
            return;
        };
        if let Some(t) = run.watched.take() {
            watch.remove(&(t, block));
        }
        if let [(_, start)] = run.attempts[..] {
            watch.insert((start, block));
            run.watched = Some(start);
        }
    }

    /// Takes `run` (of `block`, no longer running) out of the watch lists.
    fn unwatch(&mut self, block: BlockId, run: &Run) {
        if let (Some(&stage), Some(t)) = (self.stage_of.get(&block), run.watched) {
            self.stages[stage].watch.remove(&(t, block));
        }
    }

    /// Whether the watch lists hold exactly the single attempts of staged
    /// tasks (a check for debug builds: a full scan).
    fn watch_is_in_step(&self) -> bool {
        let expected: BTreeSet<(usize, Instant, BlockId)> = self
            .running
            .iter()
            .filter_map(|(block, run)| match run.attempts[..] {
                [(_, start)] => Some((*self.stage_of.get(block)?, start, *block)),
                _ => None,
            })
            .collect();
        let actual: BTreeSet<(usize, Instant, BlockId)> = self
            .stages
            .iter()
            .enumerate()
            .flat_map(|(i, st)| st.watch.iter().map(move |(t, b)| (i, *t, *b)))
            .collect();
        expected == actual
    }

    /// Builds every watch list again (after a worker's attempts went away).
    fn rewatch_all(&mut self) {
        for st in &mut self.stages {
            st.watch.clear();
        }
        let blocks: Vec<BlockId> = self.running.keys().copied().collect();
        for block in blocks {
            if let Some(run) = self.running.get_mut(&block) {
                run.watched = None;
            }
            self.rewatch(block);
        }
    }
}

/// Counters, for tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tasks sent to workers.
    pub tasks_scheduled: u64,
    /// Of them, tasks placed on a worker holding their largest input.
    pub tasks_local: u64,
    /// Batches finished.
    pub batches_done: u64,
    /// Tasks of earlier batches queued again to recompute blocks lost with
    /// a worker.
    pub tasks_recomputed: u64,
    /// Tasks sent again after a worker could not fetch their inputs.
    pub tasks_retried: u64,
    /// Speculative copies launched.
    pub tasks_speculated: u64,
    /// Results that came after another copy of their task had won.
    pub late_results: u64,
    /// Times a worker was set aside as slow (see [`Config::slow_block`]).
    pub workers_set_aside: u64,
}

/// The coordinator of one job.
#[derive(Debug)]
pub struct Coordinator {
    config: Config,
    job: Job,
    workers: BTreeMap<WorkerId, Worker>,
    next_worker: WorkerId,
    /// Where each stored block is, and its size.
    blocks: HashMap<BlockId, (Vec<WorkerId>, u64)>,
    start: Instant,
    next_batch: u64,
    current: Option<Batch>,
    commands: VecDeque<Command>,
    stats: Stats,
    /// Outputs of finished batches not written yet, by batch: kept until
    /// the sinks are done with them.
    held: BTreeMap<u64, Vec<BlockId>>,
    /// Each receiver source and the worker running it (if any).
    receivers: BTreeMap<NodeId, Option<WorkerId>>,
    /// Blocks to recompute (asked for by `locate`, or left without a holder
    /// by a lost worker), queued with the running batch or the next one.
    recover: BTreeSet<BlockId>,
    /// The last complete checkpoint and the datasets in it: lost blocks of
    /// these datasets are read back rather than recomputed.
    checkpoint: Option<(u64, BTreeSet<DatasetId>)>,
    /// Blocks kept for a checkpoint being written, by its batch.
    ckpt_held: BTreeMap<u64, Vec<BlockId>>,
    /// The time of the last scheduling pass (stragglers due before it and
    /// not copied then wait for the next event).
    last_pass: Instant,
    /// Attempts that lost to another copy of their task, until they answer:
    /// an output they report is dropped, in their batch or after it.
    losers: BTreeSet<(WorkerId, BlockId)>,
    /// Workers set aside as slow, until when (see [`Config::slow_block`]).
    slow: BTreeMap<WorkerId, Instant>,
    /// When each worker last lost a task to a copy by far (a strike).
    strikes: BTreeMap<WorkerId, Instant>,
}

impl Coordinator {
    /// A coordinator for `job`, whose batch 1 ends one interval after `now`.
    pub fn new(job: Job, config: Config, now: Instant) -> Self {
        Self {
            config,
            workers: BTreeMap::new(),
            next_worker: 1,
            blocks: HashMap::default(),
            start: now,
            next_batch: 1,
            current: None,
            commands: VecDeque::new(),
            stats: Stats::default(),
            held: BTreeMap::new(),
            receivers: job.receivers().map(|(id, _)| (id, None)).collect(),
            recover: BTreeSet::new(),
            last_pass: now,
            losers: BTreeSet::new(),
            slow: BTreeMap::new(),
            strikes: BTreeMap::new(),
            checkpoint: None,
            ckpt_held: BTreeMap::new(),
            job,
        }
    }

    /// The worker running each receiver source.
    pub fn receivers(&self) -> impl Iterator<Item = (NodeId, Option<WorkerId>)> + '_ {
        self.receivers.iter().map(|(s, w)| (*s, *w))
    }

    /// Gives every receiver without a worker one: the worker running the
    /// fewest receivers (the lowest id on ties).
    fn place_receivers(&mut self) {
        let unplaced: Vec<NodeId> = self
            .receivers
            .iter()
            .filter(|(_, w)| w.is_none())
            .map(|(s, _)| *s)
            .collect();
        for source in unplaced {
            let Some(worker) = self.workers.keys().copied().min_by_key(|id| {
                (
                    self.receivers.values().filter(|w| **w == Some(*id)).count(),
                    *id,
                )
            }) else {
                return;
            };
            self.receivers.insert(source, Some(worker));
            self.commands
                .push_back(Command::StartReceiver { worker, source });
            // A batch already waiting for this source's input gets it from
            // the new receiver (what the lost one held uncut is gone).
            if let Some(b) = self.current.as_ref().filter(|b| b.number != REBUILD) {
                let waiting = (0..self.job.partitions).any(|part| {
                    let id = BlockId {
                        dataset: DatasetId {
                            node: source,
                            batch: b.number,
                            aux: Aux::Main,
                        },
                        part,
                    };
                    self.blocks.get(&id).is_none_or(|(h, _)| h.is_empty())
                });
                if waiting {
                    let batch = b.number;
                    self.cut(source, worker, batch);
                }
            }
        }
    }

    fn cut(&mut self, source: NodeId, worker: WorkerId, batch: u64) {
        // The replica: the next worker after it, in id order.
        let replica = self
            .workers
            .range(worker + 1..)
            .chain(self.workers.range(..worker))
            .map(|(id, _)| *id)
            .next();
        self.commands.push_back(Command::CutInput {
            worker,
            source,
            batch,
            replica,
        });
    }

    /// A coordinator resuming `job` after the checkpoint of batch
    /// `checkpoint` (a restarted coordinator): batch `checkpoint + 1` is
    /// due one interval after `now`, and the state it needs is read back
    /// from the checkpoint where the tasks run.
    pub fn resume(job: Job, config: Config, now: Instant, checkpoint: u64) -> Self {
        let interval = job.interval;
        let datasets = Planner::new(&job).needed_after(checkpoint);
        let mut c = Self::new(job, config, now);
        c.next_batch = checkpoint + 1;
        c.start = now.checked_sub(interval * checkpoint as u32).unwrap_or(now);
        c.checkpoint = Some((checkpoint, datasets));
        c
    }

    /// The last checkpoint written (see [`Command::Checkpoint`]).
    pub fn last_checkpoint(&self) -> Option<u64> {
        self.checkpoint.as_ref().map(|c| c.0)
    }

    /// The checkpoint of `batch` is complete in the store (or, with
    /// `ok == false`, could not be written): its blocks need not be kept
    /// for it any more, and lost blocks are read back from it from now on.
    pub fn handle_checkpoint_written(&mut self, batch: u64, ok: bool) {
        let Some(blocks) = self.ckpt_held.remove(&batch) else {
            return;
        };
        if ok && self.checkpoint.as_ref().is_none_or(|c| c.0 < batch) {
            let datasets = blocks.iter().map(|b| b.dataset).collect();
            self.checkpoint = Some((batch, datasets));
        }
        self.release(blocks);
    }

    /// Blocks kept for sinks or a checkpoint not written yet.
    fn held_blocks(&self) -> BTreeSet<BlockId> {
        self.held
            .values()
            .chain(self.ckpt_held.values())
            .flatten()
            .copied()
            .collect()
    }

    /// The job.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// True when the last batch (see [`Config::last_batch`]) finished and
    /// its outputs were written.
    pub fn is_finished(&self) -> bool {
        self.config
            .last_batch
            .is_some_and(|l| self.next_batch > l && self.current.is_none())
            && self.held.is_empty()
            && self.ckpt_held.is_empty()
    }

    /// The batch running now, if any.
    pub fn running_batch(&self) -> Option<u64> {
        self.current
            .as_ref()
            .map(|b| b.number)
            .filter(|n| *n != REBUILD)
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Workers in scheduling.
    pub fn workers(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers.keys().copied()
    }

    /// A worker registered with `slots` task slots; returns its id.
    pub fn handle_register(&mut self, slots: u32, now: Instant) -> WorkerId {
        let id = self.next_worker;
        self.handle_register_as(id, slots, now);
        id
    }

    /// A worker registered under an id the caller chose (a cluster running
    /// several jobs names its workers once for all of them). Ids of later
    /// [`handle_register`](Self::handle_register) calls follow the largest
    /// seen.
    pub fn handle_register_as(&mut self, id: WorkerId, slots: u32, now: Instant) {
        self.next_worker = self.next_worker.max(id + 1);
        self.workers.insert(
            id,
            Worker {
                slots: slots.max(1),
                running: 0,
                last_seen: now,
            },
        );
        self.place_receivers();
        self.schedule(now);
    }

    /// The transport knows `worker` is gone (its connection closed): it is
    /// out of scheduling at once, as if its heartbeats had stopped.
    pub fn handle_worker_lost(&mut self, worker: WorkerId, now: Instant) {
        if self.workers.contains_key(&worker) {
            self.lose(worker, now);
            self.schedule(now);
        }
    }

    /// The sinks wrote batch `batch`'s outputs (call it for every
    /// [`Command::BatchDone`], with outputs or not): the blocks kept for
    /// them can go.
    pub fn handle_output_written(&mut self, batch: u64) {
        if let Some(blocks) = self.held.remove(&batch) {
            self.release(blocks);
        }
    }

    /// Drops those of `blocks` (held until now for sinks or a checkpoint)
    /// that no batch after the last finished one needs and nothing else
    /// holds.
    fn release(&mut self, blocks: Vec<BlockId>) {
        let (last_done, keep, held) = self.retained();
        let mut drops: BTreeMap<WorkerId, Vec<BlockId>> = BTreeMap::new();
        for id in blocks {
            if keep.contains(&id.dataset) || held.contains(&id) || id.dataset.batch > last_done {
                continue;
            }
            if let Some((holders, _)) = self.blocks.remove(&id) {
                for h in holders {
                    drops.entry(h).or_default().push(id);
                }
            }
        }
        for (worker, blocks) in drops {
            self.commands.push_back(Command::Drop { worker, blocks });
        }
    }

    /// What must stay stored: the last finished batch, the datasets of it
    /// and before that later batches read, and the blocks held for the
    /// sinks or a checkpoint or read by tasks rebuilding earlier batches'
    /// blocks (the running batch's own tasks read datasets in the set).
    fn retained(&self) -> (u64, BTreeSet<DatasetId>, BTreeSet<BlockId>) {
        let running = self.current.as_ref().is_some_and(|b| b.number != REBUILD);
        let last_done = self.next_batch - 1 - u64::from(running);
        let keep = Planner::new(&self.job).needed_after(last_done);
        let mut held = self.held_blocks();
        if let Some(b) = &self.current {
            held.extend(
                b.tasks
                    .values()
                    .filter(|t| t.output.dataset.batch < b.number)
                    .flat_map(|t| t.inputs.iter().map(|i| i.block)),
            );
        }
        (last_done, keep, held)
    }

    /// A worker is alive.
    pub fn handle_heartbeat(&mut self, worker: WorkerId, now: Instant) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.last_seen = now;
        }
    }

    /// A task finished on `worker`: its output `block` (of `bytes` bytes) is
    /// there.
    pub fn handle_task_done(&mut self, worker: WorkerId, block: BlockId, bytes: u64, now: Instant) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running = w.running.saturating_sub(1);
            w.last_seen = now;
        }
        // A late answer of a copy that lost (in this batch or an earlier
        // one): the first result won, this output is dropped.
        if self.losers.remove(&(worker, block)) {
            self.stats.late_results += 1;
            self.commands.push_back(Command::Drop {
                worker,
                blocks: vec![block],
            });
            return;
        }
        let Some(b) = self.current.as_mut() else {
            return;
        };
        let won = b
            .running
            .get(&block)
            .is_some_and(|r| r.attempts.iter().any(|(w, _)| *w == worker));
        if !won {
            // A duplicate answer.
            return;
        }
        let run = b.running.remove(&block).expect("present");
        b.unwatch(block, &run);
        // The first attempt lost to a copy, far behind both its stage and
        // the copy: a strike against its worker (see `strike`). Healthy
        // tasks a little slower than the median, as some always are, mark
        // nothing.
        let (first, started) = run.attempts[0];
        let copy_took = run
            .attempts
            .iter()
            .find(|(w, _)| *w == worker)
            .map(|(_, t)| now.saturating_duration_since(*t));
        let ran = now.saturating_duration_since(started);
        let far_behind = b
            .stage_of
            .get(&block)
            .and_then(|s| b.stages[*s].median)
            .zip(copy_took)
            .is_some_and(|(m, copy)| ran >= SLOW_FACTOR * m && ran >= 2 * copy);
        let struck = (first != worker && far_behind).then_some(first);
        // The winner was not far behind its stage: a worker that finishes
        // so is not slow, whatever it lost before (strikes must come in a
        // row, not one now and then among healthy tasks).
        let healthy = copy_took.is_some_and(|took| {
            b.stage_of
                .get(&block)
                .and_then(|s| b.stages[*s].median)
                .is_some_and(|m| took < SLOW_FACTOR * m)
        });
        if healthy {
            self.strikes.remove(&worker);
        }
        for (w, _) in run.attempts.iter().filter(|(w, _)| *w != worker) {
            self.losers.insert((*w, block));
            self.commands
                .push_back(Command::Cancel { worker: *w, block });
        }
        if let Some(stage) = b.stage_of.get(&block) {
            let started = run.attempts[0].1;
            b.stages[*stage].finished(now.saturating_duration_since(started));
        }
        b.outputs.insert(block);
        let entry = self.blocks.entry(block).or_insert((Vec::new(), bytes));
        if !entry.0.contains(&worker) {
            entry.0.push(worker);
        }
        entry.1 = bytes;
        Self::unblock(b, block);
        if let Some(w) = struck {
            self.strike(w, now);
        }
        self.schedule(now);
    }

    /// A task on `worker` could not run because an input could not be
    /// fetched (its holder is gone, say): the slot is free and the task is
    /// queued again; if the holder is lost meanwhile, the input is
    /// recomputed first. (A task that fails on its own is the job's
    /// failure, not this: operators are deterministic.)
    pub fn handle_task_retry(&mut self, worker: WorkerId, block: BlockId, now: Instant) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running = w.running.saturating_sub(1);
        }
        // A copy that lost and stopped (cancelled): nothing to drop, but
        // its slot is free.
        if self.losers.remove(&(worker, block)) {
            self.schedule(now);
            return;
        }
        let Some(mut b) = self.current.take() else {
            return;
        };
        if let Some(run) = b.running.get_mut(&block)
            && run.attempts.iter().any(|(w, _)| *w == worker)
        {
            run.attempts.retain(|(w, _)| *w != worker);
            if run.attempts.is_empty() {
                let run = b.running.remove(&block).expect("present");
                b.unwatch(block, &run);
                self.stats.tasks_retried += 1;
                self.enqueue(&mut b, run.task);
            } else {
                b.rewatch(block);
            }
        }
        self.current = Some(b);
        self.schedule(now);
    }

    /// The workers holding `block`. When none does (lost with a worker), it
    /// is recomputed with the running batch, or with the next one.
    pub fn locate(&mut self, block: BlockId, now: Instant) -> Vec<WorkerId> {
        let holders = self
            .blocks
            .get(&block)
            .map(|(h, _)| h.clone())
            .unwrap_or_default();
        if holders.is_empty() && !self.workers.is_empty() {
            self.recover.insert(block);
            // With the running batch; between batches (or after the last
            // one), in a batch of its own that only rebuilds.
            let mut b = self.current.take().unwrap_or_else(|| Batch::rebuild(now));
            self.recover_into(&mut b);
            self.current = Some(b);
            self.schedule(now);
        }
        holders
    }

    /// The task reading `block` back from the last checkpoint, if it is in
    /// it.
    fn restore_task(&self, block: &BlockId) -> Option<Task> {
        self.checkpoint.as_ref().and_then(|(c, sets)| {
            sets.contains(&block.dataset).then(|| Task {
                output: *block,
                work: Work::Restore { checkpoint: *c },
                inputs: Vec::new(),
            })
        })
    }

    /// Queues the blocks asked for by [`locate`](Self::locate) with batch
    /// `b`: a task reading them, with no output of its own to wait for.
    fn recover_into(&mut self, b: &mut Batch) {
        let blocks: Vec<BlockId> = std::mem::take(&mut self.recover).into_iter().collect();
        for block in blocks {
            if self.blocks.get(&block).is_some_and(|(h, _)| !h.is_empty())
                || b.tasks.contains_key(&block)
            {
                continue;
            }
            if block.dataset.batch == b.number {
                continue; // the batch computes it
            }
            let Some(task) = self.restore_task(&block).or_else(|| {
                Planner::new(&self.job)
                    .plan(block.dataset.batch)
                    .stages
                    .into_iter()
                    .flatten()
                    .find(|t| t.output == block)
            }) else {
                continue;
            };
            self.stats.tasks_recomputed += 1;
            b.tasks.insert(block, task.clone());
            self.enqueue(b, task);
        }
    }

    /// A receiver on `worker` stored an input block (of `bytes` bytes): the
    /// tasks reading it will run there.
    pub fn handle_input(&mut self, worker: WorkerId, block: BlockId, bytes: u64, now: Instant) {
        if !self.workers.contains_key(&worker) {
            return; // lost meanwhile: it holds nothing
        }
        let entry = self.blocks.entry(block).or_insert((Vec::new(), bytes));
        if !entry.0.contains(&worker) {
            entry.0.push(worker);
        }
        if let Some(b) = self.current.as_mut() {
            Self::unblock(b, block);
        }
        self.schedule(now);
    }

    /// Time passed: starts the batch that is due, finds lost workers,
    /// places tasks whose locality wait is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        let lost: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                now.saturating_duration_since(w.last_seen) >= self.config.heartbeat_timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.lose(id, now);
        }
        self.schedule(now);
    }

    /// The next command to carry out.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next_due = if self.config.last_batch.is_some_and(|l| self.next_batch > l) {
            None
        } else {
            Some(self.due(self.next_batch))
        };
        let due = match &self.current {
            None => next_due,
            Some(b) => {
                let wake = b.pending.iter().filter_map(|p| p.wake).min();
                // The oldest single attempt of each stage not yet looked at.
                let straggler = b
                    .stages
                    .iter()
                    .filter_map(|st| {
                        let after = self.straggler_after(st)?;
                        st.watch
                            .iter()
                            .map(|(start, _)| *start + after)
                            .find(|t| *t > self.last_pass)
                    })
                    .min();
                // A batch that only rebuilds lets the next one start when
                // it is due (it takes the rebuild over).
                let next = next_due.filter(|_| b.number == REBUILD);
                [wake, straggler, next].into_iter().flatten().min()
            }
        };
        let heartbeat = self
            .workers
            .values()
            .map(|w| w.last_seen + self.config.heartbeat_timeout)
            .min();
        match (due, heartbeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn due(&self, batch: u64) -> Instant {
        self.start + self.job.interval * batch as u32
    }

    fn lose(&mut self, id: WorkerId, now: Instant) {
        self.workers.remove(&id);
        self.commands.push_back(Command::WorkerLost { worker: id });
        for w in self.receivers.values_mut() {
            if *w == Some(id) {
                *w = None;
            }
        }
        for (holders, _) in self.blocks.values_mut() {
            holders.retain(|w| *w != id);
        }
        self.losers.retain(|(w, _)| *w != id);
        self.slow.remove(&id);
        self.strikes.remove(&id);
        // Its running tasks go back to the queue, and so do the tasks of
        // this batch whose output only it held: they are computed again
        // from their lineage (their inputs, recomputed the same way when
        // they were lost too). Blocks of earlier batches (state) lost with
        // it are the recovery's work.
        let Some(mut b) = self.current.take() else {
            self.place_receivers();
            self.recover_orphans(now);
            return;
        };
        for r in b.running.values_mut() {
            r.attempts.retain(|(w, _)| *w != id);
        }
        let mut again: Vec<Task> = b
            .running
            .extract_if(|_, r| r.attempts.is_empty())
            .map(|(_, r)| r.task)
            .collect();
        b.rewatch_all();
        let gone: Vec<BlockId> = b
            .outputs
            .iter()
            .filter(|o| self.blocks.get(o).is_none_or(|(h, _)| h.is_empty()))
            .copied()
            .collect();
        for o in gone {
            b.outputs.remove(&o);
            self.blocks.remove(&o);
            again.push(b.tasks[&o].clone());
        }
        // Re-classify everything waiting: what was ready may miss a block now.
        again.extend(b.pending.drain(..).map(|p| p.task));
        again.extend(b.blocked.drain().map(|(_, (t, _))| t));
        b.waiters.clear();
        for t in again {
            self.enqueue(&mut b, t);
        }
        self.current = Some(b);
        self.place_receivers();
        self.recover_orphans(now);
    }

    /// Recovery at the moment of a loss: every stored block of an earlier
    /// batch left without a holder (state, window contents, outputs the
    /// sinks have not written, checkpointed datasets) is queued at once,
    /// with its lineage back to the last checkpoint or the replicated
    /// input, in the running batch or, between batches, in a batch of
    /// its own that the next one takes over when it is due. The tasks run
    /// in parallel on every surviving worker with a free slot. Blocks that
    /// cannot be recomputed (received input lost with both its copies) are
    /// left to fail the job only if a task needs them.
    fn recover_orphans(&mut self, now: Instant) {
        // Still needed: what is retained, except what only batches past the
        // job's last one would read.
        let (last_done, mut keep, held) = self.retained();
        if self.config.last_batch.is_some_and(|l| last_done >= l) {
            keep.clear();
        }
        let b = self.current.take();
        let before = b.as_ref().map_or(REBUILD, |b| b.number);
        self.recover.extend(
            self.blocks
                .iter()
                .filter(|(id, (h, _))| {
                    h.is_empty()
                        && id.dataset.batch < before
                        && (keep.contains(&id.dataset) || held.contains(id))
                })
                .map(|(id, _)| *id),
        );
        if self.recover.is_empty() || self.workers.is_empty() {
            // With no worker left, they are asked for again when needed.
            self.current = b;
            return;
        }
        let mut b = b.unwrap_or_else(|| Batch::rebuild(now));
        self.recover_into(&mut b);
        self.current = Some(b);
    }

    /// Queues `task`: ready when its inputs are stored, else blocked on the
    /// ones missing. A missing input of an earlier batch (lost with a
    /// worker) is recomputed from its lineage: the task that produced it is
    /// queued too, and so on back to blocks that are stored or computed
    /// from nothing (generators). These tasks run with the batch, in
    /// parallel wherever there are slots.
    fn enqueue(&mut self, b: &mut Batch, task: Task) {
        let mut plans: HashMap<u64, HashMap<BlockId, Task>> = HashMap::default();
        let mut work = vec![task];
        while let Some(task) = work.pop() {
            let mut missing: Vec<BlockId> = task
                .inputs
                .iter()
                .map(|i| i.block)
                .filter(|blk| self.blocks.get(blk).is_none_or(|(h, _)| h.is_empty()))
                .collect();
            missing.sort();
            missing.dedup();
            for m in &missing {
                // Produced by this batch (or its receivers), or already
                // being recomputed.
                if m.dataset.batch == b.number || b.tasks.contains_key(m) {
                    continue;
                }
                let producer = self.restore_task(m).or_else(|| {
                    plans
                        .entry(m.dataset.batch)
                        .or_insert_with(|| {
                            Planner::new(&self.job)
                                .plan(m.dataset.batch)
                                .stages
                                .into_iter()
                                .flatten()
                                .map(|t| (t.output, t))
                                .collect()
                        })
                        .get(m)
                        .cloned()
                });
                match producer {
                    Some(t) => {
                        self.stats.tasks_recomputed += 1;
                        b.tasks.insert(*m, t.clone());
                        work.push(t);
                    }
                    None => {
                        let name = &self.job.node(m.dataset.node).name;
                        self.commands.push_back(Command::Failed {
                            message: format!(
                                "block {m} of `{name}` was lost with every worker holding it \
                                 and cannot be recomputed (received input)"
                            ),
                        });
                    }
                }
            }
            if missing.is_empty() {
                b.pending.push(Pending {
                    task,
                    ready_since: None,
                    wake: None,
                    preferred: None,
                });
            } else {
                for m in &missing {
                    b.waiters.entry(*m).or_default().push(task.output);
                }
                b.blocked.insert(task.output, (task, missing.len()));
            }
        }
    }

    /// `block` is stored: the tasks waiting only for it become ready.
    fn unblock(b: &mut Batch, block: BlockId) {
        for out in b.waiters.remove(&block).unwrap_or_default() {
            let Some((_, missing)) = b.blocked.get_mut(&out) else {
                continue;
            };
            *missing -= 1;
            if *missing == 0 {
                let (task, _) = b.blocked.remove(&out).expect("present");
                b.pending.push(Pending {
                    task,
                    ready_since: None,
                    wake: None,
                    preferred: None,
                });
            }
        }
    }

    /// Starts the due batch and places every task that can run.
    fn schedule(&mut self, now: Instant) {
        // A batch that only rebuilds lost blocks does not hold up the next
        // one: the next one takes its tasks over.
        let rebuilding = self.current.as_ref().is_some_and(|b| b.number == REBUILD);
        if (self.current.is_none() || rebuilding)
            && now >= self.due(self.next_batch)
            && !self.workers.is_empty()
            && self.config.last_batch.is_none_or(|l| self.next_batch <= l)
        {
            let number = self.next_batch;
            self.next_batch += 1;
            let plan = Planner::new(&self.job).plan(number);
            let tasks = plan.tasks().map(|t| (t.output, t.clone())).collect();
            let stage_of = plan
                .stages
                .iter()
                .enumerate()
                .flat_map(|(i, st)| st.iter().map(move |t| (t.output, i)))
                .collect();
            let stages = plan
                .stages
                .iter()
                .map(|st| StageTimes {
                    size: st.len(),
                    ..StageTimes::default()
                })
                .collect();
            let mut b = Batch {
                stage_of,
                stages,
                number,
                started: now,
                delay: now - self.due(number),
                pending: Vec::new(),
                blocked: HashMap::default(),
                waiters: HashMap::default(),
                running: HashMap::default(),
                outputs: BTreeSet::new(),
                tasks,
            };
            if let Some(r) = self.current.take() {
                b.take_over(r);
            }
            for task in plan.stages.into_iter().flatten() {
                self.enqueue(&mut b, task);
            }
            self.recover_into(&mut b);
            self.current = Some(b);
            let cuts: Vec<(NodeId, WorkerId)> = self
                .receivers
                .iter()
                .filter_map(|(s, w)| w.map(|w| (*s, w)))
                .collect();
            for (source, worker) in cuts {
                self.cut(source, worker, number);
            }
        }
        let Some(mut b) = self.current.take() else {
            return;
        };
        self.last_pass = now;
        let mut still = Vec::with_capacity(b.pending.len());
        // Slots a task may take (not those of workers set aside).
        self.slow.retain(|_, until| *until > now);
        let mut free: u32 = self
            .workers
            .iter()
            .filter(|(id, _)| self.slow.is_empty() || !self.set_aside(id, now))
            .map(|(_, w)| w.slots.saturating_sub(w.running))
            .sum();
        let mut requeue = Vec::new();
        for mut p in std::mem::take(&mut b.pending) {
            if free == 0 {
                // Every slot is taken: the rest waits for a finished task.
                still.push(p);
                continue;
            }
            let since = *p.ready_since.get_or_insert(now);
            p.wake = None;
            match self.place(&mut p, now.saturating_duration_since(since), now) {
                Some((worker, local)) => {
                    let sources = self.sources(&p.task);
                    if sources.iter().any(|(_, h)| h.is_empty()) {
                        // An input went away since it became ready: queue
                        // it again (it waits for the input, rebuilt from
                        // lineage).
                        requeue.push(p.task);
                        continue;
                    }
                    let w = self
                        .workers
                        .get_mut(&worker)
                        .expect("placed on a live worker");
                    w.running += 1;
                    free -= 1;
                    self.stats.tasks_scheduled += 1;
                    self.stats.tasks_local += u64::from(local);
                    b.running.insert(
                        p.task.output,
                        Run {
                            task: p.task.clone(),
                            attempts: vec![(worker, now)],
                            watched: None,
                        },
                    );
                    b.rewatch(p.task.output);
                    self.commands.push_back(Command::RunTask {
                        worker,
                        task: p.task,
                        sources,
                    });
                }
                None => {
                    // Waiting for a slot: on its data's worker until the
                    // locality wait ends (a timeout), then on any worker (the
                    // next finished task frees one).
                    let wake = since + self.config.locality_wait;
                    if wake > now {
                        p.wake = Some(wake);
                    }
                    still.push(p);
                }
            }
        }
        b.pending = still;
        for t in requeue {
            self.enqueue(&mut b, t);
        }
        if free > 0 {
            self.speculate(&mut b, now);
        }
        if b.pending.is_empty() && b.blocked.is_empty() && b.running.is_empty() {
            self.finish(b, now);
        } else {
            self.current = Some(b);
        }
    }

    /// How long a task of stage `st` runs before it gets a copy: a multiple
    /// of the stage's median (once half of it finished), at least
    /// `speculation_min`; `None` without speculation or a median.
    fn straggler_after(&self, st: &StageTimes) -> Option<Duration> {
        let factor = self.config.speculation?;
        Some(st.median?.mul_f64(factor).max(self.config.speculation_min))
    }

    /// Each input of `task` with the workers holding it (none when lost).
    fn sources(&self, task: &Task) -> Holders {
        task.inputs
            .iter()
            .map(|i| {
                let h = self.blocks.get(&i.block).map(|e| e.0.clone());
                (i.block, h.unwrap_or_default())
            })
            .collect()
    }

    /// Launches a copy of every straggler on another worker with a free
    /// slot (the least loaded).
    fn speculate(&mut self, b: &mut Batch, now: Instant) {
        debug_assert!(b.watch_is_in_step(), "the straggler watch lists drifted");
        let due: Vec<BlockId> = b
            .stages
            .iter()
            .filter_map(|st| Some((st, self.straggler_after(st)?)))
            .flat_map(|(st, after)| {
                st.watch
                    .iter()
                    .take_while(move |(start, _)| *start + after <= now)
                    .map(|(_, block)| *block)
            })
            .collect();
        for block in due {
            let first = b.running[&block].attempts[0].0;
            // Another worker not set aside; one that is only when no other
            // can ever take the copy (rather than no copy at all).
            let target = |aside_too: bool| {
                self.workers
                    .iter()
                    .filter(|(id, w)| {
                        **id != first
                            && w.running < w.slots
                            && !self.losers.contains(&(**id, block))
                            && (aside_too || !self.set_aside(id, now))
                    })
                    .min_by_key(|(id, w)| (w.running * 1000 / w.slots, **id))
                    .map(|(id, _)| *id)
            };
            let only_aside = self
                .workers
                .keys()
                .all(|id| *id == first || self.set_aside(id, now));
            let Some(worker) = target(false).or_else(|| only_aside.then(|| target(true)).flatten())
            else {
                return;
            };
            let run = b.running.get_mut(&block).expect("listed");
            let sources = self.sources(&run.task);
            if sources.iter().any(|(_, h)| h.is_empty()) {
                continue;
            }
            run.attempts.push((worker, now));
            let task = run.task.clone();
            b.rewatch(block);
            self.workers.get_mut(&worker).expect("live").running += 1;
            self.stats.tasks_speculated += 1;
            self.commands.push_back(Command::RunTask {
                worker,
                task,
                sources,
            });
        }
    }

    /// A task of `worker` lost to a copy by far: the second such strike
    /// within [`Config::slow_block`] sets it aside for that long (one alone
    /// may be a pause that passes), unless half the workers already are. A
    /// task it finishes in less than [`SLOW_FACTOR`] times its stage's
    /// median clears its strike.
    fn strike(&mut self, worker: WorkerId, now: Instant) {
        let block = self.config.slow_block;
        if block.is_zero() || self.set_aside(&worker, now) {
            return;
        }
        let recent = self
            .strikes
            .get(&worker)
            .is_some_and(|t| now.saturating_duration_since(*t) < block);
        if !recent {
            self.strikes.insert(worker, now);
            return;
        }
        let aside = self.slow.values().filter(|until| **until > now).count();
        if 2 * (aside + 1) > self.workers.len() {
            return;
        }
        self.strikes.remove(&worker);
        // A block too long for the clock counts as a day.
        let until = now
            .checked_add(block)
            .or_else(|| now.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(now);
        self.slow.insert(worker, until);
        self.stats.workers_set_aside += 1;
        self.commands.push_back(Command::WorkerSetAside {
            worker,
            period: until.saturating_duration_since(now),
        });
    }

    /// Whether worker `id` is set aside as slow at `now` (never when every
    /// live worker is: then none is).
    fn set_aside(&self, id: &WorkerId, now: Instant) -> bool {
        let aside = |w: &WorkerId| self.slow.get(w).is_some_and(|until| *until > now);
        aside(id) && self.workers.keys().any(|w| !aside(w))
    }

    /// The worker for `task`: where its data is, if it has a slot (or the
    /// locality wait is over); `true` when that is local. A worker set aside
    /// as slow gets nothing, not even its own data's tasks (they fetch it).
    fn place(&self, p: &mut Pending, waited: Duration, now: Instant) -> Option<(WorkerId, bool)> {
        // A worker still running a copy of this task that lost (cancelled,
        // not yet answered) does not get it again until that copy answers:
        // the two answers would be taken for one another.
        let output = p.task.output;
        let free = |id: &WorkerId| {
            self.workers.get(id).is_some_and(|w| w.running < w.slots)
                && !self.losers.contains(&(*id, output))
                && (self.slow.is_empty() || !self.set_aside(id, now))
        };
        let (preferred, pinned) = p.preferred.get_or_insert_with(|| self.preferred(&p.task));
        if let Some(w) = preferred.iter().find(|w| free(w)) {
            return Some((*w, true));
        }
        let slow_holders = !self.slow.is_empty()
            && !preferred.is_empty()
            && preferred.iter().all(|w| self.set_aside(w, now));
        // State stays where it is: its task waits for a slot there (unless
        // its holders are set aside as slow: then it moves).
        if !slow_holders
            && (*pinned || (!preferred.is_empty() && waited < self.config.locality_wait))
        {
            return None;
        }
        // Anywhere: the least loaded worker with a free slot.
        self.workers
            .iter()
            .filter(|(id, _)| free(id))
            .min_by_key(|(id, w)| (w.running * 1000 / w.slots, **id))
            .map(|(id, _)| (*id, preferred.is_empty()))
    }

    /// Where `task`'s data is: the holders of its previous state (then the
    /// task is pinned there), else the workers holding the most bytes of
    /// its inputs (none for a task without input). Computed once per task,
    /// when it becomes ready.
    fn preferred(&self, task: &Task) -> (Vec<WorkerId>, bool) {
        let state = match task.work {
            Work::Keyed {
                has_state: true, ..
            }
            | Work::WindowValue {
                has_state: true, ..
            } => task.inputs.last().map(|i| i.block),
            _ => None,
        };
        if let Some((holders, _)) = state.and_then(|s| self.blocks.get(&s))
            && !holders.is_empty()
        {
            return (holders.clone(), true);
        }
        let mut bytes: BTreeMap<WorkerId, u64> = BTreeMap::new();
        for i in &task.inputs {
            if let Some((holders, size)) = self.blocks.get(&i.block) {
                for h in holders {
                    *bytes.entry(*h).or_default() += size;
                }
            }
        }
        let max = bytes.values().copied().max().unwrap_or(0);
        let most = bytes
            .into_iter()
            .filter(|(_, b)| *b == max && max > 0)
            .map(|(w, _)| w)
            .collect();
        (most, false)
    }

    fn finish(&mut self, b: Batch, now: Instant) {
        if b.number == REBUILD {
            // Only rebuilt lost blocks: nothing to report or drop.
            self.schedule(now);
            return;
        }
        self.stats.batches_done += 1;
        let mut outputs = Vec::new();
        let mut held = BTreeSet::new();
        for (i, sink) in self.job.sinks.iter().enumerate() {
            if !self.job.computes_at(sink.from, b.number) {
                continue;
            }
            let parts = (0..self.job.partitions)
                .map(|part| {
                    let id = BlockId {
                        dataset: DatasetId {
                            node: sink.from,
                            batch: b.number,
                            aux: Aux::Main,
                        },
                        part,
                    };
                    held.insert(id);
                    let holders = self
                        .blocks
                        .get(&id)
                        .map(|h| h.0.clone())
                        .unwrap_or_default();
                    (id, holders)
                })
                .collect();
            outputs.push(SinkOutput { sink: i, parts });
        }
        self.commands.push_back(Command::BatchDone {
            batch: b.number,
            processing: now - b.started,
            delay: b.delay,
            outputs,
        });
        // Retention: drop what no later batch reads, except the outputs
        // the sinks have not written yet.
        let keep = Planner::new(&self.job).needed_after(b.number);
        // Every batch's outputs are held until written (even those later
        // batches need: a later batch's retention must not drop them before
        // the sinks are done), and every batch is, even one without
        // outputs, so that the job ends after its last batch is written.
        self.held.insert(b.number, held.iter().copied().collect());
        // A checkpoint claims whole datasets: it is taken only when every
        // partition of them is stored somewhere (not while some are lost
        // and not rebuilt yet; the next one will be).
        let complete = keep.iter().filter(|d| d.batch <= b.number).all(|d| {
            (0..self.job.partitions).all(|part| {
                self.blocks
                    .get(&BlockId { dataset: *d, part })
                    .is_some_and(|(h, _)| !h.is_empty())
            })
        });
        if self.job.checkpoint_due(b.number) && complete {
            let blocks: Vec<(BlockId, Vec<WorkerId>)> = self
                .blocks
                .iter()
                .filter(|(id, (h, _))| {
                    id.dataset.batch <= b.number && keep.contains(&id.dataset) && !h.is_empty()
                })
                .map(|(id, (h, _))| (*id, h.clone()))
                .collect();
            self.ckpt_held
                .insert(b.number, blocks.iter().map(|(id, _)| *id).collect());
            self.commands.push_back(Command::Checkpoint {
                batch: b.number,
                blocks,
            });
        }
        let all_held = self.held_blocks();
        let mut drops: BTreeMap<WorkerId, Vec<BlockId>> = BTreeMap::new();
        self.blocks.retain(|id, (holders, _)| {
            let kept =
                id.dataset.batch > b.number || keep.contains(&id.dataset) || all_held.contains(id);
            if !kept {
                for h in holders.iter() {
                    drops.entry(*h).or_default().push(*id);
                }
            }
            kept
        });
        for (worker, blocks) in drops {
            self.commands.push_back(Command::Drop { worker, blocks });
        }
        self.schedule(now);
    }
}
