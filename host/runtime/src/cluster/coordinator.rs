//! The coordinator process: one core [`Coordinator`] per job, driven by
//! the events of the network and the clock.
//!
//! Everything that decides runs on one task (the event loop) without
//! waiting on the network: requests from workers and the CLI arrive as
//! events, answers and commands leave on tasks of their own. Each job's
//! finished batches go to that job's sink task, which fetches the outputs
//! from the workers and writes them in batch order; only then are the
//! blocks dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dstream_core::Batch;
use dstream_core::coordinator::{Command, Config, Coordinator};
use dstream_core::job::Job;
use dstream_core::plan::BlockId;
use dstream_core::wire::{JobSpec, JobStatus, Message, Peer, WorkerId, WorkerStats, WorkerStatus};
use dstream_wasm::Runtime;
use tokio::sync::{mpsc, oneshot};

use super::{Peers, load_job};
use crate::Error;
use crate::checkpoint;
use crate::net::{self, tls::Identity};
use crate::sink::{self, Output, Sink};

/// How the coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// Where workers and the CLI reach it.
    pub listen: SocketAddr,
    /// A worker silent this long is lost.
    pub heartbeat_timeout: Duration,
    /// Speculative copies: a task running this many times its stage's
    /// median gets one (`None`: never).
    pub speculation: Option<f64>,
    /// No copy of a task running less than this.
    pub speculation_min: Duration,
    /// A worker far slower than the copies of its tasks (twice) gets no new
    /// task for this long (see the core's `Config::slow_block`); zero:
    /// never set aside.
    pub slow_block: Duration,
    /// Where the coordinator keeps submitted jobs (to resume them after a
    /// restart) and, under `checkpoints/`, the jobs' checkpoints: a
    /// directory every node reaches.
    pub state_dir: PathBuf,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        let core = Config::default();
        Self {
            listen: super::DEFAULT_COORDINATOR.parse().expect("a valid address"),
            heartbeat_timeout: core.heartbeat_timeout,
            speculation: core.speculation,
            speculation_min: core.speculation_min,
            slow_block: core.slow_block,
            state_dir: PathBuf::from(".dstream/coordinator"),
        }
    }
}

/// What the coordinator reports as it goes (the CLI prints these).
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Listening on this address.
    Listening(SocketAddr),
    /// A worker registered.
    WorkerJoined {
        /// Its id.
        worker: WorkerId,
        /// Its name.
        name: String,
        /// Its data address.
        addr: String,
        /// Its task slots.
        slots: u32,
    },
    /// A worker was lost (silent, or its connection closed).
    WorkerLost {
        /// Its id.
        worker: WorkerId,
        /// Why.
        reason: String,
    },
    /// A job was accepted, or resumed after a restart.
    JobSubmitted {
        /// Its id.
        job: u32,
        /// Its name.
        name: String,
        /// The checkpoint it resumes after, if any.
        resumed_from: Option<u64>,
    },
    /// A batch's outputs are written.
    Batch {
        /// Job id.
        job: u32,
        /// Batch number.
        batch: u64,
        /// From the batch's start to its last task's end.
        processing: Duration,
        /// How late it started.
        delay: Duration,
        /// Records its sinks wrote.
        records_out: u64,
    },
    /// A job ran its last batch.
    JobFinished {
        /// Its id.
        job: u32,
        /// Batches it ran.
        batches: u64,
    },
    /// A job failed.
    JobFailed {
        /// Its id.
        job: u32,
        /// Why.
        message: String,
    },
}

/// Blocks and the workers holding them.
type Located = Vec<(BlockId, Vec<Peer>)>;

/// A finished batch for a job's sink task.
#[derive(Debug)]
struct Outputs {
    batch: u64,
    processing: Duration,
    delay: Duration,
    /// Per sink (index in the job): the partitions and who holds them.
    parts: Vec<(usize, Located)>,
}

enum Event {
    /// A request from a peer, to be answered on `reply`.
    Request {
        conn: quinn::Connection,
        msg: Message,
        reply: oneshot::Sender<Message>,
    },
    /// A job, loaded and checked off the loop.
    Submit {
        spec: JobSpec,
        job: Job,
        sinks: Vec<Box<dyn Sink>>,
        reply: oneshot::Sender<Message>,
    },
    /// A worker answered a StartJob.
    Loaded {
        job: u32,
        worker: WorkerId,
        result: Result<(), String>,
    },
    /// A job's sinks wrote a batch (or failed to).
    Written {
        job: u32,
        batch: u64,
        processing: Duration,
        delay: Duration,
        result: Result<u64, String>,
    },
    /// A receiver's worker stored (and copied) a batch's input blocks.
    Input {
        job: u32,
        worker: WorkerId,
        blocks: Vec<(BlockId, u64)>,
        replica: Option<WorkerId>,
    },
    /// Something a job needs failed.
    Failed { job: u32, message: String },
    /// The sink task could not fetch blocks: where are they now? (Lost
    /// ones are recomputed.)
    Locate {
        job: u32,
        blocks: Vec<BlockId>,
        reply: oneshot::Sender<Located>,
    },
    /// A checkpoint was written (or not).
    CheckpointDone { job: u32, batch: u64, ok: bool },
    /// A connection closed.
    Closed { conn: usize, reason: String },
}

