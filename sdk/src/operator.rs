//! Operators, plugins, and running them over a partition.
//!
//! The attributes (`#[dstream::map]`, ...) turn a plain function into an
//! [`Operator`]: its description plus a function that runs it over a whole
//! partition. [`plugin!`](crate::plugin) gathers a crate's operators into a
//! [`Plugin`], which the Wasm export glue calls, and which tests and benches
//! call natively with the very same code.

use std::fmt;

use crate::batch::{Batch, Records};
use crate::codec::Encoding;
use crate::params::{ParamSpec, RawParams};

/// The kinds of operator (mirrors `kind` in the WIT contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One record in, one record out.
    Map,
    /// One record in, zero or more out.
    FlatMap,
    /// Keep or drop each record.
    Filter,
    /// Combine the values of one key (associative, commutative).
    Reduce,
    /// Undo a reduce (windows with an inverse function).
    Inverse,
    /// Key, new values, old state -> new state or none.
    UpdateState,
    /// Whole partition in, partition out.
    Transform,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Map => "map",
            Kind::FlatMap => "flat-map",
            Kind::Filter => "filter",
            Kind::Reduce => "reduce",
            Kind::Inverse => "inverse",
            Kind::UpdateState => "update-state",
            Kind::Transform => "transform",
        })
    }
}

/// An operator's failure: a message and, where known, the input record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// What went wrong.
    pub message: String,
    /// Index of the input record that failed, if one did.
    pub record: Option<u32>,
}

