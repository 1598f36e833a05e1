//! Runs a job in real time: receivers fill inboxes, every interval a batch
//! takes them, runs, writes its sinks, and every k batches a checkpoint is
//! written. Batches run in order; one that takes longer than the interval
//! delays the next, and the delay is measured and reported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use dstream_core::Batch;
use dstream_core::job::NodeId;

use crate::local::Engine;
use crate::sink::{self, Output, Sink};
use crate::source::{self, Inbox, Receiver};
use crate::{Error, checkpoint, inputlog};

/// How to run.
#[derive(Debug)]
pub struct RunOptions {
    /// The job file's directory: relative paths in the job resolve here.
    pub base_dir: PathBuf,
    /// Where checkpoints go.
    pub checkpoint_dir: PathBuf,
    /// Ignore (and replace) existing checkpoints.
    pub fresh: bool,
    /// Stop after this many batches (this run); `None` runs until stopped.
    pub max_batches: Option<u64>,
    /// Set to stop after the current batch (Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Records a receiver inbox holds before receivers wait.
    pub inbox_capacity: usize,
}

/// One batch, as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// Batch number.
    pub batch: u64,
    /// When the batch's interval ended (its time).
    pub time: SystemTime,
    /// Records in from sources.
    pub records_in: usize,
    /// Records written by sinks.
    pub records_out: usize,
    /// Time to run the batch (tasks and sinks).
    pub processing: Duration,
    /// How late the batch started after its interval ended.
    pub delay: Duration,
    /// Tasks run.
    pub tasks: usize,
    /// True when a checkpoint was written after it.
    pub checkpointed: bool,
    /// True when it ran again after a restart, over the input logged for it
    /// before the crash (see [`inputlog`](crate::inputlog)).
    pub replayed: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The checkpoint it resumed from.
    pub resumed_from: Option<u64>,
    /// The last batch run.
    pub last_batch: u64,
    /// The last checkpoint written.
    pub last_checkpoint: Option<u64>,
}

/// Events of a run, for the front end to show.
pub trait Progress {
    /// The run resumed from a checkpoint.
    fn resumed(&mut self, _batch: u64) {}
    /// Batches `from..=to` run again first, over their logged input.
    fn replaying(&mut self, _from: u64, _to: u64) {}
    /// A receiver started.
    fn receiver(&mut self, _name: &str, _addr: Option<std::net::SocketAddr>) {}
    /// A batch finished.
    fn batch(&mut self, report: &BatchReport);
}