#[derive(Debug)]
struct WorkerEntry {
    name: String,
    addr: String,
    slots: u32,
    conn: quinn::Connection,
    last_seen: Instant,
    stats: WorkerStats,
}

#[derive(Debug, PartialEq)]
enum JobState {
    Loading,
    Running,
    Finished,
    Failed(String),
}

struct JobEntry {
    spec: Arc<JobSpec>,
    /// Its checkpoints.
    checkpoint_dir: PathBuf,
    /// The checkpoint it resumes from (after a coordinator restart).
    resume_from: Option<u64>,
    job: Arc<Job>,
    state: JobState,
    coord: Option<Coordinator>,
    /// Workers that have not answered the StartJob sent at submission.
    waiting: BTreeSet<WorkerId>,
    /// Workers that loaded the job.
    loaded: BTreeSet<WorkerId>,
    sinks: Option<mpsc::UnboundedSender<Outputs>>,
    status: JobStatus,
}

struct State {
    state_dir: PathBuf,
    timeout: Duration,
    speculation: (Option<f64>, Duration, Duration),
    workers: BTreeMap<WorkerId, WorkerEntry>,
    by_conn: HashMap<usize, WorkerId>,
    next_worker: WorkerId,
    jobs: BTreeMap<u32, JobEntry>,
    next_job: u32,
    peers: Peers,
    events: mpsc::UnboundedSender<Event>,
    reports: mpsc::UnboundedSender<Report>,
}

/// Runs the coordinator until `stop` resolves.
pub async fn run(
    opts: CoordinatorOptions,
    identity: &Identity,
    runtime: Runtime,
    reports: mpsc::UnboundedSender<Report>,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let ep = net::endpoint(opts.listen, identity)?;
    let addr = ep
        .local_addr()
        .map_err(|e| Error::io("reading the coordinator's address", e))?;
    tracing::info!(%addr, "coordinator listening");
    let _ = reports.send(Report::Listening(addr));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runtime_for_resume = runtime.clone();
    let accepting = {
        let ep = ep.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(c) = net::accept(&ep).await {
                let Ok(conn) = c else { continue };
                tokio::spawn(watch(conn.clone(), tx.clone()));
                tokio::spawn(net::serve(
                    conn.clone(),
                    handler(conn, tx.clone(), runtime.clone()),
                ));
            }
        })
    };
    let mut state = State {
        state_dir: opts.state_dir.clone(),
        timeout: opts.heartbeat_timeout,
        speculation: (opts.speculation, opts.speculation_min, opts.slow_block),
        workers: BTreeMap::new(),
        by_conn: HashMap::new(),
        next_worker: 1,
        jobs: BTreeMap::new(),
        next_job: 1,
        peers: Peers::new(ep.clone()),
        events: tx,
        reports,
    };
    for (id, spec) in persisted(&opts.state_dir)? {
        state.next_job = state.next_job.max(id + 1);
        let name = format!("job {id}");
        match prepare(runtime_for_resume.clone(), spec).await {
            Ok((spec, job, sinks)) => {
                state.next_job = state.next_job.max(id + 1);
                state.add_job(id, spec, job, sinks);
            }
            Err(e) => tracing::error!(job = %name, error = %e, "could not resume a job"),
        }
    }
    tokio::pin!(stop);
    loop {
        let wake = state.next_wake();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stop => break,
            e = rx.recv() => match e {
                Some(e) => state.handle(e),
                None => break,
            },
            () = sleep => state.tick(Instant::now()),
        }
        state.drain();
    }
    accepting.abort();
    ep.close(quinn::VarInt::from_u32(0), b"coordinator stopping");
    Ok(())
}

/// Tells the loop when `conn` closes.
async fn watch(conn: quinn::Connection, tx: mpsc::UnboundedSender<Event>) {
    let reason = conn.closed().await;
    let _ = tx.send(Event::Closed {
        conn: conn.stable_id(),
        reason: reason.to_string(),
    });
}

