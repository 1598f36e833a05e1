//! Faults on a real cluster, like the D-Streams paper's figures: the time
//! of each batch around a worker killed with SIGKILL, for several checkpoint
//! intervals; and the batch time with one worker slowed 10x, with
//! speculation (and the slow worker set aside once a copy beat it by far),
//! with copies only, and without speculation. Writes `benches/figures/recovery.svg` and
//! `benches/figures/stragglers.svg` and prints the figures.
//!
//! ```text
//! cargo build --release -p dstream-cli
//! cargo run --release -p dstream-benches --bin faults
//! ```
//!
//! Real processes: a coordinator and 3 workers of the `dstream` binary
//! (`DSTREAM_BIN`, default `target/release/dstream`) on loopback; the
//! job is a running WordCount (the Wasm `split` and `sum`, 100-byte
//! generator records) at a 500 ms interval. A batch's time is its
//! scheduling delay plus its processing time (from the end of its interval
//! to its last task), as the coordinator prints them. The heartbeat timeout
//! is 1 s; speculation copies a task running 1.5x its stage's median, not
//! before 20 ms (tasks here take tens of milliseconds).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use plotters::prelude::*;

const INTERVAL_MS: u64 = 500;
const RATE: u64 = 60_000;

fn bin() -> PathBuf {
    std::env::var_os("DSTREAM_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/dstream"),
        PathBuf::from,
    )
}

/// A process whose stderr lines arrive on a channel; killed when dropped.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e} (build it first: cargo build --release -p dstream-cli)",
                    bin().display()
                )
            });
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    fn wait_for(&self, what: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("no line with {what:?}"));
            if l.contains(what) {
                return l;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One batch as the coordinator reported it.
#[derive(Debug, Clone, Copy)]
struct BatchTime {
    batch: u64,
    /// Delay plus processing, in ms.
    ms: f64,
}

fn parse_batch(line: &str) -> Option<BatchTime> {
    // "job 1 batch     12  out ...  processing   12.3 ms  delay    1.0 ms"
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first() != Some(&"job") || f.get(2) != Some(&"batch") {
        return None;
    }
    let num = |key: &str| -> Option<f64> {
        let i = f.iter().position(|x| *x == key)?;
        f.get(i + 1)?.parse().ok()
    };
    Some(BatchTime {
        batch: f.get(3)?.parse().ok()?,
        ms: num("processing")? + num("delay")?,
    })
}

struct Trial<'a> {
    dir: &'a Path,
    checkpoint_batches: u64,
    batches: u64,
    /// Kill worker 2 when this batch is reported.
    kill_after: Option<u64>,
    /// Worker 3 slowed this much.
    slow: Option<f64>,
    speculation: bool,
    /// Set a worker far slower than the copies of its tasks aside
    /// (`--slow-block`, 60 s) or not (0 s).
    set_aside: bool,
}

fn run(t: &Trial<'_>) -> Vec<BatchTime> {
    let state = t.dir.join(
        format!(
            "state-{}-{}-{:?}-{}",
            t.checkpoint_batches,
            t.kill_after.unwrap_or(0),
            t.slow,
            t.speculation
        ) + if t.set_aside { "-aside" } else { "" },
    );
    let certs = t.dir.join("certs");
    let certs_s = certs.to_str().expect("utf-8 path");
    let state_s = state.to_str().expect("utf-8 path");
    let speculation = if t.speculation { "1.5" } else { "0" };
    let coordinator = Proc::spawn(&[
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--certs",
        certs_s,
        "--state-dir",
        state_s,
        "--heartbeat-timeout",
        "1s",
        "--speculation",
        speculation,
        "--speculation-min",
        "20ms",
        "--slow-block",
        if t.set_aside { "60s" } else { "0s" },
    ]);
    let line = coordinator.wait_for("coordinator listening on ");
    let addr = line.rsplit(' ').next().expect("address").to_string();
    let mut workers = Vec::new();
    for i in 1..=3 {
        let name = format!("worker-{i}");
        let slow = t.slow.filter(|_| i == 3).map(|f| f.to_string());
        let mut args = vec![
            "worker", "--join", &addr, "--certs", certs_s, "--name", &name, "--slots", "1",
        ];
        if let Some(f) = &slow {
            args.extend(["--fault-slow", f]);
        }
        let w = Proc::spawn(&args);
        w.wait_for("joined the coordinator");
        workers.push(w);
    }
    let job = t.dir.join(format!("job-{}.toml", t.checkpoint_batches));
    std::fs::write(
        &job,
        format!(
            "name = \"bench-faults\"\ninterval = \"{INTERVAL_MS}ms\"\ncheckpoint_interval = \"{}ms\"\npartitions = 6\n[plugins]\nwc = \"{}\"\n[sources.lines]\nkind = \"generator\"\nformat = \"words\"\nrate = {RATE}\nrecord_bytes = 100\n[streams.words]\nfrom = \"lines\"\nflat_map = \"wc/split\"\n[streams.counts]\nfrom = \"words\"\nrunning_reduce = \"wc/sum\"\n",
            INTERVAL_MS * t.checkpoint_batches,
            dstream_artifacts::WORDCOUNT
        ),
    )
    .expect("job file");
    succeed(
        Command::new(bin())
            .args([
                "submit",
                job.to_str().expect("utf-8"),
                "--coordinator",
                &addr,
            ])
            .args(["--certs", certs_s, "--batches", &t.batches.to_string()]),
        "submit",
    );
    let mut times = Vec::new();
    loop {
        let l = coordinator
            .lines
            .recv_timeout(Duration::from_secs(120))
            .expect("the job went silent");
        if l.contains("finished after") {
            break;
        }
        assert!(!l.contains(" failed"), "{l}");
        if let Some(b) = parse_batch(&l) {
            times.push(b);
            if Some(b.batch) == t.kill_after {
                workers[1].child.kill().expect("SIGKILL");
            }
        }
    }
    times.sort_by_key(|b| b.batch);
    times
}

