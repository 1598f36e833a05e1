//! Receivers: sources whose records arrive from outside (tcp, files, http).
//!
//! A receiver runs on its own thread and pushes each line it gets into an
//! [`Inbox`]; at every batch boundary the engine takes what the inbox holds
//! as that batch's input ([`Inbox::take`]).
//!
//! Every line becomes one unkeyed record (empty key, the line as value): lines
//! are split on `\n`, a trailing `\r` is removed and empty lines are skipped.
//!
//! - `tcp` (connect, the default, like Spark's `socketTextStream` against
//!   `nc -lk 9999`): connects to the address and reads lines; when the
//!   connection ends or fails, or cannot be made, it logs a warning and
//!   connects again, waiting 100 ms, doubling up to 2 s, until stopped.
//! - `tcp` with `listen = true`: listens on the address and reads lines from
//!   every client that connects.
//! - `files`: watches a directory (created if missing), polling every 100 ms,
//!   and reads each new file whole, once. Writers must write under a name
//!   starting with `.` or ending in `.tmp` and rename the file when it is
//!   complete: such names are never read. Files already in the directory when
//!   the receiver starts are ignored (like Spark's `textFileStream`, which only
//!   takes new files).
//! - `http`: an ingest endpoint; `POST` (any path) a body of lines. The
//!   answer waits until the lines are part of a batch's input (in a cluster:
//!   stored on the receiver's worker and copied to a second one when one
//!   took the copy), then is `200 accepted N records`; `202` (taken, not yet
//!   confirmed) if that took longer than 30 s, the receiver stopped, or 512
//!   answers are already waiting; `503` with `Retry-After: 1` (nothing
//!   taken) while the inbox is full. `GET /health` answers `ok`.
//!
//! Generator sources are not received: the engine computes their records from
//! the batch number, so [`start`] refuses them.

mod files;
mod http;
mod tcp;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dstream_core::Batch;
use dstream_core::job::Source;

use crate::Error;

/// How long a push waits before checking again whether a full inbox has room.
const FULL_WAIT: Duration = Duration::from_millis(10);

/// Records received and not yet taken by a batch, up to a capacity.
///
/// Receivers push into it from their threads; the engine [`take`]s it at every
/// batch boundary. When it holds `capacity` records, [`push_lines`] waits
/// (back-pressure: a TCP receiver stops reading its socket) and
/// [`try_push_lines`] refuses.
///
/// [`take`]: Inbox::take
/// [`push_lines`]: Inbox::push_lines
/// [`try_push_lines`]: Inbox::try_push_lines
#[derive(Debug)]
pub struct Inbox {
    batch: Mutex<Batch>,
    /// Records ever pushed (changed under the `batch` lock).
    pushed: AtomicU64,
    /// Records ever taken and confirmed kept (see [`Inbox::confirm`]).
    confirmed: Mutex<u64>,
    confirmed_changed: Condvar,
    capacity: usize,
    closed: AtomicBool,
}

/// Where a push ended in the inbox's sequence of records: it is kept once
/// [`Inbox::confirm`] has been called with a ticket at least as far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Lines taken by [`Inbox::try_push_lines`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// How many records.
    pub records: usize,
    /// To wait for with [`Inbox::wait_confirmed`].
    pub ticket: Ticket,
}

/// The inbox has no room for the records (nothing was pushed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the inbox is full")
    }
}

impl std::error::Error for Full {}

impl Inbox {
    /// An empty inbox holding at most `capacity_records` records (at least
    /// one).
    pub fn new(capacity_records: usize) -> Arc<Inbox> {
        Arc::new(Inbox {
            batch: Mutex::new(Batch::new()),
            pushed: AtomicU64::new(0),
            confirmed: Mutex::new(0),
            confirmed_changed: Condvar::new(),
            capacity: capacity_records.max(1),
            closed: AtomicBool::new(false),
        })
    }

