//! Batch planning: for each interval, the datasets, their lineage, and the
//! tasks (in stages split at shuffles) that compute them.
//!
//! A **dataset** is one interval of one stream, `(node, batch)`, with
//! [`Job::partitions`] partitions; a **block** is one partition of it. Every
//! task computes one block from blocks it names: that list is the dataset's
//! lineage at partition grain, so a lost block can be recomputed anywhere
//! from what it names.
//!
//! Narrow operators (map, flat-map, filter, transform) are fused: a chain of
//! them runs in one task, and when the chain ends in a shuffle its map side
//! (combine by key, split by hash) runs in the same task too. Their
//! intermediate datasets are never stored; a stream is stored when a sink,
//! a window, a union or several streams read it.
//!
//! ```
//! use dstream_core::job::JobFile;
//! use dstream_core::plan::{Planner, Work};
//!
//! let job = JobFile::parse(r#"
//! name = "wc"
//! interval = "1s"
//! partitions = 2
//! [sources.lines]
//! kind = "generator"
//! rate = 100
//! [streams.counts]
//! from = "lines"
//! count_by_key = true
//! [sinks.out]
//! from = "counts"
//! kind = "stdout"
//! "#).unwrap().resolve(&Default::default()).unwrap();
//! let plan = Planner::new(&job).plan(1);
//! // Generate, then the map side of the shuffle, then the reduce side.
//! assert_eq!(plan.stages.len(), 3);
//! assert!(plan.stages[1].iter().all(|t| matches!(t.work, Work::ShuffleMap { .. })));
//! assert_eq!(plan.stages[2].len(), 2);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::job::{Job, NodeId, NodeKind, Op, Window};

/// What a dataset holds, besides a stream's records.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Aux {
    /// The stream's records.
    Main,
    /// Map-side output of the shuffle into a keyed stream, from its input
    /// number `side` (0, or 1 for the right side of a join); each block holds
    /// one bucket per partition.
    Shuffle(u8),
    /// One batch of a windowed reduce, combined by key, with counts.
    Slice,
    /// The value of a windowed reduce with an inverse, with counts.
    WindowState,
}

/// One dataset: a node at a batch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct DatasetId {
    /// The source or stream.
    pub node: NodeId,
    /// Batch number (1 is the first interval).
    pub batch: u64,
    /// Which of its datasets.
    pub aux: Aux,
}

/// One partition of a dataset.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct BlockId {
    /// The dataset.
    pub dataset: DatasetId,
    /// Partition index.
    pub part: u32,
}

impl std::fmt::Display for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.dataset;
        let aux = match d.aux {
            Aux::Main => String::new(),
            Aux::Shuffle(s) => format!(".shuffle{s}"),
            Aux::Slice => ".slice".into(),
            Aux::WindowState => ".window".into(),
        };
        write!(f, "n{}{aux}@{}#{}", d.node.0, d.batch, self.part)
    }
}

/// A task's input: a block, or one bucket of a shuffle block.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Input {
    /// The block.
    pub block: BlockId,
    /// For shuffle blocks: the bucket read.
    pub bucket: Option<u32>,
}

/// What a task does (the runtime's executor, `exec`, gives the meaning).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Work {
    /// A generator source's partition, from the batch number alone.
    Generate,
    /// Runs a chain of narrow operators over one partition; inputs: the
    /// chain head's input partitions.
    Narrow {
        /// The streams, upstream first; the output is the last one's.
        chain: Vec<NodeId>,
    },
    /// All records of the inputs, in order (union, and plain windows).
    Concat,
    /// The map side of a shuffle: the chain (maybe empty) over the input
    /// partition, then combine by key when the consumer reduces, then one
    /// bucket per partition by key hash.
    ShuffleMap {
        /// Narrow streams fused before the shuffle.
        chain: Vec<NodeId>,
        /// The keyed stream the shuffle feeds.
        consumer: NodeId,
        /// Which of its inputs this is.
        side: u8,
    },
    /// The reduce side of a keyed stream. Inputs: bucket `part` of every
    /// map-side block (then, for state, the previous state partition).
    Keyed {
        /// How many inputs are buckets of side 0 (for a join, the rest up
        /// to `buckets.1` are side 1).
        buckets: (u32, u32),
        /// True when the last input is the previous state.
        has_state: bool,
    },
    /// One batch of a windowed reduce (counted), from buckets.
    Slice,
    /// The window value. Inputs: `entering` counted slices, then `leaving`
    /// counted slices, then (with an inverse) the previous window state.
    WindowValue {
        /// Slices entering (or, without inverse, all in the window).
        entering: u32,
        /// Slices leaving (inverse only).
        leaving: u32,
        /// True when the last input is the previous window state.
        has_state: bool,
    },
    /// The stream's records from a counted window state.
    Strip,
    /// A block read back from the checkpoint of batch `checkpoint` (the
    /// start of lineage after a loss): no input, done by the runtime.
    Restore {
        /// The checkpoint's batch.
        checkpoint: u64,
    },
}

