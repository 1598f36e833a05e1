//! `dstream coordinator`, `dstream worker`, `dstream submit`, `dstream
//! status`: the cluster from the command line.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use dstream_core::wire::{JobSpec, JobStatus};
use dstream_runtime::cluster::coordinator::{self, CoordinatorOptions, Report};
use dstream_runtime::cluster::{client, worker};
use dstream_runtime::net::tls::Identity;
use dstream_wasm::{Limits, Runtime};

use crate::args::{CoordinatorArgs, StatusArgs, SubmitArgs, WorkerArgs};

fn say(line: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

fn identity(dir: &Path, name: &str) -> anyhow::Result<Identity> {
    Identity::load(dir, name).with_context(|| {
        format!(
            "loading the certificate `{name}` from {} (make one with `dstream cluster init {}`)",
            dir.display(),
            dir.display()
        )
    })
}

fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn coordinator(a: CoordinatorArgs) -> anyhow::Result<()> {
    let id = identity(&a.certs.certs, "coordinator")?;
    let runtime = Runtime::new(Limits::default())?;
    if !(a.speculation == 0.0 || a.speculation >= 1.0) {
        bail!(
            "--speculation {} makes no sense: use a factor of 1 or more (1.5 is usual), or 0 to turn it off",
            a.speculation
        );
    }
    let opts = CoordinatorOptions {
        listen: a.listen,
        heartbeat_timeout: a.heartbeat_timeout,
        speculation: (a.speculation > 0.0).then_some(a.speculation),
        speculation_min: a.speculation_min,
        slow_block: a.slow_block,
        state_dir: std::path::absolute(&a.state_dir)
            .with_context(|| format!("resolving {}", a.state_dir.display()))?,
    };
    tokio()?.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                match r {
                    Report::Listening(addr) => say(format_args!("coordinator listening on {addr}")),
                    Report::WorkerJoined {
                        worker,
                        name,
                        addr,
                        slots,
                    } => say(format_args!(
                        "worker {worker} `{name}` joined (blocks served on {addr}, {slots} slots)"
                    )),
                    Report::WorkerLost { worker, reason } => {
                        say(format_args!("worker {worker} lost: {reason}"));
                    }
                    Report::JobSubmitted {
                        job,
                        name,
                        resumed_from: None,
                    } => say(format_args!("job {job} `{name}` submitted")),
                    Report::JobSubmitted {
                        job,
                        name,
                        resumed_from: Some(c),
                    } => say(format_args!(
                        "job {job} `{name}` resumed after batch {c} from its checkpoint"
                    )),
                    Report::Batch {
                        job,
                        batch,
                        processing,
                        delay,
                        records_out,
                    } => say(format_args!(
                        "job {job} batch {batch:>6}  out {records_out:>7}  processing {:>8.1} ms  delay {:>7.1} ms",
                        ms(processing),
                        ms(delay)
                    )),
                    Report::JobFinished { job, batches } => {
                        say(format_args!("job {job} finished after {batches} batches"));
                    }
                    Report::JobFailed { job, message } => {
                        say(format_args!("job {job} failed: {message}"));
                    }
                }
            }
        });
        coordinator::run(opts, &id, runtime, tx, ctrl_c()).await
    })?;
    Ok(())
}

pub(crate) fn worker(a: WorkerArgs) -> anyhow::Result<()> {
    let id = identity(&a.certs.certs, &a.name)?;
    let runtime = Runtime::new(Limits::default())?;
    let slots = a
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let opts = worker::WorkerOptions {
        join: a.join,
        listen: a.listen,
        name: a.name.clone(),
        slots,
        faults: worker::Faults {
            slow: a.fault_slow,
            drop_after: a.fault_drop_after,
            exit_after: a.fault_exit_after,
        },
    };
    let join = a.join;
    tokio()?.block_on(worker::run(
        opts,
        &id,
        runtime,
        |worker, addr| {
            say(format_args!(
                "worker {worker} joined the coordinator at {join}; serving blocks on {addr}, {slots} slots"
            ));
        },
        ctrl_c(),
    ))?;
    Ok(())
}

