//! lock_timeout with retries, statement_timeout, and the lock command.

use crate::common::{Outcome, TestEnv};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A second session holding a lock that conflicts with ALTER TABLE.
fn hold_table_lock(t: &TestEnv) -> postgres::Client {
    let mut blocker = t.client();
    blocker
        .batch_execute("SET application_name = 'test-blocker'; BEGIN; LOCK TABLE t IN ACCESS SHARE MODE; SELECT 1")
        .unwrap();
    blocker
}

fn table(t: &TestEnv) {
    t.migration("001_table.sql", "CREATE TABLE t (id int);");
    t.migrate().args(["up", "--yes"]).run().code(0);
}

/// Whether the `migrate` session waits for a lock right now.
fn migrate_waits_for_a_lock(t: &TestEnv) -> bool {
    t.value(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
           AND application_name = 'migrate' AND wait_event_type = 'Lock'",
        t.db_name
    )) == Some("1".into())
}

#[test]
fn a_lock_timeout_is_retried_and_succeeds_once_the_lock_is_free() {
    let t = TestEnv::new();
    table(&t);
    t.migration("002_alter.sql", "ALTER TABLE t ADD COLUMN name text;");
    let blocker = hold_table_lock(&t);
    let child = t
        .migrate()
        .args(["up", "--yes", "--lock-timeout", "300ms"])
        .spawn();
    // Waiting, then not (timed out, pausing), then waiting again: a retry.
    let mut phase = 0;
    crate::common::wait_until(Duration::from_secs(20), "a retry", || {
        let waiting = migrate_waits_for_a_lock(&t);
        phase = match (phase, waiting) {
            (0, true) => 1,
            (1, false) => 2,
            (2, true) => 3,
            (p, _) => p,
        };
        phase == 3
    });
    drop(blocker);
    let out = Outcome::from_output(child.wait_with_output().unwrap());
    out.code(0)
        .stdout_has(
            "002_alter hit lock_timeout; rolled back, trying again in 1.00s (attempt 2 of 4)",
        )
        .stdout_has("applied 002_alter");
    assert_eq!(
        t.journal(),
        ["applied:001", "applied:002"],
        "a retried attempt is not recorded"
    );
}

#[test]
fn a_lock_timeout_that_persists_fails_naming_the_blocker() {
    let t = TestEnv::new();
    table(&t);
    t.migration("002_alter.sql", "ALTER TABLE t ADD COLUMN name text;");
    let _blocker = hold_table_lock(&t);
    let start = Instant::now();
    let out = t
        .migrate()
        .args(["up", "--yes", "--lock-timeout", "300ms"])
        .run();
    out.code(1)
        .stdout_has("002_alter waits for pid ")
        .stdout_has("(attempt 4 of 4)")
        .stderr_has("canceling statement due to lock timeout (SQLSTATE 55P03)")
        .stderr_has("it waited for pid ")
        .stderr_has("(test-blocker, user postgres, from local socket, idle in transaction since ");
    // Four attempts of 0.3 s and pauses of 1, 2 and 4 s.
    assert!(
        start.elapsed() >= Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(t.state(), ["001:applied", "002:failed"]);
    assert_eq!(t.journal(), ["applied:001", "failed:002"]);
}

/// `--lock-timeout 0` sets it off, whatever the connection string sets.
#[test]
fn lock_timeout_zero_waits_as_long_as_it_takes() {
    let t = TestEnv::new();
    table(&t);
    t.migration("002_alter.sql", "ALTER TABLE t ADD COLUMN name text;");
    let blocker = hold_table_lock(&t);
    let dsn = format!("{} options='-c lock_timeout=200'", t.dsn);
    let child = t
        .migrate_bare()
        .args(["up", "--yes", "--dsn", &dsn])
        .env("MIGRATE_LOCK_TIMEOUT", "0")
        .spawn();
    crate::common::wait_until(Duration::from_secs(10), "migrate to wait", || {
        migrate_waits_for_a_lock(&t)
    });
    std::thread::sleep(Duration::from_millis(1000));
    drop(blocker);
    let out = Outcome::from_output(child.wait_with_output().unwrap());
    out.code(0).stdout_has("applied 002_alter");
    assert!(!out.stdout.contains("lock_timeout"), "{}", out.stdout);
}

#[test]
fn statement_timeout_stops_a_long_migration_without_retry() {
    let t = TestEnv::new();
    t.migration(
        "001_slow.sql",
        "CREATE TABLE s (id int);\nSELECT pg_sleep(5);",
    );
    let out = t
        .migrate()
        .args(["up", "--yes", "--statement-timeout", "300ms"])
        .run();
    out.code(1)
        .stderr_has("canceling statement due to statement timeout (SQLSTATE 57014)");
    assert!(!out.stdout.contains("trying again"));
    assert!(!t.table_exists("public.s"));
    assert!(
        out.elapsed < Duration::from_secs(4),
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn lock_shows_a_psql_session_holding_the_lock() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    t.migrate().arg("lock").run().code(0).stdout_has(&format!(
        "nobody holds the migration lock (key {})",
        t.default_lock_key()
    ));
    let mut psql = Command::new("psql")
        .args(["-X", "-q", "-d", &t.dsn, "-c"])
        .arg(format!(
            "SELECT pg_advisory_lock({}); SELECT pg_sleep(30)",
            t.default_lock_key()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    crate::common::wait_until(Duration::from_secs(10), "psql to take the lock", || {
        t.advisory_locks() == 1
    });
    t.migrate()
        .arg("lock")
        .run()
        .code(0)
        .stdout_has("psql")
        .stdout_has("local socket")
        .stdout_has(&format!(
            "the migration lock (key {}) is held",
            t.default_lock_key()
        ));
    t.migrate()
        .args(["up", "--yes", "--lock-wait", "1s"])
        .run()
        .code(4)
        .stdout_has("waiting up to 1.00s for the migration lock, held by pid ")
        .stderr_has("(psql, user postgres, from local socket, connected since ");
    psql.kill().unwrap();
    psql.wait().unwrap();
}
