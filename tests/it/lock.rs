//! The migration lock: many instances at once, waiting, skipping, timing
//! out, and running without it.

use crate::common::{Outcome, TestEnv, tally, wait_until};
use std::time::Duration;

fn fifty(t: &TestEnv) {
    t.migration(
        "000_base.sql",
        "CREATE TABLE counter (version int PRIMARY KEY);",
    );
    for v in 1..50 {
        // A duplicate insert would fail on the primary key: applying any
        // migration twice cannot go unnoticed.
        t.migration(
            &format!("{v:03}_step.sql"),
            &format!("INSERT INTO counter VALUES ({v});\nCREATE TABLE step_{v} (id int);"),
        );
    }
}

fn race(t: &TestEnv, processes: usize, extra: &[&str]) -> Vec<Outcome> {
    let children: Vec<_> = (0..processes)
        .map(|_| t.migrate().args(["up", "--yes"]).args(extra).spawn())
        .collect();
    children
        .into_iter()
        .map(|c| Outcome::from_output(c.wait_with_output().unwrap()))
        .collect()
}

fn assert_applied_once(t: &TestEnv) {
    assert_eq!(t.value("SELECT count(*) FROM counter"), Some("49".into()));
    assert_eq!(
        t.value("SELECT count(*) FROM schema_migrations WHERE status = 'applied'"),
        Some("50".into())
    );
    assert_eq!(
        t.value("SELECT count(*) FROM (SELECT version FROM schema_migrations_log WHERE event = 'applied' GROUP BY version HAVING count(*) = 1) once"),
        Some("50".into())
    );
    assert_eq!(
        t.value("SELECT count(*) FROM schema_migrations_log"),
        Some("50".into())
    );
}

/// What each process said it did.
fn verdict(out: &Outcome) -> String {
    if out.stdout.contains("done: 50 migrations applied") {
        "applied all".into()
    } else if out.stdout.contains("done: ") {
        "applied some".into()
    } else if out
        .stdout
        .contains("another instance applied the pending migrations while this one waited")
    {
        "done elsewhere".into()
    } else if out.stdout.contains("up to date") {
        "up to date".into()
    } else if out.stdout.contains("skipping (--skip-if-locked)") {
        "skipped".into()
    } else {
        format!("unexplained: {}", out.stdout)
    }
}

#[test]
fn sixteen_processes_at_once_apply_each_migration_exactly_once() {
    let t = TestEnv::new();
    fifty(&t);
    let outcomes = race(&t, 16, &[]);
    for out in &outcomes {
        out.code(0);
    }
    assert_applied_once(&t);
    let verdicts = tally(outcomes.iter().map(verdict));
    assert_eq!(verdicts.get("applied all"), Some(&1), "{verdicts:?}");
    assert!(
        verdicts
            .keys()
            .all(|v| ["applied all", "done elsewhere", "up to date"].contains(&v.as_str())),
        "{verdicts:?}"
    );
}

#[test]
fn sixteen_processes_with_skip_if_locked() {
    let t = TestEnv::new();
    fifty(&t);
    let outcomes = race(&t, 16, &["--skip-if-locked"]);
    for out in &outcomes {
        out.code(0);
    }
    assert_applied_once(&t);
    let verdicts = tally(outcomes.iter().map(verdict));
    assert_eq!(verdicts.get("applied all"), Some(&1), "{verdicts:?}");
    assert!(
        verdicts.keys().all(
            |v| ["applied all", "skipped", "up to date", "done elsewhere"].contains(&v.as_str())
        ),
        "{verdicts:?}"
    );
}

/// Holds the default migration lock from a session named `test-holder`.
fn hold_lock(t: &TestEnv, key: i64) -> postgres::Client {
    t.hold_lock("test-holder", key)
}

#[test]
fn skip_if_locked_returns_at_once_naming_the_holder() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let _holder = hold_lock(&t, t.default_lock_key());
    let out = t.migrate().args(["up", "--yes", "--skip-if-locked"]).run();
    out.code(0)
        .stdout_has("another instance holds the migration lock (pid ")
        .stdout_has("test-holder")
        .stdout_has("skipping (--skip-if-locked)");
    assert!(
        out.elapsed < Duration::from_secs(3),
        "took {:?}",
        out.elapsed
    );
    assert!(!t.table_exists("public.a"));
}

