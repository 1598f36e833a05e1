#!/usr/bin/env bash
# The first command a new user runs: installs what is needed, builds dstream,
# and runs the paper's running page-view count on the embedded engine (one
# process, no configuration): every second a batch of generated page views,
# and the running count of views per URL. Ctrl-C stops it after the current
# batch, with a checkpoint; run it again and it resumes from there.
# Extra arguments go to `dstream run` (e.g. `--batches 10`, `--fresh`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "==> building the dstream CLI (the first build compiles wasmtime: several minutes)"
cargo build -p dstream-cli

echo "==> running examples/pageviews.toml (Ctrl-C to stop)"
exec target/debug/dstream run examples/pageviews.toml "$@"
