//! The tcp receiver: lines from a socket, connecting (and reconnecting) or
//! listening.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Inbox, Workers, sleep_unless_stopped};

/// How often a blocked read wakes up to check the stop flag.
const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// First wait before reconnecting; doubled after each failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the listener checks for new clients and the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// A line longer than this is pushed as it is, cut, rather than held forever.
const MAX_LINE: usize = 64 << 20;

/// Refuses an address that can never be connected to (no port, bad syntax);
/// one that merely does not resolve yet is retried later.
pub(super) fn check_addr(addr: &str) -> Result<(), String> {
    match addr.to_socket_addrs() {
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            Err(format!("bad address `{addr}` (expected HOST:PORT): {e}"))
        }
        _ => Ok(()),
    }
}

/// Binds the listening socket (non-blocking, for polling accepts).
pub(super) fn bind(addr: &str) -> Result<TcpListener, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot listen on tcp {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on tcp {addr}: {e}"))?;
    Ok(listener)
}

/// Connects to `addr` and reads lines, reconnecting with backoff after every
/// end of connection or failure, until `stop` is set.
pub(super) fn connect_loop(name: &str, addr: &str, inbox: &Inbox, stop: &AtomicBool) {
    let mut backoff = BACKOFF_FIRST;
    while !stop.load(Ordering::Relaxed) {
        match connect(addr) {
            Ok(mut stream) => {
                tracing::info!(source = name, addr, "connected");
                backoff = BACKOFF_FIRST;
                match read_lines(&mut stream, inbox, stop) {
                    Ok(n) if !stop.load(Ordering::Relaxed) => tracing::warn!(
                        source = name,
                        addr,
                        records = n,
                        "connection closed by the peer; reconnecting"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        source = name,
                        addr,
                        error = %e,
                        "connection failed; reconnecting"
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(
                    source = name,
                    addr,
                    error = %e,
                    retry_in = ?backoff,
                    "cannot connect; retrying"
                );
            }
        }
        if sleep_unless_stopped(stop, backoff) {
            break;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection attempt to each address `addr` resolves to.
fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Accepts clients until `stop` is set, reading each one's lines on its own
/// thread.
pub(super) fn listen_loop(
    name: &str,
    listener: TcpListener,
    inbox: &Arc<Inbox>,
    stop: &Arc<AtomicBool>,
) {
    let mut workers = Workers::default();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                tracing::info!(source = name, %peer, "client connected");
                let (name, inbox, stop) = (name.to_string(), inbox.clone(), stop.clone());
                workers.spawn(&format!("source-{name}-{peer}"), move || {
                    serve_client(&name, stream, peer, &inbox, &stop)
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(e) => {
                tracing::warn!(source = name, error = %e, "accept failed");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
    // Clients notice the stop flag within one read timeout.
    workers.join(READ_TIMEOUT * 10);
}

fn serve_client(
    name: &str,
    mut stream: TcpStream,
    peer: SocketAddr,
    inbox: &Inbox,
    stop: &AtomicBool,
) {
    if let Err(e) = stream.set_nonblocking(false) {
        tracing::warn!(source = name, %peer, error = %e, "cannot use the connection");
        return;
    }
    match read_lines(&mut stream, inbox, stop) {
        Ok(n) => tracing::info!(source = name, %peer, records = n, "client disconnected"),
        Err(e) => tracing::warn!(source = name, %peer, error = %e, "client connection failed"),
    }
}

/// Reads lines from `stream` into `inbox` until the peer closes it (a last
/// line without `\n` counts), an error, or `stop` (a partial line is then
/// dropped). Returns the records pushed.
fn read_lines(stream: &mut TcpStream, inbox: &Inbox, stop: &AtomicBool) -> std::io::Result<usize> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut pushed = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(pushed);
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                pushed += inbox.push_lines_until(&pending, stop);
                return Ok(pushed);
            }
            Ok(n) => {
                let start = pending.len();
                pending.extend_from_slice(&chunk[..n]);
                if let Some(pos) = pending[start..].iter().rposition(|b| *b == b'\n') {
                    let end = start + pos + 1;
                    pushed += inbox.push_lines_until(&pending[..end], stop);
                    pending.drain(..end);
                } else if pending.len() > MAX_LINE {
                    tracing::warn!(bytes = pending.len(), "line too long; cutting it");
                    pushed += inbox.push_lines_until(&pending, stop);
                    pending.clear();
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}
