#!/usr/bin/env bash
# Installs what dstream needs on a fresh machine with a Rust toolchain:
# the wasm32-unknown-unknown target (plugins are built for it) and
# wasm32-wasip2 (for the example plugin that uses WASI). Everything else
# comes from crates.io through cargo. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust first (https://rustup.rs)" >&2
  exit 1
fi
sysroot=$(rustc --print sysroot)
for target in wasm32-unknown-unknown wasm32-wasip2; do
  if [ ! -d "$sysroot/lib/rustlib/$target" ]; then
    if command -v rustup >/dev/null 2>&1; then
      echo "==> installing the Rust target $target"
      rustup target add "$target"
    else
      echo "error: the Rust target $target is missing and rustup is not available to add it" >&2
      exit 1
    fi
  fi
done
