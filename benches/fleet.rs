//! Benchmarks of a fleet of tenant schemas, over TCP to 127.0.0.1
//! (password authentication, no TLS) on a throwaway server with
//! PostgreSQL's default durability (fsync and synchronous commit on):
//!
//! (d) `up` and `status` across 1000 schemas of 100 applied migrations
//!     each, `--parallel 4`, nothing pending;
//! (e) applying 20 new migrations to each of the 1000 schemas, with
//!     `migrate up --each-schema --parallel 4` against a shell loop of one
//!     `migrate up --schema S` per schema: once with one-row INSERTs, once
//!     with a CREATE TABLE (with a primary key) each.
//!
//! Medians of several runs, interleaved; the state is put back between
//! runs with SQL. BENCH_TENANTS (default 1000) and BENCH_RUNS (default 3)
//! scale it; BENCH_ONLY_D=1 leaves (e) out. Run with `bench/run.sh`.

#[path = "measure.rs"]
mod measure;

use measure::measure;
use migrate::pgserver::{ClusterOptions, TempCluster};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APPLIED: usize = 100;
const NEW: usize = 20;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn psql(cluster: &TempCluster, sql: &str) {
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(cluster.socket_dsn("fleet"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), sql.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "psql failed");
}

fn schema(n: usize) -> String {
    format!("tenant_{n:04}")
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The 20 new files: `kind` "insert" or "table".
fn write_new(dir: &Path, kind: &str) {
    for v in APPLIED + 1..=APPLIED + NEW {
        let sql = match kind {
            "insert" => format!("INSERT INTO notes VALUES ({v});\n"),
            _ => format!("CREATE TABLE t_{v} (id bigint PRIMARY KEY, note text);\n"),
        };
        std::fs::write(dir.join(format!("{v:04}_{kind}.sql")), sql).unwrap();
    }
}

fn remove_new(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let version: usize = name[..4].parse().unwrap();
        if version > APPLIED {
            std::fs::remove_file(path).unwrap();
        }
    }
}

/// Puts every schema back to 100 applied, nothing else.
fn reset(cluster: &TempCluster, tenants: usize) {
    let mut sql = String::new();
    for n in 0..tenants {
        let s = schema(n);
        sql.push_str(&format!(
            "DELETE FROM {s}.schema_migrations WHERE version > '{APPLIED:04}';\n\
             DELETE FROM {s}.schema_migrations_log WHERE version > '{APPLIED:04}';\n\
             TRUNCATE {s}.notes;\n"
        ));
        let tables: Vec<String> = (APPLIED + 1..=APPLIED + NEW)
            .map(|v| format!("{s}.t_{v}"))
            .collect();
        sql.push_str(&format!("DROP TABLE IF EXISTS {};\n", tables.join(", ")));
    }
    sql.push_str("CHECKPOINT;\n");
    psql(cluster, &sql);
}

