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

pub mod batch;
pub mod plugin;

pub use batch::Batch;
pub use plugin::{Encoding, OperatorInfo, OperatorKind, ParamInfo, PluginInfo};

/// Errors of the core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A batch whose buffers do not follow the flat layout.
    #[error("malformed batch: {0}")]
    BadBatch(String),
}
