//! `dstream run` as a user runs it: the real binary, a real Wasm plugin,
//! SIGKILL mid-stream, a restart that resumes from the last checkpoint.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::dstream;

use dstream_core::generate::Pool;
use dstream_core::job::{GenFormat, Generator};

const INTERVAL_MS: u64 = 100;
const RATE: u64 = 3000;
const SEED: u64 = 11;
const PARTITIONS: u32 = 2;

fn job(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"name = "pv-crash"
interval = "{INTERVAL_MS}ms"
checkpoint_interval = "{}ms"
partitions = {PARTITIONS}
[plugins]
pv = "{}"
[sources.views]
kind = "generator"
format = "pageviews"
rate = {RATE}
seed = {SEED}
[streams.ones]
from = "views"
map = "pv/url_one"
[streams.counts]
from = "ones"
running_reduce = "sum"
[sinks.out]
from = "counts"
kind = "files"
dir = "out"
"#,
        4 * INTERVAL_MS,
        dstream_artifacts::PAGEVIEWS
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Running totals per URL after each batch, from a plain loop over the
/// generator's records.
fn expected(batches: u64) -> Vec<BTreeMap<String, u64>> {
    let pool = Pool::new(&Generator {
        rate: RATE,
        seed: SEED,
        format: GenFormat::Pageviews,
        record_bytes: 100,
    });
    let mut totals = BTreeMap::new();
    let mut out = vec![BTreeMap::new()];
    for b in 1..=batches {
        for p in 0..PARTITIONS {
            for (_, line) in pool
                .partition(b, p, PARTITIONS, Duration::from_millis(INTERVAL_MS))
                .iter()
            {
                let url = std::str::from_utf8(line)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap();
                *totals.entry(url.to_string()).or_insert(0u64) += 1;
            }
        }
        out.push(totals.clone());
    }
    out
}

fn batch_files(out: &Path) -> BTreeMap<u64, String> {
    let mut m = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(out) else {
        return m;
    };
    for e in rd.flatten() {
        let name = e.file_name().into_string().unwrap();
        if name.starts_with('.') {
            continue; // a batch being written
        }
        let n: u64 = name
            .strip_prefix("counts-")
            .and_then(|s| s.strip_suffix(".txt"))
            .unwrap_or_else(|| panic!("unexpected file {name} in the sink directory"))
            .parse()
            .unwrap();
        m.insert(n, std::fs::read_to_string(e.path()).unwrap());
    }
    m
}

#[test]
fn killed_mid_stream_it_resumes_from_the_checkpoint_with_the_right_totals() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let ck = dir.path().join("ck");
    let out = dir.path().join("out");

    // First run: SIGKILL once some batches are written, between checkpoints.
    let mut child = dstream()
        .arg("run")
        .arg(&job)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while batch_files(&out).len() < 10 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success());
    let before = batch_files(&out);
    let written = *before.keys().max().unwrap();

    // Second run: resumes after the last checkpoint, runs 8 batches, exits 0.
    let second = dstream()
        .arg("run")
        .arg(&job)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .args(["--batches", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    let resumed: u64 = stderr
        .split("resuming after batch ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no resume line in:\n{stderr}"))
        .parse()
        .unwrap();
    assert_eq!(resumed % 4, 0, "checkpoints every 4 batches");
    assert!(
        resumed <= written && resumed >= 4,
        "resumed after {resumed}, {written} written"
    );
    let last = resumed + 8;
    assert!(
        stderr.contains(&format!("done after batch {last}")),
        "{stderr}"
    );

    // The files sink: every batch exactly once, none missing, no temporary
    // file left, and each holds the right running totals.
    let files = batch_files(&out);
    assert_eq!(
        files.keys().copied().collect::<Vec<_>>(),
        (1..=last.max(written)).collect::<Vec<_>>()
    );
    let want = expected(last.max(written));
    for (n, text) in &files {
        let got: BTreeMap<String, u64> = text
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('\t').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect();
        assert_eq!(got.len(), text.lines().count(), "batch {n}: a URL twice");
        assert_eq!(got, want[*n as usize], "batch {n}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // Batches written before the kill and again after it are the same bytes.
    for (n, text) in &before {
        assert_eq!(&files[n], text, "batch {n} rewritten differently");
    }
}

#[test]
fn a_bad_job_file_names_the_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\ninterval = \"1s\"\n[sources.s]\nkind = \"generator\"\nrate = 5\n[streams.a]\nfrom = \"nowhere\"\ncount_by_key = true\n",
    )
    .unwrap();
    let out = dstream().arg("run").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:7:8: streams.a.from: `nowhere` is neither a source nor a stream",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_missing_operator_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"x\"\ninterval = \"1s\"\n[plugins]\npv = \"{}\"\n[sources.s]\nkind = \"generator\"\nrate = 5\n[streams.a]\nfrom = \"s\"\nmap = \"pv/nope\"\n",
            dstream_artifacts::PAGEVIEWS
        ),
    )
    .unwrap();
    let out = dstream().arg("run").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            ":10:7: streams.a.map: unknown operator `nope`: plugin `pv` has url_one (map)"
        ),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_finishes_the_batch_checkpoints_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path());
    let ck = dir.path().join("ck");
    let out = dir.path().join("out");
    let child = dstream()
        .arg("run")
        .arg(&job)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while batch_files(&out).len() < 6 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    let last: u64 = stderr
        .split("stopped after batch ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no stop line in:\n{stderr}"))
        .parse()
        .unwrap();
    assert!(
        stderr.contains(&format!("checkpoint at batch {last}")),
        "{stderr}"
    );
    // The checkpoint is of the last batch, even between checkpoint intervals,
    // and every batch up to it was written.
    assert!(
        ck.join(format!("checkpoint-{last:010}/manifest.toml"))
            .is_file()
    );
    assert_eq!(
        batch_files(&out).keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
}

