//! `dstream`: build, inspect and test operator plugins; run stream jobs.
//!
//! A thin main: parse arguments, run the command, print any error with its
//! causes to stderr and exit with a distinct code (1 for a failed command,
//! 2 for bad usage, as clap does).

mod args;
mod cluster;
mod plugin;
mod run;
mod test_op;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, keeping what one batch frees for the next (see
/// `dstream_runtime::alloc`).
#[global_allocator]
static ALLOC: dstream_runtime::alloc::Allocator = dstream_runtime::alloc::Allocator;

fn main() -> ExitCode {
    dstream_runtime::alloc::retain_freed_memory();
    let cli = args::Cli::parse();
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e}");
                for cause in e.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: args::Cli) -> anyhow::Result<()> {
    match cli.command {
        args::Command::Plugin(args::PluginCommand::Build(a)) => plugin::build(a),
        args::Command::Plugin(args::PluginCommand::Inspect(a)) => plugin::inspect(a),
        args::Command::TestOp(a) => test_op::run(a),
        args::Command::Run(a) => run::run(a),
        args::Command::Coordinator(a) => cluster::coordinator(a),
        args::Command::Worker(a) => cluster::worker(a),
        args::Command::Submit(a) => cluster::submit(a),
        args::Command::Status(a) => cluster::status(a),
        args::Command::Cluster(args::ClusterCommand::Init(a)) => {
            use std::io::Write;
            let files = dstream_runtime::net::tls::init(&a.dir, a.workers)?;
            let mut out = std::io::stdout().lock();
            for f in files {
                writeln!(out, "{}", f.display())?;
            }
            Ok(())
        }
    }
}

/// Logs go to stderr, so stdout carries only records. `RUST_LOG` overrides.
fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,dstream::guest=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
