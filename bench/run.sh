#!/usr/bin/env bash
# Builds the floor program and runs the start-up and apply benchmarks.
# Results go to stdout as a Markdown table; BENCHMARKS.md records them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example pg_floor
cargo bench --bench startup
