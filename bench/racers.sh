#!/usr/bin/env bash
# Many replicas starting at once: wall time of N concurrent `migrate up
# --yes` (and with --skip-if-locked) on an empty database with 100 small
# migrations, against one process alone, in the same sitting, on one
# throwaway PostgreSQL (default durability, Unix socket). Median of ROUNDS.
# Usage: bench/racers.sh [N] [ROUNDS] [MIGRATE]   (default 64, 5, this
# checkout's release build)
set -euo pipefail
cd "$(dirname "$0")/.."
racers=${1:-64}
rounds=${2:-5}
if [ -n "${3:-}" ]; then
    bin=$(realpath "$3")
else
    cargo build --release --locked >&2
    bin=$(realpath target/release/migrate)
fi

cluster_settings="-c max_connections=200"
# shellcheck source=bench/cluster.sh
source bench/cluster.sh

mkdir -p "$work/migrations"
for v in $(seq 1 100); do
    printf 'CREATE TABLE step_%d (id bigint PRIMARY KEY, name text NOT NULL);\nINSERT INTO step_%d VALUES (1, %s);\n' \
        "$v" "$v" "'one'" > "$work/migrations/$(printf %03d "$v")_step.sql"
done
dsn="host=$work user=postgres dbname=bench"
fresh() { psql_admin -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench" 2>/dev/null; }

# Runs $1 processes with extra arguments $2..., prints the wall time in ms.
race() {
    local n=$1
    shift
    fresh
    local start pids=()
    start=$(now)
    for _ in $(seq "$n"); do
        (cd "$work" && "$bin" up --yes -q --dsn "$dsn" "$@") &
        pids+=($!)
    done
    local failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
    echo "$(( ($(now) - start) / 1000000 ))"
    if [ "$failed" -gt 0 ]; then echo "$failed runs failed" >&2; exit 1; fi
    local applied
    applied=$(psql -X -q -A -t -h "$work" -U postgres -d bench -c "SELECT count(*) FROM schema_migrations_log WHERE event = 'applied'")
    if [ "$applied" != 100 ]; then echo "applied $applied times, not 100" >&2; exit 1; fi
}

# The floor: $1 processes starting at once on a database with nothing left
# to do (each connects, reads the state, and exits), in ms.
idle() {
    local n=$1 start pids=()
    start=$(now)
    for _ in $(seq "$n"); do
        (cd "$work" && "$bin" up --yes -q --dsn "$dsn") &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    echo "$(( ($(now) - start) / 1000000 ))"
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A times
for _ in $(seq "$rounds"); do
    times[one]+="$(race 1) "
    times[many]+="$(race "$racers") "
    times[skip]+="$(race "$racers" --skip-if-locked) "
    times[idle]+="$(idle "$racers") "
done
idle_ms=$(median <<<"${times[idle]}")
one=$(median <<<"${times[one]}")
many=$(median <<<"${times[many]}")
skip=$(median <<<"${times[skip]}")
echo "one process:                  ${times[one]}-> median $one ms"
echo "$racers at once:                ${times[many]}-> median $many ms ($(echo "scale=2; $many / $one" | bc)x)"
echo "$racers with --skip-if-locked:  ${times[skip]}-> median $skip ms ($(echo "scale=2; $skip / $one" | bc)x)"
echo "$racers at once, nothing to do: ${times[idle]}-> median $idle_ms ms (the floor: one alone + this = $(echo "scale=2; ($one + $idle_ms) / $one" | bc)x)"
