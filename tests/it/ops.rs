//! For CI, Kubernetes and services: skip switches, bootstrap, new, wait,
//! metrics, completions, -q and -v, the library at start-up.

use crate::common::{Outcome, TestEnv, wait_until};
use std::time::Duration;

const UNREACHABLE: &str = "host=127.0.0.1 port=1 user=nobody connect_timeout=2";

#[test]
fn skip_migrations_exits_at_once_without_connecting() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    t.migrate_bare()
        .args(["up", "--dsn", UNREACHABLE])
        .env("SKIP_MIGRATIONS", "TRUE")
        .run()
        .code(0)
        .stdout_has("SKIP_MIGRATIONS is set: not migrating");
    t.migrate_bare()
        .args(["up", "--dsn", UNREACHABLE])
        .env("SKIP_MIGRATIONS", "maybe")
        .run()
        .code(2)
        .stderr_has("SKIP_MIGRATIONS: `maybe` is not one of true, false, 1, 0, yes, no");
    // deployment.yaml says so too; the environment wins over it.
    t.file("config/deployment.yaml", "skip-migrations: yes\n");
    t.migrate_bare()
        .args(["up", "--dsn", UNREACHABLE])
        .run()
        .code(0)
        .stdout_has("skip-migrations (config/deployment.yaml:1) is set: not migrating");
    t.migrate()
        .args(["up", "--yes"])
        .env("SKIP_MIGRATIONS", "0")
        .run()
        .code(0)
        .stdout_has("applied 001_a");
    t.file("config/deployment.yaml", "skip-bootstrap: sometimes\n");
    t.migrate()
        .arg("up")
        .run()
        .code(2)
        .stderr_has("config/deployment.yaml:1: skip-bootstrap: `sometimes` is not one of");

    // Skipping needs nothing else to be right: not the config's variables,
    // not the other settings, not the files.
    t.file("config/deployment.yaml", "")
        .file(
            "config/db_main.yaml",
            "db_main:\n  dsn: postgres://${NOT_SET_ANYWHERE}@db/app\n",
        )
        .migration("bad name.sql", "");
    let out = t
        .migrate_bare()
        .args(["--json"])
        .env("SKIP_MIGRATIONS", "yes")
        .env("MIGRATE_LOCK_WAIT", "soon")
        .run();
    out.code(0);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["outcome"], "skipped");
    t.migrate_bare().arg("up").run().code(2);
}

fn with_bootstrap(t: &TestEnv) {
    t.migration("001_users.sql", "CREATE TABLE users (email text PRIMARY KEY, secret text NOT NULL);")
        .file(
            "migrations/bootstrap/001_admin.sql",
            "INSERT INTO users VALUES (current_setting('migrate.admin_email'), current_setting('migrate.admin_secret'))\n\
             ON CONFLICT (email) DO NOTHING;",
        )
        .file("migrations/bootstrap/002_count.sql", "CREATE TABLE IF NOT EXISTS runs (n int);\nINSERT INTO runs VALUES (1);")
        .file(
            "config/db_main.yaml",
            "db_main:\n  bootstrap_variables: [ADMIN_EMAIL, ADMIN_SECRET]\n",
        );
}

const SECRET_VALUE: &str = "s3cret-bootstrap-value-93f1";

