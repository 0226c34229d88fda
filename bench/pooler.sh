#!/usr/bin/env bash
# Through a pooler: one `migrate up --yes` of 100 small migrations on an
# empty database, directly over TCP and through PgBouncer in transaction
# mode (3 server connections, over TCP), and N runs racing through the
# pooler, in the same sitting, against one throwaway PostgreSQL (default
# durability) and one PgBouncer started once. Median of ROUNDS.
# Usage: bench/pooler.sh [N] [ROUNDS] [MIGRATE]   (default 20, 5, this
# checkout's release build)
set -euo pipefail
cd "$(dirname "$0")/.."
racers=${1:-20}
rounds=${2:-5}
if [ -n "${3:-}" ]; then
    bin=$(realpath "$3")
else
    cargo build --release --locked >&2
    bin=$(realpath target/release/migrate)
fi
pgbouncer=$(command -v pgbouncer || ls /usr/sbin/pgbouncer)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=$(free_port)
pgb_port=$(free_port)

cluster_settings="-c listen_addresses=127.0.0.1 -c port=$pg_port -c max_connections=200"
export PGPORT=$pg_port
# shellcheck source=bench/cluster.sh
source bench/cluster.sh

cat > "$work/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pg_port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgb_port
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = 3
max_client_conn = 500
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
INI
echo '"postgres" ""' > "$work/users.txt"
if [ "$(id -u)" = 0 ]; then chown postgres "$work/pgbouncer.ini" "$work/users.txt"; fi
as_owner "$pgbouncer" -d "$work/pgbouncer.ini"
trap 'kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null || true; as_owner "$pg_bin/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do
    psql -X -q -h 127.0.0.1 -p "$pgb_port" -U postgres -d postgres -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
done

mkdir -p "$work/migrations"
for v in $(seq 1 100); do
    printf 'CREATE TABLE step_%d (id bigint PRIMARY KEY, name text NOT NULL);\nINSERT INTO step_%d VALUES (1, %s);\n' \
        "$v" "$v" "'one'" > "$work/migrations/$(printf %03d "$v")_step.sql"
done
direct="host=127.0.0.1 port=$pg_port user=postgres dbname=bench sslmode=disable"
pooled="host=127.0.0.1 port=$pgb_port user=postgres dbname=bench sslmode=disable"
fresh() { psql_admin -c "DROP DATABASE IF EXISTS bench WITH (FORCE)" -c "CREATE DATABASE bench" 2>/dev/null; }

# Runs $1 processes against DSN $2, prints the wall time in ms; every run
# must exit 0 and every migration be applied once.
race() {
    local n=$1 dsn=$2 start pids=() failed=0
    fresh
    start=$(now)
    for _ in $(seq "$n"); do
        (cd "$work" && "$bin" up --yes -q --dsn "$dsn") &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
    echo "$(( ($(now) - start) / 1000000 ))"
    if [ "$failed" -gt 0 ]; then echo "$failed runs failed" >&2; exit 1; fi
    local applied
    applied=$(psql -X -q -A -t -h "$work" -U postgres -d bench -c "SELECT count(*) FROM schema_migrations_log WHERE event = 'applied'")
    if [ "$applied" != 100 ]; then echo "applied $applied times, not 100" >&2; exit 1; fi
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A times
for _ in $(seq "$rounds"); do
    times[direct]+="$(race 1 "$direct") "
    times[pooled]+="$(race 1 "$pooled") "
    times[race]+="$(race "$racers" "$pooled") "
done
d=$(median <<<"${times[direct]}")
p=$(median <<<"${times[pooled]}")
r=$(median <<<"${times[race]}")
echo "one, direct (advisory lock):  ${times[direct]}-> median $d ms"
echo "one, through PgBouncer (lease): ${times[pooled]}-> median $p ms ($(echo "scale=2; $p / $d" | bc)x direct)"
echo "$racers through PgBouncer:        ${times[race]}-> median $r ms ($(echo "scale=2; $r / $p" | bc)x one through it)"
