#!/usr/bin/env bash
# Case (c) side by side: 1000 one-statement migrations (a table, then one
# INSERT each) from empty, over TCP to 127.0.0.1 (trust authentication,
# no TLS; fsync on), with one psql session
# running the same files (BEGIN; \i file; COMMIT; each), this checkout's
# release build and OTHER_MIGRATE taking turns, a fresh database per run.
# Prints each round's wall times and each program's busy CPU time of the
# whole machine (from /proc/stat: the server's work and the client's),
# then the medians.
# Usage: bench/one-statement.sh OTHER_MIGRATE [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
other=$(realpath "$1")
rounds=${2:-10}
cargo build --release --locked >&2
this=$(realpath target/release/migrate)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cluster_settings="-c listen_addresses=127.0.0.1 -p $port"
# shellcheck source=bench/cluster.sh
source bench/cluster.sh

mkdir -p "$work/one"
echo 'CREATE TABLE steps (v int PRIMARY KEY);' > "$work/one/0001_step.sql"
for v in $(seq 2 1000); do
    printf 'INSERT INTO steps VALUES (%d);\n' "$v" > "$work/one/$(printf %04d "$v")_step.sql"
done
for v in $(seq 1 1000); do
    printf 'BEGIN;\n\\i %s/one/%04d_step.sql\nCOMMIT;\n' "$work" "$v"
done > "$work/one.sql"
tcp="host=127.0.0.1 port=$port user=postgres sslmode=disable dbname=bench"
busy() { awk '/^cpu /{print ($2+$3+$4+$7+$8)*10}' /proc/stat; }
declare -A wall cpu
for _ in $(seq "$rounds"); do
    line=""
    for program in psql this other; do
        psql_admin -p "$port" -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench" 2>/dev/null
        c0=$(busy)
        start=$(now)
        case $program in
            psql) psql -X -q -v ON_ERROR_STOP=1 -d "$tcp" -f "$work/one.sql" ;;
            *) (cd "$work" && "${!program}" up --yes -q --dsn "$tcp" --path "$work/one") ;;
        esac
        ms=$(( ($(now) - start) / 1000000 ))
        wall[$program]+="$ms "
        cpu[$program]+="$(( $(busy) - c0 )) "
        line+="$program $ms ms  "
    done
    echo "$line"
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for program in psql this other; do
    echo "$program: wall median $(median "${wall[$program]}") ms, busy CPU median $(median "${cpu[$program]}") ms"
done
