//! `down`: rolling back with down files.

use crate::common::TestEnv;

fn three_with_downs(t: &TestEnv) {
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("001_a.down.sql", "DROP TABLE a;")
        .migration("002_b.sql", "CREATE TABLE b (id int);")
        .migration("002_b.down.sql", "DROP TABLE b;")
        .migration("003_c.up.sql", "CREATE TABLE c (id int);")
        .migration("003_c.down.sql", "DROP TABLE c;");
    t.migrate().args(["up", "--yes"]).run().code(0);
}

#[test]
fn down_rolls_back_the_newest_and_records_it() {
    let t = TestEnv::new();
    three_with_downs(&t);
    t.migrate()
        .args(["down", "--yes"])
        .run()
        .code(0)
        .stdout_has("1 migration to roll back:\n  003_c (with 003_c.down.sql)")
        .stdout_has("rolled back 003_c (")
        .stdout_has("done: 1 migration rolled back");
    assert!(!t.table_exists("public.c"));
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
    assert_eq!(
        t.journal().last().map(String::as_str),
        Some("rolled_back:003")
    );
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("2 applied, 1 pending");
    // And up applies it again.
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 003_c");
}

#[test]
fn steps_and_to_choose_how_far() {
    let t = TestEnv::new();
    three_with_downs(&t);
    t.migrate()
        .args(["down", "--yes", "--steps", "2"])
        .run()
        .code(0)
        .stdout_has("done: 2 migrations rolled back");
    assert_eq!(t.state(), ["001:applied"]);
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migrate().args(["down", "--to", "1", "--dry-run"]).run().code(0).stdout_has(
        "dry run: 2 migrations would be rolled back:\n  003_c (with 003_c.down.sql)\n  002_b (with 002_b.down.sql)",
    );
    assert_eq!(t.state().len(), 3, "a dry run changes nothing");
    t.migrate()
        .args(["down", "--yes", "--to", "001"])
        .run()
        .code(0);
    assert_eq!(t.state(), ["001:applied"]);
    t.migrate()
        .args(["down", "--yes", "--to", "0"])
        .run()
        .code(0);
    assert!(t.state().is_empty());
    t.migrate()
        .args(["down", "--yes"])
        .run()
        .code(0)
        .stdout_has("nothing to roll back");
    t.migrate()
        .args(["down", "--steps", "1", "--to", "1"])
        .run()
        .code(2)
        .stderr_has("--steps and --to both say how far to roll back");
}

#[test]
fn a_missing_down_file_anywhere_in_the_range_stops_everything() {
    let t = TestEnv::new();
    three_with_downs(&t);
    std::fs::remove_file(t.migrations().join("002_b.down.sql")).unwrap();
    t.migrate()
        .args(["down", "--yes", "--steps", "3"])
        .run()
        .code(2)
        .stderr_has("migrations/002_b.down.sql: 002_b has no down file to roll it back with");
    assert_eq!(t.state().len(), 3, "not even 003 was rolled back");
    assert!(t.table_exists("public.c"));
}

#[test]
fn a_failing_down_file_rolls_back_and_leaves_the_migration_applied() {
    let t = TestEnv::new();
    three_with_downs(&t);
    t.migration(
        "003_c.down.sql",
        "DROP TABLE c;\nSELECT * FROM no_such_table;",
    );
    let out = t.migrate().args(["down", "--yes"]).run();
    out.code(1)
        .stdout_has("failed 003_c")
        .stderr_has("rolling back 003_c failed at migrations/003_c.down.sql:2:15: ERROR: relation \"no_such_table\" does not exist");
    assert!(
        t.table_exists("public.c"),
        "the down file's transaction rolled back"
    );
    assert_eq!(t.state(), ["001:applied", "002:applied", "003:applied"]);
    assert_eq!(
        t.journal().last().map(String::as_str),
        Some("rollback_failed:003")
    );
}

#[test]
fn down_files_with_transaction_statements_are_refused() {
    let t = TestEnv::new();
    three_with_downs(&t);
    t.migration("003_c.down.sql", "BEGIN;\nDROP TABLE c;\nCOMMIT;");
    t.migrate()
        .args(["down", "--yes"])
        .run()
        .code(2)
        .stderr_has("migrations/003_c.down.sql: line 1: BEGIN would take over the transaction");
    assert!(t.table_exists("public.c"));
}

