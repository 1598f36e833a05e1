//! The embedded engine: one process, each batch's tasks on a thread pool,
//! partitions in an in-memory block store.
//!
//! The engine is driven batch by batch ([`Engine::run_batch`]) with the
//! records each receiver got during the interval; it keeps no clock, so
//! tests drive it through many intervals in microseconds, and the
//! [`driver`](crate::driver) adds the real clock, receivers and sinks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dstream_core::Batch;
use dstream_core::exec::{Block, Executor, Pools};
use dstream_core::job::{Job, NodeId, NodeKind};
use dstream_core::plan::{Aux, BlockId, DatasetId, Planner, Work};
use dstream_wasm::Plugin;
use rayon::prelude::*;

use crate::Error;
use crate::calls::WasmCalls;
use crate::store::BlockStore;

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStats {
    /// Batch number.
    pub batch: u64,
    /// Records that entered from sources.
    pub records_in: usize,
    /// Tasks run.
    pub tasks: usize,
    /// Stages run.
    pub stages: usize,
    /// Calls into Wasm.
    pub wasm_calls: usize,
    /// Wall time to run the tasks.
    pub processing: Duration,
    /// Wall time of each stage, with the kind of its first task.
    pub stage_times: Vec<(&'static str, Duration)>,
}

/// The embedded engine for one job.
#[derive(Debug)]
pub struct Engine {
    job: Arc<Job>,
    plugins: Arc<BTreeMap<String, Plugin>>,
    pool: rayon::ThreadPool,
    store: BlockStore,
    pools: Pools,
}

impl Engine {
    /// An engine running `job` with `plugins` (by job-local name) on
    /// `threads` threads.
    pub fn new(job: Job, plugins: BTreeMap<String, Plugin>, threads: usize) -> Result<Self, Error> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("dstream-task-{i}"))
            .build()
            .map_err(|e| Error::io("starting the task threads", std::io::Error::other(e)))?;
        Ok(Self {
            pools: Pools::new(&job),
            job: Arc::new(job),
            plugins: Arc::new(plugins),
            pool,
            store: BlockStore::new(),
        })
    }

    /// The job.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The block store.
    pub fn store(&self) -> &BlockStore {
        &self.store
    }

    /// Runs batch `batch` (1-based, in order). `received` holds, for each
    /// receiver source, the records it got during the interval (missing
    /// sources got nothing).
    pub fn run_batch(
        &self,
        batch: u64,
        mut received: BTreeMap<NodeId, Batch>,
    ) -> Result<BatchStats, Error> {
        let started = Instant::now();
        let job = &*self.job;
        let parts = job.partitions;
        let fail = |source: dstream_core::Error| Error::Batch { batch, source };
        // Received input: contiguous chunks, one block per partition.
        for (id, _) in job.receivers() {
            let input = received.remove(&id).unwrap_or_default();
            for (p, chunk) in chunks(&input, parts).into_iter().enumerate() {
                self.store.insert(
                    block(id, batch, Aux::Main, p as u32),
                    Arc::new(Block::Part(chunk)),
                );
            }
        }
        let planner = Planner::new(job);
        let plan = planner.plan(batch);
        for b in plan.reads_from_earlier() {
            if self.store.get(&b).is_none() {
                return Err(fail(dstream_core::Error::BadValue(format!(
                    "block {b} of `{}` is needed but not in the store (state lost?)",
                    job.node(b.dataset.node).name
                ))));
            }
        }
        let calls = AtomicUsize::new(0);
        let wasm = WasmCalls {
            plugins: &self.plugins,
            calls: &calls,
        };
        let exec = Executor::new(job, &self.pools);
        let mut tasks = 0;
        let mut stage_times = Vec::with_capacity(plan.stages.len());
        for stage in &plan.stages {
            tasks += stage.len();
            let stage_started = Instant::now();
            let results: Vec<Result<(BlockId, Block), dstream_core::Error>> =
                self.pool.install(|| {
                    stage
                        .par_iter()
                        .map(|task| {
                            let blocks: Vec<Arc<Block>> = task
                                .inputs
                                .iter()
                                .map(|i| {
                                    self.store
                                        .get(&i.block)
                                        .expect("stored by an earlier stage")
                                })
                                .collect();
                            let inputs: Vec<&Batch> = task
                                .inputs
                                .iter()
                                .zip(&blocks)
                                .map(|(i, b)| b.batch(i.bucket).expect("the right kind of block"))
                                .collect();
                            let span = tracing::trace_span!("task", block = %task.output);
                            let _g = span.enter();
                            exec.run(task, &inputs, &wasm).map(|b| (task.output, b))
                        })
                        .collect()
                });
            for r in results {
                let (id, b) = r.map_err(fail)?;
                self.store.insert(id, Arc::new(b));
            }
            stage_times.push((work_name(&stage[0].work), stage_started.elapsed()));
        }
        let records_in = job
            .node_ids()
            .filter(|id| matches!(job.node(*id).kind, NodeKind::Source(_)))
            .map(|id| {
                self.store
                    .dataset(&DatasetId {
                        node: id,
                        batch,
                        aux: Aux::Main,
                    })
                    .iter()
                    .map(|(_, b)| b.records())
                    .sum::<usize>()
            })
            .sum();
        Ok(BatchStats {
            batch,
            records_in,
            tasks,
            stages: plan.stages.len(),
            wasm_calls: calls.load(Ordering::Relaxed),
            processing: started.elapsed(),
            stage_times,
        })
    }

    /// The partitions of `node`'s dataset at `batch`, in order; `None` when
    /// the node has no dataset then (its window did not slide) or it is no
    /// longer stored.
    pub fn dataset(&self, node: NodeId, batch: u64) -> Option<Vec<Arc<Block>>> {
        let v = self.store.dataset(&DatasetId {
            node,
            batch,
            aux: Aux::Main,
        });
        (v.len() == self.job.partitions as usize).then(|| v.into_iter().map(|(_, b)| b).collect())
    }

    /// Drops every block that batches after `batch` do not need.
    pub fn finish_batch(&self, batch: u64) {
        let keep = Planner::new(&self.job).needed_after(batch);
        self.store.retain(batch, &keep);
    }
}

fn work_name(w: &Work) -> &'static str {
    match w {
        Work::Generate => "generate",
        Work::Narrow { .. } => "narrow",
        Work::Concat => "concat",
        Work::ShuffleMap { .. } => "shuffle-map",
        Work::Keyed { .. } => "keyed",
        Work::Slice => "slice",
        Work::WindowValue { .. } => "window",
        Work::Strip => "strip",
        Work::Restore { .. } => "restore",
    }
}

fn block(node: NodeId, batch: u64, aux: Aux, part: u32) -> BlockId {
    BlockId {
        dataset: DatasetId { node, batch, aux },
        part,
    }
}

/// Splits `input` into `parts` contiguous chunks of near-equal record
/// counts.
pub(crate) fn chunks(input: &Batch, parts: u32) -> Vec<Batch> {
    let n = input.len();
    let parts = parts as usize;
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let end = start + n / parts + usize::from(p < n % parts);
        out.push(input.slice(start..end));
        start = end;
    }
    out
}
