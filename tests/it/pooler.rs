//! Through a real PgBouncer: session mode works as a direct connection
//! does; statement mode is refused before anything runs; in transaction
//! mode the lock is a lease, and racing, killed and stopped runs still
//! apply each migration once.

use crate::common::bouncer::Bouncer;
use crate::common::{Outcome, TestEnv, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

#[test]
fn statement_pooling_is_refused_before_anything_runs() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("statement", 2) else {
        return;
    };
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    for command in ["up", "status", "lock"] {
        t.migrate_bare()
            .args([command, "--yes", "--dsn", &bouncer.dsn(&t.db_name)])
            .run()
            .code(2)
            .stderr_has("goes through a connection pooler in statement mode (PgBouncer's pool_mode=statement)");
    }
    assert!(!t.table_exists("public.schema_migrations"));
    assert!(!t.table_exists("public.a"));
}

#[test]
fn session_pooling_works_as_a_direct_connection_does() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("session", 3) else {
        return;
    };
    // Two transactional files in a row: the second goes as two queries,
    // with the record prepared on the session's one server connection.
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_b.sql", "CREATE TABLE b (id int);")
        .migration(
            "003_idx.sql",
            "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
        )
        .file("migrations/003_idx.down.sql", "DROP INDEX a_id;");
    let dsn = bouncer.dsn(&t.db_name);
    let children: Vec<_> = (0..6)
        .map(|_| {
            t.migrate_bare()
                .args(["up", "--yes", "--dsn", &dsn])
                .spawn()
        })
        .collect();
    for child in children {
        let out = Outcome::from_output(child.wait_with_output().unwrap());
        out.code(0);
    }
    assert_eq!(t.journal(), ["applied:001", "applied:002", "applied:003"]);
    for command in ["status", "lock", "history", "validate"] {
        t.migrate_bare()
            .args([command, "--dsn", &dsn])
            .run()
            .code(0);
    }
    t.migrate_bare()
        .args(["down", "--yes", "--dsn", &dsn])
        .run()
        .code(0)
        .stdout_has("rolled back 003_idx");
    wait_until(Duration::from_secs(10), "no lock left", || {
        t.advisory_locks() == 0
    });
}

