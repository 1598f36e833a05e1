//! The received-input log of the embedded engine (Spark Streaming's receiver
//! write-ahead log, one file per batch): what each receiver's inbox gave a
//! batch is written to the checkpoint directory, synced, before the batch
//! runs and before the records are confirmed to their senders (an http post
//! is answered 200 only then). After a crash, the batches since the last
//! checkpoint run again over the same input, so the running state and the
//! sinks get exactly what they had; a log at or before a checkpoint is
//! removed.
//!
//! Layout: `DIR/input/batch-NNNNNNNNNN.log`, postcard of [`Logged`], written
//! as `.batch-NNNNNNNNNN.tmp`, synced, then renamed. Generator sources are
//! not logged: their records follow from the seed and the batch number.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use dstream_core::Batch;
use dstream_core::job::{Job, NodeId};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::checkpoint::{fingerprint, io};

/// One batch's received input.
#[derive(Debug, Serialize, Deserialize)]
/// Borrowed when written (the batch's input is not copied to be encoded),
/// owned when read back.
struct Logged<'a> {
    /// [`fingerprint`] of the job that wrote it.
    fingerprint: Cow<'a, str>,
    batch: u64,
    /// Per receiving source, by name: its records (data, bounds).
    sources: Vec<LoggedSource<'a>>,
}

/// One source's input in a [`Logged`]: its name, data and bounds.
type LoggedSource<'a> = (Cow<'a, str>, Cow<'a, [u8]>, Cow<'a, [u32]>);

fn input_dir(dir: &Path) -> PathBuf {
    dir.join("input")
}

fn file_name(batch: u64) -> String {
    format!("batch-{batch:010}.log")
}

/// The log file of `batch` in checkpoint directory `dir`.
pub fn path(dir: &Path, batch: u64) -> PathBuf {
    input_dir(dir).join(file_name(batch))
}

