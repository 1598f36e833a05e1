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

/// How an operator runs over a partition, by kind.
#[derive(Clone, Copy, Debug)]
pub enum Runner {
    /// map, flat-map, reduce, transform.
    OneInput(OneInput),
    /// filter.
    Select(Select),
    /// inverse, update-state.
    TwoInput(TwoInput),
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
            Runner::OneInput(f) => f(input, &self.params, out),
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
        r.map_err(|e| OpError {
            message: format!("stage {} ({}): {}", self.n, self.op.name, e.message),
            record: e.record.map(|r| r + first as u32),
        })
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
    let mut bufs = [Batch::new(), Batch::new()];
    let mut start = 0;
    while start < input.len() {
        let end = (start + PIPELINE_CHUNK).min(input.len());
        let chunk = input.slice(start, end);
        // Stage j reads bufs[(j + 1) % 2] (or the chunk) and writes bufs[j % 2].
        for (j, s) in stages.iter().enumerate() {
            let [a, b] = &mut bufs;
            let (src, dst) = if j % 2 == 0 { (&*b, a) } else { (&*a, b) };
            dst.clear();
            let records = if j == 0 { chunk } else { src.records() };
            s.run(records, if j == 0 { start } else { 0 }, dst)?;
        }
        let last = bufs[(stages.len() - 1) % 2].records();
        match reduce {
            // Combine this chunk now; the partial results are combined below.
            Some(r) => r.run(last, 0, &mut out)?,
            None => {
                for (k, v) in last.iter() {
                    out.push(k, v);
                }
            }
        }
        start = end;
    }
    match reduce {
        Some(r) if input.len() > PIPELINE_CHUNK => {
            let mut combined = Batch::with_capacity(out.len(), 0);
            r.run(out.records(), 0, &mut combined)?;
            Ok(combined)
        }
        _ => Ok(out),
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
            Runner::OneInput(f) => f(input, params, &mut out)?,
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
    /// buffers and the reduce combines each chunk at once (a map-side
    /// combine), then combines the per-chunk results. No intermediate
    /// partition is ever materialised, which keeps memory (and, in the
    /// sandbox, the pages to fault in and wipe) proportional to a chunk. The
    /// grouping is fixed, so the result is deterministic; a reduce must be
    /// associative and commutative, so it equals the unchunked one (for
    /// floating point, up to rounding).
    pub fn pipeline(
        &self,
        stages: &[(String, Vec<(String, String)>)],
        input: Records<'_>,
    ) -> Result<Batch, OpError> {
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
