//! Bad migration folders: every problem at once, exit 2, before connecting.

use crate::common::TestEnv;

/// A DSN nobody listens on: reaching the network would mean exit 5.
const UNREACHABLE: &str = "host=127.0.0.1 port=1 user=nobody connect_timeout=2";

#[test]
fn every_naming_problem_is_reported_before_connecting() {
    let t = TestEnv::new();
    t.migration("001_ok.sql", "SELECT 1;")
        .migration("002_a.sql", "SELECT 2;")
        .migration("002_b.sql", "SELECT 2;")
        .migration("003_orphan.down.sql", "SELECT 3;")
        .migration("x04_bad.sql", "SELECT 4;")
        .migration("005_bad name.sql", "SELECT 5;")
        .migration("README.md", "ignored")
        .migration(".gitkeep", "");
    for command in ["up", "status"] {
        let out = t.migrate_bare().args([command, "--dsn", UNREACHABLE]).run();
        out.code(2)
            .stderr_has("4 migration files cannot be used:")
            .stderr_has("migrations/002_a.sql: version 002 is used by more than one file: 002_a.sql, 002_b.sql")
            .stderr_has("migrations/003_orphan.down.sql: a down file with no up file for version 003")
            .stderr_has("migrations/x04_bad.sql: the version `x04` is not all digits")
            .stderr_has("migrations/005_bad name.sql: the name `bad name` contains ' '");
        assert!(!out.stderr.contains("README"), "{}", out.stderr);
        assert!(!out.stderr.contains("connect"), "{}", out.stderr);
    }
}

#[test]
fn a_missing_folder_is_named() {
    let t = TestEnv::new();
    t.migrate_bare()
        .args(["up", "--path", "nowhere", "--dsn", UNREACHABLE])
        .run()
        .code(2)
        .stderr_has("nowhere: cannot read the migration folder");
}

#[test]
fn a_file_that_is_not_utf8_is_named_with_its_line() {
    let t = TestEnv::new();
    std::fs::write(
        t.migrations().join("001_latin1.sql"),
        b"SELECT 1;\nSELECT 'caf\xe9';\n",
    )
    .unwrap();
    t.migrate_bare()
        .args(["up", "--dsn", UNREACHABLE])
        .run()
        .code(2)
        .stderr_has("001_latin1.sql: not valid UTF-8 (line 2");
}

#[test]
fn an_empty_folder_is_nothing_to_do() {
    let t = TestEnv::new();
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("up to date: 0 migrations applied");
    assert!(!t.table_exists("public.schema_migrations"));
}

#[test]
fn bad_usage_is_exit_2() {
    let t = TestEnv::new();
    t.migrate()
        .arg("--no-such-flag")
        .run()
        .code(2)
        .stderr_has("--no-such-flag");
    t.migrate().arg("frobnicate").run().code(2);
    t.migrate()
        .arg("--safe=perhaps")
        .run()
        .code(2)
        .stderr_has("--safe: `perhaps` is not one of true, false");
    t.migrate()
        .args(["--lock-wait", "forever"])
        .run()
        .code(2)
        .stderr_has("--lock-wait: `forever` is not a duration");
}
