#!/usr/bin/env bash
# The first command a new user runs: installs what is needed, builds dstream
# and a plugin, and runs operators of it on sample data.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

echo "==> building the dstream CLI (the first build compiles wasmtime: several minutes)"
cargo build -p dstream-cli
dstream=target/debug/dstream
out=target/dstream

echo "==> building the guest examples into components"
for p in pageviews wordcount grep topk; do
  "$dstream" plugin build "guest-examples/$p" --out "$out"
done

echo "==> what is inside the wordcount plugin"
"$dstream" plugin inspect "$out/wordcount.wasm"

echo "==> page views per URL: url_one then merge, fused into one Wasm call"
"$dstream" test-op "$out/pageviews.wasm" url_one+merge --input examples/data/views.log

echo "==> lines of the log that mention Firefox (grep with a parameter)"
"$dstream" test-op "$out/grep.wasm" grep --input examples/data/views.log --param pattern=Firefox

echo "==> the 3 most frequent words of the log (split, sum, then a transform, in one call)"
"$dstream" test-op "$out/wordcount.wasm" split+sum+top --input examples/data/views.log --param n=3
