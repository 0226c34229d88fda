//! The server going away: before the first connection, and mid-run.

use crate::common::{Outcome, TestEnv};
use std::time::{Duration, Instant};

#[test]
fn wait_for_db_rides_out_a_server_that_starts_late() {
    let t = TestEnv::on_own_server();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    t.stop_server();
    let child = t
        .migrate()
        .args(["up", "--yes", "--wait-for-db", "60s"])
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    t.start_server();
    let out = Outcome::from_output(child.wait_with_output().unwrap());
    out.code(0)
        .stdout_has("waiting for the database (")
        .stdout_has("error connecting to server")
        .stdout_has("applied 001_a");
    assert!(t.table_exists("public.a"));
}

#[test]
fn wait_for_db_gives_up_with_the_last_error() {
    let t = TestEnv::on_own_server();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    t.stop_server();
    let start = Instant::now();
    let out = t
        .migrate()
        .args(["up", "--yes"])
        .env("MIGRATE_WAIT_FOR_DB", "2s")
        .run();
    out.code(5)
        .stderr_has("cannot connect to postgres@")
        .stderr_has("No such file or directory");
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "took {:?}",
        start.elapsed()
    );
    // Without --wait-for-db, one try.
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(5);
    assert!(
        out.elapsed < Duration::from_secs(2),
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn a_server_restarted_mid_run_loses_nothing_that_committed() {
    let t = TestEnv::on_own_server();
    t.migration("001_first.sql", "CREATE TABLE first (id int);")
        .migration(
            "002_slow.sql",
            "CREATE TABLE cut (id int);\nSELECT pg_sleep(30);\n",
        )
        .migration("003_after.sql", "CREATE TABLE after (id int);");
    let child = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(30)");
    t.stop_server();
    t.start_server();
    let out = Outcome::from_output(child.wait_with_output().unwrap());
    out.code(1)
        .stdout_has("applied 001_first")
        .stderr_has("migration 002_slow (migrations/002_slow.sql) failed: FATAL: terminating connection due to administrator command")
        .stderr_has("the connection was lost: the server rolls back the open transaction");
    assert!(t.table_exists("public.first"));
    assert!(!t.table_exists("public.cut"));
    assert_eq!(
        t.state(),
        ["001:applied"],
        "nothing recorded that did not commit"
    );

    t.migration("002_slow.sql", "CREATE TABLE cut (id int);\n");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("done: 2 migrations applied");
    assert_eq!(t.state(), ["001:applied", "002:applied", "003:applied"]);
}

#[test]
fn a_statement_by_statement_run_cut_by_a_restart_says_how_far_it_got() {
    let t = TestEnv::on_own_server();
    t.migration(
        "001_steps.sql",
        "-- migrate:no-transaction\nCREATE TABLE one (id int);\nSELECT pg_sleep(30);\nCREATE TABLE three (id int);\n",
    );
    let child = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(30)");
    t.stop_server();
    t.start_server();
    let out = Outcome::from_output(child.wait_with_output().unwrap());
    out.code(1)
        .stderr_has("1 of 3 statements ran before it")
        .stderr_has("the statements of this file that completed stay done");
    assert_eq!(t.state(), ["001:failed"]);
    assert_eq!(
        t.value("SELECT error FROM schema_migrations WHERE version = '001'"),
        Some("not finished: 1 of 3 statements ran".into())
    );
    t.migration(
        "001_steps.sql",
        "-- migrate:no-transaction\nCREATE TABLE IF NOT EXISTS one (id int);\nCREATE TABLE three (id int);\n",
    );
    t.migrate().args(["up", "--yes"]).run().code(0);
    assert_eq!(t.state(), ["001:applied"]);
}

#[test]
fn wait_keeps_trying_while_the_server_is_down() {
    let t = TestEnv::on_own_server();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    t.stop_server();
    let waiter = t.migrate().args(["wait", "--timeout", "60s"]).spawn();
    std::thread::sleep(Duration::from_millis(1500));
    t.start_server();
    t.migrate().args(["up", "--yes"]).run().code(0);
    let out = Outcome::from_output(waiter.wait_with_output().unwrap());
    out.code(0)
        .stdout_has("files and database agree: 1 applied, 0 pending");
}

/// A server that stops answering on an open connection (a network
/// partition, a frozen host): `wait` still ends at its timeout.
#[test]
fn wait_ends_at_its_timeout_when_the_server_stops_answering() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let t = TestEnv::on_own_server();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let waiter = t.migrate().args(["wait", "--timeout", "3s"]).spawn();
    let started = Instant::now();
    // Once it has read the state (and is idle between looks), freeze its
    // server process.
    let mut backend = None;
    crate::common::wait_until(Duration::from_secs(10), "wait's first look", || {
        backend = t
            .rows(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'migrate' \
                   AND state = 'idle' AND (position('schema_migrations' IN query) > 0 \
                                           OR position('to_regclass' IN query) > 0)",
            )
            .first()
            .and_then(|row| row[0].as_deref().map(|pid| pid.parse::<i32>().unwrap()));
        backend.is_some()
    });
    std::thread::sleep(Duration::from_millis(200));
    let backend = Pid::from_raw(backend.unwrap());
    kill(backend, Signal::SIGSTOP).unwrap();
    // Thawed after 15 s whatever happens, so that a regression fails the
    // test instead of hanging it.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(15));
        let _ = kill(backend, Signal::SIGCONT);
    });
    let out = Outcome::from_output(waiter.wait_with_output().unwrap());
    let elapsed = started.elapsed();
    kill(backend, Signal::SIGCONT).unwrap();
    out.code(1)
        .stderr_has("still not applied after 3.00s: 001_a (PENDING)");
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
}

