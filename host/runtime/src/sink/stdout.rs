//! The stdout sink: a header and the first records of each batch.

use std::fmt::Write as _;
use std::io::Write;

use super::{Output, Sink};
use crate::Error;

/// Writes `--- STREAM, batch N: R records ---`, then the first `limit`
/// records, then `... (M more)` when there are more.
pub(super) struct StdoutSink {
    name: String,
    limit: usize,
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl StdoutSink {
    pub(super) fn new(name: &str, limit: usize, out: Box<dyn Write + Send>) -> Self {
        Self {
            name: name.to_string(),
            limit,
            out,
        }
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, out: &Output<'_>) -> Result<(), Error> {
        let records = out.records();
        let mut text = format!(
            "--- {}, batch {}: {records} records ---\n",
            out.stream, out.batch
        );
        for (k, v) in out.iter().take(self.limit) {
            out.render_record(k, v, &mut text);
        }
        if records > self.limit {
            let _ = writeln!(text, "... ({} more)", records - self.limit);
        }
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io(format!("sink `{}`: writing to stdout", self.name), e))
    }
}
