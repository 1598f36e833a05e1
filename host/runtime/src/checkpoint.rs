//! Checkpoints in a directory: the datasets later batches still need (state,
//! window contents), written so that a crash at any moment leaves either
//! the previous checkpoint or the new one, never half of one.
//!
//! Layout: `DIR/checkpoint-NNNNNNNNNN/` holds one `.blk` file per block and a
//! `manifest.toml` naming them, the batch and the job's fingerprint. It is
//! written as `DIR/.checkpoint-NNNNNNNNNN.tmp/`, synced, then renamed; only
//! directories with a manifest count. The two newest are kept.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dstream_core::Batch;
use dstream_core::exec::Block;
use dstream_core::job::{Job, NodeId};
use dstream_core::plan::{Aux, BlockId, DatasetId, Planner};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::store::BlockStore;

const KEEP: usize = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    job: String,
    fingerprint: String,
    batch: u64,
    blocks: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    stream: String,
    aux: String,
    batch: u64,
    part: u32,
    file: String,
    records: u64,
}

/// A fingerprint of what makes checkpointed data meaningful: the DAG, the
/// partitioning and the interval. (FNV-1a over the job's structure.)
pub fn fingerprint(job: &Job) -> String {
    let text = format!("{:?}|{}|{:?}", job.nodes, job.partitions, job.interval);
    format!("{:016x}", dstream_core::fnv1a(text.as_bytes()))
}

fn aux_name(a: Aux) -> String {
    match a {
        Aux::Main => "main".into(),
        Aux::Shuffle(s) => format!("shuffle{s}"),
        Aux::Slice => "slice".into(),
        Aux::WindowState => "window".into(),
    }
}

fn aux_of(s: &str) -> Option<Aux> {
    Some(match s {
        "main" => Aux::Main,
        "slice" => Aux::Slice,
        "window" => Aux::WindowState,
        _ => Aux::Shuffle(s.strip_prefix("shuffle")?.parse().ok()?),
    })
}

fn dir_name(batch: u64) -> String {
    format!("checkpoint-{batch:010}")
}

/// An I/O error's mapping: `what` was being done to `path`.
pub(crate) fn io(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |e| Error::io(what, e)
}

pub(crate) fn sync_dir(dir: &Path) {
    // Best effort: not every platform can fsync a directory.
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// A block written into a checkpoint being made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The block.
    pub block: BlockId,
    /// Its file in the checkpoint directory.
    pub file: String,
    /// Records in it.
    pub records: u64,
}

fn block_file(job: &Job, id: &BlockId) -> String {
    let ds = id.dataset;
    format!(
        "{}.{}.{}.{}.blk",
        job.node(ds.node).name,
        aux_name(ds.aux),
        ds.batch,
        id.part
    )
}

/// Starts the checkpoint of `batch` in `dir`: an empty temporary directory
/// (replacing any left by a crash), which [`write_block`] fills and
/// [`commit`] turns into the checkpoint.
pub fn begin(dir: &Path, batch: u64) -> Result<PathBuf, Error> {
    fs::create_dir_all(dir).map_err(io(dir, "creating checkpoint directory"))?;
    let tmp = dir.join(format!(".{}.tmp", dir_name(batch)));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp, "removing"))?;
    }
    fs::create_dir(&tmp).map_err(io(&tmp, "creating"))?;
    Ok(tmp)
}

/// Writes one block into the temporary directory `tmp` of a checkpoint
/// (from [`begin`]; any process reaching the directory may write).
pub fn write_block(tmp: &Path, job: &Job, id: &BlockId, data: &Batch) -> Result<Written, Error> {
    let file = block_file(job, id);
    let bytes =
        postcard::to_allocvec(&(data.data(), data.bounds())).map_err(|e| Error::Checkpoint {
            path: tmp.to_path_buf(),
            message: e.to_string(),
        })?;
    let path = tmp.join(&file);
    let mut f = fs::File::create(&path).map_err(io(&path, "creating"))?;
    f.write_all(&bytes).map_err(io(&path, "writing"))?;
    f.sync_all().map_err(io(&path, "syncing"))?;
    Ok(Written {
        block: *id,
        file,
        records: data.len() as u64,
    })
}

