//! Benchmarks of the two paths that matter, each against its floor:
//!
//! (a) start-up with nothing to do: `migrate up --yes` on a database with
//!     1000 migrations applied, against `pg_floor` (connect, one query),
//!     and against `pg_floor` reading and hashing the same 1000 files first
//!     (the I/O that checking files against the database cannot avoid);
//! (b) applying 1000 small migrations from empty (two tables' DDL and an
//!     INSERT each), against one `psql` session running the same files,
//!     each in its own transaction;
//! (c) the same with 1000 one-statement migrations (an INSERT each): where
//!     the bookkeeping weighs most against the work itself;
//! (f) one database with 10 000 migrations applied (a `SELECT n;` each):
//!     `migrate up` and `migrate status` against `pg_floor`, with and
//!     without reading and hashing the files.
//!
//! Medians of several runs, interleaved, on a throwaway server with
//! PostgreSQL's default durability (fsync and synchronous commit on); (a)
//! over the Unix socket, the others over TCP to 127.0.0.1 (password
//! authentication, no TLS) for every program. Also the peak RSS of each
//! program.
//!
//! Run with `bench/run.sh`, which builds `pg_floor` first.

#[path = "measure.rs"]
mod measure;

use measure::{Sample, measure};
use migrate::pgserver::{ClusterOptions, TempCluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIGRATIONS: usize = 1000;
/// (f): the many-migrations case.
const MANY: usize = 10_000;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

struct Summary {
    median: Duration,
    min: Duration,
    max_rss_kib: i64,
}

fn summarize(samples: &[Sample]) -> Summary {
    Summary {
        median: median(samples.iter().map(|s| s.wall).collect()),
        min: samples.iter().map(|s| s.wall).min().unwrap(),
        max_rss_kib: samples.iter().map(|s| s.max_rss_kib).max().unwrap(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn sql(cluster: &TempCluster, db: &str, statement: &str) {
    let status = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &cluster.socket_dsn(db),
            "-c",
            statement,
        ])
        .status()
        .expect("psql");
    assert!(status.success(), "{statement}");
}

fn write_migrations(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for v in 1..=MIGRATIONS {
        std::fs::write(
            dir.join(format!("{v:04}_step.sql")),
            format!(
                "CREATE TABLE step_{v} (id bigint PRIMARY KEY, name text NOT NULL);\n\
                 CREATE INDEX step_{v}_name_idx ON step_{v} (name);\n\
                 INSERT INTO step_{v} VALUES (1, 'one'), (2, 'two');\n"
            ),
        )
        .unwrap();
    }
}

/// (c): the first makes a table, each of the others inserts one row.
fn write_one_statement_migrations(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for v in 1..=MIGRATIONS {
        let sql = if v == 1 {
            "CREATE TABLE steps (v int PRIMARY KEY);\n".to_owned()
        } else {
            format!("INSERT INTO steps VALUES ({v});\n")
        };
        std::fs::write(dir.join(format!("{v:04}_step.sql")), sql).unwrap();
    }
}

/// (f): `SELECT n;` each.
fn write_many_migrations(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for v in 1..=MANY {
        std::fs::write(
            dir.join(format!("{v:05}_step.sql")),
            format!("SELECT {v};\n"),
        )
        .unwrap();
    }
}

/// One psql script running every file in its own transaction.
fn write_psql_script(migrations: &Path, script: &Path) {
    let mut text = String::new();
    for v in 1..=MIGRATIONS {
        text.push_str(&format!(
            "BEGIN;\n\\i {}\nCOMMIT;\n",
            migrations.join(format!("{v:04}_step.sql")).display()
        ));
    }
    std::fs::write(script, text).unwrap();
}

/// `runs` times, interleaved, each on fresh databases: `psql -f` of a
/// script and a `migrate` command, as `setup(database)` gives the psql
/// DSN, its script and the migrate command.
fn psql_against_migrate(
    cluster: &TempCluster,
    runs: usize,
    prefix: &str,
    setup: impl Fn(&str) -> (String, PathBuf, Command),
) -> (Summary, Summary) {
    let mut psql_samples = Vec::new();
    let mut migrate_samples = Vec::new();
    for run in 0..runs {
        let (a, b) = (
            format!("psql_{prefix}{run}"),
            format!("migrate_{prefix}{run}"),
        );
        sql(cluster, "postgres", &format!("CREATE DATABASE {a}"));
        sql(cluster, "postgres", &format!("CREATE DATABASE {b}"));
        let (dsn, script, _) = setup(&a);
        psql_samples.push(measure(
            Command::new("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &dsn, "-f"])
                .arg(&script),
        ));
        let (_, _, mut migrate) = setup(&b);
        migrate_samples.push(measure(&mut migrate));
        sql(cluster, "postgres", &format!("DROP DATABASE {a}"));
        sql(cluster, "postgres", &format!("DROP DATABASE {b}"));
    }
    (summarize(&psql_samples), summarize(&migrate_samples))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    // BENCH_MIGRATE: another build to measure side by side (an earlier
    // commit's, say), in the same run and against the same server.
    let migrate_bin = std::env::var_os("BENCH_MIGRATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_migrate")));
    let floor_bin = exe_dir.join("examples/pg_floor");
    assert!(
        floor_bin.exists(),
        "{} is missing: run bench/run.sh, which builds it",
        floor_bin.display()
    );
    let runs_a: usize = std::env::var("BENCH_RUNS_A")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31);
    let runs_b: usize = std::env::var("BENCH_RUNS_B")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runs_c: usize = std::env::var("BENCH_RUNS_C")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runs_f: usize = std::env::var("BENCH_RUNS_F")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);

    let cluster = TempCluster::start(ClusterOptions {
        settings: vec![
            ("fsync".into(), "on".into()),
            ("synchronous_commit".into(), "on".into()),
            ("full_page_writes".into(), "on".into()),
        ],
        // (c) comes over TCP.
        tcp: true,
        ..ClusterOptions::default()
    })
    .expect("start a server");
    let work = tempfile::tempdir().unwrap();
    let migrations = work.path().join("migrations");
    write_migrations(&migrations);
    let script = work.path().join("all.sql");
    write_psql_script(&migrations, &script);
    let one_statement = work.path().join("one-statement");
    write_one_statement_migrations(&one_statement);
    let one_statement_script = work.path().join("one-statement.sql");
    write_psql_script(&one_statement, &one_statement_script);
    let tcp_dsn = |db: &str| {
        format!(
            "host=127.0.0.1 port={} user=postgres password=postgres sslmode=disable dbname={db}",
            cluster.port()
        )
    };
    let many = work.path().join("many");
    write_many_migrations(&many);
    println!(
        "PostgreSQL {}; {} migrations; runs: (a) {runs_a}, (b) {runs_b}, (c) {runs_c}, (f) {runs_f}",
        cluster.version(),
        MIGRATIONS
    );

    let migrate = |db: &str| {
        let mut command = Command::new(&migrate_bin);
        command
            .current_dir(work.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["up", "--yes", "--dsn", &cluster.socket_dsn(db)]);
        command
    };

    // (a) Start-up with everything applied.
    sql(&cluster, "postgres", "CREATE DATABASE applied");
    measure(&mut migrate("applied"));
    // The same start-up with one idempotent bootstrap script that reads a
    // variable (the lock is then taken on every run), and a replica's with
    // SKIP_MIGRATIONS.
    let bootstrap = work.path().join("bootstrap");
    std::fs::create_dir(&bootstrap).unwrap();
    std::fs::write(
        bootstrap.join("001_seed.sql"),
        "CREATE TABLE IF NOT EXISTS seeded (name text PRIMARY KEY);\n\
         INSERT INTO seeded VALUES (current_setting('migrate.bench_secret')) ON CONFLICT DO NOTHING;\n",
    )
    .unwrap();
    let with_bootstrap = || {
        let mut command = migrate("applied");
        command
            .env("MIGRATE_BOOTSTRAP_PATH", &bootstrap)
            .env("MIGRATE_BOOTSTRAP_VARIABLES", "BENCH_SECRET")
            .env("BENCH_SECRET", "not-so-secret");
        command
    };
    measure(&mut with_bootstrap());
    let skipping = || {
        let mut command = migrate("applied");
        command.env("SKIP_MIGRATIONS", "true");
        command
    };
    let mut floor_samples = Vec::new();
    let mut floor_files_samples = Vec::new();
    let mut up_samples = Vec::new();
    let mut bootstrap_samples = Vec::new();
    let mut skip_samples = Vec::new();
    for _ in 0..runs_a {
        floor_samples.push(measure(
            Command::new(&floor_bin).arg(cluster.socket_dsn("applied")),
        ));
        floor_files_samples.push(measure(
            Command::new(&floor_bin)
                .arg(cluster.socket_dsn("applied"))
                .arg(&migrations),
        ));
        up_samples.push(measure(&mut migrate("applied")));
        bootstrap_samples.push(measure(&mut with_bootstrap()));
        skip_samples.push(measure(&mut skipping()));
    }
    let floor = summarize(&floor_samples);
    let floor_files = summarize(&floor_files_samples);
    let up = summarize(&up_samples);
    let with_bootstrap = summarize(&bootstrap_samples);
    let skipping = summarize(&skip_samples);

    let migrate_tcp = |args: &[&str], db: &str, folder: &Path| {
        let mut command = Command::new(&migrate_bin);
        command
            .current_dir(work.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(args)
            .args(["--dsn", &tcp_dsn(db), "--path"])
            .arg(folder);
        command
    };
    // (b) 1000 migrations from empty, over TCP.
    let (psql, apply) = psql_against_migrate(&cluster, runs_b, "", |db| {
        (
            tcp_dsn(db),
            script.clone(),
            migrate_tcp(&["up", "--yes"], db, &migrations),
        )
    });
    // (c) 1000 one-statement migrations from empty, over TCP.
    let (psql_tcp, apply_tcp) = psql_against_migrate(&cluster, runs_c, "tcp_", |db| {
        (
            tcp_dsn(db),
            one_statement_script.clone(),
            migrate_tcp(&["up", "--yes"], db, &one_statement),
        )
    });

    // (f) 10 000 applied, over TCP.
    sql(&cluster, "postgres", "CREATE DATABASE many");
    let first = measure(&mut migrate_tcp(&["up", "--yes", "-q"], "many", &many));
    println!(
        "(f) set-up: 10 000 applied by one `migrate up` in {:.1} s",
        first.wall.as_secs_f64()
    );
    let mut many_floor = Vec::new();
    let mut many_floor_files = Vec::new();
    let mut many_up = Vec::new();
    let mut many_status = Vec::new();
    for _ in 0..runs_f {
        many_floor.push(measure(Command::new(&floor_bin).arg(tcp_dsn("many"))));
        many_floor_files.push(measure(
            Command::new(&floor_bin).arg(tcp_dsn("many")).arg(&many),
        ));
        many_up.push(measure(&mut migrate_tcp(
            &["up", "--yes", "-q"],
            "many",
            &many,
        )));
        many_status.push(measure(&mut migrate_tcp(&["status"], "many", &many)));
    }
    let many_floor = summarize(&many_floor);
    let many_floor_files = summarize(&many_floor_files);
    let many_up = summarize(&many_up);
    let many_status = summarize(&many_status);

    println!();
    println!("| case | program | median | fastest | peak RSS |");
    println!("| --- | --- | --- | --- | --- |");
    for (case, program, s) in [
        (
            "(a) up, 1000 applied",
            "pg_floor (connect + SELECT 1)",
            &floor,
        ),
        (
            "(a) up, 1000 applied",
            "pg_floor + read and hash the 1000 files",
            &floor_files,
        ),
        ("(a) up, 1000 applied", "migrate up --yes", &up),
        (
            "(a) up, 1000 applied",
            "migrate up --yes, one bootstrap script",
            &with_bootstrap,
        ),
        (
            "(a) up, 1000 applied",
            "SKIP_MIGRATIONS=true migrate up --yes",
            &skipping,
        ),
        (
            "(b) 1000 from empty, TCP",
            "psql -f (BEGIN; \\i file; COMMIT; each)",
            &psql,
        ),
        ("(b) 1000 from empty, TCP", "migrate up --yes", &apply),
        (
            "(c) 1000 one-statement, TCP",
            "psql -f (BEGIN; \\i file; COMMIT; each)",
            &psql_tcp,
        ),
        (
            "(c) 1000 one-statement, TCP",
            "migrate up --yes",
            &apply_tcp,
        ),
        (
            "(f) 10 000 applied, TCP",
            "pg_floor (connect + SELECT 1)",
            &many_floor,
        ),
        (
            "(f) 10 000 applied, TCP",
            "pg_floor + read and hash the 10 000 files",
            &many_floor_files,
        ),
        ("(f) 10 000 applied, TCP", "migrate up --yes -q", &many_up),
        ("(f) 10 000 applied, TCP", "migrate status", &many_status),
    ] {
        println!(
            "| {case} | {program} | {} | {} | {} MiB |",
            ms(s.median),
            ms(s.min),
            s.max_rss_kib / 1024
        );
    }
    println!();
    println!(
        "(a) migrate / floor: {:.2}x, / floor with files: {:.2}x   (b) migrate / psql: {:.2}x   \
         (c) migrate / psql: {:.2}x",
        up.median.as_secs_f64() / floor.median.as_secs_f64(),
        up.median.as_secs_f64() / floor_files.median.as_secs_f64(),
        apply.median.as_secs_f64() / psql.median.as_secs_f64(),
        apply_tcp.median.as_secs_f64() / psql_tcp.median.as_secs_f64()
    );
    println!(
        "(f) up / floor: {:.2}x, / floor with files: {:.2}x   status / floor: {:.2}x, / floor \
         with files: {:.2}x",
        many_up.median.as_secs_f64() / many_floor.median.as_secs_f64(),
        many_up.median.as_secs_f64() / many_floor_files.median.as_secs_f64(),
        many_status.median.as_secs_f64() / many_floor.median.as_secs_f64(),
        many_status.median.as_secs_f64() / many_floor_files.median.as_secs_f64()
    );
}