pub(crate) fn submit(a: SubmitArgs) -> anyhow::Result<()> {
    let loaded = crate::run::load_job(&a.job, say)?;
    let base_dir = std::fs::canonicalize(&loaded.base_dir)
        .with_context(|| format!("resolving {}", loaded.base_dir.display()))?;
    let spec = JobSpec {
        text: loaded.text,
        base_dir: base_dir.display().to_string(),
        plugins: loaded.components,
        batches: a.batches,
    };
    let id = identity(&a.certs.certs, "admin")?;
    let rt = tokio()?;
    let (job, name) = rt.block_on(client::submit(a.coordinator, &id, spec))?;
    say(format_args!(
        "submitted job {job} `{name}` to {}",
        a.coordinator
    ));
    if !a.wait {
        return Ok(());
    }
    let mut shown = 0;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let (_, jobs) = rt.block_on(client::status(a.coordinator, &id))?;
        let Some(j) = jobs.into_iter().find(|j| j.job == job) else {
            bail!("the coordinator no longer knows job {job}");
        };
        if j.batches_done != shown {
            shown = j.batches_done;
            say(format_args!(
                "job {job}: {} batches, {} records out, last batch {:.1} ms (delay {:.1} ms)",
                j.batches_done,
                j.records_out,
                j.last_processing_us as f64 / 1e3,
                j.last_delay_us as f64 / 1e3
            ));
        }
        match j.state.as_str() {
            "finished" => {
                say(format_args!("job {job} finished"));
                return Ok(());
            }
            s if s.starts_with("failed") => bail!("job {job} {s}"),
            _ => {}
        }
    }
}

pub(crate) fn status(a: StatusArgs) -> anyhow::Result<()> {
    let id = identity(&a.certs.certs, "admin")?;
    let (workers, jobs) = tokio()?.block_on(client::status(a.coordinator, &id))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "coordinator {}", a.coordinator)?;
    writeln!(out, "workers: {}", workers.len())?;
    if !workers.is_empty() {
        writeln!(
            out,
            "  {:>3}  {:<12} {:<22} {:>5} {:>8} {:>8} {:>9} {:>12} {:>8} {:>8} {:>12} {:>9}",
            "id",
            "name",
            "address",
            "slots",
            "tasks",
            "local",
            "fetched",
            "fetched B",
            "served",
            "held",
            "held B",
            "heartbeat"
        )?;
    }
    for w in &workers {
        let s = &w.stats;
        writeln!(
            out,
            "  {:>3}  {:<12} {:<22} {:>5} {:>8} {:>8} {:>9} {:>12} {:>8} {:>8} {:>8} {:>8} {:>12} {:>6} ms",
            w.worker,
            w.name,
            w.addr,
            w.slots,
            s.tasks_run,
            s.local_inputs,
            s.fetched_blocks,
            s.fetched_bytes,
            s.served_blocks,
            s.received_blocks,
            s.replica_blocks,
            s.blocks_held,
            s.bytes_held,
            w.last_seen_ms
        )?;
    }
    writeln!(out, "jobs: {}", jobs.len())?;
    for JobStatus {
        job,
        name,
        state,
        batches_done,
        last_processing_us,
        last_delay_us,
        records_out,
        recomputed,
        speculated,
        set_aside,
    } in &jobs
    {
        writeln!(
            out,
            "  {job:>3}  {name:<20} {state:<10} batches {batches_done}  records out {records_out}  recomputed {recomputed}  speculated {speculated}  workers set aside {set_aside}  last batch {:.1} ms  delay {:.1} ms",
            *last_processing_us as f64 / 1e3,
            *last_delay_us as f64 / 1e3
        )?;
    }
    Ok(())
}