#[test]
fn bootstrap_scripts_run_after_every_up_with_values_only_as_settings() {
    let t = TestEnv::new();
    with_bootstrap(&t);
    for _ in 0..2 {
        let out = t
            .migrate()
            .args(["up", "--yes"])
            .env("ADMIN_EMAIL", "root@example.com")
            .env("ADMIN_SECRET", SECRET_VALUE)
            .run();
        out.code(0)
            .stdout_has("bootstrap 001_admin.sql (")
            .stdout_has("bootstrap 002_count.sql (");
        assert!(!out.stdout.contains(SECRET_VALUE) && !out.stderr.contains(SECRET_VALUE));
    }
    assert_eq!(
        t.value("SELECT count(*) FROM users"),
        Some("1".into()),
        "harmless to run twice"
    );
    assert_eq!(
        t.value("SELECT secret FROM users"),
        Some(SECRET_VALUE.into())
    );
    assert_eq!(
        t.value("SELECT count(*) FROM runs"),
        Some("2".into()),
        "they run every time"
    );
    let journal =
        t.rows("SELECT coalesce(error, '') || coalesce(note, '') FROM schema_migrations_log");
    assert!(
        journal
            .iter()
            .all(|r| !r[0].as_deref().unwrap_or("").contains(SECRET_VALUE))
    );
    // SKIP_BOOTSTRAP: migrations yes, bootstrap no; no variables needed.
    t.migrate()
        .args(["up", "--yes"])
        .env("SKIP_BOOTSTRAP", "true")
        .run()
        .code(0);
    assert_eq!(t.value("SELECT count(*) FROM runs"), Some("2".into()));
    // A dry run with nothing pending names the scripts and runs none.
    let dry = |json: bool| {
        let mut run = t.migrate();
        run.args(["up", "--dry-run"])
            .env("ADMIN_EMAIL", "root@example.com")
            .env("ADMIN_SECRET", SECRET_VALUE);
        if json {
            run.arg("--json");
        }
        run.run()
    };
    dry(false)
        .code(0)
        .stdout_has("dry run: the bootstrap scripts would run: 001_admin.sql, 002_count.sql");
    let doc: serde_json::Value = serde_json::from_str(&dry(true).stdout).unwrap();
    assert_eq!(doc["outcome"], "dry_run");
    assert_eq!(
        doc["planned_bootstrap"],
        serde_json::json!(["001_admin.sql", "002_count.sql"])
    );
    assert_eq!(doc["bootstrap"], serde_json::json!([]));
    assert_eq!(t.value("SELECT count(*) FROM runs"), Some("2".into()));
}

/// With every statement logged, with its parameters, the values still
/// stay out of the server's log: they travel as COPY data.
#[test]
fn bootstrap_values_stay_out_of_the_servers_statement_log() {
    let crate::common::Server::Temp { cluster, .. } = crate::common::server() else {
        eprintln!("skipped: reads the harness's own server log (MIGRATE_TEST_DSN is set)");
        return;
    };
    let t = TestEnv::new();
    with_bootstrap(&t);
    t.client()
        .batch_execute(&format!(
            "ALTER DATABASE \"{0}\" SET log_statement = 'all';\n\
             ALTER DATABASE \"{0}\" SET log_min_duration_statement = 0;",
            t.db_name
        ))
        .unwrap();
    // COPY's text format escapes backslashes, tabs and line ends.
    let secret = "s3cret\\server-log\tvalue\n5d2e";
    t.migrate()
        .args(["up", "--yes"])
        .env("ADMIN_EMAIL", "root@example.com")
        .env("ADMIN_SECRET", secret)
        .run()
        .code(0);
    assert_eq!(t.value("SELECT secret FROM users"), Some(secret.into()));
    let log = std::fs::read_to_string(cluster.root().join("server.log")).unwrap();
    assert!(
        log.contains("INSERT INTO users VALUES (current_setting('migrate.admin_email')"),
        "the statements of this run are in the log"
    );
    assert!(!log.contains(secret), "the value is in the server log");
}

/// A role without the TEMPORARY privilege cannot receive the variables:
/// the error says so, and does not point into the script.
#[test]
fn bootstrap_without_the_temporary_privilege_says_what_is_missing() {
    if let crate::common::Server::External { .. } = crate::common::server() {
        eprintln!(
            "skipped: a second role needs the harness's own server (MIGRATE_TEST_DSN is set)"
        );
        return;
    }
    let t = TestEnv::new();
    with_bootstrap(&t);
    let role = format!("boot_{}", t.db_name);
    t.client()
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN;\n\
             GRANT USAGE, CREATE ON SCHEMA public TO \"{role}\";\n\
             REVOKE TEMPORARY ON DATABASE \"{0}\" FROM PUBLIC;",
            t.db_name
        ))
        .unwrap();
    let out = t
        .migrate()
        .args(["up", "--yes", "--dsn"])
        .arg(format!("{} user={role}", t.dsn))
        .env("ADMIN_EMAIL", "root@example.com")
        .env("ADMIN_SECRET", SECRET_VALUE)
        .run();
    out.code(1)
        .stderr_has("permission denied to create temporary tables")
        .stderr_has("the role needs the TEMPORARY privilege on the database");
    assert!(!out.stderr.contains("at line"), "{}", out.stderr);
    assert_eq!(t.state(), ["001:applied"]);
}

