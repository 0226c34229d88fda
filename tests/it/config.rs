//! Settings from the config folder and the environment.

use crate::common::TestEnv;

#[test]
fn dsn_and_schema_come_from_the_config_folder_with_expansion() {
    let t = TestEnv::new();
    t.file(
        "config/db_main.yaml",
        "db_main:\n  dsn: ${TEST_DSN}\n  schema: ${APP_SCHEMA:from_default}\n  max_open_conns: 10\n",
    );
    t.migration("001_t.sql", "CREATE TABLE t (id int);");
    t.migrate_bare()
        .env("TEST_DSN", &t.dsn)
        .args(["up", "--yes"])
        .run()
        .code(0);
    assert!(t.table_exists("from_default.t"));
    assert_eq!(
        t.state_in("from_default.schema_migrations"),
        ["001:applied"]
    );
    // The environment fills the variable; flags beat the config.
    t.migrate_bare()
        .env("TEST_DSN", &t.dsn)
        .env("APP_SCHEMA", "from_env")
        .args(["up", "--yes"])
        .run()
        .code(0);
    assert!(t.table_exists("from_env.t"));
    t.migrate_bare()
        .env("TEST_DSN", &t.dsn)
        .args(["up", "--yes", "--schema", "from_flag"])
        .run()
        .code(0);
    assert!(t.table_exists("from_flag.t"));
}

#[test]
fn db_selects_another_entry_and_dsn_environment_variables_win() {
    let t = TestEnv::new();
    t.file(
        "config/databases.yaml",
        "db_main:\n  dsn: host=127.0.0.1 port=1 user=nobody\ndb_reports:\n  dsn: ${TEST_DSN}\n  schema: reports\n",
    );
    t.migration("001_t.sql", "CREATE TABLE t (id int);");
    t.migrate_bare()
        .env("TEST_DSN", &t.dsn)
        .args(["up", "--yes", "--db", "db_reports"])
        .run()
        .code(0);
    assert!(t.table_exists("reports.t"));
    // DATABASE_URL beats the config's dsn; DB_DSN beats DATABASE_URL.
    t.migrate_bare()
        .env("DATABASE_URL", &t.dsn)
        .args(["status"])
        .run()
        .code(0);
    t.migrate_bare()
        .env("DB_DSN", &t.dsn)
        .env("DATABASE_URL", "host=127.0.0.1 port=1 user=nobody")
        .args(["status"])
        .run()
        .code(0);
    t.migrate_bare()
        .args(["status", "--db", "db_nope"])
        .run()
        .code(2)
        .stderr_has("--db: no entry `db_nope` in any *.yaml file of config/");
}

#[test]
fn a_malformed_config_file_names_file_and_line() {
    let t = TestEnv::new();
    t.file(
        "config/db_main.yaml",
        "db_main:\n  dsn: x\n  schema: [unclosed\n",
    );
    t.migrate_bare()
        .arg("status")
        .run()
        .code(2)
        .stderr_has("config/db_main.yaml:4:1: not valid YAML");
    t.file(
        "config/db_main.yaml",
        "db_main:\n  dsn: ${NOT_SET_ANYWHERE}\n",
    );
    t.migrate_bare().arg("status").run().code(2).stderr_has(
        "config/db_main.yaml:2 (db_main.dsn): environment variable NOT_SET_ANYWHERE is not set",
    );
    t.file(
        "config/db_main.yaml",
        "db_main:\n  dsn: postgres://h/db\n  lock_key: twelve\n",
    );
    t.migrate_bare().arg("status").run().code(2).stderr_has(
        "config/db_main.yaml:3 (db_main.lock_key): `twelve` is not a 64-bit integer lock key",
    );
    t.migrate_bare()
        .args(["status", "--config", "no_such_folder"])
        .run()
        .code(2)
        .stderr_has("no_such_folder: cannot read the config folder");
}

#[test]
fn no_database_anywhere_says_where_to_give_one() {
    let t = TestEnv::new();
    t.migrate_bare()
        .arg("up")
        .run()
        .code(2)
        .stderr_has("no database given: pass --dsn, set DB_DSN or DATABASE_URL");
}

/// The repository's config declares SUPER_ADMIN_* for its bootstrap script;
/// `--path` to a folder with no bootstrap scripts was refused for want of
/// them.
#[test]
fn bootstrap_variables_are_needed_only_when_bootstrap_scripts_exist() {
    let t = TestEnv::new();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    for entry in std::fs::read_dir(config).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        t.file(
            &format!("config/{name}"),
            &std::fs::read_to_string(&path).unwrap(),
        );
    }
    let other = t.dir().join("other");
    t.file("other/001_t.sql", "CREATE TABLE t (id int);");
    let up = |env: &[(&str, &str)]| {
        let mut run = t.migrate_bare();
        run.arg("--path").arg(&other).args(["up", "--yes"]);
        run.env("DATABASE_URL", &t.dsn);
        for (k, v) in env {
            run.env(k, v);
        }
        run.run()
    };
    up(&[]).code(0).stdout_has("applied 001_t");
    assert!(t.table_exists("app.t"), "the example config's schema");
    // An empty bootstrap folder has no scripts either.
    std::fs::create_dir(other.join("bootstrap")).unwrap();
    t.file("other/002_u.sql", "CREATE TABLE u (id int);");
    up(&[]).code(0).stdout_has("applied 002_u");
    // A script makes them needed, before anything runs.
    t.file(
        "other/bootstrap/001_admin.sql",
        "SELECT current_setting('migrate.super_admin_email');",
    )
    .file("other/003_v.sql", "CREATE TABLE v (id int);");
    up(&[])
        .code(2)
        .stderr_has("bootstrap variable SUPER_ADMIN_EMAIL is not set");
    assert!(!t.table_exists("app.v"));
    let secrets = [
        ("SUPER_ADMIN_EMAIL", "admin@example.com"),
        ("SUPER_ADMIN_PASSWORD", "not-needed-yet"),
    ];
    up(&secrets).code(0).stdout_has("bootstrap 001_admin.sql (");
    // A bootstrap folder that is named must exist, variables or not.
    let named = [("MIGRATE_BOOTSTRAP_PATH", "nowhere")];
    up(&named)
        .code(2)
        .stderr_has("nowhere: cannot read the bootstrap folder");
    up(&[named[0], secrets[0], secrets[1]])
        .code(2)
        .stderr_has("nowhere: cannot read the bootstrap folder");
}