/// Runs `engine`'s job until stopped, `max_batches` ran, or an error.
pub fn run(
    engine: &Engine,
    opts: &RunOptions,
    stdout: impl Fn() -> Box<dyn std::io::Write + Send>,
    progress: &mut dyn Progress,
) -> Result<RunSummary, Error> {
    let job = engine.job();
    let dir = &opts.checkpoint_dir;
    let resumed_from = if opts.fresh {
        // Logs first: a crash in between must not leave old input beside
        // no checkpoint.
        let n = inputlog::clear(dir)? + checkpoint::clear(dir)?;
        if n > 0 {
            tracing::info!(removed = n, dir = %dir.display(), "fresh start: old checkpoints and input logs removed");
        }
        None
    } else {
        checkpoint::restore(dir, job, engine.store())?
    };
    if let Some(b) = resumed_from {
        tracing::info!(batch = b, dir = %dir.display(), "resumed from checkpoint");
        progress.resumed(b);
        inputlog::prune(dir, b)?;
    }
    let first = resumed_from.map_or(1, |b| b + 1);
    // What receivers gave the batches since the checkpoint was logged before
    // they ran: they run again first, over the same input.
    let receives = job.receivers().next().is_some();
    let replay_to = if receives {
        let to = inputlog::logged_from(dir, first)?;
        // Logs past a gap would be taken for the input of the batches that
        // reuse their numbers.
        inputlog::remove_after(dir, to)?;
        to
    } else {
        first - 1
    };
    let fingerprint = checkpoint::fingerprint(job);
    if replay_to >= first {
        tracing::info!(
            from = first,
            to = replay_to,
            "running the batches since the checkpoint again over their logged input"
        );
        progress.replaying(first, replay_to);
    }
    let mut sinks: Vec<(NodeId, Box<dyn Sink>)> = Vec::new();
    for s in &job.sinks {
        sinks.push((
            s.from,
            sink::open(&s.name, &s.kind, &opts.base_dir, stdout())?,
        ));
    }
    // Receivers start with the first batch not run again: what they receive
    // is logged at the next batch, not held unlogged through a replay.
    let mut receivers: Vec<(NodeId, Arc<Inbox>, Receiver)> = Vec::new();
    let start_receivers = |progress: &mut dyn Progress| -> Result<_, Error> {
        let mut started = Vec::new();
        for (id, src) in job.receivers() {
            let name = &job.node(id).name;
            let inbox = Inbox::new(opts.inbox_capacity);
            let r = source::start(name, src, &opts.base_dir, inbox.clone())?;
            progress.receiver(name, r.local_addr());
            started.push((id, inbox, r));
        }
        Ok(started)
    };

    // The real-time clock starts with the first batch not run again.
    let live = replay_to + 1;
    let mut start = Instant::now();
    let mut start_wall = SystemTime::now();
    let mut last_batch = first - 1;
    let mut last_checkpoint = resumed_from;
    let mut n = first;
    loop {
        if opts.max_batches.is_some_and(|m| n - first >= m) {
            break;
        }
        let replayed = n < live;
        if n == live {
            receivers = start_receivers(progress)?;
            start = Instant::now();
            start_wall = SystemTime::now();
        }
        // Wait for the interval to end, unless asked to stop (a batch run
        // again does not wait).
        let due = start + job.interval * n.saturating_sub(live - 1) as u32;
        while !replayed && Instant::now() < due && !opts.stop.load(Ordering::Relaxed) {
            std::thread::sleep((due - Instant::now()).min(Duration::from_millis(20)));
        }
        if opts.stop.load(Ordering::Relaxed) {
            break;
        }
        let began = Instant::now();
        let delay = if replayed {
            Duration::ZERO
        } else {
            began.saturating_duration_since(due)
        };
        let received: BTreeMap<NodeId, Batch> = if replayed {
            inputlog::read(dir, job, n)?.ok_or_else(|| Error::Checkpoint {
                path: dir.clone(),
                message: format!("the input log of batch {n} disappeared"),
            })?
        } else {
            // Logged (synced) before the batch runs, and only then confirmed
            // to senders waiting for it (an http post is answered then).
            let mut tickets = Vec::with_capacity(receivers.len());
            let received: BTreeMap<NodeId, Batch> = receivers
                .iter()
                .map(|(id, inbox, _)| {
                    let (batch, ticket) = inbox.take_unconfirmed();
                    tickets.push((inbox, ticket));
                    (*id, batch)
                })
                .collect();
            if receives {
                inputlog::write(dir, job, &fingerprint, n, &received)?;
            }
            for (inbox, ticket) in tickets {
                inbox.confirm(ticket);
            }
            received
        };
        let stats = engine.run_batch(n, received).map_err(|e| {
            if replayed {
                // Its input is kept: say how to go on without it.
                Error::Checkpoint {
                    path: inputlog::path(dir, n),
                    message: format!(
                        "batch {n} failed again over the input logged for it: {e}; remove this file to run on without that input, or start over with --fresh"
                    ),
                }
            } else {
                e
            }
        })?;
        let mut records_out = 0;
        for (from, sink) in &mut sinks {
            if !job.computes_at(*from, n) {
                continue;
            }
            let blocks = engine.dataset(*from, n).ok_or_else(|| Error::Batch {
                batch: n,
                source: dstream_core::Error::BadValue(format!(
                    "the dataset of `{}` is missing",
                    job.node(*from).name
                )),
            })?;
            let parts: Vec<&Batch> = blocks.iter().filter_map(|b| b.batch(None)).collect();
            let node = job.node(*from);
            let out = Output {
                job: &job.name,
                stream: &node.name,
                batch: n,
                parts: &parts,
                key: &node.key,
                value: &node.value,
            };
            records_out += out.records();
            sink.write(&out)?;
        }
        engine.finish_batch(n);
        let checkpointed = job.checkpoint_due(n);
        if checkpointed {
            checkpoint::write(dir, job, engine.store(), n)?;
            inputlog::prune(dir, n)?;
            last_checkpoint = Some(n);
        }
        if !replayed && began.elapsed() > job.interval {
            tracing::warn!(
                batch = n,
                processing_ms = began.elapsed().as_secs_f64() * 1e3,
                interval_ms = job.interval.as_secs_f64() * 1e3,
                "batch took longer than the interval: the next ones start late"
            );
        }
        let report = BatchReport {
            batch: n,
            time: start_wall + (due - start),
            records_in: stats.records_in,
            records_out,
            processing: began.elapsed(),
            delay,
            tasks: stats.tasks,
            checkpointed,
            replayed,
        };
        tracing::info!(
            batch = n,
            records_in = report.records_in,
            records_out,
            processing_ms = report.processing.as_secs_f64() * 1e3,
            delay_ms = delay.as_secs_f64() * 1e3,
            tasks = stats.tasks,
            wasm_calls = stats.wasm_calls,
            replayed,
            "batch done"
        );
        progress.batch(&report);
        last_batch = n;
        n += 1;
    }
    // Stopping: checkpoint the last batch so a restart loses nothing.
    if last_batch >= first && last_checkpoint != Some(last_batch) {
        checkpoint::write(dir, job, engine.store(), last_batch)?;
        inputlog::prune(dir, last_batch)?;
        last_checkpoint = Some(last_batch);
    }
    for (_, _, r) in receivers {
        r.stop();
    }
    Ok(RunSummary {
        resumed_from,
        last_batch,
        last_checkpoint,
    })
}
