//! What each task computes: the meaning of [`Work`], over blocks in memory.
//!
//! Calls into plugins go through the [`Calls`] trait, which the runtime
//! implements with the Wasm sandbox (and tests with plain closures), so the
//! semantics of every operator, window and state update live here, free of
//! I/O and tested deterministically.

use std::collections::BTreeMap;

use hashbrown::HashMap;

use crate::Batch;
use crate::generate::Pool;
use crate::job::{Inverse, Job, NodeId, NodeKind, Op, PluginOp, Reducer};
use crate::plan::{Task, Work};
use crate::reduce::{self, Native, NativeFn, counted};
use crate::{Error, job};

/// A boxed error from a plugin call.
pub type CallError = Box<dyn std::error::Error + Send + Sync>;

/// Calls into plugin operators (implemented by the runtime over Wasm).
pub trait Calls {
    /// Runs one-input operators of one plugin in order over `input` (map,
    /// flat-map, filter, transform, reduce), in as few calls as it can.
    fn one_input(&self, ops: &[&PluginOp], input: &Batch) -> Result<Batch, CallError>;
    /// [`one_input`](Self::one_input) over a cut of a bigger partition
    /// whose first record is record `first` of that partition: an error
    /// naming a record should number it in the partition. By default, as
    /// `one_input`.
    fn one_input_from(
        &self,
        ops: &[&PluginOp],
        input: &Batch,
        first: usize,
    ) -> Result<Batch, CallError> {
        let _ = first;
        self.one_input(ops, input)
    }
    /// Runs an update-state operator.
    fn update_state(&self, op: &PluginOp, input: &Batch, state: &Batch)
    -> Result<Batch, CallError>;
    /// Runs an inverse operator.
    fn inverse(&self, op: &PluginOp, current: &Batch, leaving: &Batch) -> Result<Batch, CallError>;
    /// The largest input (bytes of keys and values) one call of `op` should
    /// take. A bigger input of record-wise operators (map, flat-map, filter,
    /// optionally ending in a reduce) is cut into pieces of at most this
    /// size, one call each: a partition may then be larger than what one
    /// sandboxed call can hold. Unlimited by default.
    fn max_input_bytes(&self, op: &PluginOp) -> usize {
        let _ = op;
        usize::MAX
    }
}

/// What a run of plugin operators does with its input, as far as cutting
/// it into pieces goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Record by record (map, flat-map, filter): pieces' outputs, joined in
    /// order, are the output of one call.
    Records,
    /// Record-wise operators, then a reduce (or a reduce alone): the joined
    /// outputs of pieces are reduced once more. The reduce is associative
    /// and commutative, and groups come out in order of first appearance,
    /// so this is the output of one call.
    Reduce,
    /// Needs the whole input at once (a transform).
    Whole,
}

/// `calls.one_input(ops, input)`, with an input larger than the operators'
/// [`Calls::max_input_bytes`] cut into pieces when their `shape` allows.
fn call(ops: &[&PluginOp], shape: Shape, input: &Batch, calls: &dyn Calls) -> Result<Batch, Error> {
    let max = ops
        .iter()
        .map(|op| calls.max_input_bytes(op))
        .min()
        .unwrap_or(usize::MAX);
    if input.byte_len() <= max || shape == Shape::Whole || input.len() < 2 {
        return calls.one_input(ops, input).map_err(Error::Call);
    }
    let mut out = Batch::new();
    for range in input.cuts(max) {
        out.extend_from(
            &calls
                .one_input_from(ops, &input.slice(range.clone()), range.start)
                .map_err(Error::Call)?,
        );
    }
    if shape == Shape::Reduce {
        let reduce = &ops[ops.len() - 1..];
        out = if out.byte_len() < input.byte_len() {
            // Smaller each round: this ends.
            call(reduce, Shape::Reduce, &out, calls)?
        } else {
            calls.one_input(reduce, &out).map_err(Error::Call)?
        };
    }
    Ok(out)
}

/// What a task produces: a partition, or (map side of a shuffle) one bucket
/// per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// One partition.
    Part(Batch),
    /// Buckets of a shuffle, one per partition.
    Buckets(Vec<Batch>),
}

