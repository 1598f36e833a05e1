//! The drivers of dstream: everything that does I/O around the sans-IO core.
//!
//! - [`local`]: the embedded engine, running each batch's tasks on a thread
//!   pool over an in-memory block store, with Wasm operators from
//!   `dstream-wasm` and checkpoints in a directory.
//! - [`source`]: receivers (tcp, files, http) filling an [`source::Inbox`]
//!   that each batch drains.
//! - [`sink`]: output operations (stdout, files, http), idempotent per batch.
//! - [`driver`]: the real-time loop: receivers, batches, sinks, checkpoints.
//! - [`checkpoint`]: state written to a directory atomically, and read back.
//! - [`inputlog`]: what receivers gave each batch since the last checkpoint,
//!   logged before the batch runs, to run it again after a crash.
//! - [`net`]: the cluster transport, QUIC with mutual TLS (certificates
//!   from a cluster CA), framed messages.
//! - [`cluster`]: the coordinator and worker processes and the CLI's
//!   client, driving the core's coordinator over [`net`].
//! - [`plugins`]: loading a job's plugins (building plugin crates on the spot).
//! - [`alloc`]: the memory allocator the `dstream` processes run with.

pub mod alloc;
mod calls;
pub mod checkpoint;
pub mod cluster;
pub mod driver;
pub mod error;
pub mod inputlog;
pub mod local;
pub mod net;
pub mod plugins;
pub mod sink;
pub mod source;
pub mod store;

pub use error::Error;