#[test]
fn waiting_runs_out_with_exit_4_naming_the_holder() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let _holder = hold_lock(&t, t.default_lock_key());
    let out = t
        .migrate()
        .args(["up", "--yes", "--lock-wait", "1500ms"])
        .run();
    out.code(4)
        .stdout_has("waiting up to 1.50s for the migration lock, held by pid ")
        .stderr_has("the migration lock was not acquired within 1.50s: it is held by pid ")
        .stderr_has("(test-holder, user postgres, from local socket, connected since ");
    assert!(
        out.elapsed >= Duration::from_millis(1500),
        "took {:?}",
        out.elapsed
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
    assert!(!t.table_exists("public.a"));
    // The environment and --lock-wait 0 give the same bound.
    t.migrate()
        .env("MIGRATE_LOCK_WAIT", "0")
        .args(["up", "--yes"])
        .run()
        .code(4);
}

#[test]
fn a_waiter_proceeds_when_the_lock_is_released() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let holder = hold_lock(&t, t.default_lock_key());
    let child = t
        .migrate()
        .args(["up", "--yes", "--lock-wait", "30s"])
        .spawn();
    // Waiting polls pg_try_advisory_lock.
    t.wait_for_migrate_running("pg_try_advisory_lock");
    drop(holder);
    let out = Outcome::from_output(child.wait_with_output().unwrap());
    out.code(0)
        .stdout_has("held by pid")
        .stdout_has("acquired the migration lock after")
        .stdout_has("applied 001_a");
}

#[test]
fn lock_key_chooses_another_lock() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let _holder = hold_lock(&t, t.default_lock_key());
    t.migrate()
        .args(["up", "--yes", "--lock-key", "-42"])
        .run()
        .code(0)
        .stdout_has("applied 001_a");
    // And holding that key blocks a run that uses it.
    t.migration("002_b.sql", "CREATE TABLE b (id int);");
    let _other = hold_lock(&t, 4242);
    t.migrate()
        .args(["up", "--yes", "--lock-wait", "0"])
        .env("MIGRATE_LOCK_KEY", "4242")
        .run()
        .code(4);
}

#[test]
fn safe_false_takes_no_lock_and_says_so() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let _holder = hold_lock(&t, t.default_lock_key());
    t.migrate()
        .args(["--safe=false", "--yes"])
        .run()
        .code(0)
        .stdout_has("warning: --safe=false: running without the migration lock")
        .stdout_has("applied 001_a");
}

#[test]
fn another_migrate_holding_the_lock_is_named_and_waited_for_until_the_bound() {
    let t = TestEnv::new();
    t.migration("001_slow.sql", "SELECT pg_sleep(3);");
    let slow = t.migrate().args(["up", "--yes"]).spawn();
    wait_until(
        Duration::from_secs(10),
        "the first migrate to hold the lock",
        || t.advisory_locks() == 1,
    );
    let out = t.migrate().args(["up", "--yes", "--lock-wait", "1s"]).run();
    out.code(4)
        .stderr_has("it is held by pid ")
        .stderr_has("(migrate, user postgres, from local socket");
    Outcome::from_output(slow.wait_with_output().unwrap()).code(0);
}

/// A `statement_timeout` from the connection string must not cut the wait
/// for the lock short (it would turn exit 4 into exit 1).
#[test]
fn a_short_statement_timeout_in_the_dsn_does_not_break_the_lock_wait() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let _holder = hold_lock(&t, t.default_lock_key());
    let dsn = format!("{} options='-c statement_timeout=300'", t.dsn);
    let out = t
        .migrate_bare()
        .args(["up", "--yes", "--lock-wait", "1500ms", "--dsn", &dsn])
        .run();
    out.code(4).stderr_has("not acquired within 1.50s");
}

