//! Output operations (stdout, files, http): each writes one batch of a
//! stream at a time.
//!
//! A batch is shown as text, one record per line: `KEY\tVALUE`, or just
//! `VALUE` for an unkeyed stream (key codec `none`), keys and values rendered
//! by their codecs ([`Output::render`]). The same batch always renders to the
//! same bytes, so a batch written again after a recovery gives the same
//! output:
//!
//! - `stdout`: a header line per batch and its first `limit` records.
//! - `files`: one file per batch, `DIR/STREAM-NNNNNNNNNN.txt`, written under a
//!   temporary name and renamed: writing a batch again replaces the file with
//!   the same bytes, never a duplicate or a torn file.
//! - `http`: one `POST` per batch with headers `X-Dstream-Job`,
//!   `X-Dstream-Stream` and `X-Dstream-Batch` by which the receiver can drop
//!   a batch it already has; retried on connection errors and `5xx`.

mod files;
mod http;
mod stdout;

use std::io::Write;
use std::path::Path;

use dstream_core::job::{Codec, SinkKind};
use dstream_core::{Batch, Encoding};

use crate::Error;

/// One batch of one stream, to write.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    /// The job's name.
    pub job: &'a str,
    /// The stream's name.
    pub stream: &'a str,
    /// The batch number.
    pub batch: u64,
    /// The stream's partitions at this batch, in partition order.
    pub parts: &'a [&'a Batch],
    /// How the stream's keys are encoded.
    pub key: &'a Codec,
    /// How the stream's values are encoded.
    pub value: &'a Codec,
}

impl Output<'_> {
    /// Number of records in all partitions.
    pub fn records(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// The records of all partitions in order, as (key, value).
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.parts.iter().flat_map(|p| p.iter())
    }

    /// True when the stream has no key to show (key codec `none`).
    fn unkeyed(&self) -> bool {
        *self.key == Codec::Plain(Encoding::None)
    }

    /// Appends one record as a line (with its `\n`).
    fn render_record(&self, key: &[u8], value: &[u8], out: &mut String) {
        if !self.unkeyed() {
            out.push_str(&self.key.render(key));
            out.push('\t');
        }
        out.push_str(&self.value.render(value));
        out.push('\n');
    }

    /// The batch as text: one record per line, `KEY\tVALUE`, or just `VALUE`
    /// when the key codec is `Plain(Encoding::None)`; partitions in order,
    /// records in order, every line ending in `\n`. Deterministic: the same
    /// output always gives the same bytes.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in self.iter() {
            self.render_record(k, v, &mut s);
        }
        s
    }
}

/// Somewhere batches are written.
pub trait Sink: Send + std::fmt::Debug {
    /// Writes one batch of the stream. Writing a batch again (after a
    /// recovery) must not duplicate it where the sink can avoid it.
    fn write(&mut self, out: &Output<'_>) -> Result<(), Error>;
}

/// Opens sink `name` of `kind`; a relative directory is resolved against
/// `base_dir` (the job file's directory); `stdout` is where the stdout sink
/// writes (the CLI passes [`std::io::stdout`], tests a buffer; other kinds
/// ignore it). Errors that can be seen at once are returned: a directory that
/// cannot be created, a malformed URL.
pub fn open(
    name: &str,
    kind: &SinkKind,
    base_dir: &Path,
    stdout: Box<dyn Write + Send>,
) -> Result<Box<dyn Sink>, Error> {
    Ok(match kind {
        SinkKind::Stdout { limit } => Box::new(stdout::StdoutSink::new(name, *limit, stdout)),
        SinkKind::Files { dir } => Box::new(files::FilesSink::open(name, &base_dir.join(dir))?),
        SinkKind::Http { url } => Box::new(http::HttpSink::open(name, url)?),
    })
}