impl Block {
    /// The partition, or bucket `bucket` of a shuffle block.
    pub fn batch(&self, bucket: Option<u32>) -> Option<&Batch> {
        match (self, bucket) {
            (Self::Part(b), None) => Some(b),
            (Self::Buckets(v), Some(i)) => v.get(i as usize),
            _ => None,
        }
    }

    /// Records held.
    pub fn records(&self) -> usize {
        match self {
            Self::Part(b) => b.len(),
            Self::Buckets(v) => v.iter().map(Batch::len).sum(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Part(b) => b.byte_len(),
            Self::Buckets(v) => v.iter().map(Batch::byte_len).sum(),
        }
    }
}

/// The generators' pools of lines, built once per job.
#[derive(Debug, Clone, Default)]
pub struct Pools(BTreeMap<NodeId, Pool>);

impl Pools {
    /// Builds the pool of every generator source of `job`.
    pub fn new(job: &Job) -> Self {
        Self(
            job.node_ids()
                .filter_map(|id| match &job.node(id).kind {
                    NodeKind::Source(job::Source::Generator(g)) => Some((id, Pool::new(g))),
                    _ => None,
                })
                .collect(),
        )
    }
}

/// Runs tasks of one job.
#[derive(Debug, Clone, Copy)]
pub struct Executor<'a> {
    job: &'a Job,
    pools: &'a Pools,
}

impl<'a> Executor<'a> {
    /// An executor for `job`, with its generators' `pools`.
    pub fn new(job: &'a Job, pools: &'a Pools) -> Self {
        Self { job, pools }
    }

    /// Computes `task`'s output from its inputs (`inputs[i]` is the batch
    /// named by `task.inputs[i]`).
    pub fn run(&self, task: &Task, inputs: &[&Batch], calls: &dyn Calls) -> Result<Block, Error> {
        let job = self.job;
        let node = task.output.dataset.node;
        let name = &job.node(node).name;
        let fail = |e: Error| match e {
            Error::Task { .. } => e,
            other => Error::Task {
                stream: name.clone(),
                block: task.output.to_string(),
                source: Box::new(other),
            },
        };
        self.run_inner(task, inputs, calls).map_err(fail)
    }

