#!/usr/bin/env bash
# Load check of `migrate serve`: GET /admin/migrations/status under wrk on
# loopback, for the example folder (6 migrations) and for 1000 generated
# ones, against a throwaway PostgreSQL with default settings. Prints
# requests per second, latency percentiles and the server's peak memory;
# BENCHMARKS.md records them.
#
# Needs wrk (Debian: apt-get install wrk) and the PostgreSQL server
# programs. DURATION (default 5s), CONNECTIONS (default 16), ROUTE (default
# /admin/migrations/status; /admin/migrations/lock and / are the page's
# other reads).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-5s}
connections=${CONNECTIONS:-16}
route=${ROUTE:-/admin/migrations/status}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
bin=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")

cargo build --release --quiet --bin migrate
migrate=$PWD/target/release/migrate

work=$(mktemp -d)
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$work"
    as_pg=(runuser -u postgres --)
fi
cleanup() {
    [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
    "${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$bin/initdb" -D "$work/data" -A trust -U postgres >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" \
    -o "-k $work -c listen_addresses=''" start >/dev/null
"${as_pg[@]}" psql -h "$work" -U postgres -qc 'CREATE DATABASE example' -c 'CREATE DATABASE many'

mkdir "$work/many"
for i in $(seq -w 1 1000); do
    echo "CREATE TABLE t_$i (id int PRIMARY KEY, name text);" > "$work/many/${i}_table_$i.sql"
done

token=load-check-token-$(date +%s%N)
echo "wrk: GET $route, $connections connections, 2 threads, $duration; $(nproc) cores"
echo
echo "| folder | requests/s | p50 | p99 | max | server peak RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
# The third case: the example folder while 300 idle connections (half a
# request head each) from 127.0.0.1 hold what they can; wrk comes from ::1.
for case in example many slowloris; do
    db=$case
    if [ $case = many ]; then path=$work/many; else path=migrations; fi
    if [ $case = slowloris ]; then db=example; listen='[::]:0'; else listen=127.0.0.1:0; fi
    dsn="host=$work user=postgres dbname=$db"
    SKIP_BOOTSTRAP=true "$migrate" up --yes --quiet --dsn "$dsn" --path "$path" --config "$work"
    MIGRATE_ADMIN_TOKEN=$token SKIP_BOOTSTRAP=true "$migrate" serve --dsn "$dsn" --path "$path" \
        --config "$work" --listen "$listen" >"$work/serve.out" 2>/dev/null &
    server=$!
    for _ in $(seq 100); do grep -qs '^listening on' "$work/serve.out" && break; sleep 0.1; done
    address=$(sed -n 's|^listening on http://\([^ ]*\).*|\1|p' "$work/serve.out")
    hogs=
    if [ $case = slowloris ]; then
        port=${address##*:}
        address="[::1]:$port"
        python3 -c '
import socket, sys, time
held = []
for _ in range(300):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET /admin/migrations/status HTTP/1.1\r\nHost: x\r\n")
    held.append(s)
time.sleep(3600)' "$port" &
        hogs=$!
        sleep 1
    fi
    url=http://$address$route
    wrk -t2 -c"$connections" -d1s -H "Authorization: Bearer $token" "$url" >/dev/null
    out=$(wrk -t2 -c"$connections" -d"$duration" --latency -H "Authorization: Bearer $token" "$url")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    max=$(awk '/^    Latency/ {print $4}' <<<"$out")
    errors=$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)
    rss=$(awk '/^VmHWM/ {printf "%d MiB", $2 / 1024}' "/proc/$server/status")
    migrations=$(ls "$path"/*.sql | grep -vc "\.down\.sql$")
    label="$case ($migrations migrations)"
    [ $case != slowloris ] || label="example ($migrations migrations), 300 idle connections from another address"
    echo "| $label | $rps | $p50 | $p99 | $max | $rss |"
    [ -z "$errors" ] || echo "  $errors"
    [ -z "$hogs" ] || kill "$hogs"
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=
done