/// The request handler of one connection: submissions are loaded and
/// checked here (compiling plugins takes a while), everything else goes to
/// the loop.
fn handler(
    conn: quinn::Connection,
    tx: mpsc::UnboundedSender<Event>,
    runtime: Runtime,
) -> impl Fn(Message) -> std::pin::Pin<Box<dyn Future<Output = Message> + Send>>
+ Send
+ Sync
+ Clone
+ 'static {
    move |msg: Message| {
        let (conn, tx, runtime) = (conn.clone(), tx.clone(), runtime.clone());
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let event = match msg {
                Message::Submit { spec } => match prepare(runtime, spec).await {
                    Ok((spec, job, sinks)) => Event::Submit {
                        spec,
                        job,
                        sinks,
                        reply,
                    },
                    Err(e) => {
                        return Message::Error {
                            message: e.to_string(),
                        };
                    }
                },
                msg => Event::Request { conn, msg, reply },
            };
            if tx.send(event).is_err() {
                return Message::Error {
                    message: "the coordinator is stopping".into(),
                };
            }
            answer.await.unwrap_or(Message::Error {
                message: "the coordinator is stopping".into(),
            })
        })
    }
}

/// Loads a submitted job (compiles its plugins, resolves the job file) and
/// opens its sinks.
async fn prepare(
    runtime: Runtime,
    spec: JobSpec,
) -> Result<(JobSpec, Job, Vec<Box<dyn Sink>>), Error> {
    tokio::task::spawn_blocking(move || {
        let loaded = load_job(&runtime, &spec)?;
        let base = PathBuf::from(&spec.base_dir);
        let mut sinks = Vec::new();
        for s in &loaded.job.sinks {
            sinks.push(sink::open(
                &s.name,
                &s.kind,
                &base,
                Box::new(std::io::stdout()),
            )?);
        }
        Ok((spec, loaded.job, sinks))
    })
    .await
    .map_err(|e| Error::Job(format!("loading the job: {e}")))?
}

fn error(message: impl Into<String>) -> Message {
    Message::Error {
        message: message.into(),
    }
}

impl State {
    fn report(&self, r: Report) {
        let _ = self.reports.send(r);
    }

    /// When the loop must wake without an event.
    fn next_wake(&self) -> Option<Instant> {
        let jobs = self
            .jobs
            .values()
            .filter_map(|j| j.coord.as_ref().and_then(Coordinator::poll_timeout));
        let workers = self.workers.values().map(|w| w.last_seen + self.timeout);
        jobs.chain(workers).min()
    }

