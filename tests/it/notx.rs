//! `-- migrate:no-transaction` files: statement by statement.

use crate::common::{Outcome, TestEnv};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

#[test]
fn create_index_concurrently_runs_outside_a_transaction() {
    let t = TestEnv::new();
    t.migration("001_table.sql", "CREATE TABLE t (id int, email text);\nINSERT INTO t SELECT g, 'u' || g FROM generate_series(1, 1000) g;")
        .migration(
            "002_index.sql",
            "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY t_email_idx ON t (email);\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n",
        );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 002_index");
    assert_eq!(
        t.value("SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 't'::regclass"),
        Some("t".into())
    );
    assert_eq!(
        t.value("SELECT in_transaction FROM schema_migrations WHERE version = '002'"),
        Some("f".into())
    );
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
}

/// CREATE INDEX CONCURRENTLY waits for every older snapshot; a second
/// instance waiting for the migration lock must not hold one, or each
/// would wait for the other.
#[test]
fn create_index_concurrently_while_another_instance_waits_for_the_lock() {
    let t = TestEnv::new();
    t.migration("001_table.sql", "CREATE TABLE t (id int);\nINSERT INTO t SELECT generate_series(1, 1000);")
        .migration(
            "002_index.sql",
            "-- migrate:no-transaction\nSELECT pg_sleep(1.5);\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n",
        );
    let start = Instant::now();
    let first = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(1.5)");
    let second = t
        .migrate()
        .args(["up", "--yes", "--lock-wait", "60s"])
        .spawn();
    let first = Outcome::from_output(first.wait_with_output().unwrap());
    let second = Outcome::from_output(second.wait_with_output().unwrap());
    first.code(0).stdout_has("applied 002_index");
    second.code(0);
    assert!(
        second
            .stdout
            .contains("waiting up to 1m00s for the migration lock")
            && second
                .stdout
                .contains("another instance applied the pending migrations"),
        "the second instance waited, then found the work done:\n{}",
        second.stdout
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        t.value("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id_idx'::regclass"),
        Some("t".into())
    );
}

#[test]
fn a_failing_statement_says_where_and_how_many_ran() {
    let t = TestEnv::new();
    t.migration(
        "001_steps.sql",
        "-- migrate:no-transaction\nCREATE TABLE IF NOT EXISTS one (id int);\n\nSELECT *\n  FROM missing_table;\nCREATE TABLE three (id int);\n",
    );
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(1)
        .stderr_has("migration 001_steps failed at migrations/001_steps.sql:5:8: ERROR: relation \"missing_table\" does not exist")
        .stderr_has("  5 |   FROM missing_table;\n    |        ^")
        .stderr_has("1 of 3 statements ran before it; it runs outside a transaction, so they stay done");
    assert!(
        t.table_exists("public.one"),
        "a statement that ran stays done"
    );
    assert!(!t.table_exists("public.three"));
    let error = t
        .value("SELECT error FROM schema_migrations WHERE version = '001'")
        .unwrap();
    assert!(
        error.contains("1 of 3 statements ran") && error.contains("at line 5, column 8"),
        "{error}"
    );
    assert_eq!(t.state(), ["001:failed"]);

    // Fixed and safe to run again, it completes.
    t.migration(
        "001_steps.sql",
        "-- migrate:no-transaction\nCREATE TABLE IF NOT EXISTS one (id int);\nCREATE TABLE IF NOT EXISTS missing_table (id int);\nCREATE TABLE three (id int);\n",
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 001_steps");
    assert_eq!(t.state(), ["001:applied"]);
}

#[test]
fn a_failed_concurrent_index_is_named_with_the_command_that_drops_it() {
    let t = TestEnv::new();
    t.migration(
        "001_table.sql",
        "CREATE TABLE t (email text);\nINSERT INTO t VALUES ('a'), ('a');",
    )
    .migration(
        "002_unique.sql",
        "-- migrate:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY t_email_key ON t (email);\n",
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(1)
        .stderr_has("could not create unique index \"t_email_key\"")
        .stderr_has("index public.t_email_key is INVALID (left by a failed CREATE INDEX CONCURRENTLY); drop it with: DROP INDEX CONCURRENTLY IF EXISTS public.t_email_key;");
    let error = t
        .value("SELECT error FROM schema_migrations WHERE version = '002'")
        .unwrap();
    assert!(
        error.contains("DROP INDEX CONCURRENTLY IF EXISTS public.t_email_key;"),
        "{error}"
    );
    // The server's detail is kept with its message.
    assert!(
        error.contains("DETAIL: Key (email)=(a) is duplicated."),
        "{error}"
    );
}

#[test]
fn a_killed_statement_by_statement_run_says_how_far_it_got() {
    let t = TestEnv::new();
    t.migration(
        "001_slow.sql",
        "-- migrate:no-transaction\nCREATE TABLE first (id int);\nSELECT pg_sleep(60);\nCREATE TABLE third (id int);\n",
    );
    let mut child = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(60)");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!(t.state(), ["001:failed"]);
    assert_eq!(
        t.value("SELECT error FROM schema_migrations WHERE version = '001'"),
        Some("not finished: 1 of 3 statements ran".into())
    );
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("001_slow failed: not finished: 1 of 3 statements ran");
    t.migration(
        "001_slow.sql",
        "-- migrate:no-transaction\nCREATE TABLE IF NOT EXISTS first (id int);\nCREATE TABLE third (id int);\n",
    );
    crate::common::wait_until(Duration::from_secs(10), "the lock to be released", || {
        t.advisory_locks() == 0
    });
    t.migrate().args(["up", "--yes"]).run().code(0);
    assert_eq!(t.state(), ["001:applied"]);
}

#[test]
fn annotations_and_unsplittable_files_are_checked_before_running() {
    let t = TestEnv::new();
    t.migration("001_typo.sql", "-- migrate:no-transactions\nSELECT 1;")
        .migration("002_ok.sql", "SELECT 2;");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(2)
        .stderr_has("001_typo.sql: line 1: unknown annotation `-- migrate:no-transactions`");
    t.migration(
        "001_typo.sql",
        "-- migrate:no-transaction\nSELECT 'unterminated;\n",
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(2)
        .stderr_has("001_typo.sql: line 2: a quoted string is never closed; a `-- migrate:no-transaction` file must split into statements");
    assert!(!t.table_exists("public.schema_migrations"));
}
