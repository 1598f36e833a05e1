//! A worker process: registers with the coordinator, loads the jobs it is
//! sent, runs tasks over the blocks in its store (fetching inputs it lacks
//! from the workers holding them) and serves its blocks to peers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dstream_core::Batch;
use dstream_core::exec::{Block, Executor, Pools};
use dstream_core::job::{Job, NodeId, NodeKind};
use dstream_core::plan::{Aux, BlockId, DatasetId, Task, Work};
use dstream_core::wire::{JobSpec, Message, Peer, WorkerId, WorkerStats};
use dstream_wasm::{Cancel, Plugin, Runtime};

use super::{HEARTBEAT, Peers, load_job};
use crate::Error;
use crate::calls::WasmCalls;
use crate::checkpoint;
use crate::local::chunks;
use crate::net::{self, tls::Identity};
use crate::source::{self, Inbox, Receiver};
use crate::store::BlockStore;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The coordinator's address.
    pub join: SocketAddr,
    /// Where peers reach this worker for blocks (port 0: any free port).
    pub listen: SocketAddr,
    /// A name for logs and `dstream status`.
    pub name: String,
    /// Tasks run at once.
    pub slots: u32,
    /// Faults to inject, for tests and demos.
    pub faults: Faults,
}

/// Faults a worker can be told to inject (`dstream worker --fault-*`).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every task takes this many times longer (the worker waits after
    /// computing; a cancelled copy stops waiting).
    pub slow: Option<f64>,
    /// After this long, the worker sends nothing more to the coordinator
    /// (no heartbeat, no report): it looks cut off.
    pub drop_after: Option<Duration>,
    /// After this long, the process exits at once (as if killed).
    pub exit_after: Option<Duration>,
}

/// A job loaded on this worker, with the blocks it holds and the
/// receivers it runs.
#[derive(Debug)]
struct JobRun {
    job: Job,
    plugins: BTreeMap<String, Plugin>,
    pools: Pools,
    store: BlockStore,
    base_dir: PathBuf,
    checkpoint_dir: PathBuf,
    receivers: Mutex<BTreeMap<NodeId, (Arc<Inbox>, Receiver)>>,
}

/// Records a receiver's inbox holds before the receiver waits.
const INBOX_RECORDS: usize = 10_000_000;

#[derive(Debug, Default)]
struct Counters {
    tasks_run: AtomicU64,
    local_inputs: AtomicU64,
    fetched_blocks: AtomicU64,
    fetched_bytes: AtomicU64,
    served_blocks: AtomicU64,
    received_blocks: AtomicU64,
    replica_blocks: AtomicU64,
}

#[derive(Debug)]
struct Node {
    id: WorkerId,
    faults: Faults,
    started: Instant,
    /// A token per task running here or told to stop: the coordinator's
    /// Cancel (another copy won) sets it, which also stops a plugin call
    /// running for the task.
    cancels: Mutex<HashMap<(u32, BlockId), Cancel>>,
    runtime: Runtime,
    jobs: RwLock<HashMap<u32, Arc<JobRun>>>,
    peers: Peers,
    coordinator: quinn::Connection,
    counters: Counters,
}

/// Runs a worker until its connection to the coordinator closes (an
/// error: the coordinator is gone) or `stop` resolves. `joined` is told the
/// worker's id and data address once registered.
pub async fn run(
    opts: WorkerOptions,
    identity: &Identity,
    runtime: Runtime,
    mut joined: impl FnMut(WorkerId, SocketAddr),
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let ep = net::endpoint(opts.listen, identity)?;
    let started = Instant::now();
    tokio::pin!(stop);
    let mut registered = false;
    let outcome = loop {
        let session = session(
            &opts,
            &ep,
            runtime.clone(),
            started,
            &mut joined,
            &mut registered,
        );
        let lost = tokio::select! {
            e = session => e,
            () = &mut stop => break Ok(()),
        };
        if !registered {
            // Never got in: say why at once (no coordinator there, refused).
            break Err(lost);
        }
        // The coordinator went away (a restart, say): its jobs are gone
        // with it; join again when it is back.
        tracing::warn!(error = %lost, "lost the coordinator; joining again");
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = &mut stop => return Ok(()),
            }
            match net::connect(&ep, opts.join).await {
                Ok(c) => {
                    c.close(quinn::VarInt::from_u32(0), b"probe");
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "the coordinator is not back yet"),
            }
        }
    };
    ep.close(quinn::VarInt::from_u32(0), b"worker stopping");
    outcome
}

