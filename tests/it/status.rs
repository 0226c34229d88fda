//! `status` and `history`: the tables, every status, and that reading
//! creates nothing.

use crate::common::{TestEnv, snapshot_filters};

/// Table widths follow the timings; collapse runs of padding and rules so
/// the snapshot shows content and structure.
fn stable(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut last = '\0';
        for c in line.chars() {
            let run = matches!(c, ' ' | '─' | '═');
            if !(run && c == last) {
                out.push(c);
            }
            last = c;
        }
        out.push('\n');
    }
    out
}

#[test]
fn status_shows_every_state_and_totals() {
    let t = TestEnv::new();
    t.migration("001_applied.sql", "CREATE TABLE a (id int);")
        .migration("002_edited.sql", "CREATE TABLE b (id int);")
        .migration("003_deleted.sql", "CREATE TABLE c (id int);")
        .migration("004_broken.sql", "CREATE TABLE d (id int);\nSELECT 1/0;");
    t.migrate().args(["up", "--yes"]).run().code(1);
    t.migration("002_edited.sql", "CREATE TABLE b (id bigint);");
    std::fs::remove_file(t.migrations().join("003_deleted.sql")).unwrap();
    t.migration("005_pending.sql", "SELECT 1;");
    let out = t.migrate().arg("status").run();
    out.code(0);
    insta::with_settings!({filters => snapshot_filters()}, {
        insta::assert_snapshot!(stable(&out.stdout));
    });
}

#[test]
fn status_and_history_create_nothing() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    t.migrate()
        .args(["status", "--schema", "fresh"])
        .run()
        .code(0)
        .stdout_has("1 migration: 0 applied, 1 pending");
    t.migrate()
        .args(["history", "--schema", "fresh"])
        .run()
        .code(0)
        .stdout_has("the journal is empty");
    assert_eq!(
        t.value("SELECT count(*) FROM pg_namespace WHERE nspname = 'fresh'"),
        Some("0".into())
    );
    t.migrate().arg("status").run().code(0);
    t.migrate().arg("history").run().code(0);
    assert!(!t.table_exists("public.schema_migrations"));
    assert!(!t.table_exists("public.schema_migrations_log"));
}

#[test]
fn history_lists_the_journal_oldest_first() {
    let t = TestEnv::new();
    t.migration("001_one.sql", "CREATE TABLE one (id int);")
        .migration("002_two.sql", "SELECT * FROM missing_table;");
    t.migrate().args(["up", "--yes"]).run().code(1);
    t.migration("002_two.sql", "CREATE TABLE two (id int);");
    t.migrate().args(["up", "--yes"]).run().code(0);
    let out = t.migrate().arg("history").run();
    out.code(0);
    insta::with_settings!({filters => snapshot_filters()}, {
        insta::assert_snapshot!(stable(&out.stdout));
    });
}