/// A migration that released the migration lock (`pg_advisory_unlock_all()`)
/// let the run go on unlocked, so a second `up` could run the same
/// migration at once and fail on a duplicate key.
#[test]
fn a_migration_that_releases_the_lock_is_rolled_back_and_the_run_stops() {
    let t = TestEnv::new();
    let key = t.default_lock_key();
    t.migration(
        "001_unlock.sql",
        "CREATE TABLE a (id int);\nSELECT pg_advisory_unlock_all();\nSELECT pg_sleep(1);",
    )
    .migration(
        "002_after.sql",
        &format!("CREATE TABLE b (id int);\nSELECT pg_advisory_unlock({key});"),
    );
    // A second instance started while the first sleeps without the lock.
    let first = t.migrate().args(["up", "--yes"]).spawn();
    t.wait_for_migrate_running("pg_sleep(1)");
    let second = t.migrate().args(["up", "--yes"]).run();
    let first = Outcome::from_output(first.wait_with_output().unwrap());
    for out in [&first, &second] {
        out.code(1)
            .stderr_has(
                "001_unlock (migrations/001_unlock.sql) released the migration lock while it ran",
            )
            .stderr_has(
                "its transaction was rolled back, so nothing of it was applied or recorded",
            );
        assert!(!out.stderr.contains("duplicate key"), "{}", out.stderr);
    }
    assert!(!t.table_exists("public.a"));
    assert_eq!(t.state(), Vec::<String>::new());
    assert_eq!(t.journal(), ["failed:001", "failed:001"]);

    // pg_advisory_unlock of the key itself is caught too; what ran before
    // it stays applied.
    t.migration("001_unlock.sql", "CREATE TABLE a (id int);");
    let out = t.migrate().args(["up", "--yes", "--json"]).run();
    out.code(1)
        .stderr_has("002_after (migrations/002_after.sql) released the migration lock")
        .stdout_has("\"kind\": \"lock_released\"");
    assert!(t.table_exists("public.a"));
    assert!(!t.table_exists("public.b"));
    assert_eq!(t.state(), ["001:applied"]);
}