/// One membership: registers, serves the coordinator and the peers, sends
/// heartbeats; returns why it ended (the coordinator's connection closed).
async fn session(
    opts: &WorkerOptions,
    ep: &quinn::Endpoint,
    runtime: Runtime,
    started: Instant,
    joined: &mut impl FnMut(WorkerId, SocketAddr),
    registered: &mut bool,
) -> Error {
    let data_addr = match ep.local_addr() {
        Ok(a) => a,
        Err(e) => return Error::io("reading the worker's address", e),
    };
    let coordinator = match net::connect(ep, opts.join).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let answer = net::request(
        &coordinator,
        &Message::Register {
            name: opts.name.clone(),
            slots: opts.slots.max(1),
            data_addr: data_addr.to_string(),
        },
    )
    .await;
    let what = || format!("registering with {}", opts.join);
    let id = match answer {
        Ok(Message::Registered { worker }) => worker,
        Ok(Message::Error { message }) => {
            return Error::Net {
                what: what(),
                message,
            };
        }
        Ok(other) => {
            return Error::Net {
                what: what(),
                message: format!("unexpected answer {other:?}"),
            };
        }
        Err(e) => return e,
    };
    *registered = true;
    tracing::info!(worker = id, %data_addr, coordinator = %opts.join, "registered");
    joined(id, data_addr);
    let node = Arc::new(Node {
        id,
        faults: opts.faults.clone(),
        started,
        cancels: Mutex::default(),
        runtime,
        jobs: RwLock::default(),
        peers: Peers::new(ep.clone()),
        coordinator: coordinator.clone(),
        counters: Counters::default(),
    });
    let handler = {
        let node = node.clone();
        move |m: Message| {
            let node = node.clone();
            async move { node.handle(m).await }
        }
    };
    tokio::spawn(net::serve(coordinator.clone(), handler.clone()));
    // Peers' connections of this membership, closed when it ends (a peer
    // must not go on fetching from a worker that forgot its blocks).
    let peers_in: Arc<Mutex<Vec<quinn::Connection>>> = Arc::default();
    let accepting = {
        let ep = ep.clone();
        let peers_in = peers_in.clone();
        tokio::spawn(async move {
            while let Some(c) = net::accept(&ep).await {
                if let Ok(conn) = c {
                    let mut open = peers_in.lock().expect("peers lock");
                    open.retain(|c| c.close_reason().is_none());
                    open.push(conn.clone());
                    drop(open);
                    tokio::spawn(net::serve(conn, handler.clone()));
                }
            }
        })
    };
    let beating = {
        let node = node.clone();
        async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Some(after) = node.faults.exit_after
                    && node.started.elapsed() >= after
                {
                    tracing::warn!("fault injection: exiting");
                    std::process::exit(137);
                }
                if node.muted() {
                    continue;
                }
                let msg = Message::Heartbeat {
                    worker: node.id,
                    stats: node.stats(),
                };
                if let Err(e) = net::request(&node.coordinator, &msg).await {
                    tracing::debug!(error = %e, "heartbeat not delivered");
                }
            }
        }
    };
    let reason = tokio::select! {
        reason = coordinator.closed() => reason,
        () = beating => unreachable!("the heartbeat loop never ends"),
    };
    accepting.abort();
    for c in peers_in.lock().expect("peers lock").drain(..) {
        c.close(quinn::VarInt::from_u32(3), b"worker rejoining");
    }
    // Free every job's blocks and receivers.
    node.jobs.write().expect("jobs lock").clear();
    Error::Net {
        what: format!("the coordinator at {}", opts.join),
        message: format!("connection closed: {reason}"),
    }
}

