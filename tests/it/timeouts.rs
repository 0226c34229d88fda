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
    std::thread::sleep(Duration::from_millis(1500));
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
        .args(["up", "--yes", "--lock-timeout", "600ms"])
        .run();
    out.code(1)
        .stdout_has("002_alter waits for pid ")
        .stdout_has("(attempt 4 of 4)")
        .stderr_has("canceling statement due to lock timeout (SQLSTATE 55P03)")
        .stderr_has("it waited for pid ")
        .stderr_has("(test-blocker, user postgres, from local socket, idle in transaction since ");
    // Four attempts of 0.6 s and pauses of 1, 2 and 4 s.
    assert!(
        start.elapsed() >= Duration::from_secs(9),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(t.state(), ["001:applied", "002:failed"]);
    assert_eq!(t.journal(), ["applied:001", "failed:002"]);
}

#[test]
fn lock_timeout_zero_waits_as_long_as_it_takes() {
    let t = TestEnv::new();
    table(&t);
    t.migration("002_alter.sql", "ALTER TABLE t ADD COLUMN name text;");
    let blocker = hold_table_lock(&t);
    let child = t
        .migrate()
        .args(["up", "--yes"])
        .env("MIGRATE_LOCK_TIMEOUT", "0")
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
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
