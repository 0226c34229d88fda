//! Drift: edited, deleted and late files; validate and repair.

use crate::common::TestEnv;

fn applied_three(t: &TestEnv) {
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_b.sql", "CREATE TABLE b (id int);")
        .migration("003_c.sql", "CREATE TABLE c (id int);");
    t.migrate().args(["up", "--yes"]).run().code(0);
}

#[test]
fn an_edited_applied_file_stops_up_until_restored_or_repaired() {
    let t = TestEnv::new();
    applied_three(&t);
    t.migration("002_b.sql", "CREATE TABLE b (id bigint);")
        .migration("004_d.sql", "CREATE TABLE d (id int);");
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("CHANGED");
    for command in ["up", "validate"] {
        t.migrate()
            .args([command, "--yes"])
            .run()
            .code(3)
            .stderr_has("the files and the database disagree; nothing was changed:")
            .stderr_has("002_b CHANGED: migrations/002_b.sql now has checksum ")
            .stderr_has("or accept them as they are now with `migrate repair`");
    }
    assert!(!t.table_exists("public.d"), "nothing runs over drift");

    // Restoring the file clears it; editing it again and repairing accepts it.
    t.migration("002_b.sql", "CREATE TABLE b (id int);");
    t.migrate()
        .arg("validate")
        .run()
        .code(0)
        .stdout_has("files and database agree: 3 applied, 1 pending");
    t.migration("002_b.sql", "CREATE TABLE b (id int); -- reviewed");
    t.migrate()
        .args(["repair", "002", "--dry-run"])
        .run()
        .code(0)
        .stdout_has("dry run: 1 record would be repaired:")
        .stdout_has("-> accept the file as it is now");
    t.migrate().arg("validate").run().code(3);
    t.migrate()
        .args(["repair", "002", "--yes"])
        .run()
        .code(0)
        .stdout_has("done: 1 record repaired");
    let note = t.value("SELECT note FROM schema_migrations_log WHERE event = 'repaired'");
    assert!(
        note.as_deref()
            .unwrap()
            .starts_with("accepted the file as it is now: checksum "),
        "{note:?}"
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 004_d");
    assert_eq!(
        t.state(),
        ["001:applied", "002:applied", "003:applied", "004:applied"]
    );
    // Repair changed nothing but the record: b is as 002 first made it.
    assert_eq!(
        t.value("SELECT data_type FROM information_schema.columns WHERE table_name = 'b'"),
        Some("integer".into())
    );
}

#[test]
fn a_deleted_applied_file_stops_up_until_repaired() {
    let t = TestEnv::new();
    applied_three(&t);
    std::fs::remove_file(t.migrations().join("002_b.sql")).unwrap();
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("MISSING")
        .stdout_has("1 missing");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(3)
        .stderr_has("002_b MISSING: it was applied, but no file has version 002");
    t.migrate()
        .args(["repair", "--yes"])
        .run()
        .code(0)
        .stdout_has("002_b MISSING")
        .stdout_has("-> forget it");
    assert_eq!(t.state(), ["001:applied", "003:applied"]);
    assert_eq!(t.journal().last().map(String::as_str), Some("repaired:002"));
    assert!(
        t.table_exists("public.b"),
        "repair runs no SQL of any migration"
    );
    t.migrate().arg("validate").run().code(0);
    // Nothing left to repair, and a named clean version is an error.
    t.migrate()
        .args(["repair", "--yes"])
        .run()
        .code(0)
        .stdout_has("nothing to repair");
    t.migrate()
        .args(["repair", "001", "--yes"])
        .run()
        .code(2)
        .stderr_has("nothing to repair for 001");
}

#[test]
fn a_late_file_is_pending_and_needs_out_of_order() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("003_c.sql", "CREATE TABLE c (id int);");
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migration("002_late.sql", "CREATE TABLE late (id int);");
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("PENDING")
        .stdout_has("002_late is older than 003, the newest applied version: up applies it only with --out-of-order");
    for command in ["up", "validate"] {
        t.migrate()
            .args([command, "--yes"])
            .run()
            .code(3)
            .stderr_has("002_late PENDING: older than 003, the newest applied version")
            .stderr_has("pass --out-of-order");
    }
    assert!(!t.table_exists("public.late"));
    t.migrate()
        .args(["up", "--yes"])
        .env("MIGRATE_OUT_OF_ORDER", "true")
        .run()
        .code(0)
        .stdout_has("applied 002_late");
    assert_eq!(t.state(), ["001:applied", "002:applied", "003:applied"]);
}

#[test]
fn a_failed_row_is_not_drift_and_validate_says_so() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_bad.sql", "SELECT * FROM nowhere;");
    t.migrate().args(["up", "--yes"]).run().code(1);
    t.migration("002_bad.sql", "SELECT 1; -- fixed");
    t.migrate()
        .arg("validate")
        .run()
        .code(0)
        .stdout_has("files and database agree: 1 applied, 0 pending, 1 failed (up retries them)");
}