impl Node {
    /// True once the injected fault says to send nothing more.
    fn muted(&self) -> bool {
        self.faults
            .drop_after
            .is_some_and(|d| self.started.elapsed() >= d)
    }

    /// The token of a task, made on first use.
    fn cancel_token(&self, job: u32, block: BlockId) -> Cancel {
        self.cancels
            .lock()
            .expect("cancel lock")
            .entry((job, block))
            .or_default()
            .clone()
    }

    fn is_cancelled(&self, job: u32, block: BlockId) -> bool {
        self.cancels
            .lock()
            .expect("cancel lock")
            .get(&(job, block))
            .is_some_and(Cancel::is_cancelled)
    }

    fn job(&self, job: u32) -> Option<Arc<JobRun>> {
        self.jobs.read().expect("jobs lock").get(&job).cloned()
    }

    fn stats(&self) -> WorkerStats {
        let c = &self.counters;
        let (mut blocks, mut bytes) = (0, 0);
        for j in self.jobs.read().expect("jobs lock").values() {
            let (n, b) = j.store.size();
            blocks += n as u64;
            bytes += b as u64;
        }
        WorkerStats {
            tasks_run: c.tasks_run.load(Ordering::Relaxed),
            local_inputs: c.local_inputs.load(Ordering::Relaxed),
            fetched_blocks: c.fetched_blocks.load(Ordering::Relaxed),
            fetched_bytes: c.fetched_bytes.load(Ordering::Relaxed),
            served_blocks: c.served_blocks.load(Ordering::Relaxed),
            received_blocks: c.received_blocks.load(Ordering::Relaxed),
            replica_blocks: c.replica_blocks.load(Ordering::Relaxed),
            blocks_held: blocks,
            bytes_held: bytes,
        }
    }

