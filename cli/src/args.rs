//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// dstream: Discretized Streams whose operators are sandboxed WebAssembly
/// components.
///
/// Write operators with the dstream-sdk crate, build them with `dstream plugin
/// build`, look inside with `dstream plugin inspect`, and try one on a file of
/// lines with `dstream test-op`. Run a job in this process with `dstream run
/// JOB.toml`, or on a cluster: `dstream cluster init`, `dstream
/// coordinator`, `dstream worker` (one per node), `dstream submit JOB.toml`,
/// `dstream status`.
#[derive(Debug, Parser)]
#[command(name = "dstream", version, propagate_version = true)]
pub(crate) struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Build and inspect operator plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),

    /// Run one operator (or a chain, `a+b`) of a plugin over the lines of a
    /// file and print the output records, one per line.
    ///
    /// Each input line is one record. When the operator reads keys, a line is
    /// `KEY<TAB>VALUE`. Text is taken as is; numbers and booleans are parsed
    /// into the encodings the operator declares (see `dstream plugin
    /// inspect`). Output records print as `KEY<TAB>VALUE` (just `VALUE` when
    /// unkeyed), numbers in decimal, opaque or postcard bytes in hex.
    #[command(name = "test-op")]
    TestOp(TestOpArgs),

    /// Run a stream job in this process until stopped.
    ///
    /// Every interval, the records the sources got become one batch; the
    /// job's streams run over it on a thread pool and the sinks write it.
    /// Each batch prints one line on stderr: its number and time, records
    /// in and out, processing time and scheduling delay (how late it
    /// started; a delay that grows means the job cannot keep up).
    ///
    /// State is checkpointed every `checkpoint_interval` of the job. Ctrl-C
    /// finishes the current batch, writes a checkpoint and exits 0; after a
    /// crash, running the same job again resumes from the last checkpoint
    /// with its state intact, and runs the batches since the checkpoint
    /// again over the same input: generator sources from their seed, tcp,
    /// http and files sources from the input logged (synced) in the
    /// checkpoint directory before each batch ran (receivers start once
    /// those batches are done). Records received but not yet in a batch
    /// when the process died are lost; an http post is answered 200 only
    /// once its lines are logged.
    ///
    /// Plugins named by a crate directory are built first (needs the
    /// wasm32-unknown-unknown target; `scripts/setup.sh` installs it).
    Run(RunArgs),

    /// Set up a cluster (coordinator and workers over QUIC with mutual TLS).
    #[command(subcommand)]
    Cluster(ClusterCommand),

    /// Run a cluster coordinator: schedules the batches of submitted jobs
    /// on the workers that join it, and writes the jobs' sinks.
    ///
    /// Workers and the CLI must present a certificate of the cluster CA
    /// (`dstream cluster init`); others are refused, and the refusal is
    /// logged. Prints a line per worker joining or lost and per batch
    /// written. Ctrl-C stops it.
    Coordinator(CoordinatorArgs),

    /// Run a cluster worker: joins the coordinator, runs the tasks it is
    /// sent, keeps their outputs in memory and serves them to other
    /// workers (shuffles cross between workers over QUIC).
    Worker(WorkerArgs),

    /// Send a job (the job file and the plugin components it names) to a
    /// running coordinator.
    ///
    /// The job is checked here first (the same errors as `dstream run`),
    /// and again by the coordinator. Relative sink paths resolve against
    /// the job file's directory, as the coordinator sees it (the cluster
    /// shares this machine's file system, or the paths are absolute).
    Submit(SubmitArgs),

    /// Show a running cluster's workers and jobs.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CertArgs {
    /// The cluster's certificate directory (from `dstream cluster init`).
    #[arg(long, value_name = "DIR", default_value = ".dstream/cluster")]
    pub(crate) certs: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CoordinatorArgs {
    /// Address to listen on (QUIC, UDP).
    #[arg(long, value_name = "ADDR", default_value = dstream_runtime::cluster::DEFAULT_COORDINATOR)]
    pub(crate) listen: std::net::SocketAddr,

    /// A worker silent this long is declared lost.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    pub(crate) heartbeat_timeout: Duration,

    /// A task running this many times the median of its stage's finished
    /// tasks gets a speculative copy on another worker (the first result
    /// wins); 0 turns speculation off.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.5)]
    pub(crate) speculation: f64,

    /// Tasks running less than this are never copied.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub(crate) speculation_min: Duration,

    /// A worker whose tasks lost to speculative copies twice within this
    /// time (each after running at least 4 times its stage's median and
    /// twice as long as the copy, with no task of its own finished in less
    /// between them) gets no new task for this long while some other worker
    /// is not set aside (a slow node then stops delaying every batch); at
    /// most half the workers at once; logged; 0s never sets one aside.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub(crate) slow_block: Duration,

    /// Where submitted jobs are kept (a restarted coordinator resumes them
    /// from their last checkpoint) and, under `checkpoints/`, the jobs'
    /// checkpoints: a directory every worker reaches.
    #[arg(long, value_name = "DIR", default_value = ".dstream/coordinator")]
    pub(crate) state_dir: PathBuf,

    #[command(flatten)]
    pub(crate) certs: CertArgs,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long, value_name = "ADDR", default_value = dstream_runtime::cluster::DEFAULT_COORDINATOR)]
    pub(crate) join: std::net::SocketAddr,

    /// Address other workers fetch blocks from (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub(crate) listen: std::net::SocketAddr,

    /// The certificate to present: NAME.pem and NAME.key in --certs; also
    /// the worker's name in `dstream status`.
    #[arg(long, value_name = "NAME", default_value = "worker-1")]
    pub(crate) name: String,

    /// Tasks run at once [default: one per core].
    #[arg(long, value_name = "N")]
    pub(crate) slots: Option<u32>,

    /// Fault injection: every task takes FACTOR times longer.
    #[arg(long, value_name = "FACTOR")]
    pub(crate) fault_slow: Option<f64>,

    /// Fault injection: after DURATION, send nothing more to the
    /// coordinator (heartbeats, task reports), as if cut off.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) fault_drop_after: Option<Duration>,

    /// Fault injection: exit abruptly after DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) fault_exit_after: Option<Duration>,

    #[command(flatten)]
    pub(crate) certs: CertArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The job file.
    pub(crate) job: PathBuf,

    /// The coordinator's address.
    #[arg(long, value_name = "ADDR", default_value = dstream_runtime::cluster::DEFAULT_COORDINATOR)]
    pub(crate) coordinator: std::net::SocketAddr,

    /// Stop the job after this many batches.
    #[arg(long, value_name = "N")]
    pub(crate) batches: Option<u64>,

    /// Wait until the job ends (finished or failed), printing its progress;
    /// exits 1 when it failed.
    #[arg(long)]
    pub(crate) wait: bool,

    #[command(flatten)]
    pub(crate) certs: CertArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The coordinator's address.
    #[arg(long, value_name = "ADDR", default_value = dstream_runtime::cluster::DEFAULT_COORDINATOR)]
    pub(crate) coordinator: std::net::SocketAddr,

    #[command(flatten)]
    pub(crate) certs: CertArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Make a cluster CA and certificates for the coordinator, the workers
    /// and the CLI.
    ///
    /// Writes ca.pem and ca.key (keep ca.key private: it admits nodes),
    /// coordinator.pem/.key, admin.pem/.key (used by `dstream submit` and
    /// `dstream status`) and worker-N.pem/.key. Coordinator and workers
    /// accept only peers whose certificate this CA signed.
    Init(ClusterInitArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ClusterInitArgs {
    /// Directory for the CA and certificates (must not hold a CA already).
    #[arg(default_value = ".dstream/cluster")]
    pub(crate) dir: PathBuf,

    /// How many worker certificates to make.
    #[arg(long, default_value_t = 3)]
    pub(crate) workers: u32,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The job file (TOML; see examples/ and the README).
    pub(crate) job: PathBuf,

    /// Where checkpoints go [default: .dstream/JOB-NAME in the current
    /// directory].
    #[arg(long, value_name = "DIR")]
    pub(crate) checkpoint_dir: Option<PathBuf>,

    /// Start from batch 1, removing the checkpoints and the logged input of
    /// earlier runs.
    #[arg(long)]
    pub(crate) fresh: bool,

    /// Stop after this many batches (then checkpoint and exit 0); batches
    /// run again after a crash count.
    #[arg(long, value_name = "N")]
    pub(crate) batches: Option<u64>,

    /// Task threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,

    /// Do not print a line per batch.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Build a plugin crate into a WebAssembly component.
    ///
    /// Runs `cargo build --release --target wasm32-unknown-unknown` on the
    /// crate and turns the module into a component with wit-component. The
    /// target must be installed (`rustup target add wasm32-unknown-unknown`).
    Build(BuildArgs),

    /// Validate a component and list its operators, their kinds, parameters
    /// and encodings.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The plugin crate (a directory with Cargo.toml, or the Cargo.toml).
    #[arg(default_value = ".")]
    pub(crate) path: PathBuf,

    /// Where to write `<crate>.wasm` [default: target/dstream in the crate].
    #[arg(short, long)]
    pub(crate) out: Option<PathBuf>,

    /// Build for wasm32-wasip2, for a plugin that uses WASI through std (run
    /// it with `wasi = "deterministic"` in the job).
    #[arg(long)]
    pub(crate) wasi: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The component (.wasm).
    pub(crate) file: PathBuf,

    /// The plugin imports WASI: run it with deterministic stand-ins (no
    /// files, environment or network, frozen clocks, seeded randomness), as
    /// a job's `wasi = "deterministic"` does.
    #[arg(long)]
    pub(crate) wasi_deterministic: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TestOpArgs {
    /// The component (.wasm).
    pub(crate) file: PathBuf,

    /// The operator to run; `a+b+c` runs a chain in one call (one-input
    /// operators only).
    pub(crate) operator: String,

    /// Input records, one per line; `-` reads stdin.
    #[arg(short, long)]
    pub(crate) input: PathBuf,

    /// Old state for an update-state operator (`KEY<TAB>STATE` lines).
    #[arg(long)]
    pub(crate) state: Option<PathBuf>,

    /// Leaving records for an inverse operator, aligned with --input.
    #[arg(long)]
    pub(crate) leaving: Option<PathBuf>,

    /// A parameter for the operator, as NAME=VALUE (repeatable). In a chain,
    /// STAGE.NAME=VALUE gives it to one stage only.
    #[arg(short, long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub(crate) params: Vec<(String, String)>,

    /// Stop a call after this long (e.g. 500ms, 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) deadline: Duration,

    /// Memory one instance may use, in MiB.
    #[arg(long, default_value_t = 512)]
    pub(crate) memory_mib: usize,

    /// The plugin imports WASI: run it with deterministic stand-ins (no
    /// files, environment or network, frozen clocks, seeded randomness), as
    /// a job's `wasi = "deterministic"` does.
    #[arg(long)]
    pub(crate) wasi_deterministic: bool,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// `250ms`, `10s`, `2m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a duration such as 500ms or 10s, got {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(60 * n)),
        _ => Err(format!("unknown unit {unit:?} in {s:?}: use ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_and_params_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert_eq!(parse_param("k=v=w"), Ok(("k".into(), "v=w".into())));
        assert!(parse_param("=v").is_err());
    }
}