/// A job reading lines from a tcp server at `addr`, counting words with the
/// wordcount plugin (`counts` is the line making the counts stream, e.g.
/// `reduce_by_key = "wc/sum"`), into a files sink `out`. Returns its path.
fn socket_job(
    dir: &Path,
    addr: std::net::SocketAddr,
    counts: &str,
    header: &str,
) -> std::path::PathBuf {
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "socket"
interval = "100ms"
{header}
[plugins]
wc = "{}"
[sources.lines]
kind = "tcp"
addr = "{addr}"
[streams.words]
from = "lines"
flat_map = "wc/split"
[streams.counts]
from = "words"
{counts}
[sinks.out]
from = "counts"
kind = "files"
dir = "out"
"#,
            dstream_artifacts::WORDCOUNT
        ),
    )
    .unwrap();
    path
}

/// Sends `n` lines of three words over `conn`, pausing now and then so that
/// they spread over several batches; returns the count of every word.
fn send_lines(conn: &mut std::net::TcpStream, n: u64) -> BTreeMap<String, u64> {
    use std::io::Write;
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..n {
        let line = format!("w{} w{} shared\n", i % 17, i % 5);
        for w in line.split_ascii_whitespace() {
            *want.entry(w.to_string()).or_default() += 1;
        }
        conn.write_all(line.as_bytes()).unwrap();
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    want
}

/// The word counts of a files-sink batch file (`word\tcount` lines).
fn counts_in(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn lines_from_a_socket_are_all_counted_once() {
    // The paper's example: a server sends lines; the job connects to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = socket_job(dir.path(), addr, r#"reduce_by_key = "wc/sum""#, "");
    let mut child = dstream()
        .arg("run")
        .arg(&path)
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ck"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let want = send_lines(&mut conn, 3000);
    drop(conn);
    // Wait until every word arrived in some batch's file.
    let out = dir.path().join("out");
    let t0 = Instant::now();
    let total = |files: &BTreeMap<u64, String>| {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in files.values().flat_map(|text| counts_in(text)) {
            *m.entry(k).or_default() += v;
        }
        m
    };
    loop {
        let got = total(&batch_files(&out));
        if got == want {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "after 30 s: {got:?}\nwant {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Several batches took part, each a per-batch count.
    let files = batch_files(&out);
    assert!(files.values().filter(|t| !t.is_empty()).count() >= 2);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `dstream run PATH --checkpoint-dir CK`, stderr piped.
fn spawn_run(path: &Path, ck: &Path) -> std::process::Child {
    dstream()
        .arg("run")
        .arg(path)
        .arg("--checkpoint-dir")
        .arg(ck)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The newest batch file in `out` and its word counts.
fn latest_counts(out: &Path) -> Option<(u64, BTreeMap<String, u64>)> {
    batch_files(out)
        .into_iter()
        .next_back()
        .map(|(n, text)| (n, counts_in(&text)))
}

/// Restarts the socket job after a SIGKILL (the server `listener` accepts
/// it again, sending nothing), lets it write 3 batches past `before`'s
/// last, stops it; checks that the batches written before were written
/// again the same, byte for byte. Returns its stderr.
fn restart_after_kill(
    path: &Path,
    ck: &Path,
    out: &Path,
    listener: &std::net::TcpListener,
    before: &BTreeMap<u64, String>,
) -> String {
    let killed_at = *before.keys().max().unwrap();
    let mut child = spawn_run(path, ck);
    let (conn, _) = listener.accept().unwrap();
    let t0 = Instant::now();
    while latest_counts(out).is_none_or(|(n, _)| n < killed_at + 3) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no batch after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let stderr = child.wait_with_output().unwrap().stderr;
    drop(conn);
    let after = batch_files(out);
    for (n, text) in before {
        assert_eq!(&after[n], text, "batch {n} run again differently");
    }
    String::from_utf8_lossy(&stderr).into_owned()
}

/// A running word count over tcp lines (the socket job) checkpointing every
/// `checkpoint_interval`, in a new directory: the directory, the server the
/// job connects to, the job file, its checkpoint directory and its files
/// sink's directory.
fn running_socket_job(
    checkpoint_interval: &str,
) -> (
    tempfile::TempDir,
    std::net::TcpListener,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = socket_job(
        dir.path(),
        addr,
        r#"running_reduce = "wc/sum""#,
        &format!(r#"checkpoint_interval = "{checkpoint_interval}""#),
    );
    let (ck, out) = (dir.path().join("ck"), dir.path().join("out"));
    (dir, listener, path, ck, out)
}

/// The numbers of the files in `dir` named `PREFIX<number>...`, in order.
fn numbered(dir: &Path, prefix: &str) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(prefix)?;
            rest.split('.').next()?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// Runs the socket job, sends it 2000 lines, waits until its running
/// totals hold them all in a batch numbered `at_least` or later, then
/// SIGKILLs it. Returns the totals sent and the batch files written.
fn totals_then_sigkill(
    path: &Path,
    ck: &Path,
    out: &Path,
    listener: &std::net::TcpListener,
    at_least: u64,
) -> (BTreeMap<String, u64>, BTreeMap<u64, String>) {
    let mut child = spawn_run(path, ck);
    let (mut conn, _) = listener.accept().unwrap();
    let want = send_lines(&mut conn, 2000);
    drop(conn);
    let t0 = Instant::now();
    while latest_counts(out).is_none_or(|(n, t)| t != want || n < at_least) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "totals never reached: {:?}",
            latest_counts(out)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    (want, batch_files(out))
}

/// Lines received over tcp and put in batches survive a SIGKILL before any
/// checkpoint: the restarted job runs those batches again over the input it
/// logged for them (the same files, byte for byte) and its running totals
/// hold every line once.
#[test]
fn received_lines_survive_a_sigkill_through_the_input_log() {
    let (_dir, listener, path, ck, out) = running_socket_job("1h");

    let (want, before) = totals_then_sigkill(&path, &ck, &out, &listener, 0);
    assert_eq!(
        numbered(&ck, "checkpoint-"),
        [],
        "no checkpoint before the kill"
    );

    // Restarted: the logged batches run first, then new ones (no new input).
    let stderr = restart_after_kill(&path, &ck, &out, &listener, &before);
    assert!(stderr.contains("again over the input logged"), "{stderr}");
    let (n, got) = latest_counts(&out).unwrap();
    assert!(n > *before.keys().max().unwrap());
    assert_eq!(got, want, "running totals after the restart");
}

/// A restart stopped partway through running the logged batches again
/// (`--batches`, as Ctrl-C would) checkpoints where it stopped, keeps the
/// logs of the batches it did not reach, and the next restart runs those:
/// the running totals still hold every line once.
#[test]
fn a_restart_stopped_during_the_replay_goes_on_from_there_next_time() {
    let (_dir, listener, path, ck, out) = running_socket_job("1h");
    let logged = || numbered(&ck.join("input"), "batch-");

    // The totals, and a few batches on so that more than two are logged.
    let (want, before) = totals_then_sigkill(&path, &ck, &out, &listener, 4);
    let logs = logged();
    assert!(logs.len() >= 4, "{logs:?}");
    assert_eq!(logs, (1..=logs.len() as u64).collect::<Vec<_>>());

    // Two of the logged batches, then stop: no receiver is started (the
    // listener is never connected to), exit 0, a checkpoint at batch 2.
    let stopped = dstream()
        .arg("run")
        .arg(&path)
        .arg("--checkpoint-dir")
        .arg(&ck)
        .args(["--batches", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(stopped.status.success(), "{stderr}");
    assert!(stderr.contains("again over the input logged"), "{stderr}");
    assert!(
        ck.join("checkpoint-0000000002").is_dir(),
        "no checkpoint at 2"
    );
    assert_eq!(logged(), logs[2..].to_vec(), "logs after the stop");
    for n in [1, 2] {
        assert_eq!(
            batch_files(&out)[&n],
            before[&n],
            "batch {n} run again differently"
        );
    }

    // The next restart runs the rest of them, then goes on live.
    restart_after_kill(&path, &ck, &out, &listener, &before);
    assert_eq!(latest_counts(&out).unwrap().1, want, "running totals");
}

/// With checkpoints between the received batches, a SIGKILL leaves only the
/// logs of the batches after the last checkpoint; the restart resumes from
/// that checkpoint, runs those batches again, and the running totals hold
/// every line once.
#[test]
fn after_a_checkpoint_only_the_later_batches_run_again() {
    let (_dir, listener, path, ck, out) = running_socket_job("300ms");
    let latest = || latest_counts(&out);

    let mut child = spawn_run(&path, &ck);
    let (mut conn, _) = listener.accept().unwrap();
    let want = send_lines(&mut conn, 3000);
    drop(conn);
    let t0 = Instant::now();
    let reached = loop {
        if let Some((n, t)) = latest()
            && t == want
        {
            child.kill().unwrap(); // SIGKILL on Unix, at once
            break n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "totals never reached: {:?}",
            latest()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    child.wait().unwrap();
    // Logs up to a checkpoint are removed once it is written: at most those
    // after the one before the newest remain (a kill may fall between the
    // newest and its pruning).
    let checkpoint = *numbered(&ck, "checkpoint-").last().expect("a checkpoint");
    let logs = numbered(&ck.join("input"), "batch-");
    assert!(
        logs.iter().all(|l| *l + 3 > checkpoint),
        "{logs:?} vs {checkpoint}"
    );
    let before = batch_files(&out);
    let stderr = restart_after_kill(&path, &ck, &out, &listener, &before);
    assert!(
        stderr.contains(&format!("resuming after batch {checkpoint}")),
        "{stderr}"
    );
    // When the last lines came in a batch after the checkpoint, only the
    // logged input brings them back (most runs: 2 batches in 3).
    if reached > checkpoint {
        assert!(stderr.contains("again over the input logged"), "{stderr}");
    }
    assert_eq!(
        latest().unwrap().1,
        want,
        "running totals after the restart"
    );
}

/// Lines posted over http and answered 200 survive a SIGKILL right after
/// the answer: they were logged before it, and the restarted job counts
/// them.
#[test]
fn posted_lines_answered_200_survive_a_sigkill() {
    // A free port for the source.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "posted"
interval = "100ms"
checkpoint_interval = "1h"
[plugins]
wc = "{}"
[sources.posted]
kind = "http"
listen = "{addr}"
[streams.words]
from = "posted"
flat_map = "wc/split"
[streams.counts]
from = "words"
running_reduce = "wc/sum"
[sinks.out]
from = "counts"
kind = "files"
dir = "out"
"#,
            dstream_artifacts::WORDCOUNT
        ),
    )
    .unwrap();
    let ck = dir.path().join("ck");
    let run = || spawn_run(&path, &ck);
    let mut text = String::new();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..300u64 {
        let line = format!("p{} q{}\n", i % 7, i % 3);
        for w in line.split_ascii_whitespace() {
            *want.entry(w.to_string()).or_default() += 1;
        }
        text.push_str(&line);
    }
    let mut child = run();
    let answer = common::post_when_listening(addr, &text, Duration::from_secs(30));
    child.kill().unwrap(); // SIGKILL on Unix, at once
    child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut child = run();
    let out = dir.path().join("out");
    let latest = || latest_counts(&out).map(|(_, counts)| counts);
    let t0 = Instant::now();
    while latest() != Some(want.clone()) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "after the restart: {:?}",
            latest()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A received line the job fails on stops the run, and its logged batch
/// fails again at every restart, naming its log file; once that file is
/// removed, the job runs on.
#[test]
fn a_logged_batch_that_fails_again_names_its_log_file() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "refusing"
interval = "100ms"
[plugins]
h = "{}"
[sources.lines]
kind = "tcp"
addr = "{addr}"
[streams.checked]
from = "lines"
map = "h/fail"
[sinks.out]
from = "checked"
kind = "files"
dir = "out"
"#,
            dstream_artifacts::HOSTILE
        ),
    )
    .unwrap();
    let ck = dir.path().join("ck");
    let run = || spawn_run(&path, &ck);
    let child = run();
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"fine\na bad line\n").unwrap();
    let first = child.wait_with_output().unwrap();
    drop(conn);
    assert!(!first.status.success());
    assert!(String::from_utf8_lossy(&first.stderr).contains("refusing"));
    // Restarted: the same batch, over its logged input, fails again.
    let again = run().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{stderr}");
    assert!(
        stderr.contains("failed again over the input logged"),
        "{stderr}"
    );
    // It names one of the logs (earlier batches, if any, replayed fine).
    let named: Vec<_> = std::fs::read_dir(ck.join("input"))
        .unwrap()
        .flatten()
        .filter(|e| stderr.contains(&*e.file_name().to_string_lossy()))
        .collect();
    assert_eq!(named.len(), 1, "{stderr}");
    // Without it, the job runs on and takes new lines.
    std::fs::remove_file(named[0].path()).unwrap();
    let mut child = run();
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(b"after\n").unwrap();
    let out = dir.path().join("out");
    let t0 = Instant::now();
    while !std::fs::read_dir(&out)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("after")))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no batch after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A plugin built for wasm32-wasip2 (it imports WASI through std) runs when
/// the job declares `wasi = "deterministic"`, and two runs write the same
/// bytes; declared plainly, it is refused with the way to allow it.
#[test]
fn a_wasi_plugin_runs_deterministically_when_the_job_allows_it() {
    let write_job = |dir: &Path, plugin: &str| {
        let text = format!(
            "name = \"probe\"\ninterval = \"100ms\"\npartitions = 2\n[plugins]\nprobe = {plugin}\n[sources.lines]\nkind = \"generator\"\nformat = \"words\"\nrate = 200\nseed = 3\n[streams.seen]\nfrom = \"lines\"\nmap = \"probe/probe\"\n[sinks.out]\nfrom = \"seen\"\nkind = \"files\"\ndir = \"out\"\n"
        );
        let path = dir.join("job.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let allowed = format!(
        "{{ path = \"{}\", wasi = \"deterministic\" }}",
        dstream_artifacts::WASI_PROBE
    );
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let job = write_job(dir.path(), &allowed);
        let run = dstream()
            .args(["run", "-q", "--fresh", "--batches", "3"])
            .arg(&job)
            .arg("--checkpoint-dir")
            .arg(dir.path().join("ck"))
            .output()
            .unwrap();
        assert!(run.status.success(), "{run:?}");
        let files = common::files(&dir.path().join("out"));
        assert_eq!(files.len(), 3, "{files:?}");
        for (_, bytes) in &files {
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(!text.is_empty());
            for line in text.lines() {
                assert!(line.contains(" time=0 hash="), "{line}");
                assert!(line.ends_with(" home=false args=0 files=false"), "{line}");
            }
        }
        outputs.push(files);
    }
    assert_eq!(outputs[0], outputs[1], "two runs wrote different bytes");

    let dir = tempfile::tempdir().unwrap();
    let job = write_job(
        dir.path(),
        &format!("\"{}\"", dstream_artifacts::WASI_PROBE),
    );
    let out = dstream().arg("run").arg(&job).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":5:9: plugins.probe:"), "{stderr}");
    assert!(stderr.contains("wasi = \"deterministic\""), "{stderr}");
}