    async fn handle(self: Arc<Self>, m: Message) -> Message {
        match m {
            Message::StartJob {
                job,
                spec,
                checkpoint_dir,
            } => match self
                .clone()
                .start_job(job, spec, PathBuf::from(checkpoint_dir))
                .await
            {
                Ok(()) => Message::Ack,
                Err(e) => {
                    tracing::warn!(job, error = %e, "could not load the job");
                    Message::Error {
                        message: e.to_string(),
                    }
                }
            },
            Message::StopJob { job } => {
                self.jobs.write().expect("jobs lock").remove(&job);
                // Its running plugin calls stop too.
                // (Each running task holds its own token.)
                self.cancels
                    .lock()
                    .expect("cancel lock")
                    .retain(|(j, _), token| {
                        if *j == job {
                            token.cancel();
                        }
                        *j != job
                    });
                tracing::info!(job, "job stopped");
                Message::Ack
            }
            Message::StartReceiver { job, source } => match self.start_receiver(job, source) {
                Ok(()) => Message::Ack,
                Err(e) => Message::Error {
                    message: e.to_string(),
                },
            },
            Message::CutInput {
                job,
                source,
                batch,
                replica,
            } => match self.cut_input(job, source, batch, replica).await {
                Ok(m) => m,
                Err(e) => Message::Error {
                    message: e.to_string(),
                },
            },
            Message::StoreBlocks { job, blocks } => {
                let Some(run) = self.job(job) else {
                    return Message::Error {
                        message: format!("job {job} is not loaded on worker {}", self.id),
                    };
                };
                let n = blocks.len() as u64;
                for (id, data, bounds) in blocks {
                    match Batch::from_parts(data, bounds) {
                        Ok(b) => run.store.insert(id, Arc::new(Block::Part(b))),
                        Err(e) => {
                            return Message::Error {
                                message: format!("block {id}: {e}"),
                            };
                        }
                    }
                }
                self.counters.replica_blocks.fetch_add(n, Ordering::Relaxed);
                Message::Ack
            }
            Message::RunTask { job, task, sources } => {
                tokio::spawn(self.run_task(job, task, sources));
                Message::Ack
            }
            Message::WriteBlocks { job, dir, blocks } => {
                let Some(run) = self.job(job) else {
                    return Message::Error {
                        message: format!("job {job} is not loaded on worker {}", self.id),
                    };
                };
                let written = tokio::task::spawn_blocking(move || {
                    let tmp = PathBuf::from(dir);
                    blocks
                        .iter()
                        .map(|id| {
                            let b = run.store.get(id).ok_or_else(|| {
                                Error::Job(format!("block {id} is not on this worker"))
                            })?;
                            let data = b.batch(None).ok_or_else(|| {
                                Error::Job(format!("block {id} is not a partition"))
                            })?;
                            checkpoint::write_block(&tmp, &run.job, id, data)
                        })
                        .collect::<Result<Vec<_>, Error>>()
                })
                .await;
                match written {
                    Ok(Ok(entries)) => Message::BlocksWritten {
                        entries: entries
                            .into_iter()
                            .map(|w| (w.block, w.file, w.records))
                            .collect(),
                    },
                    Ok(Err(e)) => Message::Error {
                        message: e.to_string(),
                    },
                    Err(e) => Message::Error {
                        message: e.to_string(),
                    },
                }
            }
            Message::Cancel { job, block } => {
                self.cancel_token(job, block).cancel();
                Message::Ack
            }
            Message::Drop { job, blocks } => {
                if let Some(run) = self.job(job) {
                    run.store.remove(&blocks);
                }
                Message::Ack
            }
            Message::Fetch { job, block, bucket } => {
                let found = self.job(job).and_then(|run| run.store.get(&block));
                match found.as_deref().and_then(|b| b.batch(bucket)) {
                    Some(batch) => {
                        self.counters.served_blocks.fetch_add(1, Ordering::Relaxed);
                        Message::Block {
                            data: batch.data().to_vec(),
                            bounds: batch.bounds().to_vec(),
                        }
                    }
                    None => Message::Error {
                        message: format!("block {block} of job {job} is not on worker {}", self.id),
                    },
                }
            }
            other => Message::Error {
                message: format!("a worker does not answer {other:?}"),
            },
        }
    }

    fn start_receiver(&self, job: u32, source: NodeId) -> Result<(), Error> {
        let run = self
            .job(job)
            .ok_or_else(|| Error::Job(format!("job {job} is not loaded on worker {}", self.id)))?;
        let node = run.job.node(source);
        let NodeKind::Source(src) = &node.kind else {
            return Err(Error::Job(format!("`{}` is not a source", node.name)));
        };
        let inbox = Inbox::new(INBOX_RECORDS);
        let r = source::start(&node.name, src, &run.base_dir, inbox.clone())?;
        tracing::info!(job, source = %node.name, addr = ?r.local_addr(), "receiver started");
        run.receivers
            .lock()
            .expect("receivers lock")
            .insert(source, (inbox, r));
        Ok(())
    }