    /// The most records it holds before pushes wait or are refused.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Pushes every line of `text` (split on `\n`, a trailing `\r` removed,
    /// empty lines skipped) as an unkeyed record (empty key, the line as
    /// value), in order. Blocks (sleeping briefly, checking again) while the
    /// inbox is full, unless it is [closed](Inbox::close); returns how many
    /// records were pushed.
    pub fn push_lines(&self, text: &[u8]) -> usize {
        self.push_lines_until(text, &self.closed)
    }

    /// Like [`push_lines`](Inbox::push_lines), but stops waiting for room when
    /// `stop` (a receiver's stop flag) or the inbox's own close flag is set;
    /// once stopped, the remaining lines are pushed beyond the capacity rather
    /// than lost.
    pub(crate) fn push_lines_until(&self, text: &[u8], stop: &AtomicBool) -> usize {
        let mut pushed = 0;
        let mut lines = lines(text).peekable();
        while lines.peek().is_some() {
            let mut batch = self.lock();
            let stopping = stop.load(Ordering::Relaxed) || self.closed.load(Ordering::Relaxed);
            while batch.len() < self.capacity || stopping {
                let Some(line) = lines.next() else { break };
                batch.push(b"", line);
                self.pushed.fetch_add(1, Ordering::Relaxed);
                pushed += 1;
            }
            drop(batch);
            if lines.peek().is_some() {
                std::thread::sleep(FULL_WAIT);
            }
        }
        pushed
    }

    /// Pushes the lines of `text` like [`push_lines`](Inbox::push_lines) if
    /// they all fit, without waiting; otherwise pushes nothing and returns
    /// [`Full`]. A text of more lines than the whole capacity is taken when
    /// the inbox is empty, so that it is not refused forever.
    pub fn try_push_lines(&self, text: &[u8]) -> Result<Accepted, Full> {
        let n = lines(text).count();
        let mut batch = self.lock();
        if n > 0 && batch.len() + n > self.capacity && !batch.is_empty() {
            return Err(Full);
        }
        for line in lines(text) {
            batch.push(b"", line);
        }
        let end = self.pushed.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        Ok(Accepted {
            records: n,
            ticket: Ticket(end),
        })
    }

    /// Takes everything received so far (the next batch's input), leaving the
    /// inbox empty, and confirms it at once (in one process, a batch's input
    /// is as safe as it gets once taken).
    pub fn take(&self) -> Batch {
        let (batch, ticket) = self.take_unconfirmed();
        self.confirm(ticket);
        batch
    }

    /// Takes everything received so far, to be [confirmed](Inbox::confirm)
    /// with the ticket once it is kept (stored and copied).
    pub fn take_unconfirmed(&self) -> (Batch, Ticket) {
        let mut batch = self.lock();
        let ticket = Ticket(self.pushed.load(Ordering::Relaxed));
        (std::mem::take(&mut *batch), ticket)
    }

    /// Says that every record up to `ticket` is kept: pushers waiting for it
    /// are answered.
    pub fn confirm(&self, ticket: Ticket) {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        *confirmed = (*confirmed).max(ticket.0);
        self.confirmed_changed.notify_all();
    }

    /// Waits until the records up to `ticket` are confirmed kept, at most
    /// `timeout`, or until the inbox is closed; true if they are.
    pub fn wait_confirmed(&self, ticket: Ticket, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        while *confirmed < ticket.0 && !self.closed.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            confirmed = self
                .confirmed_changed
                .wait_timeout(confirmed, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *confirmed >= ticket.0
    }

    /// Number of records waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Makes pushes stop waiting for room: from now on they push beyond the
    /// capacity. For shutting down a program whose pushers would otherwise
    /// wait forever on a full inbox nobody takes any more.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // Waiters for a confirmation stop waiting.
        let _confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        self.confirmed_changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|poisoned| {
            // A push panicked half-way (only past 4 GiB): the batch may be
            // torn, so its records are dropped rather than misread.
            tracing::error!("a push into the inbox panicked; dropping what it held");
            self.batch.clear_poison();
            let mut batch = poisoned.into_inner();
            *batch = Batch::new();
            batch
        })
    }
}

