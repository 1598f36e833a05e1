#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test
# (unit, integration, doc and compile-fail tests). Guest plugins are built
# into real components by the test set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test"
cargo test --workspace
