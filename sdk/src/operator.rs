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
    pub fn pipeline(
        &self,
        stages: &[(String, Vec<(String, String)>)],
        input: Records<'_>,
    ) -> Result<Batch, OpError> {
        let mut current: Option<Batch> = None;
        for (n, (name, params)) in stages.iter().enumerate() {
            let op = self.operator(name).ok_or_else(|| {
                OpError::new(format!(
                    "stage {n}: plugin `{}` has no operator `{name}`",
                    self.name
                ))
            })?;
            let records = current.as_ref().map_or(input, Batch::records);
            let raw = RawParams::new(params);
            let next = match op.kind {
                Kind::Inverse | Kind::UpdateState => Err(OpError::new(format!(
                    "operator `{name}` ({}) takes two inputs and cannot be a pipeline stage",
                    op.kind
                ))),
                kind => self.run(kind, name, &raw, records),
            }
            .map_err(|e| OpError {
                message: format!("stage {n} ({name}): {}", e.message),
                record: e.record,
            })?;
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