fn main() {
    let tenants = env_number("BENCH_TENANTS", 1000);
    let runs = env_number("BENCH_RUNS", 3);
    // (e) only: (d) is specified at `--parallel 4`.
    let parallel = env_number("BENCH_PARALLEL", 4).to_string();
    let migrate_bin = std::env::var_os("BENCH_MIGRATE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_migrate")));
    let cluster = TempCluster::start(ClusterOptions {
        settings: vec![
            ("fsync".into(), "on".into()),
            ("synchronous_commit".into(), "on".into()),
            ("full_page_writes".into(), "on".into()),
        ],
        tcp: true,
        ..ClusterOptions::default()
    })
    .expect("start a server");
    let work = tempfile::tempdir().unwrap();
    let migrations = work.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    for v in 1..=APPLIED {
        let sql = if v == 1 {
            "CREATE TABLE notes (n int);\n".to_owned()
        } else {
            format!("COMMENT ON TABLE notes IS 'step {v}';\n")
        };
        std::fs::write(migrations.join(format!("{v:04}_step.sql")), sql).unwrap();
    }
    let dsn = format!(
        "host=127.0.0.1 port={} user=postgres password=postgres sslmode=disable dbname=fleet",
        cluster.port()
    );
    let migrate = |args: &[&str]| {
        let mut command = Command::new(&migrate_bin);
        command
            .current_dir(work.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DB_DSN", &dsn)
            .args(args)
            .args(["--yes", "-q"]);
        command
    };

    // Setup: the first schema by migrate itself, the others copied from it
    // (state table, journal and the table), which is much quicker than
    // applying 100 000 migrations.
    let started = Instant::now();
    let status = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-d",
            &cluster.socket_dsn("postgres"),
            "-c",
            "CREATE DATABASE fleet",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    psql(&cluster, &format!("CREATE SCHEMA {};", schema(0)));
    measure(&mut migrate(&["up", "--schema", &schema(0)]));
    let mut sql = String::new();
    for n in 1..tenants {
        let s = schema(n);
        let t = schema(0);
        sql.push_str(&format!(
            "CREATE SCHEMA {s};\n\
             CREATE TABLE {s}.notes (LIKE {t}.notes INCLUDING ALL);\n\
             CREATE TABLE {s}.schema_migrations (LIKE {t}.schema_migrations INCLUDING ALL);\n\
             INSERT INTO {s}.schema_migrations SELECT * FROM {t}.schema_migrations;\n\
             CREATE TABLE {s}.schema_migrations_log (LIKE {t}.schema_migrations_log INCLUDING ALL);\n\
             INSERT INTO {s}.schema_migrations_log OVERRIDING SYSTEM VALUE \
               SELECT * FROM {t}.schema_migrations_log;\n\
             ALTER TABLE {s}.schema_migrations_log ALTER COLUMN id RESTART WITH 100000;\n"
        ));
    }
    psql(&cluster, &sql);
    // Each copy is what migrate would have made: a status across the
    // fleet finds 100 applied everywhere, nothing else.
    measure(&mut migrate(&["validate", "--each-schema", "tenant_%"]));
    println!(
        "PostgreSQL {}; {tenants} schemas of {APPLIED} applied migrations, set up in {}; {runs} runs",
        cluster.version(),
        secs(started.elapsed())
    );

    // (d) nothing pending.
    let mut up = Vec::new();
    let mut status = Vec::new();
    let mut rss = (0, 0);
    for _ in 0..runs.max(5) {
        let measure::Sample {
            wall,
            max_rss_kib: kib,
            ..
        } = measure(&mut migrate(&[
            "up",
            "--each-schema",
            "tenant_%",
            "--parallel",
            "4",
        ]));
        up.push(wall);
        rss.0 = rss.0.max(kib);
        let measure::Sample {
            wall,
            max_rss_kib: kib,
            ..
        } = measure(&mut migrate(&[
            "status",
            "--each-schema",
            "tenant_%",
            "--parallel",
            "4",
        ]));
        status.push(wall);
        rss.1 = rss.1.max(kib);
    }
    println!();
    println!("| case | program | median | fastest | peak RSS |");
    println!("| --- | --- | --- | --- | --- |");
    let fastest = |v: &[Duration]| *v.iter().min().unwrap();
    println!(
        "| (d) {tenants} schemas, nothing pending | migrate up --each-schema --parallel 4 | {} | {} | {} MiB |",
        secs(median(up.clone())),
        secs(fastest(&up)),
        rss.0 / 1024
    );
    println!(
        "| (d) {tenants} schemas, nothing pending | migrate status --each-schema --parallel 4 | {} | {} | {} MiB |",
        secs(median(status.clone())),
        secs(fastest(&status)),
        rss.1 / 1024
    );

    if std::env::var_os("BENCH_ONLY_D").is_some() {
        return;
    }
    // (e) 20 new migrations in each schema.
    let loop_script = format!(
        "set -e; for n in $(seq 0 {}); do s=$(printf 'tenant_%04d' \"$n\"); \
         \"$MIGRATE\" up --yes -q --schema \"$s\"; done",
        tenants - 1
    );
    let mut ratios = Vec::new();
    for kind in ["insert", "table"] {
        write_new(&migrations, kind);
        let mut fleet = Vec::new();
        let mut shell = Vec::new();
        let (mut fleet_busy, mut shell_busy) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            reset(&cluster, tenants);
            let wall = measure(&mut migrate(&[
                "up",
                "--each-schema",
                "tenant_%",
                "--parallel",
                &parallel,
            ]));
            fleet.push(wall.wall);
            fleet_busy.push(wall.busy);
            reset(&cluster, tenants);
            let wall = measure(
                Command::new("bash")
                    .args(["-c", &loop_script])
                    .current_dir(work.path())
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("DB_DSN", &dsn)
                    .env("MIGRATE", &migrate_bin),
            );
            shell.push(wall.wall);
            shell_busy.push(wall.busy);
        }
        remove_new(&migrations);
        reset(&cluster, tenants);
        let what = if kind == "insert" {
            "one-row INSERTs"
        } else {
            "CREATE TABLEs"
        };
        println!(
            "| (e) {NEW} new in each of {tenants}, {what} | migrate up --each-schema --parallel {parallel} | {} | {} | |",
            secs(median(fleet.clone())),
            secs(fastest(&fleet))
        );
        println!(
            "| (e) {NEW} new in each of {tenants}, {what} | shell loop of migrate up --schema S | {} | {} | |",
            secs(median(shell.clone())),
            secs(fastest(&shell))
        );
        ratios.push((
            what,
            median(shell).as_secs_f64(),
            median(fleet).as_secs_f64(),
            median(fleet_busy).as_secs_f64(),
            median(shell_busy).as_secs_f64(),
        ));
    }
    // The fleet cannot take less than its busy CPU time spread over every
    // core: against the shell loop's wall time, that bounds the ratio.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!();
    for (what, shell, fleet, fleet_busy, shell_busy) in ratios {
        println!(
            "(e) {what}: the fleet is {:.1}x faster than the shell loop; busy CPU (the \
             machine's, server included): fleet {fleet_busy:.2} s, shell loop {shell_busy:.2} s; \
             on {cores} cores at most {:.1}x",
            shell / fleet,
            shell * cores / fleet_busy.max(f64::EPSILON),
        );
    }
}
