//! Operator parameters from the job (for example a grep pattern).
//!
//! An operator that takes parameters names a type implementing [`Params`] as
//! its last argument, by reference. Parameters are parsed once per call (once
//! per partition, or per 256 KiB piece of it for record-wise operators),
//! never per record. Derive the trait for plain structs:
//!
//! ```
//! use dstream_sdk as dstream;
//!
//! /// Parameters of a top-k operator.
//! #[derive(dstream::Params)]
//! struct TopK {
//!     /// How many entries to keep.
//!     #[param(default = 3)]
//!     k: usize,
//!     /// Only count entries from this group.
//!     group: Option<String>,
//! }
//!
//! use dstream::Params;
//! let raw = vec![("k".to_string(), "5".to_string())];
//! let p = TopK::from_params(&dstream::RawParams::new(&raw)).unwrap();
//! assert_eq!((p.k, p.group), (5, None));
//! assert_eq!(TopK::specs()[0].name, "k");
//! ```
//!
//! or implement it by hand to prepare something once, such as a searcher.

use std::fmt::Display;
use std::str::FromStr;

/// A parameter an operator declares: its name, what it is for, whether the
/// job must give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// Name as written in the job.
    pub name: &'static str,
    /// What it does (from the field's doc comment).
    pub description: &'static str,
    /// True when the job must give it.
    pub required: bool,
}

/// The parameters of one call, as name/value pairs from the job.
#[derive(Clone, Copy, Debug)]
pub struct RawParams<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> RawParams<'a> {
    /// Wraps name/value pairs.
    pub fn new(pairs: &'a [(String, String)]) -> Self {
        Self { pairs }
    }

    /// The name/value pairs.
    pub(crate) fn pairs(&self) -> &'a [(String, String)] {
        self.pairs
    }

    /// The value given for `name`, if any (the last one wins).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value given for `name`, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&'a str, String> {
        self.get(name)
            .ok_or_else(|| format!("missing required parameter `{name}`"))
    }

    /// Parses the value of `name` with `FromStr`, if given.
    pub fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: Display,
    {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|e| format!("parameter `{name}` = {v:?}: {e}"))
            })
            .transpose()
    }

    /// Fails on a name not in `specs`, listing the accepted names.
    pub fn check_known(&self, specs: &[ParamSpec]) -> Result<(), String> {
        for (name, _) in self.pairs {
            if !specs.iter().any(|s| s.name == name) {
                let known: Vec<_> = specs.iter().map(|s| s.name).collect();
                return Err(if known.is_empty() {
                    format!("unknown parameter `{name}`: this operator takes none")
                } else {
                    format!(
                        "unknown parameter `{name}`: this operator takes {}",
                        known.join(", ")
                    )
                });
            }
        }
        Ok(())
    }
}

/// Typed parameters of an operator.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the parameters of an operator: it does not implement `dstream::Params`",
    label = "the last `&P` argument receives the parameters",
    note = "derive it with #[derive(dstream::Params)], or implement `dstream::Params` by hand"
)]
pub trait Params: Sized {
    /// The parameters accepted, for `describe`.
    fn specs() -> Vec<ParamSpec>;
    /// Parses and checks the parameters of one call.
    fn from_params(raw: &RawParams<'_>) -> Result<Self, String>;
}

/// No parameters: any parameter given is an error.
impl Params for () {
    fn specs() -> Vec<ParamSpec> {
        Vec::new()
    }
    fn from_params(raw: &RawParams<'_>) -> Result<Self, String> {
        raw.check_known(&[])
    }
}