/// The bookkeeping statements were prepared by name once per run, so the
/// next run to land on the same pooled server connection failed with
/// `prepared statement "s0" already exists`.
#[test]
fn runs_after_one_another_through_a_transaction_pool_share_no_prepared_statement() {
    let t = TestEnv::new();
    // One server connection: every run lands on it.
    let Some(bouncer) = Bouncer::start("transaction", 1) else {
        return;
    };
    let dsn = bouncer.dsn(&t.db_name);
    for v in 1..=3 {
        // Two files a run: nothing is prepared for a second one either.
        for f in [2 * v - 1, 2 * v] {
            t.migration(
                &format!("00{f}_t.sql"),
                &format!("CREATE TABLE t{f} (id int);"),
            );
        }
        t.migrate_bare()
            .args(["up", "--yes", "--dsn", &dsn])
            .run()
            .code(0)
            .stdout_has(&format!("applied 00{}_t", 2 * v));
    }
    assert_eq!(t.journal().len(), 6);
    // What the pool's one server connection has prepared, asked through it.
    let mut client = postgres::Client::connect(&dsn, postgres::NoTls).unwrap();
    let left: Vec<String> = client
        .simple_query("SELECT name FROM pg_prepared_statements")
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

/// Five transactional migrations that note each run in an audit table, and
/// a no-transaction one with CREATE INDEX CONCURRENTLY.
fn audited_migrations(t: &TestEnv) {
    t.migration(
        "001_audit.sql",
        "CREATE TABLE audit (version int, at timestamptz DEFAULT clock_timestamp());\n\
         INSERT INTO audit (version) VALUES (1);",
    );
    for v in 2..=5 {
        t.migration(
            &format!("00{v}_t{v}.sql"),
            &format!(
                "SET work_mem = '7MB';\nCREATE TABLE t{v} (id int);\n\
                 INSERT INTO audit (version) VALUES ({v});\n\
                 INSERT INTO t{v} SELECT g FROM generate_series(1, 1000) g;"
            ),
        );
    }
    t.migration(
        "006_index.sql",
        "-- migrate:no-transaction\n\
         SET maintenance_work_mem = '16MB';\n\
         CREATE INDEX CONCURRENTLY IF NOT EXISTS t2_id ON t2 (id);\n\
         INSERT INTO audit (version) VALUES (6);\n",
    );
}

/// How many times each version's migration ran, as the audit table says.
fn audit_counts(t: &TestEnv) -> Vec<String> {
    t.rows("SELECT version || 'x' || count(*) FROM audit GROUP BY version ORDER BY version")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

/// The versions the audit table noted, one row each run.
fn audit_versions(t: &TestEnv) -> Vec<String> {
    t.rows("SELECT version::text FROM audit ORDER BY 1")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect()
}

fn leases(t: &TestEnv) -> usize {
    t.value(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' \
           AND tablename = 'schema_migrations_lock'",
    )
    .filter(|n| n == "1")
    .map_or(0, |_| {
        t.value("SELECT count(*) FROM public.schema_migrations_lock")
            .unwrap()
            .parse()
            .unwrap()
    })
}

fn spawn_all(t: &TestEnv, n: usize, args: &[&str]) -> Vec<Outcome> {
    let children: Vec<_> = (0..n)
        .map(|_| t.migrate_bare().args(args).spawn())
        .collect();
    children
        .into_iter()
        .map(|child| Outcome::from_output(child.wait_with_output().unwrap()))
        .collect()
}

#[test]
fn twenty_racing_runs_through_a_transaction_pool_apply_each_migration_once() {
    let t = TestEnv::new();
    // Two server connections for twenty clients.
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    audited_migrations(&t);
    let dsn = bouncer.dsn(&t.db_name);
    let outcomes = spawn_all(&t, 20, &["up", "--yes", "--dsn", &dsn]);
    for out in &outcomes {
        out.code(0);
    }
    let applied = outcomes
        .iter()
        .filter(|o| o.stdout.contains("done: 6 migrations applied"))
        .count();
    assert_eq!(applied, 1, "one run applies everything");
    assert_eq!(audit_counts(&t), ["1x1", "2x1", "3x1", "4x1", "5x1", "6x1"]);
    assert_eq!(
        t.value("SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't2_id'::regclass"),
        Some("true".into())
    );
    // Nothing left behind on the pooled server connections.
    assert_eq!(t.advisory_locks(), 0);
    assert_eq!(leases(&t), 0);
    // No setting of the tool's or the files' stayed on either pooled server
    // connection: two clients, each in a transaction, hold both.
    let mut first = crate::common::connect(&dsn);
    let mut second = crate::common::connect(&dsn);
    let mut one = first.transaction().unwrap();
    let mut two = second.transaction().unwrap();
    let mut seen = Vec::new();
    for tx in [&mut one, &mut two] {
        let row = tx
            .query_one(
                "SELECT pg_backend_pid(), current_setting('search_path'), \
                        current_setting('lock_timeout'), current_setting('maintenance_work_mem') \
                        || current_setting('work_mem')",
                &[],
            )
            .unwrap();
        seen.push(row.get::<_, i32>(0));
        assert_eq!(
            (
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, String>(3)
            ),
            ("\"$user\", public".into(), "0".into(), "64MB4MB".into())
        );
    }
    assert_ne!(seen[0], seen[1], "two server connections");
    drop((one, two));
    let started = Instant::now();
    t.migrate_bare()
        .args(["up", "--yes", "-v", "--dsn", &dsn])
        .run()
        .code(0)
        .stdout_has("up to date: 6 migrations applied");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Every other command through the same pool.
    for command in ["status", "lock", "history", "validate"] {
        t.migrate_bare()
            .args([command, "--dsn", &dsn])
            .run()
            .code(0);
    }
    t.migrate_bare()
        .args(["wait", "--timeout", "10s", "--dsn", &dsn])
        .run()
        .code(0);
    t.file(
        "migrations/006_index.down.sql",
        "-- migrate:no-transaction\nDROP INDEX CONCURRENTLY t2_id;",
    );
    t.migrate_bare()
        .args(["down", "--yes", "--dsn", &dsn])
        .run()
        .code(0)
        .stdout_has("rolled back 006_index");
    assert_eq!(t.value("SELECT to_regclass('t2_id')::text"), None);
    // An edited file, accepted by repair through the pool.
    t.migration(
        "002_t2.sql",
        "CREATE TABLE t2 (id int);\n-- reworded\nINSERT INTO audit (version) VALUES (2);\n\
         INSERT INTO t2 SELECT g FROM generate_series(1, 1000) g;",
    );
    t.migrate_bare()
        .args(["repair", "--yes", "--dsn", &dsn])
        .run()
        .code(0)
        .stdout_has("done: 1 record repaired");
    t.file(
        "migrations/bootstrap/01_seed.sql",
        "CREATE TABLE IF NOT EXISTS seeded (n int); INSERT INTO seeded VALUES (1);",
    );
    let ups = spawn_all(&t, 6, &["up", "--yes", "--dsn", &dsn]);
    for out in &ups {
        out.code(0);
    }
    // Bootstrap scripts run under the lock on every run.
    assert_eq!(t.value("SELECT count(*) FROM seeded"), Some("6".into()));
    assert_eq!(audit_counts(&t), ["1x1", "2x1", "3x1", "4x1", "5x1", "6x2"]);
    assert_eq!(t.advisory_locks(), 0);
    assert_eq!(leases(&t), 0);
}

#[test]
fn verbose_says_which_lock_a_run_takes_and_the_setting_decides_it() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let pooled = bouncer.dsn(&t.db_name);
    t.migrate_bare()
        .args(["up", "--yes", "-v", "--dsn", &pooled])
        .run()
        .code(0)
        .stdout_has("a lease in public.schema_migrations_lock of 30 s, renewed every 10 s")
        .stdout_has("the server listens on another port than the one dialled");
    t.migration("002_b.sql", "CREATE TABLE b (id int);");
    t.migrate()
        .args(["up", "--yes", "-v"])
        .run()
        .code(0)
        .stdout_has("a session advisory lock (the server listens on the port dialled");
    t.migration("003_c.sql", "CREATE TABLE c (id int);");
    t.migrate()
        .args(["up", "--yes", "-v", "--lock-lease", "6s"])
        .env("MIGRATE_POOLER", "transaction")
        .run()
        .code(0)
        .stdout_has("a lease in public.schema_migrations_lock of 6 s, renewed every 2 s (--pooler transaction)");
    t.migrate_bare()
        .args(["up", "--yes", "-v", "--pooler", "session", "--dsn", &pooled])
        .run()
        .code(0)
        .stdout_lacks("a lease");
    t.migrate()
        .args(["up", "--pooler", "pgbouncer"])
        .run()
        .code(2)
        .stderr_has("--pooler: `pgbouncer` is not one of auto, none, session, transaction");
    t.migrate()
        .args(["up", "--lock-lease", "1s"])
        .run()
        .code(2)
        .stderr_has("--lock-lease: `1s` is shorter than the shortest lease, 3 s");
    t.file("config/db.yaml", "db_main:\n  pooler: statement\n");
    t.migrate()
        .args(["up"])
        .run()
        .code(2)
        .stderr_has("db.yaml:2 (db_main.pooler): `statement` is not one of");
}

/// Waits until a session of this database runs a statement with `fragment`.
fn wait_for_statement(t: &TestEnv, fragment: &str) {
    wait_until(Duration::from_secs(20), fragment, || {
        t.value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
               AND pid <> pg_backend_pid() AND state = 'active' AND position('{}' IN query) > 0",
            fragment.replace('\'', "''")
        )) != Some("0".into())
    });
}