#[test]
fn a_target_short_of_the_newest_migration_leaves_bootstrap_for_later() {
    let t = TestEnv::new();
    with_bootstrap(&t);
    t.migration("002_runs_seen.sql", "CREATE TABLE runs (n int);");
    let up = |args: &[&str]| {
        t.migrate()
            .args(args)
            .env("ADMIN_EMAIL", "root@example.com")
            .env("ADMIN_SECRET", SECRET_VALUE)
            .run()
    };
    up(&["up", "--yes", "--target", "001"])
        .code(0)
        .stdout_has("(1 more migration pending after the target, left for later)")
        .stdout_has("the bootstrap scripts are not run: 1 migration pending after the target")
        .stdout_lacks("bootstrap 001_admin.sql");
    assert_eq!(t.value("SELECT count(*) FROM users"), Some("0".into()));
    up(&["up", "--yes"])
        .code(0)
        .stdout_has("bootstrap 001_admin.sql (")
        .stdout_has("bootstrap 002_count.sql (");
    assert_eq!(t.value("SELECT count(*) FROM users"), Some("1".into()));
    // A target at the newest version is a whole run: bootstrap runs.
    up(&["up", "--yes", "--target", "002"])
        .code(0)
        .stdout_has("bootstrap 002_count.sql (");
    assert_eq!(t.value("SELECT count(*) FROM runs"), Some("2".into()));
}

#[test]
fn a_missing_bootstrap_variable_stops_up_before_any_migration() {
    let t = TestEnv::new();
    with_bootstrap(&t);
    t.migrate()
        .args(["up", "--yes"])
        .env("ADMIN_EMAIL", "root@example.com")
        .run()
        .code(2)
        .stderr_has("config/db_main.yaml:2 (db_main.bootstrap_variables): bootstrap variable ADMIN_SECRET is not set");
    assert!(!t.table_exists("public.users"));
}

#[test]
fn a_failing_bootstrap_script_never_shows_a_value() {
    let t = TestEnv::new();
    with_bootstrap(&t);
    // A duplicate key: PostgreSQL quotes the value in its DETAIL.
    t.file(
        "migrations/bootstrap/001_admin.sql",
        "INSERT INTO users VALUES (current_setting('migrate.admin_secret'), 'x');\n\
         INSERT INTO users VALUES (current_setting('migrate.admin_secret'), 'y');",
    );
    let out = t
        .migrate()
        .args(["up", "--yes", "--json"])
        .env("ADMIN_EMAIL", "root@example.com")
        .env("ADMIN_SECRET", SECRET_VALUE)
        .run();
    out.code(1)
        .stderr_has("bootstrap script migrations/bootstrap/001_admin.sql failed: ERROR: duplicate key value")
        .stderr_has("Key (email)=(<ADMIN_SECRET>) already exists.");
    assert!(!out.stdout.contains(SECRET_VALUE) && !out.stderr.contains(SECRET_VALUE));
    assert_eq!(
        t.value("SELECT count(*) FROM users"),
        Some("0".into()),
        "its transaction rolled back"
    );
    assert_eq!(
        t.state(),
        ["001:applied"],
        "the migrations before it stay applied"
    );
}

#[test]
fn new_creates_the_next_numbered_pair() {
    let t = TestEnv::new();
    t.migration("007_a.sql", "SELECT 1;")
        .migration("012_b.sql", "SELECT 2;");
    t.migrate_bare()
        .args(["new", "add_index"])
        .run()
        .code(0)
        .stdout_has(
            "created migrations/013_add_index.sql\ncreated migrations/013_add_index.down.sql",
        );
    assert!(t.migrations().join("013_add_index.down.sql").exists());
    t.migrate_bare()
        .args(["new", "add index!"])
        .run()
        .code(2)
        .stderr_has("`add index!` is not a migration name");
    t.migrate_bare()
        .args(["new", "first", "--path", "fresh"])
        .run()
        .code(0);
    assert!(t.dir().join("fresh/001_first.sql").exists());
}