/// A role that may not see the holder's session (pg_stat_activity hides
/// another role's client and start time) was shown "connected since )".
#[test]
fn a_holder_hidden_from_the_role_is_named_without_empty_details() {
    if let crate::common::Server::External { .. } = crate::common::server() {
        eprintln!(
            "skipped: a second role needs the harness's own server (MIGRATE_TEST_DSN is set)"
        );
        return;
    }
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let role = format!("plain_{}", t.db_name);
    let mut admin = t.client();
    admin
        .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN"))
        .unwrap();
    let mut holder = hold_lock(&t, t.default_lock_key());
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let dsn = format!("{} user={role}", t.dsn);
    let as_plain = |args: &[&str]| t.migrate_bare().args(args).args(["--dsn", &dsn]).run();
    let table = as_plain(&["lock"]);
    let json = as_plain(&["lock", "--json"]);
    let up = as_plain(&["up", "--yes", "--lock-wait", "1s"]);
    let up_json = as_plain(&["up", "--yes", "--json", "--lock-wait", "200ms"]);
    drop(holder);
    admin
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .unwrap();

    let hidden = "details hidden: this role cannot see that session; grant it pg_read_all_stats";
    table
        .code(0)
        .stdout_has(&pid.to_string())
        .stdout_has("test-holder")
        .stdout_has(hidden);
    let held_by = format!("held by pid {pid} (test-holder, user postgres; {hidden})");
    up.code(4).stdout_has(&held_by).stderr_has(&held_by);
    for out in [&table, &up] {
        let text = format!("{}{}", out.stdout, out.stderr);
        for empty in [
            "()",
            "since )",
            "since  ",
            "from ,",
            "user ,",
            "local socket",
        ] {
            assert!(!text.contains(empty), "{empty:?} in:\n{text}");
        }
    }
    for (doc, holder) in [(&json, "/holder"), (&up_json, "/error/holder")] {
        let doc: serde_json::Value = serde_json::from_str(&doc.stdout).unwrap();
        let holder = doc.pointer(holder).unwrap();
        assert_eq!(holder["pid"], pid, "{doc}");
        assert_eq!(holder["application"], "test-holder", "{doc}");
        assert_eq!(holder["user"], "postgres", "{doc}");
        assert!(holder["client"].is_null(), "{doc}");
        assert!(holder["connected_since"].is_null(), "{doc}");
    }
}

/// A session a migration waits for, hidden from the role as above, was
/// named "from local socket,  since : <insufficient privilege>".
#[test]
fn a_blocker_hidden_from_the_role_is_named_without_empty_details() {
    if let crate::common::Server::External { .. } = crate::common::server() {
        eprintln!(
            "skipped: a second role needs the harness's own server (MIGRATE_TEST_DSN is set)"
        );
        return;
    }
    let t = TestEnv::new();
    let role = format!("plain_{}", t.db_name);
    let mut admin = t.client();
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN; CREATE SCHEMA s AUTHORIZATION \"{role}\""
        ))
        .unwrap();
    let dsn = format!("{} user={role}", t.dsn);
    let as_plain = |args: &[&str]| {
        t.migrate_bare()
            .args(args)
            .args(["--schema", "s", "--dsn", &dsn])
            .run()
    };
    t.migration("001_t.sql", "CREATE TABLE t (id int);");
    as_plain(&["up", "--yes"]).code(0);
    let mut blocker = t.client();
    blocker
        .batch_execute(
            "SET application_name = 'test-blocker'; BEGIN; LOCK TABLE s.t IN ACCESS SHARE MODE",
        )
        .unwrap();
    let pid: i32 = blocker
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    t.migration("002_alter.sql", "ALTER TABLE t ADD COLUMN name text;");
    let out = as_plain(&["up", "--yes", "--lock-timeout", "300ms"]);
    drop(blocker);
    admin
        .batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""))
        .unwrap();

    let named = format!(
        "pid {pid} (test-blocker, user postgres; details hidden: this role cannot see that \
         session; grant it pg_read_all_stats)"
    );
    out.code(1)
        .stdout_has(&format!("002_alter waits for {named}"))
        .stderr_has(&format!("it waited for {named}"));
    let text = format!("{}{}", out.stdout, out.stderr);
    for empty in [
        "()",
        "since )",
        "since :",
        ",  ",
        "local socket",
        "insufficient privilege",
    ] {
        assert!(!text.contains(empty), "{empty:?} in:\n{text}");
    }
}

/// A waiter took the lock in turn though nothing was left, and printed a
/// plan it never ran: it now stops waiting, without the lock, once the
/// work is done, and says only that.
#[test]
fn a_waiter_whose_work_was_done_meanwhile_leaves_without_the_lock() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_b.sql", "CREATE TABLE b (id int);");
    let _holder = hold_lock(&t, t.default_lock_key());
    let waiter = t.migrate().args(["up", "--yes"]).spawn();
    wait_until(Duration::from_secs(20), "the waiter to wait", || {
        t.value(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'migrate' \
             AND (query LIKE '%pg_try_advisory_lock%' OR query LIKE '%schema_migrations_lock%')",
        ) == Some("1".into())
    });
    // The work done by another instance (here one without the lock, which
    // the test session keeps).
    t.migrate()
        .args(["up", "--yes", "--safe=false"])
        .run()
        .code(0);
    let started = std::time::Instant::now();
    let out = Outcome::from_output(waiter.wait_with_output().unwrap());
    out.code(0)
        .stdout_has("another instance applied the pending migrations while this one waited")
        .stdout_lacks("to apply:");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it took {:?} to notice",
        started.elapsed()
    );
    assert_eq!(t.journal(), ["applied:001", "applied:002"]);
}
