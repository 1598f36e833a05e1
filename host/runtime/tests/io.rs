//! Sources and sinks against real sockets and files.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dstream_core::job::{Codec, GenFormat, Generator, SinkKind, Source};
use dstream_core::{Batch, Encoding};
use dstream_runtime::Error;
use dstream_runtime::sink::{self, Output};
use dstream_runtime::source::{self, Full, Inbox};

/// Polls `cond` every 10 ms for up to 5 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn values(b: &Batch) -> Vec<String> {
    b.iter()
        .map(|(k, v)| {
            assert!(k.is_empty(), "received records are unkeyed");
            String::from_utf8(v.to_vec()).unwrap()
        })
        .collect()
}

/// Waits until the inbox holds `n` records, then a little longer to catch
/// extra ones, and takes them.
fn take_exactly(inbox: &Inbox, n: usize) -> Vec<String> {
    wait_for(&format!("{n} records"), || inbox.len() >= n);
    std::thread::sleep(Duration::from_millis(250));
    values(&inbox.take())
}

fn base() -> &'static Path {
    Path::new("/nonexistent-base-dir")
}

// ---------------------------------------------------------------- inbox

#[test]
fn inbox_tickets_are_answered_once_confirmed() {
    let inbox = Inbox::new(10);
    let a = inbox.try_push_lines(b"a\nb\n").unwrap();
    inbox.push_lines(b"c\n");
    let (taken, ticket) = inbox.take_unconfirmed();
    assert_eq!(values(&taken), ["a", "b", "c"]);
    let d = inbox.try_push_lines(b"d\n").unwrap();
    assert!(!inbox.wait_confirmed(a.ticket, Duration::from_millis(20)));
    let waiter = {
        let inbox = inbox.clone();
        std::thread::spawn(move || inbox.wait_confirmed(a.ticket, Duration::from_secs(30)))
    };
    inbox.confirm(ticket);
    assert!(waiter.join().unwrap());
    // Confirming the cut of a, b, c says nothing of d, pushed after it.
    assert!(!inbox.wait_confirmed(d.ticket, Duration::from_millis(20)));
    assert_eq!(values(&inbox.take()), ["d"]);
    assert!(inbox.wait_confirmed(d.ticket, Duration::ZERO));
    // Closing wakes a waiter with a no.
    let e = inbox.try_push_lines(b"e\n").unwrap();
    let waiter = {
        let inbox = inbox.clone();
        std::thread::spawn(move || inbox.wait_confirmed(e.ticket, Duration::from_secs(30)))
    };
    std::thread::sleep(Duration::from_millis(20));
    inbox.close();
    assert!(!waiter.join().unwrap());
}

#[test]
fn inbox_capacity_and_take() {
    let inbox = Inbox::new(3);
    assert_eq!(inbox.capacity(), 3);
    assert_eq!(inbox.push_lines(b"a\r\nb\n\n\r\nc"), 3);
    assert_eq!(inbox.len(), 3);
    assert_eq!(inbox.try_push_lines(b"d\n"), Err(Full));
    assert_eq!(inbox.len(), 3, "a refused push pushes nothing");
    // A text with no line fits anywhere.
    assert_eq!(inbox.try_push_lines(b"\n\r\n").map(|a| a.records), Ok(0));
    assert_eq!(values(&inbox.take()), ["a", "b", "c"]);
    assert!(inbox.is_empty());
    assert_eq!(values(&inbox.take()), Vec::<String>::new());

    assert_eq!(inbox.try_push_lines(b"d\ne\n").map(|a| a.records), Ok(2));
    assert_eq!(inbox.try_push_lines(b"f\ng\n"), Err(Full));
    assert_eq!(inbox.try_push_lines(b"f").map(|a| a.records), Ok(1));
    assert_eq!(values(&inbox.take()), ["d", "e", "f"]);
    // More lines than the whole capacity still go into an empty inbox.
    assert_eq!(
        inbox.try_push_lines(b"1\n2\n3\n4\n").map(|a| a.records),
        Ok(4)
    );
    inbox.take();

    // push_lines waits while full, and goes on once a batch takes.
    inbox.push_lines(b"x\ny\nz\n");
    let pusher = {
        let inbox = inbox.clone();
        std::thread::spawn(move || inbox.push_lines(b"p\nq\n"))
    };
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        !pusher.is_finished(),
        "push_lines must wait on a full inbox"
    );
    assert_eq!(values(&inbox.take()), ["x", "y", "z"]);
    assert_eq!(pusher.join().unwrap(), 2);
    assert_eq!(values(&inbox.take()), ["p", "q"]);

    // Closing stops the waiting: records go in beyond the capacity.
    inbox.push_lines(b"1\n2\n3\n");
    let pusher = {
        let inbox = inbox.clone();
        std::thread::spawn(move || inbox.push_lines(b"4\n5\n"))
    };
    std::thread::sleep(Duration::from_millis(50));
    inbox.close();
    assert_eq!(pusher.join().unwrap(), 2);
    assert_eq!(values(&inbox.take()), ["1", "2", "3", "4", "5"]);

    assert_eq!(Inbox::new(0).capacity(), 1);
}