#[test]
fn wait_blocks_until_another_process_has_migrated() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_b.sql", "CREATE TABLE b (id int);");
    t.migrate()
        .args(["wait", "--timeout", "1500ms"])
        .run()
        .code(1)
        .stderr_has("still not applied after 1.50s: 001_a (PENDING), 002_b (PENDING)");
    let waiter = t.migrate().args(["wait", "--timeout", "60s"]).spawn();
    std::thread::sleep(Duration::from_millis(800));
    t.migrate().args(["up", "--yes"]).run().code(0);
    let out = Outcome::from_output(waiter.wait_with_output().unwrap());
    out.code(0)
        .stdout_has("waiting for migrations")
        .stdout_has("files and database agree: 2 applied, 0 pending");
}

/// Errors that waiting does not cure end the wait at once instead of
/// being retried until the timeout.
#[test]
fn wait_gives_up_at_once_on_what_waiting_does_not_cure() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let mut client = t.client();
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
        )
        .unwrap();
    let out = t.migrate().args(["wait", "--timeout", "60s"]).run();
    out.code(2)
        .stderr_has("public.schema_migrations exists but is not migrate's state table");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );

    // A role that may not read the state: permission denied, exit 1. (On
    // the harness's own server, whose socket trusts every role.)
    if let crate::common::Server::External { .. } = crate::common::server() {
        eprintln!(
            "skipped: a second role needs the harness's own server (MIGRATE_TEST_DSN is set)"
        );
        return;
    }
    let role = format!("reader_{}", t.db_name);
    client
        .batch_execute(&format!(
            "DROP TABLE schema_migrations; CREATE SCHEMA app; REVOKE ALL ON SCHEMA app FROM PUBLIC;\n\
             CREATE ROLE \"{role}\" LOGIN;"
        ))
        .unwrap();
    t.migrate()
        .args(["up", "--yes", "-q", "--schema", "app"])
        .run()
        .code(0);
    let out = t
        .migrate()
        .args(["wait", "--timeout", "60s", "--schema", "app", "--dsn"])
        .arg(format!("{} user={role}", t.dsn))
        .run();
    client
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .unwrap();
    out.code(1).stderr_has("permission denied for schema app");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn metrics_file_has_the_documented_metrics() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_bad.sql", "SELECT * FROM nowhere;");
    let path = t.dir().join("textfile/migrate.prom");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    t.migrate()
        .args(["up", "--yes", "--metrics-file"])
        .arg(&path)
        .run()
        .code(1);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "migrate_migration_duration_seconds_count{version=\"001\",status=\"applied\"} 1",
        "migrate_migration_duration_seconds_count{version=\"002\",status=\"failed\"} 1",
        "# TYPE migrate_migrations_total counter",
        "migrate_migrations_total{status=\"applied\"} 1",
        "migrate_migrations_total{status=\"failed\"} 1",
        "migrate_lock_wait_seconds 0.0",
        "migrate_pending_migrations 1",
        "migrate_last_run_success 0",
    ] {
        assert!(lines.contains(&expected), "{expected} missing:\n{text}");
    }
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1,
        "no temporary file left"
    );

    // A run that stops before it connects still says it failed.
    t.migration("002_bad.sql", "CREATE TABLE b (id int);");
    t.file(
        "config/db_main.yaml",
        "db_main:\n  bootstrap_variables: [NOT_SET_ANYWHERE]\n",
    )
    .file("migrations/bootstrap/001_x.sql", "SELECT 1;");
    t.migrate()
        .args(["up", "--yes", "--metrics-file"])
        .arg(&path)
        .run()
        .code(2);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nmigrate_last_run_success 0\n"), "{text}");
    std::fs::remove_file(t.dir().join("config/db_main.yaml")).unwrap();

    // A run that gives up on the lock says how long it waited.
    let holder = t.hold_lock("metrics-holder", t.default_lock_key());
    t.migrate()
        .args(["up", "--yes", "--lock-wait", "1500ms", "--metrics-file"])
        .arg(&path)
        .run()
        .code(4);
    drop(holder);
    let text = std::fs::read_to_string(&path).unwrap();
    let waited: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("migrate_lock_wait_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1.5..10.0).contains(&waited), "{text}");

    // Nor does one whose settings do not even resolve.
    std::fs::remove_file(&path).unwrap();
    t.migrate()
        .args(["up", "--yes"])
        .env("MIGRATE_METRICS_FILE", &path)
        .env("MIGRATE_LOCK_WAIT", "10")
        .run()
        .code(2);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nmigrate_last_run_success 0\n"), "{text}");

    // Readable by the collector's user whatever the umask.
    std::fs::remove_file(&path).unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", "umask 077 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_migrate"))
        .args(["up", "--yes", "--lock-wait", "10", "--metrics-file"])
        .arg(&path)
        .current_dir(t.dir())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);

    // A metrics file that cannot be written does not undo a good run.
    let out = t
        .migrate()
        .args(["up", "--yes", "--json", "--metrics-file"])
        .arg(t.dir().join("no-such-folder/migrate.prom"))
        .run();
    out.code(0).stderr_has("cannot write the metrics file");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["applied"][0]["version"], "002");
}

