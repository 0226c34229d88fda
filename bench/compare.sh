#!/usr/bin/env bash
# Times two builds of migrate interleaved, one process at a time, against
# one throwaway PostgreSQL (default durability, Unix socket):
#   (b) 1000 migrations (a table, an index, two rows each) from empty, a
#       fresh database per run, PAIRS runs of each build, alternating;
#   (a) `up` with all 1000 applied, 50 runs in a row per build, 4 rounds.
# Usage: bench/compare.sh OTHER_MIGRATE [PAIRS]   (this checkout's release
# build against OTHER_MIGRATE, an earlier commit's, say).
set -euo pipefail
cd "$(dirname "$0")/.."
other=$(realpath "$1")
pairs=${2:-8}
cargo build --release --locked >&2
this=$(realpath target/release/migrate)

# shellcheck source=bench/cluster.sh
source bench/cluster.sh

mkdir -p "$work/migrations"
for v in $(seq 1 1000); do
    printf 'CREATE TABLE step_%d (id bigint PRIMARY KEY, name text NOT NULL);\nCREATE INDEX step_%d_name_idx ON step_%d (name);\nINSERT INTO step_%d VALUES (1, %s), (2, %s);\n' \
        "$v" "$v" "$v" "$v" "'one'" "'two'" > "$work/migrations/$(printf %04d "$v")_step.sql"
done
dsn="host=$work user=postgres dbname=bench"
run() { (cd "$work" && "$1" up --yes -q --dsn "$dsn"); }

echo "(b) 1000 from empty, per run"
declare -A applied
for _ in $(seq "$pairs"); do
    for build in this other; do
        psql_admin -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench" 2>/dev/null
        start=$(now)
        run "${!build}"
        applied[$build]+="$(( ($(now) - start) / 1000000 )) "
    done
done
for build in this other; do
    echo "  $build: $(tr ' ' '\n' <<<"${applied[$build]}" | sort -n | tr '\n' ' ')(ms, sorted)"
done

echo "(a) up with 1000 applied, mean of 50 runs in a row"
for round in 1 2 3 4; do
    for build in this other; do
        start=$(now)
        for _ in $(seq 50); do run "${!build}"; done
        echo "  round $round $build: $(( ($(now) - start) / 50000 )) us"
    done
done
