//! The http receiver: an ingest endpoint taking lines in `POST` bodies.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use super::{Inbox, Workers};

/// Largest request body taken (larger ones get `413`).
const BODY_LIMIT: usize = 64 << 20;
/// How often the server loop checks the stop flag.
const RECV_POLL: Duration = Duration::from_millis(50);
/// How long stopping waits for requests being handled.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long an answer waits for its lines to be confirmed kept.
const CONFIRM_WAIT: Duration = Duration::from_secs(30);
/// Answers waiting for confirmation at once (one thread each); beyond,
/// posts are answered 202 without waiting.
const MAX_WAITING: usize = 512;

/// Binds the endpoint.
pub(super) fn bind(addr: &str) -> Result<Server, String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot listen on http {addr}: {e}"))?;
    Server::from_listener(listener, None).map_err(|e| format!("cannot listen on http {addr}: {e}"))
}

/// Answers requests until `stop` is set, each on its own thread (so a slow
/// client does not hold the others up).
pub(super) fn serve(name: &str, server: Server, inbox: &Arc<Inbox>, stop: &Arc<AtomicBool>) {
    let mut workers = Workers::default();
    let waiting = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(RECV_POLL) {
            Ok(Some(request)) => {
                let (name, inbox, stop) = (name.to_string(), inbox.clone(), stop.clone());
                let waiting = waiting.clone();
                workers.spawn(&format!("source-{name}-request"), move || {
                    handle(&name, request, &inbox, &stop, &waiting)
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(source = name, error = %e, "http receive failed");
                std::thread::sleep(RECV_POLL);
            }
        }
    }
    workers.join(STOP_GRACE);
}

fn text(status: u16, body: impl Into<String>) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name, value).expect("a valid static header")
}

fn handle(
    name: &str,
    mut request: Request,
    inbox: &Inbox,
    stop: &AtomicBool,
    waiting: &AtomicUsize,
) {
    let path = request.url().split('?').next().unwrap_or("");
    let response = match request.method() {
        Method::Get if path == "/health" => text(200, "ok"),
        Method::Get => text(404, "not found; POST lines to any path, or GET /health\n"),
        Method::Post => receive(name, &mut request, inbox, stop, waiting),
        _ => text(405, "method not allowed; POST lines, or GET /health\n")
            .with_header(header("Allow", "GET, POST")),
    };
    if let Err(e) = request.respond(response) {
        tracing::debug!(source = name, error = %e, "cannot answer an http request");
    }
}

fn receive(
    name: &str,
    request: &mut Request,
    inbox: &Inbox,
    stop: &AtomicBool,
    waiting: &AtomicUsize,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let too_large = || text(413, format!("body larger than {BODY_LIMIT} bytes\n"));
    if request.body_length().is_some_and(|n| n > BODY_LIMIT) {
        return too_large();
    }
    let mut body = Vec::new();
    if let Err(e) = request
        .as_reader()
        .take(BODY_LIMIT as u64 + 1)
        .read_to_end(&mut body)
    {
        return text(400, format!("cannot read the body: {e}\n"));
    }
    if body.len() > BODY_LIMIT {
        return too_large();
    }
    if stop.load(Ordering::Relaxed) {
        return text(503, "stopping\n");
    }
    match inbox.try_push_lines(&body) {
        Ok(taken) => {
            let n = taken.records;
            tracing::debug!(source = name, records = n, "http body taken");
            // Answer once the lines are part of a batch's input (stored, and
            // in a cluster copied to a second worker), not merely queued.
            let unconfirmed = || {
                text(
                    202,
                    format!("accepted {n} records; not yet confirmed stored\n"),
                )
            };
            if waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
                waiting.fetch_sub(1, Ordering::Relaxed);
                return unconfirmed();
            }
            let until = std::time::Instant::now() + CONFIRM_WAIT;
            let confirmed = loop {
                if inbox.wait_confirmed(taken.ticket, RECV_POLL) {
                    break true;
                }
                if stop.load(Ordering::Relaxed) || std::time::Instant::now() >= until {
                    break false;
                }
            };
            waiting.fetch_sub(1, Ordering::Relaxed);
            if confirmed {
                text(200, format!("accepted {n} records\n"))
            } else {
                unconfirmed()
            }
        }
        Err(full) => {
            text(503, format!("{full}; retry later\n")).with_header(header("Retry-After", "1"))
        }
    }
}