/// The batches logged in `dir`, in order (with `tmp`, also those whose
/// log was being written, as `.batch-N.tmp`), with their files.
fn list_all(dir: &Path, tmp: bool) -> Result<Vec<(u64, PathBuf)>, Error> {
    let idir = input_dir(dir);
    let rd = match fs::read_dir(&idir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", idir.display()), e)),
    };
    let mut out: Vec<(u64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let n = match name.strip_prefix("batch-") {
                Some(rest) => rest.strip_suffix(".log")?,
                None if tmp => name.strip_prefix(".batch-")?.strip_suffix(".tmp")?,
                None => return None,
            };
            Some((n.parse().ok()?, e.path()))
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The batches logged in `dir`, in order.
fn list(dir: &Path) -> Result<Vec<u64>, Error> {
    Ok(list_all(dir, false)?.into_iter().map(|(n, _)| n).collect())
}

/// Writes what the receivers gave `batch` (by source node), synced, before
/// it runs. `fingerprint` is the job's [`fingerprint`] (computed once by the
/// caller: it formats the whole job).
pub fn write(
    dir: &Path,
    job: &Job,
    fingerprint: &str,
    batch: u64,
    input: &BTreeMap<NodeId, Batch>,
) -> Result<(), Error> {
    let idir = input_dir(dir);
    if !idir.is_dir() {
        fs::create_dir_all(&idir).map_err(io(&idir, "creating input log directory"))?;
        crate::checkpoint::sync_dir(dir);
    }
    let logged = Logged {
        fingerprint: Cow::Borrowed(fingerprint),
        batch,
        sources: input
            .iter()
            .map(|(id, b)| {
                (
                    Cow::Borrowed(job.node(*id).name.as_str()),
                    Cow::Borrowed(b.data()),
                    Cow::Borrowed(b.bounds()),
                )
            })
            .collect(),
    };
    let bytes = postcard::to_allocvec(&logged).map_err(|e| Error::Checkpoint {
        path: idir.clone(),
        message: format!("encoding the input of batch {batch}: {e}"),
    })?;
    let tmp = idir.join(format!(".batch-{batch:010}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp, "creating"))?;
    f.write_all(&bytes).map_err(io(&tmp, "writing"))?;
    f.sync_all().map_err(io(&tmp, "syncing"))?;
    let path = idir.join(file_name(batch));
    fs::rename(&tmp, &path).map_err(io(&path, "renaming into"))?;
    crate::checkpoint::sync_dir(&idir);
    Ok(())
}

/// The input logged for `batch`, by source node, if it was logged. A log of
/// another job graph, or naming a source this job does not receive, is an
/// error (`--fresh` starts over).
pub fn read(dir: &Path, job: &Job, batch: u64) -> Result<Option<BTreeMap<NodeId, Batch>>, Error> {
    let path = input_dir(dir).join(file_name(batch));
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let bad = |message: String| Error::Checkpoint {
        path: path.clone(),
        message,
    };
    let logged: Logged = postcard::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
    if logged.fingerprint != fingerprint(job) || logged.batch != batch {
        return Err(bad(format!(
            "the input of batch {} of another job graph (run with --fresh to start over)",
            logged.batch
        )));
    }
    let mut out = BTreeMap::new();
    for (name, data, bounds) in logged.sources {
        let id = job
            .receivers()
            .map(|(id, _)| id)
            .find(|id| job.node(*id).name == name)
            .ok_or_else(|| bad(format!("names a source `{name}` the job does not receive")))?;
        let b = Batch::from_parts(data.into_owned(), bounds.into_owned())
            .map_err(|e| bad(e.to_string()))?;
        out.insert(id, b);
    }
    Ok(Some(out))
}

/// The last of the batches `from`, `from + 1`, ... logged in a row in
/// `dir` (`from - 1` when `from` is not logged): the ones to run again.
pub fn logged_from(dir: &Path, from: u64) -> Result<u64, Error> {
    let mut last = from - 1;
    for b in list(dir)?.into_iter().filter(|b| *b >= from) {
        if b != last + 1 {
            tracing::warn!(
                batch = b,
                after = last,
                "input log has a gap: later batches ignored"
            );
            break;
        }
        last = b;
    }
    Ok(last)
}

/// Removes the logs (and unfinished ones) of the batches `keep` says
/// false for. Returns how many.
fn remove(dir: &Path, keep: impl Fn(u64) -> bool) -> Result<usize, Error> {
    let mut n = 0;
    for (b, p) in list_all(dir, true)? {
        if !keep(b) {
            fs::remove_file(&p).map_err(io(&p, "removing"))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Removes the logs of batches up to `batch` (checkpointed: never run
/// again). Returns how many.
pub fn prune(dir: &Path, batch: u64) -> Result<usize, Error> {
    remove(dir, |b| b > batch)
}

/// Removes the logs of batches after `batch`: at a restart, those past a
/// gap, whose numbers the batches about to run will reuse.
pub fn remove_after(dir: &Path, batch: u64) -> Result<usize, Error> {
    remove(dir, |b| b <= batch)
}

/// Removes every log (a fresh start).
pub fn clear(dir: &Path) -> Result<usize, Error> {
    remove(dir, |_| false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dstream_core::job::JobFile;

    /// A job receiving lines over tcp, batch every `interval`.
    fn tcp_job(interval: &str) -> Job {
        JobFile::parse(&format!(
            r#"name = "t"
interval = "{interval}"
[sources.lines]
kind = "tcp"
addr = "127.0.0.1:9"
[sinks.out]
from = "lines"
kind = "stdout"
"#
        ))
        .unwrap()
        .resolve(&BTreeMap::new())
        .unwrap()
    }

    #[test]
    fn logs_read_back_run_in_a_row_and_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let job = tcp_job("100ms");
        let src = job
            .node_ids()
            .find(|id| job.node(*id).name == "lines")
            .unwrap();
        for b in [3u64, 4, 5, 7] {
            let input: Batch = [("", format!("line of {b}")), ("", "x".into())]
                .into_iter()
                .collect();
            let input = BTreeMap::from([(src, input)]);
            write(dir.path(), &job, &fingerprint(&job), b, &input).unwrap();
        }
        let got = read(dir.path(), &job, 4).unwrap().unwrap();
        assert_eq!(got[&src].get(0), (&b""[..], &b"line of 4"[..]));
        assert_eq!(got[&src].len(), 2);
        assert!(read(dir.path(), &job, 6).unwrap().is_none());
        // 3, 4, 5 in a row; 7 after a gap is not run again.
        assert_eq!(logged_from(dir.path(), 3).unwrap(), 5);
        assert_eq!(logged_from(dir.path(), 1).unwrap(), 0);
        assert_eq!(logged_from(dir.path(), 7).unwrap(), 7);
        assert_eq!(prune(dir.path(), 4).unwrap(), 2);
        assert_eq!(list(dir.path()).unwrap(), [5, 7]);
        assert_eq!(remove_after(dir.path(), 5).unwrap(), 1);
        assert_eq!(list(dir.path()).unwrap(), [5]);
        // A log left half written by a crash goes with the others.
        let tmp = input_dir(dir.path()).join(".batch-0000000006.tmp");
        std::fs::write(tmp, b"x").unwrap();
        assert_eq!(clear(dir.path()).unwrap(), 2);
        assert!(
            fs::read_dir(input_dir(dir.path()))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_log_of_another_job_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let job = tcp_job("100ms");
        let src = job.node_ids().next().unwrap();
        let input = BTreeMap::from([(src, Batch::new())]);
        write(dir.path(), &job, &fingerprint(&job), 1, &input).unwrap();
        let other = tcp_job("200ms");
        let e = read(dir.path(), &other, 1).unwrap_err().to_string();
        assert!(
            e.contains("another job graph") && e.contains("--fresh"),
            "{e}"
        );
    }
}