/// A failed row whose file is gone cannot be retried; it is drift until
/// repair forgets it.
#[test]
fn a_failed_migration_whose_file_is_gone_is_drift_until_repaired() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_bad.sql", "SELECT * FROM nowhere;");
    t.migrate().args(["up", "--yes"]).run().code(1);
    std::fs::remove_file(t.migrations().join("002_bad.sql")).unwrap();
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("002_bad failed (its file is gone)")
        .stdout_has("or FAILED ones whose file is gone");
    t.migrate()
        .arg("validate")
        .run()
        .code(3)
        .stderr_has("002_bad MISSING: it failed (perhaps part-way, if it ran outside a transaction), but no file has version 002");
    t.migrate()
        .args(["repair", "002", "--yes"])
        .run()
        .code(0)
        .stdout_has("done: 1 record repaired");
    assert_eq!(t.state(), ["001:applied"]);
    t.migrate().arg("validate").run().code(0);
}

/// A state row deleted by hand while the journal said the version was
/// applied made `up` run the data migration again without a word.
#[test]
fn a_deleted_state_row_is_drift_not_a_second_apply() {
    let t = TestEnv::new();
    t.migration("001_audit.sql", "CREATE TABLE audit (n int);")
        .migration("002_backfill.sql", "INSERT INTO audit VALUES (2);")
        .file(
            "migrations/002_backfill.down.sql",
            "DELETE FROM audit WHERE n = 2;",
        );
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.client()
        .batch_execute("DELETE FROM schema_migrations WHERE version = '002'")
        .unwrap();
    for command in ["up", "validate"] {
        t.migrate()
            .args([command, "--yes"])
            .run()
            .code(3)
            .stderr_has("the files and the database disagree; nothing was changed:")
            .stderr_has("002_backfill has no row in the state table, but the journal says it was applied at 20")
            .stderr_has("and never rolled back (was its row deleted by hand?); applying it again would run it twice");
    }
    assert_eq!(t.value("SELECT count(*) FROM audit"), Some("1".into()));
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("PENDING")
        .stdout_has("`migrate repair 002` restores its row");
    let status = t.migrate().args(["status", "--json"]).run();
    status.code(0).stdout_has("\"drift\": \"unrecorded\"");

    t.migrate()
        .args(["repair", "--yes"])
        .run()
        .code(0)
        .stdout_has("002_backfill has no row in the state table")
        .stdout_has("-> restore its row as the journal has it")
        .stdout_has("done: 1 record repaired");
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
    let note = t
        .value("SELECT note FROM schema_migrations_log WHERE event = 'repaired'")
        .unwrap();
    assert!(
        note.starts_with("restored its row from the journal"),
        "{note}"
    );
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migrate().arg("validate").run().code(0);
    assert_eq!(t.value("SELECT count(*) FROM audit"), Some("1".into()));

    // A version rolled back with its down file is pending for real.
    t.migrate().args(["down", "--yes"]).run().code(0);
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 002_backfill");
    assert_eq!(t.value("SELECT count(*) FROM audit"), Some("1".into()));
}

/// After a repair, the journal's last word on a version was `repaired`,
/// and a row deleted after that went unnoticed: the migration ran twice.
#[test]
fn a_row_deleted_after_a_repair_is_still_drift() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (x int);")
        .migration("002_b.sql", "INSERT INTO a VALUES (1);");
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migration("002_b.sql", "INSERT INTO a VALUES (1); -- edit");
    t.migrate().args(["repair", "--yes"]).run().code(0);
    t.client()
        .batch_execute("DELETE FROM schema_migrations WHERE version = '002'")
        .unwrap();
    t.migrate()
        .arg("validate")
        .run()
        .code(3)
        .stderr_has("002_b has no row in the state table, but the journal says it was applied");
    t.migrate().args(["up", "--yes"]).run().code(3);
    assert_eq!(t.value("SELECT count(*) FROM a"), Some("1".into()));
    // Restored with the checksum the repair accepted: the file agrees.
    t.migrate().args(["repair", "002", "--yes"]).run().code(0);
    t.migrate().arg("validate").run().code(0);
    // A repair that forgot a row whose file was gone is not an apply.
    std::fs::remove_file(t.migrations().join("002_b.sql")).unwrap();
    t.migrate().args(["repair", "--yes"]).run().code(0);
    t.migration("002_b.sql", "INSERT INTO a VALUES (2);");
    t.migrate().args(["up", "--yes"]).run().code(0);
    assert_eq!(t.value("SELECT count(*) FROM a"), Some("2".into()));
}

/// With the state table dropped and the journal kept, status and validate
/// said all was well and up then refused.
#[test]
fn a_dropped_state_table_with_its_journal_is_drift_for_validate_too() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (x int);");
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.client()
        .batch_execute("DROP TABLE schema_migrations")
        .unwrap();
    t.migrate()
        .arg("validate")
        .run()
        .code(3)
        .stderr_has("001_a has no row in the state table");
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("`migrate repair 001` restores its row");
    t.migrate().args(["up", "--yes"]).run().code(3);
    t.migrate().args(["repair", "--yes"]).run().code(0);
    t.migrate().arg("validate").run().code(0);
}