    fn run_inner(&self, task: &Task, inputs: &[&Batch], calls: &dyn Calls) -> Result<Block, Error> {
        let job = self.job;
        let id = task.output.dataset.node;
        let op = || job.node(id).op().expect("a stream");
        let part = |b: Batch| Ok(Block::Part(b));
        match &task.work {
            Work::Generate => {
                let pool = self.pools.0.get(&id).expect("a generator");
                part(pool.partition(
                    task.output.dataset.batch,
                    task.output.part,
                    job.partitions,
                    job.interval,
                ))
            }
            Work::Narrow { chain } => part(self.chain(chain, inputs[0], calls)?),
            Work::Concat => part(reduce::concat(inputs.iter().copied())),
            Work::ShuffleMap {
                chain, consumer, ..
            } => {
                let cop = job.node(*consumer).op().expect("a stream");
                // A plugin reducer runs in the same call as the chain before
                // it: the records it combines never leave the sandbox.
                if let Op::ReduceByKey(Reducer::Plugin(p)) | Op::RunningReduce(Reducer::Plugin(p)) =
                    cop
                    && !chain.is_empty()
                {
                    let combined = self.chain_then(chain, Some(p), inputs[0], calls)?;
                    return Ok(Block::Buckets(reduce::split_by_key(
                        &combined,
                        job.partitions,
                    )));
                }
                let x = self.chain(chain, inputs[0], calls)?;
                let combined = match cop {
                    Op::ReduceByKey(r) | Op::RunningReduce(r) => combine(r, &x, calls)?,
                    Op::CountByKey => COUNT.combine(&x)?,
                    Op::ReduceByKeyAndWindow { reduce: r, .. } => {
                        let values = combine(r, &x, calls)?;
                        counted::attach(&values, &reduce::key_counts(&x))?
                    }
                    Op::CountByWindow(_) => {
                        let n = x.len() as u64;
                        let mut out = Batch::new();
                        if n > 0 {
                            let mut v = n.to_le_bytes().to_vec();
                            v.extend_from_slice(&n.to_le_bytes());
                            out.push(b"", &v);
                        }
                        out
                    }
                    Op::UpdateStateByKey(_) | Op::Join => x,
                    _ => unreachable!("keyed consumers"),
                };
                Ok(Block::Buckets(reduce::split_by_key(
                    &combined,
                    job.partitions,
                )))
            }
            Work::Keyed { buckets, has_state } => {
                let (a, b) = (buckets.0 as usize, buckets.1 as usize);
                let left = reduce::concat(inputs[..a].iter().copied());
                let state = has_state.then(|| inputs[inputs.len() - 1]);
                match op() {
                    Op::ReduceByKey(r) => part(merge(r, &left, calls)?),
                    Op::CountByKey => part(COUNT.merge(&left)?),
                    Op::RunningReduce(r) => {
                        let all = match state {
                            Some(s) => reduce::concat([s, &left]),
                            None => left,
                        };
                        part(merge(r, &all, calls)?)
                    }
                    Op::UpdateStateByKey(p) => {
                        let empty = Batch::new();
                        let out = calls
                            .update_state(p, &left, state.unwrap_or(&empty))
                            .map_err(Error::Call)?;
                        part(out)
                    }
                    Op::Join => {
                        let right = reduce::concat(inputs[a..b].iter().copied());
                        part(reduce::join(&left, &right))
                    }
                    _ => unreachable!("keyed operators"),
                }
            }
            Work::Slice => {
                let r = window_reducer(op());
                part(counted_merge(
                    &r,
                    &reduce::concat(inputs.iter().copied()),
                    calls,
                )?)
            }
            Work::WindowValue {
                entering,
                leaving,
                has_state,
            } => {
                let (e, l) = (*entering as usize, *leaving as usize);
                let r = window_reducer(op());
                let mut enter: Vec<&Batch> = Vec::with_capacity(e + 1);
                if *has_state {
                    enter.push(inputs[inputs.len() - 1]);
                }
                enter.extend(&inputs[..e]);
                let current = counted_merge(&r, &reduce::concat(enter), calls)?;
                if l == 0 {
                    return part(current);
                }
                let gone =
                    counted_merge(&r, &reduce::concat(inputs[e..e + l].iter().copied()), calls)?;
                let inverse = match op() {
                    Op::ReduceByKeyAndWindow {
                        inverse: Some(i), ..
                    } => i.clone(),
                    Op::CountByWindow(_) => Inverse::Subtract,
                    _ => unreachable!("windows with leaving slices have an inverse"),
                };
                part(take_out(&r, &inverse, &current, &gone, calls)?)
            }
            Work::Strip => part(counted::strip(inputs[0])?),
            Work::Restore { checkpoint } => Err(Error::BadValue(format!(
                "block {} is read back from checkpoint {checkpoint} by the runtime, not computed",
                task.output
            )))?,
        }
    }

    /// Runs narrow streams in order, grouping consecutive operators of one
    /// plugin into one call.
    fn chain(&self, chain: &[NodeId], input: &Batch, calls: &dyn Calls) -> Result<Batch, Error> {
        self.chain_then(chain, None, input, calls)
    }

    /// [`chain`](Self::chain), then `then` (a reduce) fused into the last
    /// call when it belongs to the same plugin.
    fn chain_then(
        &self,
        chain: &[NodeId],
        then: Option<&PluginOp>,
        input: &Batch,
        calls: &dyn Calls,
    ) -> Result<Batch, Error> {
        let mut ops: Vec<(&PluginOp, Shape)> = chain
            .iter()
            .map(|id| {
                let op = self.job.node(*id).op();
                let shape = match op {
                    Some(Op::Transform(_)) => Shape::Whole,
                    Some(Op::Map(_) | Op::FlatMap(_) | Op::Filter(_)) => Shape::Records,
                    _ => unreachable!("narrow chains hold plugin operators"),
                };
                let op = op
                    .and_then(Op::narrow_plugin_op)
                    .expect("narrow chains hold plugin operators");
                (op, shape)
            })
            .collect();
        ops.extend(then.map(|op| (op, Shape::Reduce)));
        let mut cur: Option<Batch> = None;
        for group in ops.chunk_by(|a, b| a.0.plugin == b.0.plugin) {
            // Whole if any operator needs it, else a reduce only at the end.
            let shape = if group.iter().any(|g| g.1 == Shape::Whole) {
                Shape::Whole
            } else {
                group[group.len() - 1].1
            };
            let group: Vec<&PluginOp> = group.iter().map(|g| g.0).collect();
            cur = Some(call(&group, shape, cur.as_ref().unwrap_or(input), calls)?);
        }
        Ok(cur.unwrap_or_else(|| input.clone()))
    }
}