    fn tick(&mut self, now: Instant) {
        let silent: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_seen) >= self.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            self.lose(id, "missed its heartbeats");
        }
        for j in self.jobs.values_mut() {
            if let Some(c) = j.coord.as_mut() {
                c.handle_timeout(now);
            }
        }
    }

    fn handle(&mut self, e: Event) {
        let now = Instant::now();
        match e {
            Event::Request { conn, msg, reply } => {
                let answer = self.request(&conn, msg, now);
                let _ = reply.send(answer);
            }
            Event::Submit {
                spec,
                job,
                sinks,
                reply,
            } => {
                let _ = reply.send(self.submit(spec, job, sinks));
            }
            Event::Loaded {
                job,
                worker,
                result,
            } => self.loaded(job, worker, result, now),
            Event::Written {
                job,
                batch,
                processing,
                delay,
                result,
            } => {
                let Some(j) = self.jobs.get_mut(&job) else {
                    return;
                };
                match result {
                    Ok(records) => {
                        j.status.batches_done += 1;
                        j.status.records_out += records;
                        j.status.last_processing_us = processing.as_micros() as u64;
                        j.status.last_delay_us = delay.as_micros() as u64;
                        if let Some(c) = j.coord.as_mut() {
                            c.handle_output_written(batch);
                        }
                        self.report(Report::Batch {
                            job,
                            batch,
                            processing,
                            delay,
                            records_out: records,
                        });
                    }
                    Err(m) => self.fail(job, format!("batch {batch}: {m}")),
                }
            }
            Event::Input {
                job,
                worker,
                blocks,
                replica,
            } => {
                if let Some(c) = self.jobs.get_mut(&job).and_then(|j| j.coord.as_mut()) {
                    for (b, bytes) in blocks {
                        for w in std::iter::once(worker).chain(replica) {
                            c.handle_input(w, b, bytes, now);
                        }
                    }
                }
            }
            Event::Failed { job, message } => self.fail(job, message),
            Event::CheckpointDone { job, batch, ok } => {
                if let Some(c) = self.jobs.get_mut(&job).and_then(|j| j.coord.as_mut()) {
                    c.handle_checkpoint_written(batch, ok);
                }
            }
            Event::Locate { job, blocks, reply } => {
                let Some(c) = self.jobs.get_mut(&job).and_then(|j| j.coord.as_mut()) else {
                    return; // the job is over: the sink task stops
                };
                let located: Vec<(BlockId, Vec<WorkerId>)> =
                    blocks.into_iter().map(|b| (b, c.locate(b, now))).collect();
                let _ = reply.send(
                    located
                        .into_iter()
                        .map(|(b, h)| (b, peers(&self.workers, &h)))
                        .collect(),
                );
            }
            Event::Closed { conn, reason } => {
                if let Some(id) = self.by_conn.get(&conn).copied() {
                    self.lose(id, &format!("connection closed: {reason}"));
                }
            }
        }
    }

    fn request(&mut self, conn: &quinn::Connection, msg: Message, now: Instant) -> Message {
        let from = self.by_conn.get(&conn.stable_id()).copied();
        match (msg, from) {
            (
                Message::Register {
                    name,
                    slots,
                    data_addr,
                },
                None,
            ) => {
                let id = self.next_worker;
                self.next_worker += 1;
                self.by_conn.insert(conn.stable_id(), id);
                self.workers.insert(
                    id,
                    WorkerEntry {
                        name: name.clone(),
                        addr: data_addr.clone(),
                        slots,
                        conn: conn.clone(),
                        last_seen: now,
                        stats: WorkerStats::default(),
                    },
                );
                tracing::info!(worker = id, %name, addr = %data_addr, slots, "worker joined");
                self.report(Report::WorkerJoined {
                    worker: id,
                    name,
                    addr: data_addr,
                    slots,
                });
                let live: Vec<u32> = self
                    .jobs
                    .iter()
                    .filter(|(_, j)| matches!(j.state, JobState::Loading | JobState::Running))
                    .map(|(id, _)| *id)
                    .collect();
                for job in live {
                    self.send_job(job, id);
                }
                Message::Registered { worker: id }
            }
            (Message::Register { .. }, Some(id)) => {
                error(format!("already registered as worker {id}"))
            }
            (Message::Heartbeat { stats, .. }, Some(id)) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.last_seen = now;
                    w.stats = stats;
                }
                for j in self.jobs.values_mut() {
                    if let Some(c) = j.coord.as_mut() {
                        c.handle_heartbeat(id, now);
                    }
                }
                Message::Ack
            }
            (
                Message::TaskDone {
                    job, block, bytes, ..
                },
                Some(id),
            ) => {
                if let Some(c) = self.jobs.get_mut(&job).and_then(|j| j.coord.as_mut()) {
                    c.handle_task_done(id, block, bytes, now);
                }
                Message::Ack
            }
            (
                Message::TaskFailed {
                    job,
                    block,
                    message,
                    retry,
                },
                Some(id),
            ) => {
                if retry {
                    tracing::info!(job, %block, worker = id, %message, "task sent again");
                    if let Some(c) = self.jobs.get_mut(&job).and_then(|j| j.coord.as_mut()) {
                        c.handle_task_retry(id, block, now);
                    }
                } else {
                    // Operators are deterministic: a task that failed fails
                    // wherever it runs again.
                    self.fail(
                        job,
                        format!("task {block} failed on worker {id}: {message}"),
                    );
                }
                Message::Ack
            }
            (Message::GetStatus, _) => self.status(now),
            (
                Message::Heartbeat { .. } | Message::TaskDone { .. } | Message::TaskFailed { .. },
                None,
            ) => error("register first"),
            (other, _) => error(format!("the coordinator does not answer {other:?}")),
        }
    }

    fn status(&self, now: Instant) -> Message {
        Message::Status {
            workers: self
                .workers
                .iter()
                .map(|(id, w)| WorkerStatus {
                    worker: *id,
                    name: w.name.clone(),
                    addr: w.addr.clone(),
                    slots: w.slots,
                    last_seen_ms: now.saturating_duration_since(w.last_seen).as_millis() as u64,
                    stats: w.stats.clone(),
                })
                .collect(),
            jobs: self.jobs.values().map(|j| j.status.clone()).collect(),
        }
    }

    fn submit(&mut self, spec: JobSpec, job: Job, sinks: Vec<Box<dyn Sink>>) -> Message {
        let id = self.next_job;
        self.next_job += 1;
        if let Err(e) = persist(&self.state_dir, id, &spec) {
            return error(format!("could not keep the job: {e}"));
        }
        let name = job.name.clone();
        // A fresh job: checkpoints of an earlier job with its id are stale.
        let _ = checkpoint::clear(&self.checkpoints_of(id));
        self.add_job(id, spec, job, sinks);
        Message::Submitted { job: id, name }
    }

    fn checkpoints_of(&self, job: u32) -> PathBuf {
        self.state_dir
            .join("checkpoints")
            .join(format!("job-{job}"))
    }

    /// Starts running job `id`: from its last checkpoint, if it has one.
    fn add_job(&mut self, id: u32, spec: JobSpec, job: Job, sinks: Vec<Box<dyn Sink>>) {
        let name = job.name.clone();
        let checkpoint_dir = self.checkpoints_of(id);
        let resume_from = checkpoint::latest(&checkpoint_dir).ok().flatten();
        let job = Arc::new(job);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_outputs(
            id,
            job.clone(),
            sinks,
            self.peers.clone(),
            rx,
            self.events.clone(),
        ));
        self.jobs.insert(
            id,
            JobEntry {
                spec: Arc::new(spec),
                checkpoint_dir,
                resume_from,
                job,
                state: JobState::Loading,
                coord: None,
                waiting: self.workers.keys().copied().collect(),
                loaded: BTreeSet::new(),
                sinks: Some(tx),
                status: JobStatus {
                    job: id,
                    name: name.clone(),
                    state: "loading".into(),
                    batches_done: resume_from.unwrap_or(0),
                    last_processing_us: 0,
                    last_delay_us: 0,
                    records_out: 0,
                    recomputed: 0,
                    speculated: 0,
                    set_aside: 0,
                },
            },
        );
        match resume_from {
            Some(c) => {
                tracing::info!(job = id, %name, checkpoint = c, "job resumed from its checkpoint")
            }
            None => tracing::info!(job = id, %name, "job submitted"),
        }
        self.report(Report::JobSubmitted {
            job: id,
            name: name.clone(),
            resumed_from: resume_from,
        });
        let workers: Vec<WorkerId> = self.workers.keys().copied().collect();
        for w in workers {
            self.send_job(id, w);
        }
        self.maybe_start(id, Instant::now());
    }

    /// Sends job `job` to worker `w` to load; its answer comes back as an
    /// event.
    fn send_job(&self, job: u32, w: WorkerId) {
        let (Some(j), Some(worker)) = (self.jobs.get(&job), self.workers.get(&w)) else {
            return;
        };
        let msg = Message::StartJob {
            job,
            spec: (*j.spec).clone(),
            checkpoint_dir: j.checkpoint_dir.display().to_string(),
        };
        let conn = worker.conn.clone();
        let tx = self.events.clone();
        tokio::spawn(async move {
            let result = match net::request(&conn, &msg).await {
                Ok(Message::Ack) => Ok(()),
                Ok(Message::Error { message }) => Err(message),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => {
                    // The worker went away: its loss is handled as such.
                    tracing::debug!(job, worker = w, error = %e, "job not sent");
                    return;
                }
            };
            let _ = tx.send(Event::Loaded {
                job,
                worker: w,
                result,
            });
        });
    }

    fn loaded(&mut self, job: u32, worker: WorkerId, result: Result<(), String>, now: Instant) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.waiting.remove(&worker);
        match result {
            Err(m) => {
                if self.workers.contains_key(&worker) {
                    self.fail(job, format!("worker {worker} could not load the job: {m}"));
                }
                return;
            }
            Ok(()) => {
                j.loaded.insert(worker);
                let slots = self.workers.get(&worker).map(|w| w.slots);
                if let (Some(c), Some(slots)) = (j.coord.as_mut(), slots) {
                    c.handle_register_as(worker, slots, now);
                }
            }
        }
        self.maybe_start(job, now);
    }

    /// Starts the job's coordinator once the workers present at submission
    /// have loaded it.
    fn maybe_start(&mut self, job: u32, now: Instant) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.state != JobState::Loading || !j.waiting.is_empty() {
            return;
        }
        let config = Config {
            heartbeat_timeout: self.timeout,
            last_batch: j.spec.batches,
            speculation: self.speculation.0,
            speculation_min: self.speculation.1,
            slow_block: self.speculation.2,
            ..Config::default()
        };
        let mut c = match j.resume_from {
            Some(cp) => Coordinator::resume((*j.job).clone(), config, now, cp),
            None => Coordinator::new((*j.job).clone(), config, now),
        };
        for w in &j.loaded {
            if let Some(e) = self.workers.get(w) {
                c.handle_register_as(*w, e.slots, now);
            }
        }
        j.coord = Some(c);
        j.state = JobState::Running;
        j.status.state = "running".into();
        tracing::info!(job, workers = j.loaded.len(), "job running");
    }

    fn fail(&mut self, job: u32, message: String) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if matches!(j.state, JobState::Failed(_) | JobState::Finished) {
            return;
        }
        tracing::error!(job, %message, "job failed");
        j.state = JobState::Failed(message.clone());
        j.status.state = format!("failed: {message}");
        self.end(job);
        self.report(Report::JobFailed { job, message });
    }

    /// Frees what a job holds, here and on the workers.
    fn end(&mut self, job: u32) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.coord = None;
        j.sinks = None;
        let kept = self.state_dir.join("jobs").join(format!("job-{job}.bin"));
        if let Err(e) = std::fs::remove_file(&kept)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(job, error = %e, "could not forget the job");
        }
        for w in std::mem::take(&mut j.loaded) {
            if let Some(e) = self.workers.get(&w) {
                let conn = e.conn.clone();
                tokio::spawn(async move {
                    let _ = net::request(&conn, &Message::StopJob { job }).await;
                });
            }
        }
    }

    fn lose(&mut self, id: WorkerId, reason: &str) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        self.by_conn.remove(&w.conn.stable_id());
        w.conn.close(quinn::VarInt::from_u32(2), b"declared lost");
        tracing::warn!(worker = id, name = %w.name, reason, "worker lost");
        self.report(Report::WorkerLost {
            worker: id,
            reason: reason.to_string(),
        });
        let now = Instant::now();
        let jobs: Vec<u32> = self.jobs.keys().copied().collect();
        for job in jobs {
            let j = self.jobs.get_mut(&job).expect("listed");
            j.loaded.remove(&id);
            let was_waiting = j.waiting.remove(&id);
            if let Some(c) = j.coord.as_mut() {
                c.handle_worker_lost(id, now);
            }
            if was_waiting {
                self.maybe_start(job, now);
            }
        }
    }

    /// Carries out what every job's coordinator decided.
    fn drain(&mut self) {
        let mut lost = Vec::new();
        let mut finished = Vec::new();
        let mut failed = Vec::new();
        for (job, j) in &mut self.jobs {
            let Some(c) = j.coord.as_mut() else { continue };
            while let Some(cmd) = c.poll_command() {
                match cmd {
                    Command::RunTask {
                        worker,
                        task,
                        sources,
                    } => {
                        let Some(w) = self.workers.get(&worker) else {
                            continue;
                        };
                        let msg = Message::RunTask {
                            job: *job,
                            task,
                            sources: sources
                                .into_iter()
                                .map(|(b, h)| (b, peers(&self.workers, &h)))
                                .collect(),
                        };
                        let conn = w.conn.clone();
                        tokio::spawn(async move {
                            if let Err(e) = net::request(&conn, &msg).await {
                                tracing::warn!(error = %e, "could not send a task");
                            }
                        });
                    }
                    Command::BatchDone {
                        batch,
                        processing,
                        delay,
                        outputs,
                    } => {
                        let parts = outputs
                            .into_iter()
                            .map(|o| {
                                let blocks = o
                                    .parts
                                    .into_iter()
                                    .map(|(b, h)| (b, peers(&self.workers, &h)))
                                    .collect();
                                (o.sink, blocks)
                            })
                            .collect();
                        if let Some(s) = &j.sinks {
                            let _ = s.send(Outputs {
                                batch,
                                processing,
                                delay,
                                parts,
                            });
                        }
                    }
                    Command::Drop { worker, blocks } => {
                        if let Some(w) = self.workers.get(&worker) {
                            let conn = w.conn.clone();
                            let msg = Message::Drop { job: *job, blocks };
                            tokio::spawn(async move {
                                let _ = net::request(&conn, &msg).await;
                            });
                        }
                    }
                    Command::WorkerLost { worker } => lost.push(worker),
                    Command::WorkerSetAside { worker, period } => {
                        let name = self.workers.get(&worker).map(|w| w.name.clone());
                        tracing::warn!(
                            job = *job,
                            worker,
                            name = name.as_deref().unwrap_or("?"),
                            seconds = period.as_secs_f64(),
                            "worker set aside as slow: its tasks lost to speculative copies by far, twice; \
                             no task goes to it meanwhile while others can take them"
                        );
                    }
                    Command::Failed { message } => failed.push((*job, message)),
                    Command::Checkpoint { batch, blocks } => {
                        let mut by_worker: BTreeMap<WorkerId, Vec<BlockId>> = BTreeMap::new();
                        for (b, h) in blocks {
                            if let Some(w) = h.first() {
                                by_worker.entry(*w).or_default().push(b);
                            }
                        }
                        let writers: Option<Vec<(quinn::Connection, Vec<BlockId>)>> = by_worker
                            .into_iter()
                            .map(|(w, b)| self.workers.get(&w).map(|e| (e.conn.clone(), b)))
                            .collect();
                        let Some(writers) = writers else {
                            // A holder left meanwhile: not this checkpoint.
                            let _ = self.events.send(Event::CheckpointDone {
                                job: *job,
                                batch,
                                ok: false,
                            });
                            continue;
                        };
                        tokio::spawn(write_checkpoint(
                            *job,
                            j.job.clone(),
                            j.checkpoint_dir.clone(),
                            batch,
                            writers,
                            self.events.clone(),
                        ));
                    }
                    Command::Cancel { worker, block } => {
                        if let Some(w) = self.workers.get(&worker) {
                            let conn = w.conn.clone();
                            let msg = Message::Cancel { job: *job, block };
                            tokio::spawn(async move {
                                let _ = net::request(&conn, &msg).await;
                            });
                        }
                    }
                    Command::StartReceiver { worker, source } => {
                        let Some(w) = self.workers.get(&worker) else {
                            continue;
                        };
                        let conn = w.conn.clone();
                        let (tx, job) = (self.events.clone(), *job);
                        let name = j.job.node(source).name.clone();
                        tokio::spawn(async move {
                            let msg = Message::StartReceiver { job, source };
                            let failed = match net::request(&conn, &msg).await {
                                Ok(Message::Ack) => return,
                                Ok(Message::Error { message }) => message,
                                Ok(other) => format!("unexpected answer {other:?}"),
                                Err(e) => e.to_string(),
                            };
                            let _ = tx.send(Event::Failed {
                                job,
                                message: format!(
                                    "the receiver of `{name}` could not start on worker {worker}: {failed}"
                                ),
                            });
                        });
                    }
                    Command::CutInput {
                        worker,
                        source,
                        batch,
                        replica,
                    } => {
                        let Some(w) = self.workers.get(&worker) else {
                            continue;
                        };
                        let conn = w.conn.clone();
                        let replica = replica.and_then(|r| peers(&self.workers, &[r]).pop());
                        let (tx, job) = (self.events.clone(), *job);
                        tokio::spawn(async move {
                            let msg = Message::CutInput {
                                job,
                                source,
                                batch,
                                replica,
                            };
                            match net::request(&conn, &msg).await {
                                Ok(Message::InputCut {
                                    blocks, replica, ..
                                }) => {
                                    let _ = tx.send(Event::Input {
                                        job,
                                        worker,
                                        blocks,
                                        replica,
                                    });
                                }
                                Ok(other) => {
                                    tracing::warn!(job, batch, worker, answer = ?other, "input not cut");
                                }
                                Err(e) => {
                                    tracing::warn!(job, batch, worker, error = %e, "input not cut");
                                }
                            }
                        });
                    }
                }
            }
            if c.is_finished() {
                finished.push(*job);
            }
        }
        for (job, message) in failed {
            self.fail(job, message);
        }
        for j in self.jobs.values_mut() {
            if let Some(c) = &j.coord {
                j.status.recomputed = c.stats().tasks_recomputed;
                j.status.speculated = c.stats().tasks_speculated;
                j.status.set_aside = c.stats().workers_set_aside;
            }
        }
        for job in finished {
            let j = self.jobs.get_mut(&job).expect("listed");
            j.state = JobState::Finished;
            j.status.state = "finished".into();
            let batches = j.status.batches_done;
            tracing::info!(job, batches, "job finished");
            self.end(job);
            self.report(Report::JobFinished { job, batches });
        }
        if !lost.is_empty() {
            for w in lost {
                self.lose(w, "missed its heartbeats");
            }
            self.drain();
        }
    }
}

