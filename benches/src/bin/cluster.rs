//! WordCount on the cluster: 1 worker against 2 workers on this machine.
//!
//! ```text
//! cargo run --release -p dstream-benches --bin cluster
//! ```
//!
//! A coordinator and the workers run in this process on one tokio runtime,
//! talking QUIC with mutual TLS over loopback exactly as separate processes
//! do (the worker's tasks run on blocking threads, as in `dstream worker`).
//! Each trial submits the same running WordCount (the guest example's Wasm
//! `split` and `sum`, fused into one call on the map side as in the
//! engine bench, generator records of 100 bytes, a 1 s
//! interval) and reports the median processing time of its batches after
//! the first two, from the coordinator's own measurement (a batch's start
//! to its last task's end). Workers get one task slot each, so "2 workers"
//! has twice the cores of "1 worker"; 1 worker with 2 slots is shown for
//! what the second process costs.
//!
//! `DSTREAM_BENCH_RATE` sets the records per second (default 400000),
//! `DSTREAM_BENCH_BATCHES` the batches per trial (default 8).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dstream_core::wire::JobSpec;
use dstream_runtime::cluster::coordinator::{self, CoordinatorOptions, Report};
use dstream_runtime::cluster::{client, worker};
use dstream_runtime::net::tls::{self, Identity};
use dstream_wasm::{Limits, Runtime};
use tokio::sync::{mpsc, watch};

/// As the `dstream` binary: mimalloc, keeping what one batch frees for the
/// next (see `dstream_runtime::alloc`).
#[global_allocator]
static ALLOC: dstream_runtime::alloc::Allocator = dstream_runtime::alloc::Allocator;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn job(rate: u64) -> String {
    format!(
        r#"name = "bench-cluster-wordcount"
interval = "1s"
partitions = 4
[plugins]
wc = "wc.wasm"
[sources.lines]
kind = "generator"
format = "words"
rate = {rate}
record_bytes = 100
[streams.words]
from = "lines"
flat_map = "wc/split"
[streams.counts]
from = "words"
running_reduce = "wc/sum"
"#
    )
}

/// Runs one trial: `workers` workers of `slots` slots; returns the
/// processing time of every batch.
async fn trial(certs: &Path, workers: u32, slots: u32, rate: u64, batches: u64) -> Vec<Duration> {
    let runtime = Runtime::new(Limits::default()).expect("wasm runtime");
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (tx, mut reports) = mpsc::unbounded_channel();
    let id = Identity::load(certs, "coordinator").expect("certificate");
    let rt = runtime.clone();
    let stop = stopped(stop_rx.clone());
    let certs_dir = certs.to_path_buf();
    let coord = tokio::spawn(async move {
        let certs = certs_dir;
        let opts = CoordinatorOptions {
            listen: "127.0.0.1:0".parse().expect("address"),
            heartbeat_timeout: Duration::from_secs(10),
            state_dir: certs.join(format!("state-{workers}-{slots}")),
            ..CoordinatorOptions::default()
        };
        coordinator::run(opts, &id, rt, tx, stop).await
    });
    let Some(Report::Listening(addr)) = reports.recv().await else {
        panic!("the coordinator did not start")
    };
    let mut handles = Vec::new();
    for i in 1..=workers {
        let id = Identity::load(certs, &format!("worker-{i}")).expect("certificate");
        let opts = worker::WorkerOptions {
            join: addr,
            listen: "127.0.0.1:0".parse().expect("address"),
            name: format!("worker-{i}"),
            slots,
            faults: worker::Faults::default(),
        };
        let rt = runtime.clone();
        let stop = stopped(stop_rx.clone());
        handles.push(tokio::spawn(async move {
            worker::run(opts, &id, rt, |_, _| {}, stop).await
        }));
    }
    let mut joined = 0;
    while joined < workers {
        if let Some(Report::WorkerJoined { .. }) = reports.recv().await {
            joined += 1;
        }
    }
    submit(certs, addr, rate, batches).await;
    let mut times = Vec::new();
    while let Some(r) = reports.recv().await {
        match r {
            Report::Batch { processing, .. } => times.push(processing),
            Report::JobFinished { .. } => break,
            Report::JobFailed { message, .. } => panic!("the job failed: {message}"),
            _ => {}
        }
    }
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    let _ = coord.await;
    times
}

async fn submit(certs: &Path, addr: SocketAddr, rate: u64, batches: u64) {
    let wasm = std::fs::read(dstream_artifacts::WORDCOUNT).expect("the wordcount component");
    let spec = JobSpec {
        text: job(rate),
        base_dir: certs.display().to_string(),
        plugins: vec![("wc".into(), wasm)],
        batches: Some(batches),
    };
    let admin = Identity::load(certs, "admin").expect("certificate");
    client::submit(addr, &admin, spec).await.expect("submitted");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Running WordCount on a coordinator and workers over QUIC (loopback):
/// 1 worker against 2 workers. DSTREAM_BENCH_RATE sets the records per
/// second (default 400000), DSTREAM_BENCH_BATCHES the batches per trial
/// (default 8).
#[derive(clap::Parser)]
struct Args {}

fn main() {
    dstream_runtime::alloc::retain_freed_memory();
    let Args {} = clap::Parser::parse();
    let rate = env("DSTREAM_BENCH_RATE", 400_000);
    let batches = env("DSTREAM_BENCH_BATCHES", 8).max(3);
    let certs = std::env::temp_dir().join(format!("dstream-bench-cluster-{}", std::process::id()));
    tls::init(&certs, 2).expect("certificates");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    println!(
        "running WordCount, {rate} records/s of 100 bytes, 1 s interval, 4 partitions, {batches} batches a trial ({} cores here)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut medians = Vec::new();
    for (workers, slots) in [(1, 1), (2, 1), (1, 2)] {
        let times = rt.block_on(trial(&certs, workers, slots, rate, batches));
        let m = median(times[2..].to_vec());
        let per_s = rate as f64 / m.as_secs_f64();
        println!(
            "{workers} worker(s) x {slots} slot(s): median batch {:>7.1} ms  -> {:>10.0} records/s   (all: {:?} ms)",
            m.as_secs_f64() * 1e3,
            per_s,
            times.iter().map(|t| t.as_millis()).collect::<Vec<_>>()
        );
        medians.push(m);
    }
    println!(
        "2 workers / 1 worker (one slot each): {:.2}x the throughput",
        medians[0].as_secs_f64() / medians[1].as_secs_f64()
    );
    println!(
        "1 worker with 2 slots / 2 workers with 1: {:.2}x",
        medians[1].as_secs_f64() / medians[2].as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&certs);
}