/// One task: compute `output` from `inputs`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// The block it computes.
    pub output: BlockId,
    /// How.
    pub work: Work,
    /// What it reads, in order.
    pub inputs: Vec<Input>,
}

/// The tasks of one batch, in stages: every task of a stage reads only
/// blocks of earlier stages or earlier batches, so a stage's tasks run in
/// parallel.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchPlan {
    /// Batch number.
    pub batch: u64,
    /// Stages in order.
    pub stages: Vec<Vec<Task>>,
}

impl BatchPlan {
    /// All tasks, stage by stage.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.stages.iter().flatten()
    }

    /// Blocks this batch reads from earlier batches (state, windows): they
    /// must be in the block store before it runs.
    pub fn reads_from_earlier(&self) -> BTreeSet<BlockId> {
        self.tasks()
            .flat_map(|t| t.inputs.iter())
            .map(|i| i.block)
            .filter(|b| b.dataset.batch < self.batch)
            .collect()
    }
}

/// Plans batches of a job.
#[derive(Debug, Clone)]
pub struct Planner<'a> {
    job: &'a Job,
    /// Narrow streams computed inside their consumer's task, never stored.
    fused: BTreeSet<NodeId>,
}

impl<'a> Planner<'a> {
    /// A planner for `job`.
    pub fn new(job: &'a Job) -> Self {
        let mut fused = BTreeSet::new();
        let sunk: BTreeSet<NodeId> = job.sinks.iter().map(|s| s.from).collect();
        for id in job.node_ids() {
            let n = job.node(id);
            if n.op().and_then(Op::narrow_plugin_op).is_none() || sunk.contains(&id) {
                continue;
            }
            let consumers: Vec<NodeId> = job.consumers(id).collect();
            let [c] = consumers.as_slice() else { continue };
            let cn = job.node(*c);
            let reads_once = cn.inputs.iter().filter(|i| **i == id).count() == 1;
            let op = cn.op().expect("consumers are streams");
            let fusable = op.narrow_plugin_op().is_some() || op.is_keyed();
            if reads_once && fusable {
                fused.insert(id);
            }
        }
        Self { job, fused }
    }

    /// True when `id` is computed inside its consumer's task.
    pub fn is_fused(&self, id: NodeId) -> bool {
        self.fused.contains(&id)
    }

    /// The narrow streams fused into a task whose last stream is `id`
    /// (upstream first, ending with `id`), and the node the chain reads.
    fn chain_ending_at(&self, id: NodeId) -> (Vec<NodeId>, NodeId) {
        let mut chain = vec![id];
        loop {
            let head = self.job.node(chain[0]);
            let parent = head.inputs[0];
            if self.fused.contains(&parent) {
                chain.insert(0, parent);
            } else {
                return (chain, parent);
            }
        }
    }