    /// Makes what the receiver of `source` got the input blocks of
    /// `batch`, copies them to `replica`, and answers with them.
    async fn cut_input(
        &self,
        job: u32,
        source: NodeId,
        batch: u64,
        replica: Option<Peer>,
    ) -> Result<Message, Error> {
        let run = self
            .job(job)
            .ok_or_else(|| Error::Job(format!("job {job} is not loaded on worker {}", self.id)))?;
        // A cut that overtook its receiver's start (they travel on separate
        // streams) finds nothing received yet: an empty input.
        let inbox = run
            .receivers
            .lock()
            .expect("receivers lock")
            .get(&source)
            .map(|(i, _)| i.clone());
        let (input, ticket) = match &inbox {
            Some(i) => {
                let (input, ticket) = i.take_unconfirmed();
                (input, Some(ticket))
            }
            None => (Batch::new(), None),
        };
        let records = input.len() as u64;
        let parts = chunks(&input, run.job.partitions);
        let mut blocks = Vec::with_capacity(parts.len());
        let mut copies = Vec::with_capacity(parts.len());
        for (p, part) in parts.into_iter().enumerate() {
            let id = BlockId {
                dataset: DatasetId {
                    node: source,
                    batch,
                    aux: Aux::Main,
                },
                part: p as u32,
            };
            blocks.push((id, part.byte_len() as u64));
            if replica.is_some() {
                copies.push((id, part.data().to_vec(), part.bounds().to_vec()));
            }
            run.store.insert(id, Arc::new(Block::Part(part)));
        }
        self.counters
            .received_blocks
            .fetch_add(blocks.len() as u64, Ordering::Relaxed);
        // The copy is stored before the blocks are reported.
        let mut copied = None;
        if let Some(r) = replica {
            let msg = Message::StoreBlocks {
                job,
                blocks: copies,
            };
            match self.peers.request(&r.addr, &msg).await {
                Ok(Message::Ack) => copied = Some(r.worker),
                Ok(other) => {
                    tracing::warn!(job, batch, replica = r.worker, answer = ?other, "input not copied");
                }
                Err(e) => {
                    tracing::warn!(job, batch, replica = r.worker, error = %e, "input not copied");
                }
            }
        }
        // Stored here and (if a second worker took it) there: the senders
        // of these lines are answered.
        if let (Some(inbox), Some(ticket)) = (inbox, ticket) {
            inbox.confirm(ticket);
        }
        Ok(Message::InputCut {
            blocks,
            records,
            replica: copied,
        })
    }

    async fn start_job(
        self: Arc<Self>,
        job: u32,
        spec: JobSpec,
        checkpoint_dir: PathBuf,
    ) -> Result<(), Error> {
        let runtime = self.runtime.clone();
        let base_dir = PathBuf::from(&spec.base_dir);
        let loaded = tokio::task::spawn_blocking(move || load_job(&runtime, &spec))
            .await
            .map_err(|e| Error::Job(format!("loading job {job}: {e}")))??;
        tracing::info!(job, name = %loaded.job.name, "job loaded");
        let run = JobRun {
            pools: Pools::new(&loaded.job),
            job: loaded.job,
            plugins: loaded.plugins,
            store: BlockStore::new(),
            base_dir,
            checkpoint_dir,
            receivers: Mutex::default(),
        };
        self.jobs
            .write()
            .expect("jobs lock")
            .insert(job, Arc::new(run));
        Ok(())
    }

    async fn run_task(self: Arc<Self>, job: u32, task: Task, sources: Vec<(BlockId, Vec<Peer>)>) {
        let output = task.output;
        let outcome = self.clone().compute(job, task, &sources).await;
        let msg = match outcome {
            Ok((records, bytes)) => Message::TaskDone {
                job,
                block: output,
                records,
                bytes,
            },
            Err(e) => {
                // Inputs that could not be fetched are worth another try;
                // anything else is the operator's (or the job's) failure.
                let retry = matches!(e, Error::Net { .. });
                tracing::warn!(job, block = %output, error = %e, retry, "task failed");
                Message::TaskFailed {
                    job,
                    block: output,
                    message: e.to_string(),
                    retry,
                }
            }
        };
        self.cancels
            .lock()
            .expect("cancel lock")
            .remove(&(job, output));
        if self.muted() {
            return;
        }
        if let Err(e) = net::request(&self.coordinator, &msg).await {
            tracing::warn!(job, block = %output, error = %e, "could not report a task");
        }
    }

