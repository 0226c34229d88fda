//! `migrate sandbox`: a throwaway server, the folder applied from scratch.

use crate::common::TestEnv;
use std::path::Path;

fn sandbox_folder(out: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.split_once(" in ")
                .filter(|_| l.starts_with("sandbox: PostgreSQL"))
        })
        .map(|(_, dir)| dir.to_owned())
        .unwrap_or_else(|| panic!("no sandbox folder in {out}"))
}

#[test]
fn applies_the_folder_on_a_throwaway_server_checks_down_files_and_removes_it() {
    let t = TestEnv::new();
    t.migration("000_schema.sql", "CREATE TABLE s (id int);")
        .migration("000_schema.down.sql", "DROP TABLE s;")
        .migration("001_data.sql", "INSERT INTO s VALUES (1);")
        .migration(
            "002_index.sql",
            "ALTER TABLE s ADD COLUMN name text;\nCREATE INDEX s_name_idx ON s (name);",
        )
        .migration("002_index.down.sql", "ALTER TABLE s DROP COLUMN name;");
    let out = t.migrate_bare().args(["sandbox", "--schema", "app"]).run();
    out.code(0)
        .stdout_has("applied 000_schema (")
        .stdout_has("  reversible: down undoes up, and up runs again to the same schema")
        .stdout_has("applied 001_data (")
        .stdout_has("  no down file: reversibility not checked")
        .stdout_has("│ 002     ┆ index")
        .stdout_has("3 migrations: 3 applied, 0 pending")
        .stdout_has("sandbox server stopped;");
    assert_eq!(
        out.stdout.matches("  reversible:").count(),
        2,
        "{}",
        out.stdout
    );
    let folder = sandbox_folder(&out.stdout);
    assert!(!Path::new(&folder).exists(), "{folder} left behind");
    // The test's own database is untouched.
    assert!(!t.table_exists("public.s") && !t.table_exists("app.s"));
}

#[test]
fn a_down_file_that_does_not_undo_its_up_file_is_reported() {
    let t = TestEnv::new();
    t.migration("001_table.sql", "CREATE TABLE s (id int);")
        .migration("001_table.down.sql", "DROP TABLE s;")
        .migration(
            "002_default.sql",
            "ALTER TABLE s ALTER COLUMN id SET DEFAULT 7;",
        )
        // Leaves the default, and adds a column besides.
        .migration(
            "002_default.down.sql",
            "ALTER TABLE s ADD COLUMN leftover int;",
        )
        .migration("003_more.sql", "CREATE TABLE more (id int);")
        .migration("003_more.down.sql", "DROP TABLE more;");
    let out = t.migrate_bare().arg("sandbox").run();
    out.code(1)
        .stdout_has("  not reversible: after down the schema differs from before up:")
        .stdout_has("+     leftover integer")
        .stdout_has("3 migrations: 3 applied, 0 pending")
        .stderr_has("the down file of 002_default does not undo its up file");
    assert!(!Path::new(&sandbox_folder(&out.stdout)).exists());
}

/// A down file that does nothing passes "up runs again" (up is written
/// with IF NOT EXISTS) but not "down undoes up".
#[test]
fn a_down_file_that_does_nothing_is_reported() {
    let t = TestEnv::new();
    t.migration("001_table.sql", "CREATE TABLE IF NOT EXISTS kept (id int);")
        .migration("001_table.down.sql", "SELECT 1;");
    let out = t.migrate_bare().arg("sandbox").run();
    out.code(1)
        .stdout_has("  not reversible: after down the schema differs from before up:")
        .stdout_has("+ CREATE TABLE public.kept (")
        .stderr_has("the down file of 001_table does not undo its up file");
}

#[test]
fn a_failing_migration_shows_in_the_sandbox_status() {
    let t = TestEnv::new();
    t.migration("001_ok.sql", "CREATE TABLE ok (id int);")
        .migration("002_typo.sql", "CREAT TABLE typo (id int);");
    let out = t.migrate_bare().arg("sandbox").run();
    out.code(1)
        .stdout_has("FAILED")
        .stdout_has("002_typo failed: ERROR: syntax error at or near \"CREAT\"")
        .stderr_has("migration 002_typo failed at migrations/002_typo.sql:1:1:");
    assert!(!Path::new(&sandbox_folder(&out.stdout)).exists());
}

#[test]
fn without_server_programs_it_says_what_to_install() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "SELECT 1;");
    let empty = tempfile::tempdir().unwrap();
    t.migrate_bare()
        .env("MIGRATE_PG_BIN", empty.path())
        .arg("sandbox")
        .run()
        .code(1)
        .stderr_has("cannot start a sandbox server: MIGRATE_PG_BIN=")
        .stderr_has("holds no initdb and postgres programs");
}

#[test]
fn bad_files_stop_the_sandbox_before_any_server_starts() {
    let t = TestEnv::new();
    t.migration("1_a.sql", "SELECT 1;")
        .migration("01_b.sql", "SELECT 1;");
    let out = t.migrate_bare().arg("sandbox").run();
    out.code(2)
        .stderr_has("is used by more than one file: 01_b.sql, 1_a.sql");
    assert!(!out.stdout.contains("sandbox: PostgreSQL"));
}