    /// The tasks of batch `batch` (1-based).
    pub fn plan(&self, batch: u64) -> BatchPlan {
        let job = self.job;
        let parts = job.partitions;
        let mut b = Builder {
            parts,
            stage_of: BTreeMap::new(),
            tasks: Vec::new(),
        };
        let ds = |node: NodeId, batch: u64, aux: Aux| DatasetId { node, batch, aux };
        let whole = |dataset: DatasetId, part: u32| Input {
            block: BlockId { dataset, part },
            bucket: None,
        };

        for id in job.node_ids() {
            let node = job.node(id);
            let at = job.computes_at(id, batch);
            if self.fused.contains(&id) {
                continue;
            }
            let main = ds(id, batch, Aux::Main);
            let op = match &node.kind {
                NodeKind::Source(src) => {
                    if at && src.is_replayable() {
                        b.emit(main, Work::Generate, |_| Vec::new());
                    }
                    continue;
                }
                NodeKind::Stream(op) => op,
            };
            let windowed_reduce =
                matches!(op, Op::ReduceByKeyAndWindow { .. } | Op::CountByWindow(_));
            // A windowed reduce takes a slice at each batch of its input,
            // and gives a value only where its window slides.
            let input_at = job.computes_at(node.inputs[0], batch);
            if !(at || (windowed_reduce && input_at)) {
                continue;
            }
            match op {
                Op::Map(_) | Op::FlatMap(_) | Op::Filter(_) | Op::Transform(_) => {
                    let (chain, src) = self.chain_ending_at(id);
                    b.emit(main, Work::Narrow { chain }, |p| {
                        vec![whole(ds(src, batch, Aux::Main), p)]
                    });
                }
                Op::Union => {
                    b.emit(main, Work::Concat, |p| {
                        node.inputs
                            .iter()
                            .map(|i| whole(ds(*i, batch, Aux::Main), p))
                            .collect()
                    });
                }
                Op::Window(w) => {
                    let parent = node.inputs[0];
                    let step = job.node(parent).slide;
                    b.emit(main, Work::Concat, |p| {
                        window_batches(batch, w.length)
                            .filter(|b| b % step == 0)
                            .map(|b| whole(ds(parent, b, Aux::Main), p))
                            .collect()
                    });
                }
                _ => {
                    // Keyed: the map side for each input, then the reduce side.
                    for (side, parent) in node.inputs.iter().enumerate() {
                        let (chain, src) = if self.fused.contains(parent) {
                            self.chain_ending_at(*parent)
                        } else {
                            (Vec::new(), *parent)
                        };
                        let work = Work::ShuffleMap {
                            chain,
                            consumer: id,
                            side: side as u8,
                        };
                        b.emit(ds(id, batch, Aux::Shuffle(side as u8)), work, |p| {
                            vec![whole(ds(src, batch, Aux::Main), p)]
                        });
                    }
                    let buckets = |side: u8, p: u32| -> Vec<Input> {
                        (0..parts)
                            .map(|j| Input {
                                block: BlockId {
                                    dataset: ds(id, batch, Aux::Shuffle(side)),
                                    part: j,
                                },
                                bucket: Some(p),
                            })
                            .collect()
                    };
                    let prev = batch.checked_sub(node.slide).filter(|b| *b > 0);
                    match op {
                        Op::ReduceByKey(_) | Op::CountByKey => {
                            let work = Work::Keyed {
                                buckets: (parts, parts),
                                has_state: false,
                            };
                            b.emit(main, work, |p| buckets(0, p));
                        }
                        Op::Join => {
                            let work = Work::Keyed {
                                buckets: (parts, 2 * parts),
                                has_state: false,
                            };
                            b.emit(main, work, |p| {
                                let mut v = buckets(0, p);
                                v.extend(buckets(1, p));
                                v
                            });
                        }
                        Op::RunningReduce(_) | Op::UpdateStateByKey(_) => {
                            let work = Work::Keyed {
                                buckets: (parts, parts),
                                has_state: prev.is_some(),
                            };
                            b.emit(main, work, |p| {
                                let mut v = buckets(0, p);
                                v.extend(prev.map(|b| whole(ds(id, b, Aux::Main), p)));
                                v
                            });
                        }
                        Op::ReduceByKeyAndWindow {
                            window, inverse, ..
                        } => {
                            b.emit(ds(id, batch, Aux::Slice), Work::Slice, |p| buckets(0, p));
                            if at {
                                self.window_value(&mut b, id, batch, *window, inverse.is_some());
                            }
                        }
                        Op::CountByWindow(window) => {
                            b.emit(ds(id, batch, Aux::Slice), Work::Slice, |p| buckets(0, p));
                            if at {
                                self.window_value(&mut b, id, batch, *window, true);
                            }
                        }
                        _ => unreachable!("keyed operators"),
                    }
                }
            }
        }

        let depth = b.tasks.iter().map(|(s, _)| s + 1).max().unwrap_or(0);
        let mut stages = vec![Vec::new(); depth];
        for (s, t) in b.tasks {
            stages[s].push(t);
        }
        stages.retain(|s| !s.is_empty());
        BatchPlan { batch, stages }
    }