/// The first migration sleeps while the table `gate` says so.
fn slow_first_migration(t: &TestEnv) {
    t.client()
        .batch_execute("CREATE TABLE gate (slow bool); INSERT INTO gate VALUES (true);")
        .unwrap();
    t.migration(
        "001_slow.sql",
        "CREATE TABLE audit (version int);\nINSERT INTO audit VALUES (1);\n\
         SELECT pg_sleep(CASE WHEN slow THEN 60 ELSE 0 END) FROM gate;",
    )
    .migration("002_b.sql", "INSERT INTO audit VALUES (2);");
}

fn open_gate(t: &TestEnv) {
    t.client()
        .batch_execute("UPDATE gate SET slow = false")
        .unwrap();
}

fn takeover_after_kill(lease: Option<&str>, bound: Duration) {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    slow_first_migration(&t);
    let dsn = bouncer.dsn(&t.db_name);
    let mut args = vec!["up", "--yes"];
    if let Some(lease) = lease {
        args.extend(["--lock-lease", lease]);
    }
    let mut holder = t.migrate_bare().args(&args).args(["--dsn", &dsn]).spawn();
    wait_for_statement(&t, "pg_sleep(CASE");
    open_gate(&t);
    kill(Pid::from_raw(holder.id() as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    holder.wait().unwrap();
    let out = t.migrate_bare().args(&args).args(["--dsn", &dsn]).run();
    let took = killed.elapsed();
    out.code(0)
        .stdout_has("took over the migration lease of")
        .stdout_has("done: 2 migrations applied");
    assert!(took < bound, "taken over after {took:?}");
    // The killed run's transaction was rolled back: its insert is gone.
    assert_eq!(audit_versions(&t), ["1", "2"]);
    assert_eq!(t.journal(), ["applied:001", "applied:002"]);
    assert_eq!(leases(&t), 0);
    assert_eq!(t.advisory_locks(), 0);
}

#[test]
fn a_runner_killed_behind_the_pooler_is_taken_over_once_its_short_lease_runs_out() {
    takeover_after_kill(Some("3s"), Duration::from_secs(8));
}

#[test]
fn a_runner_killed_behind_the_pooler_is_taken_over_within_the_default_30_s() {
    takeover_after_kill(None, Duration::from_secs(34));
}

/// A runner stopped (SIGSTOP) in the middle of a migration's transaction,
/// past its lease: the server ends the idle transaction, another run takes
/// over and applies everything once; the stopped one, resumed, records
/// nothing and fails.
#[test]
fn a_runner_stopped_past_its_lease_records_nothing_once_resumed() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    t.migration(
        "001_a.sql",
        "CREATE TABLE audit (version int);\nINSERT INTO audit VALUES (1);\nSELECT pg_sleep(1);",
    )
    .migration("002_b.sql", "INSERT INTO audit VALUES (2);");
    let dsn = bouncer.dsn(&t.db_name);
    let args = ["up", "--yes", "--lock-lease", "3s", "--dsn", &dsn];
    let stopped = t.migrate_bare().args(args).spawn();
    wait_for_statement(&t, "pg_sleep(1)");
    let pid = Pid::from_raw(stopped.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let other = t.migrate_bare().args(args).run();
    other
        .code(0)
        .stdout_has("took over the migration lease of")
        .stdout_has("done: 2 migrations applied");
    kill(pid, Signal::SIGCONT).unwrap();
    let resumed = Outcome::from_output(stopped.wait_with_output().unwrap());
    assert_ne!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        !resumed.stdout.contains("applied 001_a"),
        "{}",
        resumed.stdout
    );
    assert_eq!(audit_versions(&t), ["1", "2"]);
    assert_eq!(t.journal(), ["applied:001", "applied:002"]);
}

/// Stopped between migrations past its lease: the next statement's guard
/// stops it.
#[test]
fn a_runner_stopped_between_migrations_stops_at_the_next_one() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    t.migration(
        "001_a.sql",
        "CREATE TABLE audit (version int);\nINSERT INTO audit VALUES (1);",
    )
    .migration(
        "002_wait.sql",
        "-- migrate:no-transaction\nSELECT pg_sleep(1);\nINSERT INTO audit VALUES (2);",
    )
    .migration("003_c.sql", "INSERT INTO audit VALUES (3);");
    let dsn = bouncer.dsn(&t.db_name);
    let args = ["up", "--yes", "--lock-lease", "3s", "--dsn", &dsn];
    let stopped = t.migrate_bare().args(args).spawn();
    wait_for_statement(&t, "pg_sleep(1)");
    let pid = Pid::from_raw(stopped.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let other = t.migrate_bare().args(args).run();
    other.code(0).stdout_has("took over the migration lease of");
    kill(pid, Signal::SIGCONT).unwrap();
    let resumed = Outcome::from_output(stopped.wait_with_output().unwrap());
    resumed
        .code(1)
        .stderr_has("the migration lease was no longer this run's");
    assert!(
        !resumed.stdout.contains("applied 003_c"),
        "{}",
        resumed.stdout
    );
    // The no-transaction file ran again from its start in the run that took
    // over, as a killed one's does; everything else once.
    assert_eq!(
        t.rows("SELECT version::text, count(*)::text FROM audit GROUP BY 1 ORDER BY 1")
            .into_iter()
            .map(|r| format!("{}x{}", r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect::<Vec<_>>(),
        ["1x1", "2x1", "3x1"]
    );
    assert_eq!(
        t.journal()
            .iter()
            .filter(|e| e.starts_with("applied"))
            .count(),
        3
    );
}

/// A run on a direct connection and one through the pooler exclude each
/// other, whichever holds the lock.
#[test]
fn a_direct_run_and_a_pooled_run_exclude_each_other() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    slow_first_migration(&t);
    let dsn = bouncer.dsn(&t.db_name);
    let slow = format!("{dsn} application_name=slow");
    let mut holder = t
        .migrate_bare()
        .args(["up", "--yes", "--dsn", &slow])
        .spawn();
    wait_for_statement(&t, "pg_sleep(CASE");
    open_gate(&t);
    t.migrate()
        .args(["up", "--yes", "--skip-if-locked"])
        .run()
        .code(0)
        .stdout_has("another instance holds the migration lock (lease of ");
    let lock = t.migrate().args(["lock", "--json"]).run();
    lock.code(0);
    let report: serde_json::Value = serde_json::from_str(&lock.stdout).unwrap();
    assert_eq!(report["held"], true);
    assert_eq!(report["holder"]["application"], "slow");
    assert!(
        report["holder"]["lease"]["expires_in_seconds"]
            .as_i64()
            .unwrap()
            > 0
    );
    t.migrate()
        .args(["lock"])
        .run()
        .code(0)
        .stdout_has("is held as a lease, through a pooler");
    holder.kill().unwrap();
    holder.wait().unwrap();
    // Once the lease is given up or runs out, the direct run goes ahead.
    t.migrate()
        .args(["up", "--yes", "--lock-wait", "40s"])
        .run()
        .code(0)
        .stdout_has("done: 2 migrations applied");

    // The other way round: a session holding the advisory lock keeps a
    // pooled run out.
    t.migration("003_c.sql", "INSERT INTO audit VALUES (3);");
    let _session = t.hold_lock("migrate", t.default_lock_key());
    t.migrate_bare()
        .args(["up", "--yes", "--skip-if-locked", "--dsn", &dsn])
        .run()
        .code(0)
        .stdout_has("another instance holds the migration lock (pid ");
    assert_eq!(leases(&t), 0);
}

/// CREATE INDEX CONCURRENTLY through the pooler while another run waits:
/// the waiter's polling holds no snapshot the build would wait for.
#[test]
fn a_concurrently_file_through_a_transaction_pool_runs_once_while_another_waits() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 3) else {
        return;
    };
    t.migration(
        "001_t.sql",
        "CREATE TABLE t (id int);\nINSERT INTO t SELECT g FROM generate_series(1, 200000) g;",
    )
    .migration(
        "002_idx.sql",
        "-- migrate:no-transaction\nSELECT pg_sleep(1);\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
    );
    let dsn = bouncer.dsn(&t.db_name);
    let first = t
        .migrate_bare()
        .args(["up", "--yes", "--dsn", &dsn])
        .spawn();
    wait_for_statement(&t, "pg_sleep(1)");
    let started = Instant::now();
    let waiter = t.migrate_bare().args(["up", "--yes", "--dsn", &dsn]).run();
    waiter
        .code(0)
        .stdout_has("another instance applied the pending migrations while this one waited");
    assert!(started.elapsed() < Duration::from_secs(30));
    Outcome::from_output(first.wait_with_output().unwrap())
        .code(0)
        .stdout_has("applied 002_idx");
    assert_eq!(
        t.value("SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't_id'::regclass"),
        Some("true".into())
    );
    assert_eq!(t.journal(), ["applied:001", "applied:002"]);
}