#[test]
fn completions_quiet_and_verbose() {
    let t = TestEnv::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = t.migrate_bare().args(["completions", shell]).run();
        out.code(0);
        assert!(
            out.stdout.contains("migrate") && out.stdout.contains("lock-timeout"),
            "{shell}"
        );
    }
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    let out = t.migrate().args(["up", "--yes", "-q"]).run();
    out.code(0);
    assert_eq!(out.stdout, "", "quiet says nothing when all goes well");
    t.migrate()
        .args(["status", "-q"])
        .run()
        .code(0)
        .stdout_has("1 migration: 1 applied, 0 pending");
    t.migrate()
        .args(["up", "--yes", "-v"])
        .run()
        .code(0)
        .stdout_has("connected to postgres@")
        .stdout_has("(PostgreSQL ");
}

/// `migrate completions bash | head` and the like: a reader that goes away
/// is no reason to panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");
    t.migrate().args(["up", "--yes", "-q"]).run().code(0);
    for args in [
        &["completions", "bash"][..],
        &["status"],
        &["history", "--json"],
        &["up", "--yes"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut run = t.migrate();
        run.args(args);
        let mut command = run.into_command();
        let output = command
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.code() == Some(0) && !stderr.contains("panicked"),
            "{args:?}: {:?}\n{stderr}",
            output.status
        );
    }
}

/// The example service: embedded migrations and bootstrap, the lock,
/// SKIP_MIGRATIONS, its own log.
#[test]
fn the_example_service_migrates_at_start_up() {
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples/service"))
        .unwrap();
    assert!(
        example.exists(),
        "{} is missing: `cargo test` builds the examples (a `cargo test --test it` alone does not)",
        example.display()
    );
    let t = TestEnv::new();
    let secrets = [
        ("SUPER_ADMIN_EMAIL", "admin@example.com"),
        ("SUPER_ADMIN_PASSWORD", "example-password-1"),
    ];
    let run_with = |extra: &[(&str, &str)], secrets: &[(&str, &str)]| {
        let mut command = std::process::Command::new(&example);
        command.env_clear().env("DATABASE_URL", &t.dsn);
        for (k, v) in secrets.iter().chain(extra) {
            command.env(k, v);
        }
        Outcome::from_output(command.output().unwrap())
    };
    let run = |extra: &[(&str, &str)]| run_with(extra, &secrets);
    // The secrets are needed only when the scripts are about to run.
    run_with(&[], &[])
        .code(1)
        .stderr_has("bootstrap variable SUPER_ADMIN_EMAIL is not set in the environment");
    assert!(!t.table_exists("app.users"), "nothing ran");
    run(&[])
        .code(0)
        .stdout_has("msg=\"migration applied\" version=000 name=bootstrap")
        .stdout_has("msg=\"bootstrap script ran\" script=001_super_admin.sql")
        .stdout_has("outcome=Applied applied=6 bootstrap_scripts=1");
    assert_eq!(
        t.value(
            "SELECT password_hash = app.crypt('example-password-1', password_hash) FROM app.users"
        ),
        Some("t".into())
    );
    run(&[])
        .code(0)
        .stdout_has("outcome=UpToDate applied=0 bootstrap_scripts=1");
    run_with(
        &[("SKIP_MIGRATIONS", "true"), ("DATABASE_URL", UNREACHABLE)],
        &[],
    )
    .code(0)
    .stdout_has("SKIP_MIGRATIONS is set: not migrating");
    run_with(&[("SKIP_BOOTSTRAP", "true")], &[])
        .code(0)
        .stdout_has("outcome=UpToDate applied=0 bootstrap_scripts=0");
    wait_until(Duration::from_secs(5), "sessions to close", || {
        t.migrate_sessions() == 0
    });
}
