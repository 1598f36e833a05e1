//! The dstream sandbox: load, validate and run operator components.
//!
//! A [`Runtime`] owns one wasmtime [`Engine`](wasmtime::Engine) configured for
//! isolation and determinism (no WASI at all, NaN canonicalisation,
//! deterministic relaxed SIMD, no component-model async) with a pooling
//! instance allocator and an epoch ticker. [`Runtime::load`] validates a
//! component (it is a component, exports our world at a compatible version,
//! imports nothing but `dstream:plugin/host`, fits the size limit), compiles it
//! once and asks it to `describe` itself. The [`Plugin`] it returns runs an
//! operator over a whole partition per call, each call in a fresh instance
//! (record-wise kinds call the guest once per [`PIECE_BYTES`] piece inside
//! it) under a memory limit and an epoch deadline (and, inside [`Cancel::scope`],
//! a cancellation token); traps, timeouts and guest errors
//! come back as typed [`Error`]s naming plugin, operator and cause, and the
//! next call runs as if nothing happened.
//!
//! ```no_run
//! use dstream_core::Batch;
//! use dstream_wasm::{Limits, Runtime};
//!
//! # fn main() -> Result<(), dstream_wasm::Error> {
//! let runtime = Runtime::new(Limits::default())?;
//! let bytes = std::fs::read("grep.wasm").expect("a component");
//! let grep = runtime.load("grep", &bytes)?;
//! let lines: Batch = [("", "a needle"), ("", "hay")].into_iter().collect();
//! let kept = grep.filter("grep", &[("pattern".into(), "needle".into())], &lines)?;
//! assert_eq!(kept.len(), 1);
//! # Ok(())
//! # }
//! ```

mod error;
mod host;
#[cfg(target_os = "linux")]
mod lend;
mod plugin;
mod runtime;

pub use error::Error;
pub use host::GUEST_LOG_TARGET;
#[cfg(target_os = "linux")]
pub use lend::{LendStats, PagedBatch};
pub use plugin::{PIECE_BYTES, Plugin, Stage};
pub use runtime::{Cancel, Limits, Runtime};

/// The version of the `dstream:plugin` WIT package this host speaks.
pub const WIT_VERSION: &str = "0.2.1";
