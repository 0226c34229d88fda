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
        .stderr_has("index public.t_email_key is INVALID (left by a failed or killed CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY); drop it with: DROP INDEX CONCURRENTLY IF EXISTS public.t_email_key;");
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

/// An index that was INVALID before the run is not blamed on it.
#[test]
fn only_the_index_this_run_left_invalid_is_named() {
    let t = TestEnv::new();
    let mut client = t.client();
    client
        .batch_execute("CREATE TABLE old (v int); INSERT INTO old VALUES (1), (1);")
        .unwrap();
    assert!(
        client
            .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY old_v_key ON old (v)")
            .is_err()
    );
    t.migration(
        "001_table.sql",
        "CREATE TABLE t (email text);\nINSERT INTO t VALUES ('a'), ('a');",
    )
    .migration(
        "002_unique.sql",
        "-- migrate:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY t_email_key ON t (email);\n",
    );
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(1)
        .stderr_has("index public.t_email_key is INVALID");
    assert!(!out.stderr.contains("old_v_key"), "{}", out.stderr);
}

/// CREATE INDEX CONCURRENTLY waits for older transactions of the whole
/// database; lock_timeout must not cut that wait short.
#[test]
fn a_concurrent_index_waits_out_an_old_transaction_despite_lock_timeout() {
    let t = TestEnv::new();
    t.migration(
        "001_table.sql",
        "CREATE TABLE t (id int);\nCREATE TABLE other (id int);",
    );
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migration(
        "002_index.sql",
        "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n",
    );
    let mut reader = t.client();
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM other;")
        .unwrap();
    let child = t
        .migrate()
        .args(["up", "--yes", "--lock-timeout", "300ms"])
        .spawn();
    t.wait_for_migrate_running("CREATE INDEX CONCURRENTLY");
    std::thread::sleep(Duration::from_millis(1500));
    reader.batch_execute("COMMIT").unwrap();
    let out = Outcome::from_output(child.wait_with_output().unwrap());
    out.code(0).stdout_has("applied 002_index");
    assert_eq!(
        t.value("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id_idx'::regclass"),
        Some("t".into())
    );
}