#[test]
fn generators_are_not_received() {
    let source = Source::Generator(Generator {
        rate: 10,
        seed: 1,
        format: GenFormat::Words,
        record_bytes: 10,
    });
    let err = source::start("gen", &source, base(), Inbox::new(10)).unwrap_err();
    assert!(
        matches!(&err, Error::Source { name, message } if name == "gen" && message.contains("generator")),
        "{err}"
    );
}

// ---------------------------------------------------------------- tcp

#[test]
fn tcp_connect_reads_lines_and_reconnects() {
    // Nobody listens when the receiver starts: not an error, it retries.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let inbox = Inbox::new(100);
    let receiver = source::start(
        "socket",
        &Source::Tcp {
            addr: addr.to_string(),
            listen: false,
        },
        base(),
        inbox.clone(),
    )
    .unwrap();
    assert_eq!(receiver.name(), "socket");
    assert_eq!(receiver.local_addr(), None);
    std::thread::sleep(Duration::from_millis(150));

    let listener = TcpListener::bind(addr).unwrap();
    let server = std::thread::spawn(move || {
        let (mut first, _) = listener.accept().unwrap();
        first.write_all(b"one\r\ntwo\n").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        first.write_all(b"\n\r\nthr").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        first.write_all(b"ee\r\nlast without newline").unwrap();
        drop(first);
        let (mut second, _) = listener.accept().unwrap();
        second.write_all(b"four\nfive\n").unwrap();
    });
    let got = take_exactly(&inbox, 6);
    server.join().unwrap();
    assert_eq!(
        got,
        [
            "one",
            "two",
            "three",
            "last without newline",
            "four",
            "five"
        ]
    );

    let t = Instant::now();
    receiver.stop();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        t.elapsed()
    );
}

#[test]
fn tcp_connect_rejects_a_malformed_address() {
    let err = source::start(
        "socket",
        &Source::Tcp {
            addr: "no-port-here".into(),
            listen: false,
        },
        base(),
        Inbox::new(10),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no-port-here"), "{err}");
}

#[test]
fn tcp_listen_takes_many_clients() {
    let inbox = Inbox::new(100);
    let receiver = source::start(
        "ingest",
        &Source::Tcp {
            addr: "127.0.0.1:0".into(),
            listen: true,
        },
        base(),
        inbox.clone(),
    )
    .unwrap();
    let addr = receiver
        .local_addr()
        .expect("a listening source has an address");
    assert_ne!(addr.port(), 0);

    let mut a = TcpStream::connect(addr).unwrap();
    let mut b = TcpStream::connect(addr).unwrap();
    a.write_all(b"a1\n").unwrap();
    b.write_all(b"b1\r\nb2").unwrap();
    a.write_all(b"a2\n\n").unwrap();
    drop(b);
    a.write_all(b"a3").unwrap();
    drop(a);
    let got = take_exactly(&inbox, 5);
    let from = |p: &str| {
        got.iter()
            .filter(|v| v.starts_with(p))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(from("a"), ["a1", "a2", "a3"]);
    assert_eq!(from("b"), ["b1", "b2"]);

    // The address is taken: a second listener fails at once, naming it.
    let err = source::start(
        "again",
        &Source::Tcp {
            addr: addr.to_string(),
            listen: true,
        },
        base(),
        Inbox::new(10),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Source { name, message } if name == "again" && message.contains(&addr.to_string())),
        "{err}"
    );

    // A client still connected does not hold stop up.
    let _idle = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    receiver.stop();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------- files

#[test]
fn files_takes_new_complete_files_only() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("old.txt"), "old\n").unwrap();
    let inbox = Inbox::new(100);
    let receiver = source::start(
        "files",
        &Source::Files { dir: "in".into() },
        base.path(),
        inbox.clone(),
    )
    .unwrap();

    // Written under a temporary name, seen by a poll or two, then renamed.
    std::fs::write(dir.join(".new.txt.tmp"), "n1\r\n\nn2\nn3").unwrap();
    std::fs::write(dir.join("other.tmp"), "tmp\n").unwrap();
    std::fs::write(dir.join(".hidden"), "hidden\n").unwrap();
    std::fs::create_dir(dir.join("subdir")).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(inbox.len(), 0);
    std::fs::rename(dir.join(".new.txt.tmp"), dir.join("new.txt")).unwrap();
    assert_eq!(take_exactly(&inbox, 3), ["n1", "n2", "n3"]);

    // Taken once: polls after it take nothing more.
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(inbox.len(), 0);
    receiver.stop();
}