const COUNT: Native = Native {
    fun: NativeFn::Count,
    enc: crate::Encoding::U64,
};

/// The reducer a windowed reduce merges with.
fn window_reducer(op: &Op) -> Reducer {
    match op {
        Op::ReduceByKeyAndWindow { reduce, .. } => reduce.clone(),
        Op::CountByWindow(_) => Reducer::Native(COUNT),
        _ => unreachable!("windowed reduces"),
    }
}

/// Map-side combine of raw records.
fn combine(r: &Reducer, x: &Batch, calls: &dyn Calls) -> Result<Batch, Error> {
    match r {
        Reducer::Native(n) => n.combine(x),
        Reducer::Plugin(p) => call(&[p], Shape::Reduce, x, calls),
    }
}

/// Reduce-side merge of combined records.
fn merge(r: &Reducer, x: &Batch, calls: &dyn Calls) -> Result<Batch, Error> {
    match r {
        Reducer::Native(n) => n.merge(x),
        Reducer::Plugin(p) => call(&[p], Shape::Reduce, x, calls),
    }
}

/// Merges counted records: values by the reducer, counts summed.
fn counted_merge(r: &Reducer, x: &Batch, calls: &dyn Calls) -> Result<Batch, Error> {
    let counts = counted::sum_counts(x)?;
    let (values, _) = counted::detach(x)?;
    let merged = merge(r, &values, calls)?;
    counted::attach(&merged, &counts)
}

/// Takes the counted records `gone` out of the counted window `current`:
/// values through the inverse, counts subtracted, keys whose count reaches
/// zero dropped. Keeps `current`'s order.
fn take_out(
    r: &Reducer,
    inverse: &Inverse,
    current: &Batch,
    gone: &Batch,
    calls: &dyn Calls,
) -> Result<Batch, Error> {
    let (cur_vals, cur_counts) = counted::detach(current)?;
    let (gone_vals, gone_counts) = counted::detach(gone)?;
    let mut index: HashMap<&[u8], usize, _> = HashMap::with_hasher(reduce::hasher());
    for (i, (k, _)) in cur_vals.iter().enumerate() {
        index.insert(k, i);
    }
    let mut at = Vec::with_capacity(gone_vals.len());
    let mut before = Batch::with_capacity(gone_vals.len(), 0);
    for (k, _) in gone_vals.iter() {
        let i = *index.get(k).ok_or_else(|| {
            Error::BadValue("a key left a window it was not in (a slice was lost)".into())
        })?;
        at.push(i);
        before.push(k, cur_vals.get(i).1);
    }
    let after = match inverse {
        Inverse::Subtract => match r {
            Reducer::Native(n) => n.subtract(&before, &gone_vals)?,
            Reducer::Plugin(_) => unreachable!("subtract goes with built-in reducers"),
        },
        Inverse::Plugin(p) => calls.inverse(p, &before, &gone_vals).map_err(Error::Call)?,
    };
    if after.len() != before.len() {
        return Err(Error::BadValue(format!(
            "an inverse gave {} records for {}",
            after.len(),
            before.len()
        )));
    }
    let mut counts = cur_counts;
    let mut replaced: Vec<Option<&[u8]>> = vec![None; cur_vals.len()];
    for (j, &i) in at.iter().enumerate() {
        counts[i] = counts[i]
            .checked_sub(gone_counts[j])
            .ok_or_else(|| Error::BadValue("more records left a window than entered it".into()))?;
        replaced[i] = Some(after.get(j).1);
    }
    let mut out = Batch::with_capacity(cur_vals.len(), current.byte_len());
    let mut buf = Vec::new();
    for (i, (k, v)) in cur_vals.iter().enumerate() {
        if counts[i] == 0 {
            continue;
        }
        buf.clear();
        buf.extend_from_slice(&counts[i].to_le_bytes());
        buf.extend_from_slice(replaced[i].unwrap_or(v));
        out.push(k, &buf);
    }
    Ok(out)
}