/// Completes the checkpoint of `batch` begun in `dir`: writes the manifest
/// naming `blocks`, renames the directory into place, keeps the newest
/// two. Returns its directory.
pub fn commit(dir: &Path, job: &Job, batch: u64, blocks: Vec<Written>) -> Result<PathBuf, Error> {
    let tmp = dir.join(format!(".{}.tmp", dir_name(batch)));
    let fin = dir.join(dir_name(batch));
    let manifest = Manifest {
        job: job.name.clone(),
        fingerprint: fingerprint(job),
        batch,
        blocks: blocks
            .into_iter()
            .map(|w| Entry {
                stream: job.node(w.block.dataset.node).name.clone(),
                aux: aux_name(w.block.dataset.aux),
                batch: w.block.dataset.batch,
                part: w.block.part,
                file: w.file,
                records: w.records,
            })
            .collect(),
    };
    let text = toml::to_string(&manifest).map_err(|e| Error::Checkpoint {
        path: tmp.clone(),
        message: e.to_string(),
    })?;
    let mpath = tmp.join("manifest.toml");
    let mut f = fs::File::create(&mpath).map_err(io(&mpath, "creating"))?;
    f.write_all(text.as_bytes())
        .map_err(io(&mpath, "writing"))?;
    f.sync_all().map_err(io(&mpath, "syncing"))?;
    sync_dir(&tmp);
    if fin.exists() {
        fs::remove_dir_all(&fin).map_err(io(&fin, "replacing"))?;
    }
    fs::rename(&tmp, &fin).map_err(io(&fin, "renaming into"))?;
    sync_dir(dir);
    // Keep the newest few.
    let mut all = list(dir)?;
    all.sort();
    let old = all.len().saturating_sub(KEEP);
    for b in &all[..old] {
        let p = dir.join(dir_name(*b));
        if let Err(e) = fs::remove_dir_all(&p) {
            tracing::warn!(path = %p.display(), error = %e, "could not remove an old checkpoint");
        }
    }
    Ok(fin)
}

/// Reads block `id` back from the checkpoint of `checkpoint` in `dir`.
pub fn read_block(dir: &Path, job: &Job, checkpoint: u64, id: &BlockId) -> Result<Batch, Error> {
    let path = dir.join(dir_name(checkpoint)).join(block_file(job, id));
    let bad = |message: String| Error::Checkpoint {
        path: path.clone(),
        message,
    };
    let bytes = fs::read(&path).map_err(io(&path, "reading"))?;
    let (data, bounds): (Vec<u8>, Vec<u32>) =
        postcard::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
    Batch::from_parts(data, bounds).map_err(|e| bad(e.to_string()))
}

/// Writes the checkpoint of `batch`: every block of the datasets batches
/// after it need. Returns its directory.
pub fn write(dir: &Path, job: &Job, store: &BlockStore, batch: u64) -> Result<PathBuf, Error> {
    let tmp = begin(dir, batch)?;
    let mut blocks = Vec::new();
    for ds in Planner::new(job).needed_after(batch) {
        for (part, b) in store.dataset(&ds) {
            let Some(data) = b.batch(None) else { continue };
            let id = BlockId { dataset: ds, part };
            blocks.push(write_block(&tmp, job, &id, data)?);
        }
    }
    commit(dir, job, batch, blocks)
}

/// Batches of the complete checkpoints in `dir`.
fn list(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("checkpoint-"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if e.path().join("manifest.toml").is_file() {
            out.push(n);
        }
    }
    Ok(out)
}

/// Removes every checkpoint in `dir` (a fresh start: an old checkpoint with
/// a higher batch number would otherwise win at the next resume).
pub fn clear(dir: &Path) -> Result<usize, Error> {
    let all = list(dir)?;
    for b in &all {
        let p = dir.join(dir_name(*b));
        fs::remove_dir_all(&p).map_err(io(&p, "removing"))?;
    }
    Ok(all.len())
}

/// The batch of the newest complete checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Result<Option<u64>, Error> {
    Ok(list(dir)?.into_iter().max())
}

/// Loads the newest checkpoint of `dir` into `store`; returns its batch.
/// A checkpoint of another job graph is an error (its state would mean
/// nothing to this one).
pub fn restore(dir: &Path, job: &Job, store: &BlockStore) -> Result<Option<u64>, Error> {
    let Some(batch) = latest(dir)? else {
        return Ok(None);
    };
    let cdir = dir.join(dir_name(batch));
    let bad = |message: String| Error::Checkpoint {
        path: cdir.clone(),
        message,
    };
    let mpath = cdir.join("manifest.toml");
    let text = fs::read_to_string(&mpath).map_err(io(&mpath, "reading"))?;
    let m: Manifest = toml::from_str(&text).map_err(|e| bad(format!("bad manifest: {e}")))?;
    if m.fingerprint != fingerprint(job) {
        return Err(bad(format!(
            "written by a different version of job `{}` (its streams, partitions or interval changed); \
             remove the directory or run with --fresh to start over",
            m.job
        )));
    }
    for e in m.blocks {
        let node: NodeId = job
            .node_by_name(&e.stream)
            .ok_or_else(|| bad(format!("unknown stream `{}`", e.stream)))?;
        let aux = aux_of(&e.aux).ok_or_else(|| bad(format!("unknown dataset kind `{}`", e.aux)))?;
        let path = cdir.join(&e.file);
        let bytes = fs::read(&path).map_err(io(&path, "reading"))?;
        let (data, bounds): (Vec<u8>, Vec<u32>) =
            postcard::from_bytes(&bytes).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let b =
            Batch::from_parts(data, bounds).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        if b.len() as u64 != e.records {
            return Err(bad(format!(
                "{}: record count differs from the manifest",
                path.display()
            )));
        }
        store.insert(
            BlockId {
                dataset: DatasetId {
                    node,
                    batch: e.batch,
                    aux,
                },
                part: e.part,
            },
            Arc::new(Block::Part(b)),
        );
    }
    Ok(Some(batch))
}
