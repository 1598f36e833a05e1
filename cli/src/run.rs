//! `dstream run`: a job in this process, on the embedded engine.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow};
use dstream_core::job::JobFile;
use dstream_runtime::driver::{self, BatchReport, Progress, RunOptions};
use dstream_runtime::local::Engine;
use dstream_runtime::plugins;
use dstream_wasm::{Limits, Runtime};

use crate::args::RunArgs;

/// Prints what happens on stderr (stdout carries the records of stdout
/// sinks).
struct Lines {
    quiet: bool,
}

impl Lines {
    fn say(&self, line: std::fmt::Arguments<'_>) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}

impl Progress for Lines {
    fn resumed(&mut self, batch: u64) {
        self.say(format_args!(
            "resuming after batch {batch} from its checkpoint (state restored)"
        ));
    }

    fn replaying(&mut self, from: u64, to: u64) {
        self.say(format_args!(
            "running batches {from}..={to} again over the input logged for them before the stop"
        ));
    }

    fn receiver(&mut self, name: &str, addr: Option<std::net::SocketAddr>) {
        match addr {
            Some(a) => self.say(format_args!("source `{name}` listening on {a}")),
            None => self.say(format_args!("source `{name}` started")),
        }
    }

    fn batch(&mut self, r: &BatchReport) {
        if self.quiet {
            return;
        }
        let time = humantime::format_rfc3339_millis(r.time).to_string();
        let clock = time.get(11..23).unwrap_or(&time);
        self.say(format_args!(
            "batch {:>6}  {clock}  in {:>9}  out {:>7}  processing {:>8.1} ms  delay {:>7.1} ms{}",
            r.batch,
            r.records_in,
            r.records_out,
            r.processing.as_secs_f64() * 1e3,
            r.delay.as_secs_f64() * 1e3,
            match (r.checkpointed, r.replayed) {
                (true, true) => "  checkpoint  replayed",
                (true, false) => "  checkpoint",
                (false, true) => "  replayed",
                (false, false) => "",
            }
        ));
    }
}

/// A job file read, its plugins loaded and the job resolved.
pub(crate) struct LoadedJob {
    /// The file's text.
    pub(crate) text: String,
    /// Its directory.
    pub(crate) base_dir: PathBuf,
    /// The plugins by job-local name.
    pub(crate) plugins: BTreeMap<String, dstream_wasm::Plugin>,
    /// Their component bytes.
    pub(crate) components: Vec<(String, Vec<u8>)>,
    /// The job.
    pub(crate) job: dstream_core::job::Job,
}

/// Reads `path`, builds and loads the plugins it names, resolves the job;
/// errors name the file, line and field.
pub(crate) fn load_job(
    path: &Path,
    say: impl Fn(std::fmt::Arguments<'_>),
) -> anyhow::Result<LoadedJob> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the job file {}", path.display()))?;
    let shown = path.display().to_string();
    let file = JobFile::parse(&text).map_err(|e| anyhow!("{shown}:{e}"))?;
    let base_dir: PathBuf = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let runtime = Runtime::new(Limits::default())?;
    let mut loaded = BTreeMap::new();
    let mut components = Vec::new();
    for (name, location) in file.plugins() {
        let path = plugins::locate(location, &base_dir);
        if path.is_dir() {
            say(format_args!(
                "building plugin `{name}` from {} with cargo (a minute the first time, quick when up to date)",
                path.display()
            ));
        }
        let plugin_err = |e: dstream_runtime::Error| {
            anyhow!("{shown}:{}", file.plugin_error(name, e.to_string()))
        };
        let (component, bytes) =
            plugins::component(name, location, &base_dir, file.plugin_wasi(name))
                .map_err(plugin_err)?;
        let p = runtime
            .load_with(name, &bytes, file.plugin_wasi(name))
            .map_err(|e| {
                anyhow!(
                    "{shown}:{}",
                    file.plugin_error(name, format!("{}: {e}", component.display()))
                )
            })?;
        loaded.insert(name.to_string(), p);
        components.push((name.to_string(), bytes));
    }
    let job = file
        .resolve(&plugins::infos(&loaded))
        .map_err(|e| anyhow!("{shown}:{e}"))?;
    Ok(LoadedJob {
        text,
        base_dir,
        plugins: loaded,
        components,
        job,
    })
}

pub(crate) fn run(a: RunArgs) -> anyhow::Result<()> {
    let lines = Lines { quiet: a.quiet };
    let LoadedJob {
        base_dir,
        plugins: loaded,
        job,
        ..
    } = load_job(&a.job, |l| lines.say(l))?;

    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let checkpoint_dir = a
        .checkpoint_dir
        .unwrap_or_else(|| PathBuf::from(".dstream").join(&job.name));
    lines.say(format_args!(
        "job `{}`: {} streams, batch every {}, {} partitions, {threads} threads, checkpoints every {} batches in {}",
        job.name,
        job.nodes.iter().filter(|n| n.op().is_some()).count(),
        humantime::format_duration(job.interval),
        job.partitions,
        job.checkpoint_every,
        checkpoint_dir.display()
    ));

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // A second Ctrl-C: leave now.
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }
    let engine = Engine::new(job, loaded, threads)?;
    let opts = RunOptions {
        base_dir,
        checkpoint_dir,
        fresh: a.fresh,
        max_batches: a.batches,
        stop: stop.clone(),
        inbox_capacity: 10_000_000,
    };
    let mut progress = lines;
    let summary = driver::run(
        &engine,
        &opts,
        || Box::new(std::io::stdout()),
        &mut progress,
    )?;
    progress.say(format_args!(
        "{} after batch {}{}",
        if stop.load(Ordering::SeqCst) {
            "stopped"
        } else {
            "done"
        },
        summary.last_batch,
        summary
            .last_checkpoint
            .map(|c| format!(", checkpoint at batch {c}"))
            .unwrap_or_default()
    ));
    Ok(())
}