/// "too many clients" made a racing `up` exit 5 at once; it is connection
/// pressure, which passes, and is waited out.
#[test]
fn too_many_clients_is_waited_out() {
    let t = TestEnv::on_own_server_with(migrate::pgserver::ClusterOptions {
        settings: vec![
            ("max_connections".into(), "8".into()),
            ("superuser_reserved_connections".into(), "0".into()),
        ],
        ..Default::default()
    });
    t.migration("000_base.sql", "CREATE TABLE counter (v int PRIMARY KEY);");
    for v in 1..20 {
        t.migration(
            &format!("{v:03}_step.sql"),
            &format!("INSERT INTO counter VALUES ({v});"),
        );
    }
    // Six of the eight connections taken while the race starts.
    let hogs: Vec<_> = (0..6).map(|_| t.client()).collect();
    let children: Vec<_> = (0..24)
        .map(|_| t.migrate().args(["up", "--yes"]).spawn())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    drop(hogs);
    let outs: Vec<Outcome> = children
        .into_iter()
        .map(|c| Outcome::from_output(c.wait_with_output().unwrap()))
        .collect();
    for out in &outs {
        out.code(0);
    }
    assert!(
        outs.iter().any(
            |o| o.stdout.contains("the server turned the connection away")
                && o.stdout.contains("too many clients")
        ),
        "no run met the limit: the test proves nothing"
    );
    assert_eq!(t.value("SELECT count(*) FROM counter"), Some("19".into()));
    assert_eq!(
        t.value("SELECT count(*) FROM schema_migrations_log WHERE event = 'applied'"),
        Some("20".into())
    );
}

/// A server that stays full is waited for only as long as --lock-wait, then
/// exit 5 with the server's words, said once while waiting.
#[test]
fn a_server_that_stays_full_is_exit_5_once_the_wait_runs_out() {
    let t = TestEnv::on_own_server_with(migrate::pgserver::ClusterOptions {
        settings: vec![
            ("max_connections".into(), "3".into()),
            ("superuser_reserved_connections".into(), "0".into()),
        ],
        ..Default::default()
    });
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let _hogs: Vec<_> = (0..3).map(|_| t.client()).collect();
    let started = Instant::now();
    let out = t.migrate().args(["up", "--yes", "--lock-wait", "1s"]).run();
    out.code(5)
        .stderr_has("too many clients")
        .stdout_has("the server turned the connection away");
    assert_eq!(
        out.stdout
            .matches("the server turned the connection away")
            .count(),
        1,
        "{}",
        out.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// More racing runs than the server has connections for, with no flags:
/// those turned away wait and come back, and every one exits 0.
#[test]
fn a_hundred_and_twenty_runs_against_a_hundred_connections_all_succeed() {
    let t = TestEnv::on_own_server_with(migrate::pgserver::ClusterOptions {
        settings: vec![("max_connections".into(), "100".into())],
        ..Default::default()
    });
    t.migration("000_base.sql", "CREATE TABLE counter (v int PRIMARY KEY);");
    // Long enough that every run has connected before the work is done.
    for v in 1..30 {
        t.migration(
            &format!("{v:03}_step.sql"),
            &format!("INSERT INTO counter VALUES ({v}); SELECT pg_sleep(0.1);"),
        );
    }
    let children: Vec<_> = (0..120)
        .map(|_| t.migrate().args(["up", "--yes"]).spawn())
        .collect();
    let outs: Vec<Outcome> = children
        .into_iter()
        .map(|c| Outcome::from_output(c.wait_with_output().unwrap()))
        .collect();
    for out in &outs {
        out.code(0);
    }
    let turned_away = outs
        .iter()
        .filter(|o| o.stdout.contains("too many clients"))
        .count();
    assert!(
        turned_away > 0,
        "no run met the limit: the test proves nothing"
    );
    for out in outs
        .iter()
        .filter(|o| o.stdout.contains("too many clients"))
    {
        assert_eq!(
            out.stdout
                .matches("the server turned the connection away")
                .count(),
            1,
            "{}",
            out.stdout
        );
    }
    assert_eq!(t.value("SELECT count(*) FROM counter"), Some("29".into()));
    assert_eq!(
        t.value("SELECT count(*) FROM schema_migrations_log WHERE event = 'applied'"),
        Some("30".into())
    );
}