fn peers(workers: &BTreeMap<WorkerId, WorkerEntry>, ids: &[WorkerId]) -> Vec<Peer> {
    ids.iter()
        .filter_map(|id| {
            workers.get(id).map(|w| Peer {
                worker: *id,
                addr: w.addr.clone(),
            })
        })
        .collect()
}

/// A job's sink task: for each finished batch, in order, fetches its
/// outputs from the workers and writes them with the job's sinks.
async fn write_outputs(
    job_id: u32,
    job: Arc<Job>,
    mut sinks: Vec<Box<dyn Sink>>,
    peers: Peers,
    mut rx: mpsc::UnboundedReceiver<Outputs>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some(o) = rx.recv().await {
        let mut fetched: Vec<(usize, Vec<Batch>)> = Vec::new();
        let mut failed = None;
        'sinks: for (i, blocks) in &o.parts {
            let mut parts = Vec::with_capacity(blocks.len());
            for (b, holders) in blocks {
                match fetch_output(job_id, *b, holders, &peers, &events).await {
                    Ok(batch) => parts.push(batch),
                    Err(e) => {
                        failed = Some(e);
                        break 'sinks;
                    }
                }
            }
            fetched.push((*i, parts));
        }
        let result = match failed {
            Some(m) => Err(m),
            None => {
                let job = job.clone();
                let batch = o.batch;
                let written = tokio::task::spawn_blocking(move || {
                    let r = write_batch(&job, &mut sinks, batch, &fetched);
                    (sinks, r)
                })
                .await;
                match written {
                    Ok((s, r)) => {
                        sinks = s;
                        r.map_err(|e| e.to_string())
                    }
                    Err(e) => {
                        let _ = events.send(Event::Written {
                            job: job_id,
                            batch: o.batch,
                            processing: o.processing,
                            delay: o.delay,
                            result: Err(e.to_string()),
                        });
                        return;
                    }
                }
            }
        };
        let stop = result.is_err();
        let _ = events.send(Event::Written {
            job: job_id,
            batch: o.batch,
            processing: o.processing,
            delay: o.delay,
            result,
        });
        if stop {
            return;
        }
    }
}