#[test]
fn down_takes_the_last_applied_and_to_must_be_applied() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("001_a.down.sql", "DROP TABLE a;")
        .migration("003_c.sql", "CREATE TABLE c (id int);")
        .migration("003_c.down.sql", "DROP TABLE c;");
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migration("002_late.sql", "CREATE TABLE late (id int);")
        .migration("002_late.down.sql", "DROP TABLE late;");
    t.migrate()
        .args(["up", "--yes", "--out-of-order"])
        .run()
        .code(0);
    // The last one applied, not the highest version.
    t.migrate()
        .args(["down", "--yes"])
        .run()
        .code(0)
        .stdout_has("rolled back 002_late");
    assert_eq!(t.state(), ["001:applied", "003:applied"]);
    t.migrate()
        .args(["down", "--yes", "--to", "2"])
        .run()
        .code(2)
        .stderr_has("--to 2: no applied migration has that version");
    assert_eq!(t.state().len(), 2);
}

#[test]
fn the_plan_says_when_an_up_file_changed_since_it_was_applied() {
    let t = TestEnv::new();
    three_with_downs(&t);
    t.migration("003_c.up.sql", "CREATE TABLE c (id bigint);");
    t.migrate()
        .args(["down", "--dry-run"])
        .run()
        .code(0)
        .stdout_has("003_c (with 003_c.down.sql; its up file changed since it was applied)");
}

#[test]
fn a_statement_by_statement_down_file_that_fails_says_how_far_it_got() {
    let t = TestEnv::new();
    three_with_downs(&t);
    t.migration(
        "003_c.down.sql",
        "-- migrate:no-transaction\nDROP TABLE c;\nDROP TABLE no_such_table;\n",
    );
    t.migrate()
        .args(["down", "--yes"])
        .run()
        .code(1)
        .stderr_has("rolling back 003_c (migrations/003_c.down.sql) failed: ERROR: table \"no_such_table\" does not exist")
        .stderr_has("1 of 2 statements ran before it");
    assert!(
        !t.table_exists("public.c"),
        "the statement that ran stays done"
    );
    assert_eq!(
        t.state(),
        ["001:applied", "002:applied", "003:applied"],
        "the row stays until the whole file ran"
    );
    let error = t
        .value("SELECT error FROM schema_migrations_log WHERE event = 'rollback_failed'")
        .unwrap();
    assert!(error.contains("1 of 2 statements ran"), "{error}");
}

/// A file renamed from `7_a.sql` to `007_a.sql` (the same version) made
/// `down` commit its down file while the row, recorded as `7`, stayed.
#[test]
fn down_finds_the_row_by_the_version_text_it_was_recorded_with() {
    let t = TestEnv::new();
    t.migration("7_a.sql", "CREATE TABLE a (x int);")
        .file("migrations/7_a.down.sql", "DROP TABLE a;");
    t.migrate().args(["up", "--yes"]).run().code(0);
    std::fs::rename(
        t.migrations().join("7_a.sql"),
        t.migrations().join("007_a.sql"),
    )
    .unwrap();
    std::fs::rename(
        t.migrations().join("7_a.down.sql"),
        t.migrations().join("007_a.down.sql"),
    )
    .unwrap();
    t.migrate()
        .args(["down", "--yes"])
        .run()
        .code(0)
        .stdout_has("rolled back 007_a");
    assert!(!t.table_exists("public.a"));
    assert_eq!(t.state(), Vec::<String>::new());
    assert_eq!(t.journal(), ["applied:7", "rolled_back:7"]);
}

/// A down file whose record finds no applied row must not commit.
#[test]
fn a_down_file_whose_row_is_gone_is_rolled_back() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (x int);").file(
        "migrations/001_a.down.sql",
        "DROP TABLE a;\nDELETE FROM schema_migrations WHERE version = '001';",
    );
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migrate()
        .args(["down", "--yes"])
        .run()
        .code(1)
        .stderr_has("what ran in its transaction was rolled back");
    assert!(t.table_exists("public.a"));
    assert_eq!(t.state(), ["001:applied"]);
}
