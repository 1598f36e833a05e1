//! The sans-IO core of dstream.
//!
//! Everything here is plain data and decisions: no tokio, no sockets, no
//! wasmtime, no clock of its own. The drivers in `host/runtime` and the
//! sandbox in `host/wasm` are built on top of it.
//!
//! So far it holds the data model every other crate shares:
//! - [`batch`]: one partition of records as flat buffers, the exact layout
//!   that crosses the Wasm boundary.
//! - [`plugin`]: what a plugin says about itself (its operators, their kinds,
//!   parameters and encodings).
//! - [`job`]: the job file and the checked stream DAG.
//! - [`plan`]: per batch, the datasets, their lineage and the tasks, in
//!   stages split at shuffles; what later batches still need (retention and
//!   checkpoints).
//! - [`exec`]: what each task computes, with plugin calls behind a trait.
//! - [`reduce`]: built-in reducers, hash partitioning, joins.
//! - [`generate`]: the seeded generator source.
//! - [`coordinator`]: the cluster coordinator's decisions (placement,
//!   batches, lost workers) as a state machine driven from outside.
//! - [`wire`]: messages between coordinator and workers, and their framing.

pub mod batch;
pub mod coordinator;
pub mod exec;
pub mod generate;
pub mod job;
pub mod plan;
pub mod plugin;
pub mod reduce;
pub mod wire;

pub use batch::Batch;

/// FNV-1a, 64 bits: a small hash that is the same on every host and build,
/// for fingerprints and seeds (never for tables an adversary fills).
///
/// ```
/// assert_eq!(dstream_core::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
/// assert_ne!(dstream_core::fnv1a(b"a/b"), dstream_core::fnv1a(b"a/c"));
/// ```
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
pub use plugin::{Encoding, OperatorInfo, OperatorKind, ParamInfo, PluginInfo};

/// Errors of the core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A batch whose buffers do not follow the flat layout.
    #[error("malformed batch: {0}")]
    BadBatch(String),
    /// A value that does not fit what an operator expects.
    #[error("{0}")]
    BadValue(String),
    /// A plugin call failed.
    #[error(transparent)]
    Call(exec::CallError),
    /// A task failed.
    #[error("stream `{stream}`, block {block}: {source}")]
    Task {
        /// The stream the task computes.
        stream: String,
        /// The block it computes.
        block: String,
        /// Why.
        source: Box<Error>,
    },
}
