# Sourced by the benchmark scripts: a throwaway PostgreSQL (default
# durability, Unix socket in $work) started once and removed on exit, run
# as `postgres` under root. Extra server settings in $cluster_settings.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin=$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
work=$(mktemp -d)
trap 'as_owner "$pg_bin/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; fi
as_owner "$pg_bin/initdb" -D "$work/data" -A trust -U postgres >/dev/null
as_owner "$pg_bin/pg_ctl" -D "$work/data" -l "$work/log" -w \
    -o "-c listen_addresses= -c unix_socket_directories=$work ${cluster_settings:-}" start >/dev/null
psql_admin() { psql -X -q -h "$work" -U postgres -d postgres "$@"; }
now() { date +%s%N; }
