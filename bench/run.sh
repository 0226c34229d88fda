#!/usr/bin/env bash
# Builds the floor program and runs the start-up, apply and fleet
# benchmarks. Results go to stdout as Markdown tables; BENCHMARKS.md
# records them. `bench/run.sh fleet` runs only the fleet's.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != fleet ]; then
    cargo build --release --example pg_floor
    cargo bench --bench startup
fi
cargo bench --bench fleet