fn median(v: &[BatchTime]) -> f64 {
    let mut m: Vec<f64> = v.iter().map(|b| b.ms).collect();
    m.sort_by(f64::total_cmp);
    m[m.len() / 2]
}

fn plot(
    path: &Path,
    title: &str,
    series: &[(String, Vec<BatchTime>)],
    mark: Option<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let max_batch = series
        .iter()
        .flat_map(|s| &s.1)
        .map(|b| b.batch)
        .max()
        .unwrap_or(1);
    let max_ms = series
        .iter()
        .flat_map(|s| &s.1)
        .map(|b| b.ms)
        .fold(INTERVAL_MS as f64 * 1.2, f64::max);
    let root = SVGBackend::new(path, (800, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(1u64..max_batch, 0f64..max_ms * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("batch")
        .y_desc("batch time (delay + processing), ms")
        .draw()?;
    let interval = INTERVAL_MS as f64;
    chart
        .draw_series(LineSeries::new(
            [(1, interval), (max_batch, interval)],
            BLACK.mix(0.4),
        ))?
        .label("interval")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
    if let Some(k) = mark {
        chart.draw_series(LineSeries::new([(k, 0.0), (k, max_ms)], RED.mix(0.3)))?;
    }
    for (i, (name, s)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.iter().map(|b| (b.batch, b.ms)), color))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Runs `cmd` to its end; panics with its stderr unless it succeeded.
fn succeed(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Batch times around a worker killed with SIGKILL (several checkpoint
/// intervals) and with one worker slowed 10x, on a real cluster of
/// `dstream` processes.
#[derive(clap::Parser)]
struct Args {}

fn main() {
    let Args {} = clap::Parser::parse();
    let dir = std::env::temp_dir().join(format!("dstream-bench-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    succeed(
        Command::new(bin())
            .args(["cluster", "init"])
            .arg(dir.join("certs")),
        "cluster init",
    );
    let figures = Path::new(env!("CARGO_MANIFEST_DIR")).join("figures");
    std::fs::create_dir_all(&figures).expect("figures dir");
    println!(
        "running WordCount, {RATE} records/s, {INTERVAL_MS} ms interval, 3 workers x 1 slot, heartbeat timeout 1 s"
    );

    // A worker killed at batch 15, for several checkpoint intervals.
    let kill = 15;
    let mut recovery = Vec::new();
    for ck in [2u64, 5, 10] {
        let times = run(&Trial {
            dir: &dir,
            checkpoint_batches: ck,
            batches: 35,
            kill_after: Some(kill),
            slow: None,
            // Off, so that the figure shows detection and recovery (a copy
            // of a task stuck on the dead worker would hide part of it).
            speculation: false,
            set_aside: false,
        });
        let before = median(&times[5..kill as usize]);
        let worst = times.iter().map(|b| b.ms).fold(0.0, f64::max);
        let back = times
            .iter()
            .filter(|b| b.batch > kill)
            .rev()
            .take_while(|b| b.ms <= INTERVAL_MS as f64)
            .last()
            .map(|b| b.batch);
        println!(
            "checkpoint every {ck:>2} batches: median before the kill {before:>6.1} ms, worst {worst:>7.1} ms, back under the interval from batch {} ({} batches after the kill)",
            back.map_or("-".into(), |b| b.to_string()),
            back.map_or("-".into(), |b| (b - kill).to_string())
        );
        println!(
            "  batches {}..{}: {:?} ms",
            kill - 2,
            kill + 6,
            times
                .iter()
                .filter(|b| b.batch + 2 >= kill && b.batch <= kill + 6)
                .map(|b| b.ms.round() as u64)
                .collect::<Vec<_>>()
        );
        recovery.push((format!("checkpoint every {ck} batches"), times));
    }
    plot(
        &figures.join("recovery.svg"),
        "Batch time around a worker killed after batch 15",
        &recovery,
        Some(kill),
    )
    .expect("plot");

    // One worker slowed 10x, with and without speculation.
    let mut stragglers = Vec::new();
    for (name, slow, spec, set_aside) in [
        ("healthy", None, true, true),
        ("one worker 10x slower, speculation", Some(10.0), true, true),
        (
            "one worker 10x slower, no speculation",
            Some(10.0),
            false,
            false,
        ),
        (
            "one worker 10x slower, copies only",
            Some(10.0),
            true,
            false,
        ),
    ] {
        let times = run(&Trial {
            dir: &dir,
            checkpoint_batches: 10,
            batches: 25,
            kill_after: None,
            slow,
            speculation: spec,
            set_aside,
        });
        let m = median(&times[3..]);
        println!("{name:<40} median batch {m:>7.1} ms");
        stragglers.push((name.to_string(), times));
    }
    let h = median(&stragglers[0].1[3..]);
    let s = median(&stragglers[1].1[3..]);
    let n = median(&stragglers[2].1[3..]);
    let c = median(&stragglers[3].1[3..]);
    println!(
        "with speculation: {:.2}x healthy (copies only, the slow worker never set aside: {:.2}x); without: {:.2}x healthy",
        s / h,
        c / h,
        n / h
    );
    plot(
        &figures.join("stragglers.svg"),
        "Batch time with one worker 10x slower",
        &stragglers,
        None,
    )
    .expect("plot");
    println!("figures in {}", figures.display());
    let _ = std::fs::remove_dir_all(&dir);
}