/// The non-empty lines of `text`, each without its `\n` and a trailing `\r`.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// A running receiver thread. [`stop`](Receiver::stop) (or dropping it)
/// stops it and waits for its threads.
#[derive(Debug)]
pub struct Receiver {
    name: String,
    local_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// The source's name in the job.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address of a listening source (tcp with `listen`, http):
    /// with port 0 in the job, the port the system chose. `None` for sources
    /// that do not listen.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Stops the receiver and waits for its threads to end (at most a few
    /// hundred milliseconds).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(source = %self.name, "the receiver thread panicked");
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the receiver of source `name`: tcp, files or http (a generator is
/// refused with [`Error::Source`]: its records are computed, not received).
/// Relative paths (the files directory) are resolved against `base_dir`, the
/// job file's directory.
///
/// Errors that can be seen at once are returned at once, naming the source
/// and the address or path: an address that cannot be bound, a directory that
/// cannot be created or read, a malformed address. A tcp source that connects
/// does not fail when nobody listens yet: it warns and keeps trying.
pub fn start(
    name: &str,
    source: &Source,
    base_dir: &Path,
    inbox: Arc<Inbox>,
) -> Result<Receiver, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let fail = |message: String| Error::Source {
        name: name.to_string(),
        message,
    };
    let (local_addr, run): (Option<SocketAddr>, Box<dyn FnOnce() + Send>) = match source {
        Source::Tcp {
            addr,
            listen: false,
        } => {
            tcp::check_addr(addr).map_err(fail)?;
            let (name, addr, stop) = (name.to_string(), addr.clone(), stop.clone());
            (
                None,
                Box::new(move || tcp::connect_loop(&name, &addr, &inbox, &stop)),
            )
        }
        Source::Tcp { addr, listen: true } => {
            let listener = tcp::bind(addr).map_err(fail)?;
            let local = listener.local_addr().ok();
            let (name, stop) = (name.to_string(), stop.clone());
            (
                local,
                Box::new(move || tcp::listen_loop(&name, listener, &inbox, &stop)),
            )
        }
        Source::Files { dir } => {
            let dir = base_dir.join(dir);
            let watcher = files::Watcher::new(&dir).map_err(fail)?;
            let (name, stop) = (name.to_string(), stop.clone());
            (None, Box::new(move || watcher.run(&name, &inbox, &stop)))
        }
        Source::Http { listen } => {
            let server = http::bind(listen).map_err(fail)?;
            let local = server.server_addr().to_ip();
            let (name, stop) = (name.to_string(), stop.clone());
            (
                local,
                Box::new(move || http::serve(&name, server, &inbox, &stop)),
            )
        }
        Source::Generator(_) => {
            return Err(fail(
                "generator sources are not received: their records are computed from the \
                 batch number"
                    .to_string(),
            ));
        }
    };
    let thread = std::thread::Builder::new()
        .name(format!("source-{name}"))
        .spawn(run)
        .map_err(|e| Error::io(format!("source `{name}`: starting the receiver thread"), e))?;
    tracing::info!(source = %name, addr = ?local_addr, "receiver started");
    Ok(Receiver {
        name: name.to_string(),
        local_addr,
        stop,
        thread: Some(thread),
    })
}

/// Sleeps `total`, in short steps, returning early (true) once `stop` is set.
fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    let end = Instant::now() + total;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Threads started per connection or request, joined when they end.
#[derive(Debug, Default)]
struct Workers {
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `f` on a new thread.
    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) {
        self.threads.retain(|t| !t.is_finished());
        match std::thread::Builder::new().name(name.to_string()).spawn(f) {
            Ok(t) => self.threads.push(t),
            Err(e) => tracing::warn!(thread = name, error = %e, "cannot start a thread"),
        }
    }

    /// Waits up to `grace` for every thread; threads still running after it
    /// (a client stalled in the middle of a request) are left to end alone.
    fn join(self, grace: Duration) {
        let end = Instant::now() + grace;
        for t in self.threads {
            while !t.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("a connection thread did not end in time; leaving it");
            }
        }
    }
}
