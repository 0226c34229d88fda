//! A `migrate` killed with SIGKILL in the middle of a migration.

use crate::common::{Outcome, TestEnv, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

#[test]
fn sigkill_mid_migration_leaves_nothing_and_the_next_run_completes() {
    let t = TestEnv::new();
    t.migration("001_first.sql", "CREATE TABLE first (id int);")
        .migration(
            "002_slow.sql",
            "CREATE TABLE slow_half (id int);\nINSERT INTO slow_half VALUES (1);\nSELECT pg_sleep(120);\n",
        );
    let mut child = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(120)");
    assert_eq!(t.advisory_locks(), 1);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();

    // The server notices the vanished client (client_connection_check_interval),
    // rolls back and releases the lock well before the sleep would end.
    wait_until(Duration::from_secs(10), "the lock to be released", || {
        t.advisory_locks() == 0
    });
    assert!(t.table_exists("public.first"));
    assert!(
        !t.table_exists("public.slow_half"),
        "the killed migration must roll back"
    );
    assert_eq!(t.state(), ["001:applied"]);
    assert_eq!(t.journal(), ["applied:001"]);

    t.migration(
        "002_slow.sql",
        "CREATE TABLE slow_half (id int);\nINSERT INTO slow_half VALUES (1);\n",
    );
    t.migrate()
        .args(["up", "--yes", "--lock-wait", "0"])
        .run()
        .code(0)
        .stdout_has("applied 002_slow");
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
}

#[test]
fn a_connection_dropped_mid_migration_records_nothing_and_the_next_run_completes() {
    let t = TestEnv::new();
    t.migration("001_first.sql", "CREATE TABLE first (id int);")
        .migration(
            "002_slow.sql",
            "CREATE TABLE cut (id int);\nSELECT pg_sleep(60);\n",
        );
    let child = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(60)");
    t.value(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' \
           AND application_name = 'migrate'",
        t.db_name
    ));
    let out = crate::common::Outcome::from_output(child.wait_with_output().unwrap());
    out.code(1)
        .stderr_has("migration 002_slow (migrations/002_slow.sql) failed:")
        .stderr_has("run `migrate up` again once the server is back");
    assert!(!t.table_exists("public.cut"));
    assert_eq!(t.state(), ["001:applied"]);

    t.migration("002_slow.sql", "CREATE TABLE cut (id int);\n");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 002_slow");
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
}

/// SIGINT or SIGTERM during `up` ended the process without a word about
/// the migration it was running.
#[test]
fn an_interrupted_run_names_the_migration_the_server_rolls_back() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration(
            "002_slow.sql",
            "CREATE TABLE b (id int);\nSELECT pg_sleep(30);",
        );
    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let child = t.migrate().args(["up", "--yes"]).spawn();
        t.wait_for_migrate_running("pg_sleep(30)");
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        let out = Outcome::from_output(child.wait_with_output().unwrap());
        out.code(code).stderr_has(&format!(
            "interrupted by {signal:?} while applying 002_slow: the server rolls back its \
             transaction, so nothing of it is applied or recorded"
        ));
        assert_eq!(t.state(), ["001:applied"]);
        assert!(!t.table_exists("public.b"));
        wait_until(Duration::from_secs(10), "the lock to be released", || {
            t.advisory_locks() == 0
        });
    }
}

/// A no-transaction file interrupted mid-way: what stays done is said.
#[test]
fn an_interrupted_no_transaction_file_says_what_stays_done() {
    let t = TestEnv::new();
    t.migration(
        "001_steps.sql",
        "-- migrate:no-transaction\nCREATE TABLE a (id int);\nSELECT pg_sleep(30);\n",
    );
    let child = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(30)");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = Outcome::from_output(child.wait_with_output().unwrap());
    out.code(143).stderr_has(
        "interrupted by SIGTERM while applying 001_steps, which runs outside a transaction: the \
         server cancels the statement that was running, the ones before it stay done, and its \
         row says how far it got (the next `up` runs it again)",
    );
    assert!(t.table_exists("public.a"));
    assert_eq!(t.state(), ["001:failed"]);
}
