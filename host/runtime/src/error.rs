//! The runtime's one error type.

use std::path::PathBuf;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (names the path or address).
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A source could not start or failed.
    #[error("source `{name}`: {message}")]
    Source {
        /// Source name in the job.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A sink could not write a batch.
    #[error("sink `{name}`: {message}")]
    Sink {
        /// Sink name in the job.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A checkpoint could not be written or read.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A plugin could not be built or loaded.
    #[error("plugin `{name}`: {message}")]
    Plugin {
        /// Plugin name in the job.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// Certificates or TLS settings.
    #[error("TLS, {what}: {message}")]
    Tls {
        /// What was being done (names the file).
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The cluster transport.
    #[error("{what}: {message}")]
    Net {
        /// What was being done (names the peer).
        what: String,
        /// What went wrong.
        message: String,
    },
    /// A job that cannot run (a bad job file, a source the cluster cannot
    /// run, an unknown job).
    #[error("{0}")]
    Job(String),
    /// A task of a batch failed.
    #[error("batch {batch}: {source}")]
    Batch {
        /// Batch number.
        batch: u64,
        /// The cause.
        source: dstream_core::Error,
    },
}

impl Error {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