/// Writes the checkpoint of `batch`: each worker writes the blocks it was
/// given into the temporary directory, then the manifest is written and the
/// directory renamed into place.
async fn write_checkpoint(
    job_id: u32,
    job: Arc<Job>,
    dir: PathBuf,
    batch: u64,
    writers: Vec<(quinn::Connection, Vec<BlockId>)>,
    events: mpsc::UnboundedSender<Event>,
) {
    let result: Result<(), String> = async {
        let d = dir.clone();
        let tmp = tokio::task::spawn_blocking(move || checkpoint::begin(&d, batch))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut asks = Vec::new();
        for (conn, blocks) in writers {
            let msg = Message::WriteBlocks {
                job: job_id,
                dir: tmp.display().to_string(),
                blocks,
            };
            asks.push(tokio::spawn(async move { net::request(&conn, &msg).await }));
        }
        let mut written = Vec::new();
        for a in asks {
            match a.await.map_err(|e| e.to_string())? {
                Ok(Message::BlocksWritten { entries }) => {
                    written.extend(entries.into_iter().map(|(block, file, records)| {
                        checkpoint::Written {
                            block,
                            file,
                            records,
                        }
                    }));
                }
                Ok(Message::Error { message }) => return Err(message),
                Ok(other) => return Err(format!("unexpected answer {other:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
        tokio::task::spawn_blocking(move || checkpoint::commit(&dir, &job, batch, written))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    let ok = match result {
        Ok(()) => {
            tracing::info!(job = job_id, batch, "checkpoint written");
            true
        }
        Err(e) => {
            tracing::warn!(job = job_id, batch, error = %e, "checkpoint not written");
            false
        }
    };
    let _ = events.send(Event::CheckpointDone {
        job: job_id,
        batch,
        ok,
    });
}

/// Keeps a submitted job (to resume it after a restart).
fn persist(state_dir: &std::path::Path, id: u32, spec: &JobSpec) -> Result<(), Error> {
    let dir = state_dir.join("jobs");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let bytes = postcard::to_allocvec(&(id, spec)).map_err(|e| Error::Job(e.to_string()))?;
    let tmp = dir.join(format!(".job-{id}.tmp"));
    let path = dir.join(format!("job-{id}.bin"));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(format!("renaming {}", path.display()), e))
}

/// The jobs kept by [`persist`] that had not ended.
fn persisted(state_dir: &std::path::Path) -> Result<Vec<(u32, JobSpec)>, Error> {
    let dir = state_dir.join("jobs");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "bin") {
            continue;
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        match postcard::from_bytes::<(u32, JobSpec)>(&bytes) {
            Ok(j) => out.push(j),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "a kept job that cannot be read")
            }
        }
    }
    out.sort_by_key(|j| j.0);
    Ok(out)
}

/// How long the sinks wait for an output lost with a worker to be
/// recomputed.
const OUTPUT_PATIENCE: Duration = Duration::from_secs(60);

/// Fetches an output block; when its holders fail, asks the loop where it
/// is now (a lost block is recomputed) and tries again, for a while.
async fn fetch_output(
    job: u32,
    block: BlockId,
    holders: &[Peer],
    peers: &Peers,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Batch, String> {
    let deadline = Instant::now() + OUTPUT_PATIENCE;
    let mut holders = holders.to_vec();
    loop {
        let error = match peers.fetch(job, block, None, &holders).await {
            Ok(b) => return Ok(b),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tracing::info!(job, %block, %error, "output not fetched; locating it again");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (reply, answer) = oneshot::channel();
        let ask = Event::Locate {
            job,
            blocks: vec![block],
            reply,
        };
        if events.send(ask).is_err() {
            return Err(error);
        }
        match answer.await {
            Ok(mut located) => holders = located.pop().map(|(_, h)| h).unwrap_or_default(),
            Err(_) => return Err(error),
        }
    }
}

fn write_batch(
    job: &Job,
    sinks: &mut [Box<dyn Sink>],
    batch: u64,
    fetched: &[(usize, Vec<Batch>)],
) -> Result<u64, Error> {
    let mut records = 0;
    for (i, parts) in fetched {
        let node = job.node(job.sinks[*i].from);
        let refs: Vec<&Batch> = parts.iter().collect();
        let out = Output {
            job: &job.name,
            stream: &node.name,
            batch,
            parts: &refs,
            key: &node.key,
            value: &node.value,
        };
        records += out.records() as u64;
        sinks[*i].write(&out)?;
    }
    Ok(records)
}