/// A pool of one server connection, taken by a migration longer than the
/// lease: the renewer cannot get in, the lease runs out, and yet nothing is
/// lost, since a lease that ran out stays the run's until another takes it
/// over, and the migration's commit renews it.
#[test]
fn a_migration_longer_than_the_lease_in_a_pool_of_one_still_finishes() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 1) else {
        return;
    };
    t.migration(
        "001_long.sql",
        "CREATE TABLE audit (version int);\nINSERT INTO audit VALUES (1);\nSELECT pg_sleep(5);",
    )
    .migration("002_b.sql", "INSERT INTO audit VALUES (2);")
    .migration("003_c.sql", "INSERT INTO audit VALUES (3);");
    let dsn = bouncer.dsn(&t.db_name);
    let outcomes = spawn_all(&t, 4, &["up", "--yes", "--lock-lease", "3s", "--dsn", &dsn]);
    for out in &outcomes {
        out.code(0);
    }
    assert_eq!(audit_versions(&t), ["1", "2", "3"]);
    assert!(outcomes.iter().all(|o| !o.stdout.contains("took over")));
    assert_eq!(leases(&t), 0);
}

/// A direct run that finds a lease run out (its holder held up, not dead)
/// takes it over rather than passing it by: the holder's next renewal finds
/// it gone, and the holder stops.
#[test]
fn a_direct_run_takes_over_a_lapsed_lease_and_its_holder_stops() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    t.migration(
        "001_a.sql",
        "CREATE TABLE audit (version int);\nINSERT INTO audit VALUES (1);",
    )
    .migration(
        "002_wait.sql",
        "-- migrate:no-transaction\nSELECT pg_sleep(2);\nINSERT INTO audit VALUES (2);",
    )
    .migration("003_c.sql", "INSERT INTO audit VALUES (3);");
    let dsn = bouncer.dsn(&t.db_name);
    let pooled = t
        .migrate_bare()
        .args(["up", "--yes", "--dsn", &dsn])
        .spawn();
    wait_for_statement(&t, "pg_sleep(2)");
    // As if its renewals could not get through for a whole lease.
    t.client()
        .batch_execute("UPDATE schema_migrations_lock SET expires_at = now() - interval '1 s'")
        .unwrap();
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("done: 2 migrations applied");
    let out = Outcome::from_output(pooled.wait_with_output().unwrap());
    out.code(1)
        .stderr_has("the migration lease was no longer this run's");
    assert_eq!(audit_versions(&t), ["1", "2", "3"]);
    assert_eq!(leases(&t), 0);
}

/// SIGTERM through the pooler: the lease is not deleted while the
/// statement sent may still run, but runs out within seconds, not 30 s.
#[test]
fn an_interrupted_pooled_run_leaves_a_lease_that_runs_out_within_seconds() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    t.migration("001_slow.sql", "SELECT pg_sleep(20);");
    let dsn = bouncer.dsn(&t.db_name);
    let run = t
        .migrate_bare()
        .args(["up", "--yes", "--dsn", &dsn])
        .spawn();
    wait_for_statement(&t, "pg_sleep(20)");
    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).unwrap();
    Outcome::from_output(run.wait_with_output().unwrap()).code(143);
    let left: f64 = t
        .value(
            "SELECT extract(epoch FROM expires_at - clock_timestamp()) FROM schema_migrations_lock",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert!(left <= 5.0, "{left} s left");
}