    /// The value of a windowed reduce at `batch`: from the slices in the
    /// window, or (with an inverse) from the previous value, the slices
    /// entering and the slices leaving.
    fn window_value(&self, b: &mut Builder, id: NodeId, batch: u64, w: Window, inverse: bool) {
        let step = self.job.node(self.job.node(id).inputs[0]).slide;
        let ds = |batch: u64, aux: Aux| DatasetId {
            node: id,
            batch,
            aux,
        };
        let (entering, leaving, prev): (Vec<u64>, Vec<u64>, Option<u64>) = if inverse {
            (
                window_batches(batch, w.slide)
                    .filter(|b| b % step == 0)
                    .collect(),
                window_batches(batch.saturating_sub(w.length), w.slide)
                    .filter(|b| b % step == 0)
                    .collect(),
                batch.checked_sub(w.slide).filter(|b| *b > 0),
            )
        } else {
            (
                window_batches(batch, w.length)
                    .filter(|b| b % step == 0)
                    .collect(),
                Vec::new(),
                None,
            )
        };
        let work = Work::WindowValue {
            entering: entering.len() as u32,
            leaving: leaving.len() as u32,
            has_state: prev.is_some(),
        };
        let input = |dataset: DatasetId, part: u32| Input {
            block: BlockId { dataset, part },
            bucket: None,
        };
        b.emit(ds(batch, Aux::WindowState), work, |p| {
            let mut v: Vec<Input> = entering
                .iter()
                .chain(&leaving)
                .map(|b| input(ds(*b, Aux::Slice), p))
                .collect();
            v.extend(prev.map(|b| input(ds(b, Aux::WindowState), p)));
            v
        });
        b.emit(ds(batch, Aux::Main), Work::Strip, |p| {
            vec![input(ds(batch, Aux::WindowState), p)]
        });
    }
}

impl Planner<'_> {
    /// How many batches back any batch reads (windows, state).
    fn horizon(&self) -> u64 {
        self.job
            .nodes
            .iter()
            .map(|n| {
                let w = n
                    .op()
                    .and_then(Op::window)
                    .map_or(0, |w| w.length + w.slide);
                w.max(n.slide)
            })
            .max()
            .unwrap_or(1)
            + 1
    }

    /// The datasets of batches up to `batch` that later batches still read:
    /// state, window contents, the last window values. Everything else can
    /// be dropped once `batch` is done, and a checkpoint at `batch` holds
    /// exactly these.
    pub fn needed_after(&self, batch: u64) -> BTreeSet<DatasetId> {
        let mut out = BTreeSet::new();
        for later in batch + 1..=batch + self.horizon() {
            for b in self.plan(later).reads_from_earlier() {
                if b.dataset.batch <= batch {
                    out.insert(b.dataset);
                }
            }
        }
        out
    }
}

/// Collects tasks with their stage: one after the latest stage they read.
struct Builder {
    parts: u32,
    stage_of: BTreeMap<DatasetId, usize>,
    tasks: Vec<(usize, Task)>,
}

impl Builder {
    fn emit(&mut self, dataset: DatasetId, work: Work, inputs: impl Fn(u32) -> Vec<Input>) {
        let mut stage = 0;
        let mut new = Vec::with_capacity(self.parts as usize);
        for part in 0..self.parts {
            let inputs = inputs(part);
            let after = inputs
                .iter()
                .filter_map(|i| self.stage_of.get(&i.block.dataset))
                .max()
                .map_or(0, |s| s + 1);
            stage = stage.max(after);
            new.push(Task {
                output: BlockId { dataset, part },
                work: work.clone(),
                inputs,
            });
        }
        self.stage_of.insert(dataset, stage);
        self.tasks.extend(new.into_iter().map(|t| (stage, t)));
    }
}

/// The batches `(end - length, end]` that exist (>= 1).
fn window_batches(end: u64, length: u64) -> impl Iterator<Item = u64> {
    (end.saturating_sub(length) + 1).max(1)..=end
}