#[test]
fn files_creates_a_missing_directory() {
    let base = tempfile::tempdir().unwrap();
    let receiver = source::start(
        "files",
        &Source::Files { dir: "a/b".into() },
        base.path(),
        Inbox::new(10),
    )
    .unwrap();
    assert!(base.path().join("a/b").is_dir());
    drop(receiver);

    // A directory that cannot be created: an error naming the path.
    std::fs::write(base.path().join("file"), "").unwrap();
    let err = source::start(
        "files",
        &Source::Files {
            dir: "file/sub".into(),
        },
        base.path(),
        Inbox::new(10),
    )
    .unwrap_err();
    assert!(err.to_string().contains("file/sub"), "{err}");
}

// ---------------------------------------------------------------- http

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent()
}

#[test]
fn http_ingest() {
    let inbox = Inbox::new(3);
    let receiver = source::start(
        "web",
        &Source::Http {
            listen: "127.0.0.1:0".into(),
        },
        base(),
        inbox.clone(),
    )
    .unwrap();
    let url = format!("http://{}", receiver.local_addr().unwrap());
    let agent = agent();
    // A POST on its own thread: its answer waits for the lines to be taken.
    let post = |path: &str, body: &'static str| {
        let (agent, url) = (agent.clone(), format!("{url}{path}"));
        std::thread::spawn(move || {
            let mut r = agent.post(url).send(body).unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
        })
    };

    let first = post("/ingest", "a\r\n\nb\n");
    let t = Instant::now();
    while inbox.len() < 2 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(inbox.len(), 2);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!first.is_finished(), "answered before the lines were taken");

    // Full: refused whole, at once, with Retry-After.
    let mut r = agent.post(&url).send("c\nd\n").unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    assert!(!r.body_mut().read_to_string().unwrap().is_empty());
    assert_eq!(inbox.len(), 2);

    let mut r = agent.get(format!("{url}/health")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.body_mut().read_to_string().unwrap(), "ok");

    let r = agent.put(&url).send("x\n").unwrap();
    assert_eq!(r.status(), 405);
    let r = agent.get(format!("{url}/nothing")).call().unwrap();
    assert_eq!(r.status(), 404);

    assert_eq!(values(&inbox.take()), ["a", "b"]);
    assert_eq!(first.join().unwrap(), (200, "accepted 2 records\n".into()));

    // Taken but never confirmed (a cluster worker cut it and died before
    // copying it): when the receiver stops, the answer says so.
    let second = post("", "c\nd\n");
    while inbox.len() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (cut, _ticket) = inbox.take_unconfirmed();
    assert_eq!(values(&cut), ["c", "d"]);

    let t = Instant::now();
    receiver.stop();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(
        second.join().unwrap(),
        (202, "accepted 2 records; not yet confirmed stored\n".into())
    );
    // New connections are refused (a fresh agent: tiny_http keeps serving
    // connections kept alive from before, into a queue nobody reads).
    let t = Instant::now();
    assert!(self::agent().get(format!("{url}/health")).call().is_err());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn http_rejects_a_body_over_the_limit() {
    let inbox = Inbox::new(10);
    let receiver = source::start(
        "web",
        &Source::Http {
            listen: "127.0.0.1:0".into(),
        },
        base(),
        inbox.clone(),
    )
    .unwrap();
    let addr = receiver.local_addr().unwrap();
    // Only the headers: the length alone is refused.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 67108865\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    assert_eq!(inbox.len(), 0);
}

