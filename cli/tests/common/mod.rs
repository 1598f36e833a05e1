//! Helpers shared by the tests that start clusters.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) fn dstream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dstream"))
}

/// A process whose stderr lines are collected; killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub(crate) fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                l.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// Waits for a stderr line containing `what`; returns it.
    pub(crate) fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            let failed = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("error:"));
            assert!(
                Instant::now() < deadline && !failed,
                "no line with {what:?} in:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coordinator and `workers` workers on loopback, with certificates in
/// `dir/certs`.
pub(crate) struct Cluster {
    pub(crate) certs: PathBuf,
    pub(crate) addr: String,
    pub(crate) coordinator: Proc,
    pub(crate) workers: Vec<Proc>,
}

impl Cluster {
    pub(crate) fn start(dir: &Path, workers: u32) -> Self {
        Self::start_with(dir, workers, &[])
    }

    /// The coordinator's arguments: certificates and state in `dir`,
    /// listening on any port unless `extra` says `--listen`.
    pub(crate) fn coordinator_args(dir: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = vec!["coordinator".to_string(), "--certs".into()];
        a.push(dir.join("certs").display().to_string());
        a.push("--state-dir".into());
        a.push(dir.join("state").display().to_string());
        if !extra.contains(&"--listen") {
            a.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Like [`start`](Self::start), with more arguments for the coordinator.
    pub(crate) fn start_with(dir: &Path, workers: u32, coordinator_args: &[&str]) -> Self {
        let certs = dir.join("certs");
        let out = dstream()
            .args(["cluster", "init"])
            .arg(&certs)
            .args(["--workers", &workers.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let coordinator =
            Proc::spawn(dstream().args(Self::coordinator_args(dir, coordinator_args)));
        let line = coordinator.wait_for("coordinator listening on ");
        let addr = line.rsplit(' ').next().unwrap().to_string();
        let mut c = Self {
            certs,
            addr,
            coordinator,
            workers: Vec::new(),
        };
        for i in 1..=workers {
            let w = c.worker(&c.certs.clone(), &format!("worker-{i}"));
            w.wait_for("joined the coordinator");
            c.workers.push(w);
        }
        c
    }

    pub(crate) fn worker(&self, certs: &Path, name: &str) -> Proc {
        self.worker_with(certs, name, &[])
    }

    /// A worker with more arguments (fault injection, say).
    pub(crate) fn worker_with(&self, certs: &Path, name: &str, extra: &[&str]) -> Proc {
        Proc::spawn(
            dstream()
                .args([
                    "worker", "--join", &self.addr, "--slots", "2", "--name", name,
                ])
                .arg("--certs")
                .arg(certs)
                .args(extra),
        )
    }

    /// A number from the job line of `dstream status` (`recomputed`,
    /// `speculated`, ...), summed over jobs.
    pub(crate) fn job_counter(&self, what: &str) -> u64 {
        let out = self.cli(&["status"]);
        let status = String::from_utf8_lossy(&out.stdout);
        status
            .lines()
            .filter_map(|l| l.split(&format!("{what} ")).nth(1))
            .map(|r| r.split_whitespace().next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        dstream()
            .args(args)
            .args(["--coordinator", &self.addr, "--certs"])
            .arg(&self.certs)
            .output()
            .unwrap()
    }

    /// `dstream submit JOB --batches N --wait`: runs the job to its end and
    /// fails the test with the coordinator's log when it did not finish.
    pub(crate) fn submit_and_wait(&self, job: &Path, batches: u64) -> String {
        let out = self.cli(&[
            "submit",
            job.to_str().unwrap(),
            "--batches",
            &batches.to_string(),
            "--wait",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{stderr}\ncoordinator:\n{}",
            self.coordinator.log()
        );
        stderr
    }

    /// `dstream status`, the worker rows.
    pub(crate) fn workers_status(&self) -> Vec<WorkerRow> {
        let out = self.cli(&["status"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .filter(|l| {
                l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains("worker-")
            })
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let n = |i: usize| f[i].parse::<u64>().unwrap();
                WorkerRow {
                    name: f[1].to_string(),
                    tasks: n(4),
                    fetched: n(6),
                    served: n(8),
                    received: n(9),
                    replicas: n(10),
                }
            })
            .collect()
    }
}

/// A worker's row in `dstream status`.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct WorkerRow {
    pub(crate) name: String,
    pub(crate) tasks: u64,
    pub(crate) fetched: u64,
    pub(crate) served: u64,
    pub(crate) received: u64,
    pub(crate) replicas: u64,
}

pub(crate) fn job_file(dir: &Path, name: &str, body: &str, out: &str) -> PathBuf {
    let text = format!(
        "name = \"{name}\"\ninterval = \"200ms\"\npartitions = 4\n{body}\n[sinks.out]\nfrom = \"counts\"\nkind = \"files\"\ndir = \"{out}\"\n"
    );
    let path = dir.join(format!("{name}-{out}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn wordcount() -> String {
    format!(
        "[plugins]\nwc = \"{}\"\n[sources.lines]\nkind = \"generator\"\nformat = \"words\"\nrate = 20000\nseed = 5\n[streams.words]\nfrom = \"lines\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nrunning_reduce = \"sum\"\n",
        dstream_artifacts::WORDCOUNT
    )
}

pub(crate) fn pageviews() -> String {
    format!(
        "[plugins]\npv = \"{}\"\n[sources.views]\nkind = \"generator\"\nformat = \"pageviews\"\nrate = 5000\nseed = 9\n[streams.ones]\nfrom = \"views\"\nmap = \"pv/url_one\"\n[streams.counts]\nfrom = \"ones\"\nrunning_reduce = \"sum\"\n",
        dstream_artifacts::PAGEVIEWS
    )
}

/// The files a files sink wrote, by name.
pub(crate) fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Runs `job` embedded (`dstream run`) for `batches` batches; returns what
/// its files sink wrote in `dir/out` (the job's sink directory).
pub(crate) fn run_embedded(
    dir: &Path,
    job: &Path,
    batches: u64,
    out: &str,
) -> Vec<(String, Vec<u8>)> {
    let run = dstream()
        .args(["run", "-q", "--fresh", "--batches", &batches.to_string()])
        .arg(job)
        .arg("--checkpoint-dir")
        .arg(dir.join(format!("ck-{out}")))
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    files(&dir.join(out))
}

/// POSTs `body` to the http source at `addr` once it listens (retrying a
/// refused connection until `patience` runs out); the status line and body.
pub(crate) fn post_when_listening(
    addr: std::net::SocketAddr,
    body: &str,
    patience: Duration,
) -> String {
    use std::io::{Read, Write};
    let until = Instant::now() + patience;
    loop {
        match std::net::TcpStream::connect(addr) {
            Ok(mut s) => {
                write!(
                    s,
                    "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                return answer;
            }
            Err(e) => {
                assert!(
                    Instant::now() < until,
                    "the http source never listened: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