/// `begin` and `end` may be column names; they open no block.
#[test]
fn columns_named_begin_split_and_commit_is_still_found() {
    let t = TestEnv::new();
    t.migration("001_table.sql", "CREATE TABLE periods (begin date, \"end\" date);")
        .migration(
            "002_indexes.sql",
            "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY p_begin ON periods (begin);\nCREATE INDEX CONCURRENTLY p_end ON periods (\"end\");\n",
        );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 002_indexes");
    t.migration(
        "003_comment.sql",
        "ALTER TABLE periods ADD COLUMN note text;\nCOMMENT ON COLUMN periods.begin IS 'start';\nCOMMIT;\n",
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(2)
        .stderr_has("003_comment.sql: line 3: COMMIT would take over the transaction");
    assert_eq!(
        t.value(
            "SELECT count(*) FROM information_schema.columns \
              WHERE table_name = 'periods' AND column_name = 'note'"
        ),
        Some("0".into())
    );
}

#[test]
fn copy_from_stdin_is_refused() {
    let t = TestEnv::new();
    t.migration(
        "001_copy.sql",
        "CREATE TABLE t (id int);\nCOPY t FROM STDIN;\n",
    );
    t.migrate().args(["up", "--yes"]).run().code(2).stderr_has(
        "001_copy.sql: line 2: COPY ... FROM STDIN needs data sent alongside the statement",
    );
}

/// A statement-by-statement file that switches role still gets its
/// record written as the connection's role.
#[test]
fn a_file_that_switches_role_is_still_recorded() {
    let t = TestEnv::new();
    let role = format!("{}_weak", t.db_name);
    t.migration(
        "001_role.sql",
        &format!(
            "-- migrate:no-transaction\nCREATE ROLE \"{role}\" NOLOGIN;\nSET ROLE \"{role}\";\n"
        ),
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 001_role");
    assert_eq!(t.state(), ["001:applied"]);
    t.client()
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .unwrap();
}

#[test]
fn a_failure_after_a_role_switch_is_still_recorded() {
    let t = TestEnv::new();
    let role = format!("{}_weak", t.db_name);
    t.migration(
        "001_role.sql",
        &format!("-- migrate:no-transaction\nCREATE ROLE \"{role}\" NOLOGIN;\nSET ROLE \"{role}\";\nCREATE TABLE not_allowed (id int);\n"),
    );
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(1)
        .stderr_has("permission denied for schema public");
    assert!(
        !out.stderr.contains("could not be recorded"),
        "{}",
        out.stderr
    );
    assert_eq!(t.state(), ["001:failed"]);
    t.client()
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .unwrap();
}

/// A rerun's `CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS` skipped the
/// INVALID index the failed run left, and the file was recorded applied
/// with a unique index that enforced nothing.
#[test]
fn an_invalid_index_left_by_a_failed_run_is_never_recorded_applied() {
    let t = TestEnv::new();
    t.migration(
        "001_table.sql",
        "CREATE TABLE t (email text);\nINSERT INTO t VALUES ('a'), ('a');",
    )
    .migration(
        "002_unique.sql",
        "-- migrate:no-transaction\nCREATE TABLE IF NOT EXISTS side (id int);\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_email_key ON t (email);\n",
    );
    t.migrate().args(["up", "--yes"]).run().code(1);
    // The duplicate goes; the INVALID index stays.
    t.client()
        .batch_execute("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
        .unwrap();
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(1)
        .stderr_has("migration 002_unique failed at migrations/002_unique.sql:3:1: the table this statement indexes has an INVALID index")
        .stderr_has("drop it with: DROP INDEX CONCURRENTLY IF EXISTS public.t_email_key;");
    assert_eq!(t.state(), ["001:applied", "002:failed"]);
    assert_eq!(
        t.value("SELECT error FROM schema_migrations WHERE version = '002'")
            .unwrap()
            .lines()
            .next(),
        Some(
            "the table this statement indexes has an INVALID index (left by an earlier CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY that failed or was killed, or being built right now by another session): it is not used and enforces nothing, so the file is not recorded as applied"
        )
    );
    // Cleared as the message says, the rerun builds it.
    t.client()
        .batch_execute("DROP INDEX CONCURRENTLY IF EXISTS public.t_email_key")
        .unwrap();
    t.migrate().args(["up", "--yes"]).run().code(0);
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
    assert_eq!(
        t.value("SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'public.t_email_key'::regclass"),
        Some("true".into())
    );
}

/// A transactional file with a statement that cannot run in a transaction
/// got the server's words only.
#[test]
fn cannot_run_inside_a_transaction_block_names_the_annotation() {
    let t = TestEnv::new();
    t.migration(
        "001_index.sql",
        "CREATE TABLE t (id int);\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n",
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(1)
        .stderr_has("cannot run inside a transaction block (SQLSTATE 25001)")
        .stderr_has("put `-- migrate:no-transaction` on the file's first line to run it statement by statement outside one");
}

/// A no-transaction file that released the migration lock went on, and so
/// did the files after it, unlocked.
#[test]
fn a_no_transaction_file_that_releases_the_lock_stops_the_run() {
    let t = TestEnv::new();
    t.migration(
        "001_unlock.sql",
        "-- migrate:no-transaction\nCREATE TABLE a (id int);\nSELECT pg_advisory_unlock_all();\nCREATE TABLE b (id int);\n",
    )
    .migration("002_after.sql", "CREATE TABLE c (id int);");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(1)
        .stderr_has(
            "001_unlock (migrations/001_unlock.sql) released the migration lock while it ran",
        )
        .stderr_has("2 of 3 statements ran and stay done")
        .stderr_has("the run stops here, since no migration runs without the lock");
    assert!(t.table_exists("public.a"));
    assert!(!t.table_exists("public.b"));
    assert!(!t.table_exists("public.c"));
    assert_eq!(t.state(), ["001:failed"]);
}

/// The check resolved the index through search_path alone, so an index on
/// a table in another schema was recorded applied while INVALID.
#[test]
fn an_invalid_index_on_a_table_in_another_schema_is_caught() {
    let t = TestEnv::new();
    t.migration(
        "001_t.sql",
        "CREATE SCHEMA other; CREATE TABLE other.t (x int); INSERT INTO other.t VALUES (1), (1);",
    )
    .migration(
        "002_idx.sql",
        "-- migrate:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_x ON other.t (x);\n",
    );
    for _ in 0..2 {
        t.migrate()
            .args(["up", "--yes", "--schema", "app"])
            .run()
            .code(1)
            .stderr_has("DROP INDEX CONCURRENTLY IF EXISTS other.t_x;");
    }
    assert_eq!(
        t.value("SELECT status FROM app.schema_migrations WHERE version = '002'"),
        Some("failed".into())
    );
}

/// A rerun without IF NOT EXISTS failed on "already exists" without naming
/// the INVALID index or the command that clears it.
#[test]
fn a_rerun_that_finds_the_invalid_index_names_it() {
    let t = TestEnv::new();
    t.migration(
        "001_t.sql",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (1);",
    )
    .migration(
        "002_idx.sql",
        "-- migrate:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x);\n",
    );
    t.migrate().args(["up", "--yes"]).run().code(1);
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(1)
        .stderr_has("relation \"t_x\" already exists")
        .stderr_has("drop it with: DROP INDEX CONCURRENTLY IF EXISTS public.t_x;");
}

/// Without CONCURRENTLY, in a transaction, `CREATE INDEX IF NOT EXISTS`
/// skipped the INVALID index an earlier run left, and was recorded.
#[test]
fn a_transactional_file_is_not_recorded_over_an_invalid_index() {
    let t = TestEnv::new();
    t.migration(
        "001_t.sql",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (1);",
    )
    .migration(
        "002_idx.sql",
        "-- migrate:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x);\n",
    );
    t.migrate().args(["up", "--yes"]).run().code(1);
    t.client()
        .batch_execute("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
        .unwrap();
    t.migration(
        "002_idx.sql",
        "CREATE UNIQUE INDEX IF NOT EXISTS t_x ON t (x);\n",
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(1)
        .stderr_has("the table this statement indexes has an INVALID index")
        .stderr_has("DROP INDEX CONCURRENTLY IF EXISTS public.t_x;");
    assert_eq!(t.state(), ["001:applied", "002:failed"]);
}