    /// Runs `task`: its inputs from the store, or fetched from a worker
    /// holding them; its output into the store.
    async fn compute(
        self: Arc<Self>,
        job: u32,
        task: Task,
        sources: &[(BlockId, Vec<Peer>)],
    ) -> Result<(u64, u64), Error> {
        let run = self
            .job(job)
            .ok_or_else(|| Error::Job(format!("job {job} is not loaded on this worker")))?;
        if let Work::Restore { checkpoint } = task.work {
            // The start of lineage: read back from the checkpoint store.
            let r = run.clone();
            let id = task.output;
            let batch = tokio::task::spawn_blocking(move || {
                checkpoint::read_block(&r.checkpoint_dir, &r.job, checkpoint, &id)
            })
            .await
            .map_err(|e| Error::Job(format!("restoring {id}: {e}")))??;
            let (records, bytes) = (batch.len() as u64, batch.byte_len() as u64);
            run.store.insert(id, Arc::new(Block::Part(batch)));
            self.counters.tasks_run.fetch_add(1, Ordering::Relaxed);
            return Ok((records, bytes));
        }
        let mut inputs: Vec<(Arc<Block>, Option<u32>)> = Vec::with_capacity(task.inputs.len());
        for i in &task.inputs {
            if let Some(b) = run.store.get(&i.block) {
                self.counters.local_inputs.fetch_add(1, Ordering::Relaxed);
                inputs.push((b, i.bucket));
                continue;
            }
            let holders: Vec<Peer> = sources
                .iter()
                .find(|(b, _)| *b == i.block)
                .map(|(_, h)| h.iter().filter(|p| p.worker != self.id).cloned().collect())
                .unwrap_or_default();
            let batch = self.peers.fetch(job, i.block, i.bucket, &holders).await?;
            self.counters.fetched_blocks.fetch_add(1, Ordering::Relaxed);
            self.counters
                .fetched_bytes
                .fetch_add(batch.byte_len() as u64, Ordering::Relaxed);
            inputs.push((Arc::new(Block::Part(batch)), None));
        }
        let output = task.output;
        let cancelled = || Error::Net {
            what: format!("task {output}"),
            message: "cancelled: another copy won".into(),
        };
        if self.is_cancelled(job, output) {
            return Err(cancelled());
        }
        let computing = Instant::now();
        let run2 = run.clone();
        let token = self.cancel_token(job, output);
        let stopped = token.clone();
        let block = tokio::task::spawn_blocking(move || {
            let batches: Vec<&Batch> = inputs
                .iter()
                .map(|(b, bucket)| {
                    b.batch(*bucket).ok_or_else(|| {
                        dstream_core::Error::BadValue("an input block of the wrong kind".into())
                    })
                })
                .collect::<Result<_, _>>()?;
            let calls = AtomicUsize::new(0);
            let wasm = WasmCalls {
                plugins: &run2.plugins,
                calls: &calls,
            };
            // A Cancel from the coordinator stops the plugin call at once
            // instead of letting a losing copy run to its end.
            token.scope(|| Executor::new(&run2.job, &run2.pools).run(&task, &batches, &wasm))
        })
        .await
        .map_err(|e| Error::Job(format!("task {output}: {e}")))?;
        // This attempt's own token: a plugin call it stopped is a cancelled
        // task, not the operator's failure.
        if stopped.is_cancelled() {
            return Err(cancelled());
        }
        let block = block.map_err(|source| Error::Batch {
            batch: output.dataset.batch,
            source,
        })?;
        if let Some(factor) = self.faults.slow {
            // Injected slowness: wait as if the task took `factor` times as
            // long, unless a copy elsewhere wins meanwhile.
            let until = Instant::now() + computing.elapsed().mul_f64((factor - 1.0).max(0.0));
            while Instant::now() < until && !self.is_cancelled(job, output) {
                tokio::time::sleep(Duration::from_millis(5).min(until - Instant::now())).await;
            }
        }
        if self.is_cancelled(job, output) {
            return Err(cancelled());
        }
        let (records, bytes) = (block.records() as u64, block.bytes() as u64);
        run.store.insert(output, Arc::new(block));
        self.counters.tasks_run.fetch_add(1, Ordering::Relaxed);
        Ok((records, bytes))
    }
}