#[test]
fn http_bind_error_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = source::start(
        "web",
        &Source::Http {
            listen: addr.clone(),
        },
        base(),
        Inbox::new(10),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Source { name, message } if name == "web" && message.contains(&addr)),
        "{err}"
    );
}

// ---------------------------------------------------------------- sinks

const UTF8: Codec = Codec::Plain(Encoding::Utf8);
const U64: Codec = Codec::Plain(Encoding::U64);
const NONE: Codec = Codec::Plain(Encoding::None);

fn keyed() -> Vec<Batch> {
    let p0: Batch = [("a", 3u64), ("b", 10)]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.to_le_bytes()))
        .collect();
    let p1: Batch = [("c", 0u64)]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.to_le_bytes()))
        .collect();
    vec![p0, Batch::new(), p1]
}

fn output<'a>(
    stream: &'a str,
    batch: u64,
    parts: &'a [&'a Batch],
    key: &'a Codec,
    value: &'a Codec,
) -> Output<'a> {
    Output {
        job: "job",
        stream,
        batch,
        parts,
        key,
        value,
    }
}

#[test]
fn render_with_and_without_keys() {
    let parts = keyed();
    let refs: Vec<&Batch> = parts.iter().collect();
    let out = output("counts", 1, &refs, &UTF8, &U64);
    assert_eq!(out.records(), 3);
    assert_eq!(out.render(), "a\t3\nb\t10\nc\t0\n");
    assert_eq!(out.render(), out.render());

    let lines: Batch = [("", "GET /"), ("", "POST /x")].into_iter().collect();
    let refs = [&lines];
    let out = output("lines", 1, &refs, &NONE, &UTF8);
    assert_eq!(out.render(), "GET /\nPOST /x\n");

    let out = output("empty", 1, &[], &UTF8, &U64);
    assert_eq!(out.records(), 0);
    assert_eq!(out.render(), "");
}

#[test]
fn files_sink_rewrites_a_batch_in_place() {
    let base = tempfile::tempdir().unwrap();
    let mut sink = sink::open(
        "out",
        &SinkKind::Files {
            dir: "out/sub".into(),
        },
        base.path(),
        Box::new(std::io::sink()),
    )
    .unwrap();
    let dir = base.path().join("out/sub");
    assert!(dir.is_dir(), "opening creates the directory");

    let parts = keyed();
    let refs: Vec<&Batch> = parts.iter().collect();
    let out = output("counts", 7, &refs, &UTF8, &U64);
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    sink.write(&out).unwrap();
    let path = dir.join("counts-0000000007.txt");
    let first = std::fs::read(&path).unwrap();
    assert_eq!(first, out.render().as_bytes());
    sink.write(&out).unwrap();
    assert_eq!(listing(), ["counts-0000000007.txt"]);
    assert_eq!(std::fs::read(&path).unwrap(), first);

    // A leftover temporary file from a crash is replaced, not appended to.
    std::fs::write(dir.join(".counts-0000000008.txt.tmp"), "garbage").unwrap();
    let out8 = output("counts", 8, &refs, &UTF8, &U64);
    sink.write(&out8).unwrap();
    assert_eq!(
        listing(),
        ["counts-0000000007.txt", "counts-0000000008.txt"]
    );
    assert_eq!(
        std::fs::read(dir.join("counts-0000000008.txt")).unwrap(),
        first
    );
}