impl OpError {
    /// A failure not tied to one record.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            record: None,
        }
    }

    /// A failure at input record `i`.
    pub fn at(i: usize, message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            record: Some(i as u32),
        }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.record {
            Some(i) => write!(f, "record {i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for OpError {}

/// Runs a one-input operator over a partition, appending to `out`.
pub type OneInput = fn(Records<'_>, &RawParams<'_>, &mut Batch) -> Result<(), OpError>;
/// Runs a two-input operator (inverse: current, leaving; update-state:
/// input, state) over a partition, appending to `out`.
pub type TwoInput = fn(Records<'_>, Records<'_>, &RawParams<'_>, &mut Batch) -> Result<(), OpError>;
/// Runs a filter over a partition, appending the kept indices.
pub type Select = fn(Records<'_>, &RawParams<'_>, &mut Vec<u32>) -> Result<(), OpError>;

/// Runs a map or flat-map over a partition, handing each output record to a
/// [`Sink`] (in a pipeline, the reduce after it) instead of a batch.
pub type Feed = fn(Records<'_>, &RawParams<'_>, &mut dyn Sink) -> Result<(), OpError>;

/// Runs a pipeline of two stages, a map or flat-map then a reduce, as one
/// loop over a partition: the input, the parameters of each stage, and the
/// batch the groups are appended to. Made by [`plugin!`](crate::plugin) for
/// every such pair of a plugin's operators.
#[derive(Clone, Copy, Debug)]
pub struct Fused {
    /// Runs the pair over a whole partition.
    pub run: RunFused,
    /// Starts the pair for an input that comes piece by piece.
    pub start: StartFused,
}

/// [`Fused::run`]: the input, the parameters of each stage, the batch the
/// groups are appended to.
pub type RunFused =
    fn(Records<'_>, &RawParams<'_>, &RawParams<'_>, &mut Batch) -> Result<(), FusedError>;

/// [`Fused::start`]: the parameters of each stage.
pub type StartFused = fn(&RawParams<'_>, &RawParams<'_>) -> Result<Box<dyn Pieces>, FusedError>;

/// A fused pair ([`Fused::start`]) fed its input piece by piece: the groups
/// are kept from one piece to the next.
pub trait Pieces {
    /// Runs the pair over the next piece.
    fn push(&mut self, input: Records<'_>) -> Result<(), FusedError>;
    /// Appends the groups of every piece pushed to `out`.
    fn finish(&mut self, out: &mut Batch);
}

/// The error of a [`Fused`] pipeline: which of its two stages failed (0 or
/// 1), and how.
#[derive(Debug)]
pub struct FusedError {
    /// The stage: 0 (the map or flat-map) or 1 (the reduce).
    pub stage: usize,
    /// Its error; a record index counts that stage's input.
    pub error: OpError,
}

/// Takes records one by one, as bytes: what a [`Feed`] writes to.
pub trait Sink {
    /// Takes one record. A sink that refuses one keeps why (see
    /// [`Combine::take_error`]), so that the hot path returns no more than a
    /// flag.
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), Refused>;
}

/// A record a [`Sink`] did not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

impl Sink for Batch {
    #[inline]
    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), Refused> {
        Batch::push(self, key, value);
        Ok(())
    }
}

/// Combines the values of each key over a partition that comes in pieces (a
/// [`Plugin::pipeline`]'s chunks, or records pushed one by one as a
/// [`Sink`]), keeping its groups until [`Combine::finish`]. Record indices in
/// its errors count every record it was given.
pub trait Combine: Sink {
    /// Folds the records of `chunk` into the groups.
    fn add(&mut self, chunk: Records<'_>) -> Result<(), OpError>;
    /// Why the last [`Sink::push`] was refused, taken: a stage feeding this
    /// combiner fails with a placeholder error, and the pipeline asks here
    /// whose the failure is.
    fn take_error(&mut self) -> Option<OpError>;
    /// Appends one record per key to `out`, in order of first appearance.
    fn finish(&mut self, out: &mut Batch);
}

/// Starts a [`Combine`] for one partition, with the call's parameters.
pub type Combiner = fn(&RawParams<'_>) -> Result<Box<dyn Combine>, OpError>;

/// How an operator runs over a partition, by kind.
#[derive(Clone, Copy, Debug)]
pub enum Runner {
    /// map, flat-map, reduce, transform.
    OneInput(OneInput),
    /// filter.
    Select(Select),
    /// inverse, update-state.
    TwoInput(TwoInput),
    /// A map or flat-map that writes to a batch (the first function, as
    /// [`Runner::OneInput`]) or to a [`Sink`] (the second): in a pipeline,
    /// the last one before a reduce hands its records straight to the reduce.
    PerRecord(OneInput, Feed),
    /// A reduce that runs over a whole partition (the first function, as
    /// [`Runner::OneInput`]) or keeps its groups while a pipeline feeds it
    /// (the second), so that the per-record stages before it never
    /// materialise their output. The attribute makes one for values that own
    /// their data (numbers, `bool`, `String`, `Vec<u8>`, `()`), which can
    /// outlive the records they came from.
    Reduce(OneInput, Combiner),
}

/// One operator: its description and how to run it. Made by the attributes.
#[derive(Clone, Copy, Debug)]
pub struct Operator {
    /// Name, as a job refers to it (`plugin/name`).
    pub name: &'static str,
    /// Kind.
    pub kind: Kind,
    /// From the function's doc comment.
    pub description: &'static str,
    /// The parameters it accepts.
    pub params: fn() -> Vec<ParamSpec>,
    /// Encodings of input key and value.
    pub input: (Encoding, Encoding),
    /// Encodings of output key and value.
    pub output: (Encoding, Encoding),
    /// The batch function.
    pub runner: Runner,
}

/// Records per chunk of a [`Plugin::pipeline`].
pub const PIPELINE_CHUNK: usize = 4096;

/// One resolved stage of a pipeline.
struct Stage<'a> {
    n: usize,
    op: &'static Operator,
    params: RawParams<'a>,
}

impl Stage<'_> {
    /// Runs this one-input stage over `input`, appending to `out`; an error
    /// names the stage, and its record index is shifted by `first` (the
    /// chunk's offset in the pipeline's input, for the first stage).
    fn run(&self, input: Records<'_>, first: usize, out: &mut Batch) -> Result<(), OpError> {
        let r = match self.op.runner {
            Runner::OneInput(f) | Runner::PerRecord(f, _) | Runner::Reduce(f, _) => {
                f(input, &self.params, out)
            }
            Runner::Select(f) => {
                let mut keep = Vec::new();
                f(input, &self.params, &mut keep).map(|()| {
                    for i in keep {
                        let (k, v) = input.get(i as usize);
                        out.push(k, v);
                    }
                })
            }
            Runner::TwoInput(_) => unreachable!("checked: one-input stages only"),
        };
        r.map_err(|e| self.error(e, first))
    }

    /// `e` naming this stage, its record index shifted by `first`.
    fn error(&self, e: OpError, first: usize) -> OpError {
        OpError {
            message: format!("stage {} ({}): {}", self.n, self.op.name, e.message),
            record: e.record.map(|r| r + first as u32),
        }
    }

    /// True when this stage can hand its records to a [`Combine`] without a
    /// batch in between (see [`Stage::feed`]).
    fn feeds(&self) -> bool {
        matches!(self.op.runner, Runner::PerRecord(..) | Runner::Select(_))
    }

    /// Runs this stage over `input`, handing its records to `c`; errors as
    /// [`Stage::run`], except those of `c`, which name `reduce`.
    fn feed(
        &self,
        input: Records<'_>,
        first: usize,
        c: &mut dyn Combine,
        reduce: &Stage<'_>,
    ) -> Result<(), OpError> {
        let r = match self.op.runner {
            Runner::PerRecord(_, f) => f(input, &self.params, c),
            Runner::Select(f) => {
                let mut keep = Vec::new();
                f(input, &self.params, &mut keep).and_then(|()| {
                    keep.iter().try_for_each(|&i| {
                        let (k, v) = input.get(i as usize);
                        c.push(k, v).map_err(|Refused| crate::codec::refused())
                    })
                })
            }
            _ => unreachable!("checked: a stage that feeds"),
        };
        r.map_err(|e| match c.take_error() {
            Some(e) => reduce.error(e, 0),
            None => self.error(e, first),
        })
    }

    /// A combiner for this reduce stage, if it can combine chunk by chunk.
    fn combiner(&self) -> Result<Option<Box<dyn Combine>>, OpError> {
        match self.op.runner {
            Runner::Reduce(_, start) => start(&self.params).map(Some).map_err(|e| self.error(e, 0)),
            _ => Ok(None),
        }
    }
}

/// Runs per-record `stages` (and then `reduce`, if any) over `input` chunk
/// by chunk; see [`Plugin::pipeline`].
fn chunked(
    input: Records<'_>,
    stages: &[Stage<'_>],
    reduce: Option<&Stage<'_>>,
) -> Result<Batch, OpError> {
    let mut out = Batch::new();
    let mut combine = match reduce {
        Some(r) => r.combiner()?,
        None => None,
    };
    let mut bufs = Default::default();
    chunks_into(
        input,
        0,
        stages,
        reduce,
        combine.as_deref_mut(),
        &mut bufs,
        &mut out,
    )?;
    match (reduce, combine) {
        (_, Some(mut c)) => {
            c.finish(&mut out);
            Ok(out)
        }
        (Some(r), None) if input.len() > PIPELINE_CHUNK => {
            let mut combined = Batch::with_capacity(out.len(), 0);
            r.run(out.records(), 0, &mut combined)?;
            Ok(combined)
        }
        _ => Ok(out),
    }
}

/// The loop of [`chunked`]: runs per-record `stages` over `input` chunk by
/// chunk, then folds each chunk's output into `combine` (the groups of
/// `reduce`, kept across chunks), or without one appends it to `out`
/// (combined first by `reduce`, if any). `bufs` are reused buffers; the
/// first stage numbers the records of `input` from `offset`.
#[allow(clippy::too_many_arguments)]
fn chunks_into(
    input: Records<'_>,
    offset: usize,
    stages: &[Stage<'_>],
    reduce: Option<&Stage<'_>>,
    mut combine: Option<&mut (dyn Combine + 'static)>,
    bufs: &mut [Batch; 2],
    out: &mut Batch,
) -> Result<(), OpError> {
    // With a combiner, the last stage hands its records straight to it when
    // it can; the stages before write to two reused buffers.
    let last = stages.len() - 1;
    let buffered = if combine.is_some() && stages[last].feeds() {
        last
    } else {
        stages.len()
    };
    let mut start = 0;
    while start < input.len() {
        let end = (start + PIPELINE_CHUNK).min(input.len());
        let chunk = input.slice(start, end);
        // Stage j reads bufs[(j + 1) % 2] (or the chunk) and writes bufs[j % 2].
        for (j, s) in stages[..buffered].iter().enumerate() {
            let [a, b] = &mut *bufs;
            let (src, dst) = if j % 2 == 0 { (&*b, a) } else { (&*a, b) };
            dst.clear();
            let records = if j == 0 { chunk } else { src.records() };
            s.run(records, if j == 0 { offset + start } else { 0 }, dst)?;
        }
        // The output of the buffered stages, and its first record's index in
        // the pipeline's input when no stage ran yet.
        let (done, first) = match buffered {
            0 => (chunk, offset + start),
            n => (bufs[(n - 1) % 2].records(), 0),
        };
        match (reduce, combine.as_deref_mut()) {
            (Some(r), Some(c)) if buffered == last => stages[last].feed(done, first, c, r)?,
            // Fold this chunk into the groups kept across chunks.
            (Some(r), Some(c)) => c.add(done).map_err(|e| r.error(e, 0))?,
            // Combine this chunk now; the partial results are combined later.
            (Some(r), None) => r.run(done, 0, out)?,
            (None, _) => {
                for (k, v) in done.iter() {
                    out.push(k, v);
                }
            }
        }
        start = end;
    }
    Ok(())
}

/// Stages as the contract passes them: operator names and parameters.
type Stages = [(String, Vec<(String, String)>)];

/// A pipeline fed its input piece by piece ([`Plugin::feed`]): its output
/// is [`Plugin::pipeline`]'s over the pieces put together. A chain of
/// per-record stages ending in a reduce whose values own their data keeps
/// the reduce's groups from piece to piece (fused into one loop where the
/// pipeline would be); any other pipeline gathers its pieces and runs at
/// [`PipelineFeed::finish`].
pub struct PipelineFeed<'p> {
    plugin: &'p Plugin,
    stages: Vec<(String, Vec<(String, String)>)>,
    state: Fed,
    /// Records pushed so far.
    pushed: usize,
}

impl fmt::Debug for PipelineFeed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineFeed")
            .field("plugin", &self.plugin.name)
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

/// What a [`PipelineFeed`] keeps between pieces.
enum Fed {
    /// A fused pair's groups.
    Fused(Box<dyn Pieces>),
    /// The reduce's groups, fed by the per-record stages before it.
    Chunked(Box<dyn Combine>, Box<[Batch; 2]>),
    /// The pieces so far, for a pipeline that needs its whole input.
    Whole(Batch),
}

impl PipelineFeed<'_> {
    /// Runs the pipeline over the next piece of its input. An error names
    /// its record as [`Plugin::pipeline`] over the whole input would: the
    /// first stage's records count from the first piece.
    pub fn push(&mut self, input: Records<'_>) -> Result<(), OpError> {
        let ops = self.plugin.stages(&self.stages)?;
        let offset = self.pushed;
        self.pushed += input.len();
        match &mut self.state {
            Fed::Fused(p) => p.push(input).map_err(|e| {
                // The reduce numbers the records fed to it since the first piece.
                let first = if e.stage == 0 { offset } else { 0 };
                ops[e.stage].error(e.error, first)
            }),
            Fed::Chunked(c, bufs) => {
                let last = ops.len() - 1;
                let mut unused = Batch::new();
                let c: &mut (dyn Combine + 'static) = &mut **c;
                chunks_into(
                    input,
                    offset,
                    &ops[..last],
                    Some(&ops[last]),
                    Some(c),
                    bufs,
                    &mut unused,
                )
            }
            Fed::Whole(b) => {
                for (k, v) in input.iter() {
                    b.push(k, v);
                }
                Ok(())
            }
        }
    }

    /// The output over every piece pushed (an error as [`PipelineFeed::push`]
    /// says).
    pub fn finish(self) -> Result<Batch, OpError> {
        let mut out = Batch::new();
        match self.state {
            Fed::Fused(mut p) => p.finish(&mut out),
            Fed::Chunked(mut c, _) => c.finish(&mut out),
            Fed::Whole(b) => return self.plugin.pipeline(&self.stages, b.records()),
        }
        Ok(out)
    }
}

/// A crate's operators: what [`plugin!`](crate::plugin) defines as `PLUGIN`.
#[derive(Debug)]
pub struct Plugin {
    /// Plugin name (the crate name).
    pub name: &'static str,
    /// Plugin version (the crate version).
    pub version: &'static str,
    /// Its operators.
    pub operators: &'static [&'static Operator],
    /// `fused[i][j]`: operator `j` run after operator `i` as one loop, when
    /// `i` is a map or flat-map and `j` a reduce that keeps its groups (see
    /// [`Fused`]). May be empty: such pipelines then run stage by stage.
    pub fused: &'static [&'static [Option<Fused>]],
}

fn pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Plugin {
    /// The operator called `name`.
    pub fn operator(&self, name: &str) -> Option<&'static Operator> {
        self.operators.iter().copied().find(|o| o.name == name)
    }

    /// The operator called `name`, checked to be of kind `kind`.
    pub fn expect(&self, name: &str, kind: Kind) -> Result<&'static Operator, OpError> {
        let op = self.operator(name).ok_or_else(|| {
            let names: Vec<_> = self.operators.iter().map(|o| o.name).collect();
            OpError::new(format!(
                "plugin `{}` has no operator `{name}` (it has: {})",
                self.name,
                names.join(", ")
            ))
        })?;
        if op.kind != kind {
            return Err(OpError::new(format!(
                "operator `{name}` is a {}, not a {kind}",
                op.kind
            )));
        }
        Ok(op)
    }

    /// Runs the one-input operator `name` (map, flat-map, reduce, transform).
    pub fn run(
        &self,
        kind: Kind,
        name: &str,
        params: &RawParams<'_>,
        input: Records<'_>,
    ) -> Result<Batch, OpError> {
        let op = self.expect(name, kind)?;
        let mut out = Batch::with_capacity(input.len(), input.byte_len());
        match op.runner {
            Runner::OneInput(f) | Runner::PerRecord(f, _) | Runner::Reduce(f, _) => {
                f(input, params, &mut out)?
            }
            Runner::Select(f) => {
                let mut keep = Vec::new();
                f(input, params, &mut keep)?;
                for i in keep {
                    let (k, v) = input.get(i as usize);
                    out.push(k, v);
                }
            }
            Runner::TwoInput(_) => {
                return Err(OpError::new(format!("operator `{name}` takes two inputs")));
            }
        }
        Ok(out)
    }

    /// Runs the filter `name`: indices of the records it keeps.
    pub fn select(
        &self,
        name: &str,
        params: &RawParams<'_>,
        input: Records<'_>,
    ) -> Result<Vec<u32>, OpError> {
        let op = self.expect(name, Kind::Filter)?;
        let Runner::Select(f) = op.runner else {
            return Err(OpError::new(format!("operator `{name}` is no filter")));
        };
        let mut keep = Vec::new();
        f(input, params, &mut keep)?;
        Ok(keep)
    }

    /// Runs the two-input operator `name` (inverse, update-state).
    pub fn run2(
        &self,
        kind: Kind,
        name: &str,
        params: &RawParams<'_>,
        first: Records<'_>,
        second: Records<'_>,
    ) -> Result<Batch, OpError> {
        let op = self.expect(name, kind)?;
        let Runner::TwoInput(f) = op.runner else {
            return Err(OpError::new(format!("operator `{name}` takes one input")));
        };
        let mut out = Batch::with_capacity(first.len().max(second.len()), 0);
        f(first, second, params, &mut out)?;
        Ok(out)
    }

    /// Runs a chain of one-input operators in one go: the output of each stage
    /// is the input of the next, and never leaves this memory.
    ///
    /// Runs of per-record stages (map, flat-map, filter), and a reduce that
    /// follows them, go through the input [`PIPELINE_CHUNK`] records at a
    /// time: each chunk's intermediate records live in two small reused
    /// buffers, so no intermediate partition is ever materialised, which
    /// keeps memory (and, in the sandbox, the pages to fault in and wipe)
    /// proportional to a chunk. A reduce made by the attribute over values
    /// that own their data ([`Runner::Reduce`]) keeps its groups from chunk
    /// to chunk (a map-side combine), and the last per-record stage before
    /// it hands each record straight to it ([`Runner::PerRecord`], or a
    /// filter): then it folds the records in input order, exactly as over
    /// the whole partition. Another reduce combines each chunk at once and
    /// then the per-chunk results; it must be associative and commutative,
    /// so that this equals the unchunked result (for floating point, up to
    /// rounding). Either way the result is deterministic.
    pub fn pipeline(&self, stages: &Stages, input: Records<'_>) -> Result<Batch, OpError> {
        let ops = self.stages(stages)?;
        if let Some(fused) = self.fused_pair(&ops) {
            let mut out = Batch::new();
            return (fused.run)(input, &ops[0].params, &ops[1].params, &mut out)
                .map(|()| out)
                .map_err(|e| ops[e.stage].error(e.error, 0));
        }
        let per_record = |k: Kind| matches!(k, Kind::Map | Kind::FlatMap | Kind::Filter);
        let mut current: Option<Batch> = None;
        let mut i = 0;
        while i < ops.len() {
            let records = current.as_ref().map_or(input, Batch::records);
            let mut end = i;
            while end < ops.len() && per_record(ops[end].op.kind) {
                end += 1;
            }
            let reduce = ops.get(end).filter(|s| s.op.kind == Kind::Reduce);
            let next = if end == i {
                // A transform, or a reduce of whole batches: one go.
                let s = &ops[i];
                i += 1;
                let mut out = Batch::with_capacity(records.len(), 0);
                s.run(records, 0, &mut out)?;
                out
            } else {
                let out = chunked(records, &ops[i..end], reduce)?;
                i = end + usize::from(reduce.is_some());
                out
            };
            current = Some(next);
        }
        Ok(current.unwrap_or_else(|| {
            let mut b = Batch::with_capacity(input.len(), input.byte_len());
            for (k, v) in input.iter() {
                b.push(k, v);
            }
            b
        }))
    }

    /// Starts `stages` (as [`Plugin::pipeline`] takes them) for an input
    /// that comes piece by piece: see [`PipelineFeed`].
    ///
    /// ```
    /// use dstream_sdk::{self as dstream, Batch};
    ///
    /// /// Splits a line into words.
    /// #[dstream::flat_map]
    /// fn split(line: &str) -> impl Iterator<Item = (&str, u64)> {
    ///     line.split_whitespace().map(|w| (w, 1))
    /// }
    /// /// Adds counts.
    /// #[dstream::reduce]
    /// fn sum(a: u64, b: u64) -> u64 {
    ///     a + b
    /// }
    /// dstream::plugin!(split, sum);
    ///
    /// # fn main() {
    /// let stages = [("split".to_string(), vec![]), ("sum".to_string(), vec![])];
    /// let mut feed = PLUGIN.feed(&stages).unwrap();
    /// feed.push(Batch::from_values(["a b", "b"]).records()).unwrap();
    /// feed.push(Batch::from_values(["b c"]).records()).unwrap();
    /// let whole = PLUGIN.pipeline(&stages, Batch::from_values(["a b", "b", "b c"]).records());
    /// assert_eq!(feed.finish().unwrap(), whole.unwrap());
    /// # }
    /// ```
    pub fn feed(&self, stages: &Stages) -> Result<PipelineFeed<'_>, OpError> {
        let ops = self.stages(stages)?;
        let per_record =
            |s: &Stage<'_>| matches!(s.op.kind, Kind::Map | Kind::FlatMap | Kind::Filter);
        let state = if let Some(fused) = self.fused_pair(&ops) {
            Fed::Fused(
                (fused.start)(&ops[0].params, &ops[1].params)
                    .map_err(|e| ops[e.stage].error(e.error, 0))?,
            )
        } else {
            let combine = match &ops[..] {
                [init @ .., last] if !init.is_empty() && init.iter().all(per_record) => {
                    last.combiner()?
                }
                _ => None,
            };
            match combine {
                Some(c) => Fed::Chunked(c, Box::default()),
                None => Fed::Whole(Batch::new()),
            }
        };
        Ok(PipelineFeed {
            plugin: self,
            stages: stages.to_vec(),
            state,
            pushed: 0,
        })
    }

    /// `stages` resolved to this plugin's one-input operators.
    fn stages<'s>(&self, stages: &'s Stages) -> Result<Vec<Stage<'s>>, OpError> {
        let mut ops = Vec::with_capacity(stages.len());
        for (n, (name, params)) in stages.iter().enumerate() {
            let op = self.operator(name).ok_or_else(|| {
                OpError::new(format!(
                    "stage {n}: plugin `{}` has no operator `{name}`",
                    self.name
                ))
            })?;
            if matches!(op.kind, Kind::Inverse | Kind::UpdateState) {
                return Err(OpError::new(format!(
                    "stage {n}: operator `{name}` ({}) takes two inputs and cannot be a pipeline stage",
                    op.kind
                )));
            }
            ops.push(Stage {
                n,
                op,
                params: RawParams::new(params),
            });
        }
        Ok(ops)
    }

    /// The fused loop of a two-stage pipeline, if it has one.
    fn fused_pair(&self, ops: &[Stage<'_>]) -> Option<Fused> {
        let [first, second] = ops else {
            return None;
        };
        let index = |s: &Stage<'_>| self.operators.iter().position(|o| o.name == s.op.name);
        index(first)
            .zip(index(second))
            .and_then(|(i, j)| *self.fused.get(i)?.get(j)?)
    }

    /// Runs a one-input operator natively on a batch, with `&str` parameters:
    /// the way to test an operator crate with plain `cargo test`.
    ///
    /// ```
    /// use dstream_sdk::{self as dstream, Batch, Kind};
    ///
    /// /// Upper-cases a line.
    /// #[dstream::map]
    /// fn shout(line: &str) -> String {
    ///     line.to_uppercase()
    /// }
    /// dstream::plugin!(shout);
    ///
    /// # fn main() {
    /// let out = PLUGIN.call(Kind::Map, "shout", &[], &Batch::from_values(["hi"])).unwrap();
    /// assert_eq!(out.decode::<(), String>().unwrap(), vec![((), "HI".to_string())]);
    /// # }
    /// ```
    pub fn call(
        &self,
        kind: Kind,
        name: &str,
        params: &[(&str, &str)],
        input: &Batch,
    ) -> Result<Batch, OpError> {
        let params = pairs(params);
        self.run(kind, name, &RawParams::new(&params), input.records())
    }

    /// Runs a two-input operator natively (see [`Plugin::call`]).
    pub fn call2(
        &self,
        kind: Kind,
        name: &str,
        params: &[(&str, &str)],
        first: &Batch,
        second: &Batch,
    ) -> Result<Batch, OpError> {
        let params = pairs(params);
        self.run2(
            kind,
            name,
            &RawParams::new(&params),
            first.records(),
            second.records(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: Records<'_>, _: &RawParams<'_>, out: &mut Batch) -> Result<(), OpError> {
        for (i, (_, v)) in input.iter().enumerate() {
            if v == b"bad" {
                return Err(OpError::at(i, "bad line"));
            }
            for w in v.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
                out.push_encoded(w, &1u64);
            }
        }
        Ok(())
    }

    fn sum(input: Records<'_>, _: &RawParams<'_>, out: &mut Batch) -> Result<(), OpError> {
        crate::__private::reduce::<u64, std::convert::Infallible, _>(input, out, |a, b| Ok(a + b))
    }

    fn long(input: Records<'_>, _: &RawParams<'_>, keep: &mut Vec<u32>) -> Result<(), OpError> {
        keep.extend((0..input.len() as u32).filter(|&i| input.get(i as usize).0.len() > 1));
        Ok(())
    }

    const fn op(name: &'static str, kind: Kind, runner: Runner) -> Operator {
        Operator {
            name,
            kind,
            description: "",
            params: <() as crate::Params>::specs,
            input: (Encoding::None, Encoding::Bytes),
            output: (Encoding::Bytes, Encoding::U64),
            runner,
        }
    }
    static SPLIT: Operator = op("split", Kind::FlatMap, Runner::OneInput(split));
    static LONG: Operator = op("long", Kind::Filter, Runner::Select(long));
    static SUM: Operator = op("sum", Kind::Reduce, Runner::OneInput(sum));
    static P: Plugin = Plugin {
        name: "t",
        version: "0",
        operators: &[&SPLIT, &LONG, &SUM],
        fused: &[],
    };

    fn stages(names: &[&str]) -> Vec<(String, Vec<(String, String)>)> {
        names.iter().map(|n| (n.to_string(), Vec::new())).collect()
    }

    #[test]
    fn chunked_pipeline_equals_stage_by_stage() {
        // Enough lines for several chunks, words repeating across chunks.
        let lines: Vec<String> = (0..3 * PIPELINE_CHUNK + 17)
            .map(|i| format!("w{} x w{} yy", i % 13, i % 7))
            .collect();
        let input = Batch::from_values(&lines);
        let chained = P
            .pipeline(&stages(&["split", "long", "sum"]), input.records())
            .unwrap();
        let words = P.call(Kind::FlatMap, "split", &[], &input).unwrap();
        let long = P.call(Kind::Filter, "long", &[], &words).unwrap();
        let summed = P.call(Kind::Reduce, "sum", &[], &long).unwrap();
        assert_eq!(chained, summed);
        let counts: Vec<(&str, u64)> = summed.decode().unwrap();
        assert_eq!(
            counts.iter().map(|c| c.1).sum::<u64>(),
            3 * lines.len() as u64
        );
        assert_eq!(
            counts[0],
            (
                "w0",
                (lines.len() as u64).div_ceil(13) + (lines.len() as u64).div_ceil(7)
            )
        );
        // Without a reduce the chunks are concatenated.
        let flat = P
            .pipeline(&stages(&["split", "long"]), input.records())
            .unwrap();
        assert_eq!(flat, long);
        // A stage after the reduce runs on the combined result.
        let again = P
            .pipeline(&stages(&["split", "sum", "sum"]), input.records())
            .unwrap();
        assert_eq!(again, P.call(Kind::Reduce, "sum", &[], &words).unwrap());
    }

    #[test]
    fn pipeline_errors_name_the_stage_and_the_input_record() {
        let mut lines = vec!["a b"; 2 * PIPELINE_CHUNK + 5];
        lines[PIPELINE_CHUNK + 3] = "bad";
        let e = P
            .pipeline(
                &stages(&["split", "sum"]),
                Batch::from_values(&lines).records(),
            )
            .unwrap_err();
        assert_eq!(e.record, Some(PIPELINE_CHUNK as u32 + 3));
        assert_eq!(e.message, "stage 0 (split): bad line");
        let e = P
            .pipeline(&stages(&["nope"]), Batch::new().records())
            .unwrap_err();
        assert!(e.message.contains("no operator `nope`"), "{e}");
    }
}

/// The pipeline path of operators made by the attributes: a flat-map or
/// filter hands its records straight to a reduce that keeps its groups.
#[cfg(test)]
mod fed {
    use super::*;

    /// Words of a line, each counting 1 but `boom`, counting 7; the line
    /// `bad` fails.
    #[crate::flat_map]
    fn words(line: &str) -> Result<Vec<(&str, u64)>, String> {
        if line == "bad" {
            return Err("bad line".into());
        }
        let count = |w| if w == "boom" { 7 } else { 1 };
        Ok(line
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(|w| (w, count(w)))
            .collect())
    }

    /// Keeps words longer than one byte.
    #[crate::filter]
    fn long(word: &[u8], _count: u64) -> bool {
        word.len() > 1
    }

    /// Adds counts; fails on two sevens.
    #[crate::reduce]
    fn add(a: u64, b: u64) -> Result<u64, String> {
        if a == 7 && b == 7 {
            return Err("two sevens".into());
        }
        Ok(a + b)
    }

    /// Parameters of `times` and `capped`.
    #[derive(Debug, crate::Params)]
    struct Times {
        /// How many times.
        n: u64,
    }

    /// Each word `n` times (a parameter).
    #[crate::flat_map]
    fn times<'a>(line: &'a str, p: &Times) -> Vec<(&'a str, u64)> {
        line.split(' ').map(|w| (w, p.n)).collect()
    }

    /// Adds counts up to `n` (a parameter).
    #[crate::reduce]
    fn capped(a: u64, b: u64, p: &Times) -> u64 {
        (a + b).min(p.n)
    }

    /// The longer text: values that borrow, so no combiner.
    #[crate::reduce]
    fn longest<'a>(a: &'a str, b: &'a str) -> &'a str {
        if a.len() >= b.len() { a } else { b }
    }

    static P: Plugin = Plugin {
        name: "fed",
        version: "0",
        operators: &[
            &words::OPERATOR,
            &long::OPERATOR,
            &add::OPERATOR,
            &longest::OPERATOR,
            &times::OPERATOR,
            &capped::OPERATOR,
        ],
        fused: crate::__fused_rows!(
            [words, long, add, longest, times, capped]
            [words, long, add, longest, times, capped]
        ),
    };

    /// [`P`] without its fused pairs: every pipeline runs stage by stage.
    static UNFUSED: Plugin = Plugin { fused: &[], ..P };

    fn stages(names: &[&str]) -> Vec<(String, Vec<(String, String)>)> {
        names.iter().map(|n| (n.to_string(), Vec::new())).collect()
    }

    #[test]
    fn the_attributes_make_feeding_and_combining_runners() {
        assert!(matches!(words::OPERATOR.runner, Runner::PerRecord(..)));
        assert!(matches!(add::OPERATOR.runner, Runner::Reduce(..)));
        assert!(matches!(longest::OPERATOR.runner, Runner::OneInput(_)));
        // Fused: a flat-map then a reduce that keeps its groups, only.
        let fused: Vec<Vec<bool>> = P
            .fused
            .iter()
            .map(|row| row.iter().map(Option::is_some).collect())
            .collect();
        let (f, t) = (false, true);
        let none = [f; 6];
        assert_eq!(
            fused,
            [
                [f, f, t, f, f, t],
                none,
                none,
                none,
                [f, f, t, f, f, t],
                none
            ]
        );
    }

    #[test]
    fn a_fused_pipeline_equals_the_unfused_one_errors_included() {
        let lines: Vec<String> = (0..3 * PIPELINE_CHUNK + 17)
            .map(|i| format!("w{} x  w{} yy {i} boom", i % 13, i % 7))
            .collect();
        let mut failing = lines.clone();
        failing[PIPELINE_CHUNK + 5] = "bad".into();
        for lines in [&lines, &failing] {
            let input = Batch::from_values(lines);
            let mut fails = 0;
            for chain in [&["words", "add"][..], &["words", "longest"]] {
                let fused = P.pipeline(&stages(chain), input.records());
                let unfused = UNFUSED.pipeline(&stages(chain), input.records());
                match (fused, unfused) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{chain:?}"),
                    (Err(a), Err(b)) => {
                        assert_eq!((&a.message, a.record), (&b.message, b.record), "{chain:?}");
                        fails += 1;
                    }
                    (a, b) => panic!("{chain:?}: fused {a:?}, unfused {b:?}"),
                }
            }
            // `add` fails on two `boom`s; `bad` fails the flat-map first.
            assert!(fails >= 1);
        }
        let e = P
            .pipeline(
                &stages(&["words", "add"]),
                Batch::from_values(&failing).records(),
            )
            .unwrap_err();
        assert_eq!(e.message, "stage 1 (add): two sevens");
        assert_eq!(e.record, Some(11));
    }

    type Params = Vec<(String, String)>;

    /// Fed in pieces, every pipeline gives what it gives over the whole
    /// input, errors included: fused pairs and chunked chains keep their
    /// groups from piece to piece, the others gather their pieces.
    #[test]
    fn a_pipeline_fed_in_pieces_equals_it_over_the_whole_input() {
        let lines: Vec<String> = (0..2 * PIPELINE_CHUNK + 33)
            .map(|i| format!("w{} x  w{} yy {i} boom", i % 13, i % 7))
            .collect();
        // Two `boom`s (sevens) fail `add` early on; without them, `bad`
        // fails the first stage in the second chunk.
        let calm: Vec<String> = lines.iter().map(|l| l.replace("boom", "bam")).collect();
        let mut bad_line = calm.clone();
        bad_line[PIPELINE_CHUNK + 5] = "bad".into();
        let n = vec![("n".to_string(), "3".to_string())];
        let chains: Vec<Vec<(String, Params)>> = vec![
            stages(&["words", "add"]),
            stages(&["words", "long", "add"]),
            stages(&["words", "longest"]),
            stages(&["words", "long"]),
            vec![("times".into(), n.clone()), ("capped".into(), n.clone())],
            vec![("times".into(), Vec::new()), ("capped".into(), n)],
        ];
        let mut seen = [0; 3];
        for plugin in [&P, &UNFUSED] {
            for lines in [&lines, &bad_line, &calm] {
                let input = Batch::from_values(lines);
                let records = input.records();
                for chain in &chains {
                    let whole = plugin.pipeline(chain, records);
                    for piece in [1, 7, PIPELINE_CHUNK, PIPELINE_CHUNK + 1, records.len()] {
                        let fed = (|| {
                            let mut feed = plugin.feed(chain)?;
                            let mut start = 0;
                            while start < records.len() {
                                let end = (start + piece).min(records.len());
                                feed.push(records.slice(start, end))?;
                                start = end;
                            }
                            feed.finish()
                        })();
                        let what = format!("{chain:?} in pieces of {piece}");
                        match (&whole, fed) {
                            (Ok(a), Ok(b)) => {
                                assert_eq!(a, &b, "{what}");
                                seen[0] += 1;
                            }
                            (Err(a), Err(b)) => {
                                assert_eq!(
                                    (&a.message, a.record),
                                    (&b.message, b.record),
                                    "{what}"
                                );
                                let first_stage = a.message.starts_with("stage 0");
                                seen[1 + usize::from(first_stage && a.record.is_some())] += 1;
                            }
                            (a, b) => panic!("{what}: whole {a:?}, fed {b:?}"),
                        }
                    }
                }
            }
        }
        // Outputs, errors of a later stage and errors of the first stage at
        // a record all met.
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
    }

    #[test]
    fn text_is_checked_once_for_an_ascii_input_and_per_record_otherwise() {
        let expect = |lines: &[&str]| -> Vec<(String, u64)> {
            let mut out = Vec::new();
            for l in lines {
                let n = |w| if w == "boom" { 7 } else { 1 };
                out.extend(
                    l.split(' ')
                        .filter(|w| !w.is_empty())
                        .map(|w| (w.to_string(), n(w))),
                );
            }
            out
        };
        let run = |input: &Batch| {
            P.run(
                Kind::FlatMap,
                "words",
                &RawParams::new(&[]),
                input.records(),
            )
            .map(|b| {
                b.decode::<&str, u64>()
                    .unwrap()
                    .into_iter()
                    .map(|(w, n)| (w.to_string(), n))
                    .collect::<Vec<_>>()
            })
        };
        let ascii = ["a bb", "boom  c", "", "dd"];
        let utf8 = ["a bb", "élan vital", "ñ"];
        for lines in [&ascii[..], &utf8] {
            assert_eq!(run(&Batch::from_values(lines)).unwrap(), expect(lines));
        }
        // A record that is not UTF-8, after ASCII ones: refused by number.
        let mut bad = Batch::from_values(ascii);
        bad.push(b"", b"ok \xff no");
        let e = run(&bad).unwrap_err();
        assert_eq!(e.record, Some(4));
        assert!(
            e.message
                .starts_with("cannot decode the value: expected UTF-8 text"),
            "{}",
            e.message
        );
    }

    #[test]
    fn fused_stages_take_their_parameters_as_unfused_ones_even_on_no_input() {
        let with = |a: &str, b: &str| {
            vec![
                ("times".to_string(), vec![("n".to_string(), a.to_string())]),
                ("capped".to_string(), vec![("n".to_string(), b.to_string())]),
            ]
        };
        let input = Batch::from_values(["a b a", "b c"]);
        let empty = Batch::new();
        let mut outcomes = Vec::new();
        for (a, b) in [("2", "3"), ("x", "3"), ("2", "y"), ("x", "y")] {
            for records in [input.records(), empty.records()] {
                let fused = P.pipeline(&with(a, b), records);
                let unfused = UNFUSED.pipeline(&with(a, b), records);
                let show = |r: Result<Batch, OpError>| match r {
                    Ok(b) => format!("{:?}", b.decode::<&str, u64>().unwrap()),
                    Err(e) => format!("{e}"),
                };
                let (fused, unfused) = (show(fused), show(unfused));
                assert_eq!(fused, unfused, "n = {a}, {b}");
                outcomes.push(fused);
            }
        }
        // Words counted 2 each time, capped at 3; bad values name their
        // stage (the first stage's only when it has records to run over).
        assert_eq!(outcomes[0], r#"[("a", 3), ("b", 3), ("c", 2)]"#);
        assert_eq!(outcomes[1], "[]");
        assert!(outcomes[2].contains("stage 0 (times)"), "{}", outcomes[2]);
        assert_eq!(outcomes[3], "[]");
        for o in &outcomes[4..] {
            assert!(o.contains("stage 1 (capped)"), "{o}");
        }
    }

    #[test]
    fn a_fed_reduce_equals_the_reduce_of_the_whole_output() {
        let lines: Vec<String> = (0..3 * PIPELINE_CHUNK + 17)
            .map(|i| format!("w{} x w{} yy {i}", i % 13, i % 7))
            .collect();
        let input = Batch::from_values(&lines);
        let words = P.call(Kind::FlatMap, "words", &[], &input).unwrap();
        let long = P.call(Kind::Filter, "long", &[], &words).unwrap();
        for (chain, before) in [
            (&["words", "add"][..], &words),
            (&["words", "long", "add"], &long),
        ] {
            let fed = P.pipeline(&stages(chain), input.records()).unwrap();
            let whole = P.call(Kind::Reduce, "add", &[], before).unwrap();
            assert_eq!(fed, whole, "{chain:?}");
        }
        let counted = P
            .pipeline(&stages(&["words", "add"]), input.records())
            .unwrap();
        let counts: Vec<(&str, u64)> = counted.decode().unwrap();
        let n = lines.len() as u64;
        assert_eq!(
            counts[..5],
            [
                ("w0", n.div_ceil(13) + n.div_ceil(7)),
                ("x", n),
                ("yy", n),
                ("0", 1),
                ("w1", n / 13 + 1 + n / 7 + 1)
            ]
        );
        assert_eq!(counts.len(), 13 + lines.len() + 2);
        // A reduce whose values borrow combines chunk by chunk.
        let fed = P
            .pipeline(&stages(&["words", "longest"]), input.records())
            .unwrap();
        assert_eq!(fed.len(), counts.len());
    }

    #[test]
    fn errors_name_the_stage_that_failed() {
        // The reduce fails at the second `boom`, the 4th word of the second
        // chunk: record `PIPELINE_CHUNK + 3` of its input.
        let mut lines = vec!["a"; 2 * PIPELINE_CHUNK];
        lines[PIPELINE_CHUNK] = "boom b";
        lines[PIPELINE_CHUNK + 1] = "c boom";
        let input = Batch::from_values(&lines);
        let e = P
            .pipeline(&stages(&["words", "add"]), input.records())
            .unwrap_err();
        assert_eq!(e.message, "stage 1 (add): two sevens");
        assert_eq!(e.record, Some(PIPELINE_CHUNK as u32 + 3));
        let words = P.call(Kind::FlatMap, "words", &[], &input).unwrap();
        let whole = P.call(Kind::Reduce, "add", &[], &words).unwrap_err();
        assert_eq!(whole.record, e.record);
        // A line that fails names the flat-map and the line.
        let mut lines = vec!["a"; 2 * PIPELINE_CHUNK];
        lines[PIPELINE_CHUNK + 2] = "bad";
        let input = Batch::from_values(&lines);
        let e = P
            .pipeline(&stages(&["words", "add"]), input.records())
            .unwrap_err();
        assert_eq!(e.message, "stage 0 (words): bad line");
        assert_eq!(e.record, Some(PIPELINE_CHUNK as u32 + 2));
    }
}
