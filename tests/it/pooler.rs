//! Through a real PgBouncer: session mode works as a direct connection
//! does; statement mode is refused before anything runs.

use crate::common::TestEnv;
use crate::common::bouncer::Bouncer;

#[test]
fn statement_pooling_is_refused_before_anything_runs() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("statement", 2) else {
        return;
    };
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    for command in ["up", "status", "lock"] {
        t.migrate_bare()
            .args([command, "--yes", "--dsn", &bouncer.dsn(&t.db_name)])
            .run()
            .code(2)
            .stderr_has("goes through a connection pooler in statement mode (PgBouncer's pool_mode=statement)");
    }
    assert!(!t.table_exists("public.schema_migrations"));
    assert!(!t.table_exists("public.a"));
}

#[test]
fn session_pooling_works_as_a_direct_connection_does() {
    let t = TestEnv::new();
    let Some(bouncer) = Bouncer::start("session", 3) else {
        return;
    };
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration(
            "002_idx.sql",
            "-- migrate:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
        )
        .file("migrations/002_idx.down.sql", "DROP INDEX a_id;");
    let dsn = bouncer.dsn(&t.db_name);
    let children: Vec<_> = (0..6)
        .map(|_| {
            t.migrate_bare()
                .args(["up", "--yes", "--dsn", &dsn])
                .spawn()
        })
        .collect();
    for child in children {
        let out = crate::common::Outcome::from_output(child.wait_with_output().unwrap());
        out.code(0);
    }
    assert_eq!(t.journal(), ["applied:001", "applied:002"]);
    for command in ["status", "lock", "history", "validate"] {
        t.migrate_bare()
            .args([command, "--dsn", &dsn])
            .run()
            .code(0);
    }
    t.migrate_bare()
        .args(["down", "--yes", "--dsn", &dsn])
        .run()
        .code(0)
        .stdout_has("rolled back 002_idx");
    crate::common::wait_until(std::time::Duration::from_secs(10), "no lock left", || {
        t.advisory_locks() == 0
    });
}

/// The bookkeeping statements were prepared by name once per run, so the
/// next run to land on the same pooled server connection failed with
/// `prepared statement "s0" already exists`.
#[test]
fn runs_after_one_another_through_a_transaction_pool_share_no_prepared_statement() {
    let t = TestEnv::new();
    // One server connection: every run lands on it.
    let Some(bouncer) = Bouncer::start("transaction", 1) else {
        return;
    };
    let dsn = bouncer.dsn(&t.db_name);
    for v in 1..=3 {
        t.migration(
            &format!("00{v}_t.sql"),
            &format!("CREATE TABLE t{v} (id int);"),
        );
        t.migrate_bare()
            .args(["up", "--yes", "--dsn", &dsn])
            .run()
            .code(0)
            .stdout_has(&format!("applied 00{v}_t"));
    }
    assert_eq!(t.journal(), ["applied:001", "applied:002", "applied:003"]);
}