/// A `Write` whose bytes the test can read.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn stdout_sink_shows_the_first_records() {
    let buf = SharedBuf::default();
    let mut sink = sink::open(
        "show",
        &SinkKind::Stdout { limit: 2 },
        base(),
        Box::new(buf.clone()),
    )
    .unwrap();
    let parts = keyed();
    let refs: Vec<&Batch> = parts.iter().collect();
    sink.write(&output("counts", 4, &refs, &UTF8, &U64))
        .unwrap();
    assert_eq!(
        buf.text(),
        "--- counts, batch 4: 3 records ---\na\t3\nb\t10\n... (1 more)\n"
    );
    let lines: Batch = [("", "x")].into_iter().collect();
    sink.write(&output("lines", 5, &[&lines], &NONE, &UTF8))
        .unwrap();
    assert!(
        buf.text()
            .ends_with("(1 more)\n--- lines, batch 5: 1 records ---\nx\n"),
        "{}",
        buf.text()
    );
}

/// One request as the test server saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `write` on a thread while a server in this thread answers with
/// `statuses` in turn; returns the write's result and the requests seen.
fn against_server(
    statuses: &[u16],
    write: impl FnOnce(String) -> Result<(), Error> + Send + 'static,
) -> (Result<(), Error>, Vec<Seen>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr: SocketAddr = server.server_addr().to_ip().unwrap();
    let writer = std::thread::spawn(move || write(format!("http://{addr}/batches?x=1")));
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while !writer.is_finished() {
        assert!(Instant::now() < end, "the sink did not finish");
        let Some(mut req) = server.recv_timeout(Duration::from_millis(20)).unwrap() else {
            continue;
        };
        let mut body = String::new();
        req.as_reader().read_to_string(&mut body).unwrap();
        seen.push(Seen {
            method: req.method().to_string(),
            url: req.url().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|h| (h.field.to_string(), h.value.to_string()))
                .collect(),
            body,
        });
        let status = statuses.get(seen.len() - 1).copied().unwrap_or(200);
        req.respond(tiny_http::Response::from_string("server says no").with_status_code(status))
            .unwrap();
    }
    (writer.join().unwrap(), seen)
}

fn post_batch(url: String, batch: u64) -> Result<(), Error> {
    let mut sink = sink::open(
        "post",
        &SinkKind::Http { url },
        base(),
        Box::new(std::io::sink()),
    )?;
    let parts = keyed();
    let refs: Vec<&Batch> = parts.iter().collect();
    sink.write(&output("counts", batch, &refs, &UTF8, &U64))
}

#[test]
fn http_sink_posts_a_batch() {
    let (result, seen) = against_server(&[200], |url| post_batch(url, 12));
    result.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "/batches?x=1");
    assert_eq!(req.body, "a\t3\nb\t10\nc\t0\n");
    assert_eq!(req.header("X-Dstream-Job"), Some("job"));
    assert_eq!(req.header("X-Dstream-Stream"), Some("counts"));
    assert_eq!(req.header("X-Dstream-Batch"), Some("12"));
    assert!(
        req.header("Content-Type")
            .unwrap()
            .starts_with("text/plain")
    );
}

#[test]
fn http_sink_retries_server_errors() {
    let t = Instant::now();
    let (result, seen) = against_server(&[500, 503, 200], |url| post_batch(url, 3));
    result.unwrap();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.body == seen[0].body && s.header("X-Dstream-Batch") == Some("3"))
    );
    // Waited 100 ms, then 400 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn http_sink_gives_up_on_client_errors_at_once() {
    let (result, seen) = against_server(&[404], |url| post_batch(url, 3));
    let err = result.unwrap_err();
    assert_eq!(seen.len(), 1);
    let msg = err.to_string();
    assert!(msg.contains("/batches?x=1") && msg.contains("404"), "{msg}");
    assert!(msg.contains("server says no"), "{msg}");
}

#[test]
fn http_sink_fails_on_a_closed_port_naming_the_url() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/in");
    let err = post_batch(url.clone(), 1).unwrap_err();
    assert!(
        matches!(&err, Error::Sink { name, message } if name == "post" && message.contains(&url) && message.contains("4 times")),
        "{err}"
    );
}

#[test]
fn http_sink_rejects_a_bad_url_at_open() {
    let err = sink::open(
        "post",
        &SinkKind::Http {
            url: "not a url".into(),
        },
        base(),
        Box::new(std::io::sink()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a url"), "{err}");
}
