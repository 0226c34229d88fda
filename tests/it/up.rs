//! `migrate up`: order, transactions, failures, targets, the seed's spellings.

use crate::common::TestEnv;

fn three(t: &TestEnv) {
    t.migration("000_schema.sql", "CREATE TABLE accounts (id int PRIMARY KEY);")
        .migration(
            "001_index.up.sql",
            "ALTER TABLE accounts ADD COLUMN email text;\nCREATE INDEX accounts_email_idx ON accounts (email);",
        )
        .migration("001_index.down.sql", "DROP INDEX accounts_email_idx;")
        .migration("010_data.sql", "INSERT INTO accounts VALUES (1, 'a@example.com'), (2, 'b@example.com');");
}

#[test]
fn applies_pending_migrations_in_numeric_order_and_records_each() {
    let t = TestEnv::new();
    three(&t);
    t.migration(
        "2_between.sql",
        "INSERT INTO accounts VALUES (3, 'c@example.com');",
    );
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(0)
        .stdout_has("4 migrations to apply:")
        .stdout_has("applied 000_schema (")
        .stdout_has("applied 2_between (")
        .stdout_has("done: 4 migrations applied in");
    let order: Vec<usize> = ["000_schema", "001_index", "2_between", "010_data"]
        .iter()
        .map(|label| out.stdout.find(&format!("applied {label}")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", out.stdout);
    assert_eq!(
        t.state(),
        ["000:applied", "001:applied", "2:applied", "010:applied"]
    );
    assert_eq!(
        t.journal(),
        ["applied:000", "applied:001", "applied:2", "applied:010"]
    );
    assert_eq!(t.value("SELECT count(*) FROM accounts"), Some("3".into()));
    // The row keeps the text of the file name and a real checksum and actor.
    let row = &t.rows(
        "SELECT name, length(checksum), applied_by, in_transaction, error IS NULL \
           FROM schema_migrations WHERE version = '000'",
    )[0];
    assert_eq!(row[0].as_deref(), Some("schema"));
    assert_eq!(row[1].as_deref(), Some("64"));
    assert!(row[2].as_deref().unwrap().starts_with("tester@"));
    assert_eq!(row[3].as_deref(), Some("t"));
    assert_eq!(row[4].as_deref(), Some("t"));

    // Again: nothing to do, nothing recorded twice.
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("up to date: 4 migrations applied, none pending");
    assert_eq!(t.journal().len(), 4);
}

#[test]
fn an_actor_with_quotes_and_backslashes_is_recorded_as_it_is() {
    // The record is sent with its values written into the SQL text: the
    // actor (from USER here) must arrive byte for byte, and not as SQL.
    let t = TestEnv::new();
    t.migration("001_one.sql", "CREATE TABLE one (id int);")
        .migration("002_two.sql", "CREATE TABLE two (id int);");
    let actor = r#"o'brien\' ); DROP TABLE one; -- $$ "ü"#;
    t.migrate()
        .args(["up", "--yes"])
        .env("USER", actor)
        .run()
        .code(0)
        .stdout_has("done: 2 migrations applied");
    let expected = format!("{actor}@");
    for row in t.rows(
        "SELECT s.applied_by, l.actor FROM schema_migrations s \
           JOIN schema_migrations_log l USING (version) ORDER BY version",
    ) {
        assert!(row[0].as_deref().unwrap().starts_with(&expected), "{row:?}");
        assert_eq!(row[0], row[1]);
    }
    assert!(t.table_exists("public.one"));
    assert_eq!(t.state(), ["001:applied", "002:applied"]);
}

#[test]
fn an_actor_is_recorded_as_it_is_whatever_encoding_a_file_leaves_set() {
    // Each file leaves the session reading text as LATIN1, backslashes
    // and all: the record written after it is still read as sent, on the
    // path for all-ASCII values and on the other.
    for actor in [r"o'brien\' ); --", r"josé\' ); --"] {
        let t = TestEnv::new();
        let file = "SET client_encoding = 'LATIN1';\nSET standard_conforming_strings = off;\n";
        t.migration("001_one.sql", &format!("{file}CREATE TABLE one (id int);"))
            .migration("002_two.sql", &format!("{file}CREATE TABLE two (id int);"))
            .migration(
                "003_three.sql",
                &format!("{file}CREATE TABLE three (id int);"),
            );
        t.migrate()
            .args(["up", "--yes"])
            .env("USER", actor)
            .run()
            .code(0)
            .stdout_has("done: 3 migrations applied");
        let rows = t.rows(
            "SELECT s.applied_by, l.actor FROM schema_migrations s \
               JOIN schema_migrations_log l USING (version) ORDER BY version",
        );
        assert_eq!(rows.len(), 3);
        for row in rows {
            assert!(
                row[0].as_deref().unwrap().starts_with(&format!("{actor}@")),
                "{row:?}"
            );
            assert_eq!(row[0], row[1]);
        }
    }
}

#[test]
fn a_record_that_fails_rolls_back_the_file_with_it() {
    // The file puts a trigger on the state table that refuses its own
    // record: the record and COMMIT go as one query, so the work must be
    // rolled back with the record, and the run must say so.
    let t = TestEnv::new();
    t.migration(
        "001_refuses.sql",
        "CREATE TABLE made (id int);\n\
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'no record for %', NEW.version; END $$;\n\
         CREATE TRIGGER refuse BEFORE INSERT ON schema_migrations \
         FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .migration("002_next.sql", "CREATE TABLE next (id int);");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(1)
        .stderr_has(
            "001_refuses.sql of 001_refuses ran, but recording it failed, so it was rolled back",
        )
        .stderr_has("no record for 001");
    assert!(!t.table_exists("public.made"));
    assert!(!t.table_exists("public.next"));
    assert!(t.state().is_empty(), "{:?}", t.state());
    assert_eq!(
        t.value("SELECT count(*) FROM pg_trigger WHERE tgname = 'refuse'"),
        Some("0".into())
    );
}

#[test]
fn bare_migrate_is_up_and_without_a_terminal_says_it_does_not_ask() {
    let t = TestEnv::new();
    three(&t);
    t.migrate()
        .run()
        .code(0)
        .stdout_has("no terminal to ask on: going ahead without confirmation")
        .stdout_has("done: 3 migrations applied");
    assert_eq!(t.state().len(), 3);
}

#[test]
fn a_failing_migration_rolls_back_is_recorded_and_stops_the_run() {
    let t = TestEnv::new();
    t.migration("001_ok.sql", "CREATE TABLE kept (id int);")
        .migration(
            "002_bad.sql",
            "CREATE TABLE half_done (id int);\nINSERT INTO no_such_table VALUES (1);\n",
        )
        .migration("003_after.sql", "CREATE TABLE never (id int);");
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(1)
        .stdout_has("applied 001_ok")
        .stdout_has("failed 002_bad")
        .stderr_has("migration 002_bad failed at migrations/002_bad.sql:2:13: ERROR: relation \"no_such_table\" does not exist (SQLSTATE 42P01)\n  2 | INSERT INTO no_such_table VALUES (1);\n    |             ^");
    assert!(!out.stdout.contains("003_after ("), "{}", out.stdout);
    assert!(t.table_exists("public.kept"));
    assert!(
        !t.table_exists("public.half_done"),
        "the failed file's first statement must roll back"
    );
    assert!(!t.table_exists("public.never"));
    assert_eq!(t.state(), ["001:applied", "002:failed"]);
    assert_eq!(t.journal(), ["applied:001", "failed:002"]);
    let error = t
        .value("SELECT error FROM schema_migrations WHERE version = '002'")
        .unwrap();
    assert!(error.contains("at line 2, column 13"), "{error}");
    assert!(
        error.contains("relation \"no_such_table\" does not exist"),
        "{error}"
    );

    // Fixed, the next run retries the failed version and goes on.
    t.migration(
        "002_bad.sql",
        "CREATE TABLE half_done (id int);\nCREATE TABLE no_such_table (id int);\nINSERT INTO no_such_table VALUES (1);\n",
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("002_bad (failed before; retrying)")
        .stdout_has("done: 2 migrations applied");
    assert_eq!(t.state(), ["001:applied", "002:applied", "003:applied"]);
    assert_eq!(
        t.journal(),
        ["applied:001", "failed:002", "applied:002", "applied:003"]
    );
    assert_eq!(
        t.value("SELECT error IS NULL FROM schema_migrations WHERE version = '002'"),
        Some("t".into())
    );
}

#[test]
fn target_stops_after_the_given_version() {
    let t = TestEnv::new();
    three(&t);
    t.migrate()
        .args(["up", "--yes", "--target", "1"])
        .run()
        .code(0)
        .stdout_has("done: 2 migrations applied");
    assert_eq!(t.state(), ["000:applied", "001:applied"]);
    t.migrate()
        .args(["up", "--yes", "--target", "001"])
        .run()
        .code(0)
        .stdout_has("nothing to apply up to the target: 2 migrations applied, 1 pending after it");
    let out = t.migrate().args(["up", "--yes", "--target", "5"]).run();
    out.code(2)
        .stderr_has("--target 5: no migration file in migrations has that version");
    let out = t.migrate().args(["up", "--yes", "--target", "five"]).run();
    out.code(2).stderr_has("--target: `five` is not a version");
    assert_eq!(t.state().len(), 2);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let t = TestEnv::new();
    three(&t);
    // Even with the lock held elsewhere, a dry run answers at once: it takes no lock.
    let mut holder = t.client();
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&t.default_lock_key()])
        .unwrap();
    let out = t.migrate().args(["--dry-run"]).run();
    out.code(0)
        .stdout_has("dry run: 3 migrations would be applied:")
        .stdout_has("  001_index")
        .stdout_has("nothing was changed (dry run)");
    assert!(!t.table_exists("public.schema_migrations"));
    assert!(!t.table_exists("public.accounts"));
}

#[test]
fn the_seeds_spellings_keep_working() {
    let t = TestEnv::new();
    t.file(
        "custom/migrations/001_custom.sql",
        "CREATE TABLE custom (id int);",
    );
    t.migrate()
        .args(["--path", "./custom/migrations", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 001_custom");
    t.migrate()
        .args(["--status", "--path", "./custom/migrations"])
        .run()
        .code(0)
        .stdout_has("APPLIED");
    // Options after the command as well as before it.
    t.migrate()
        .args(["status", "--path", "custom/migrations"])
        .run()
        .code(0)
        .stdout_has("1 applied");
    t.migrate()
        .args(["--status", "up"])
        .run()
        .code(2)
        .stderr_has("--status cannot be combined with the `up` command");
    // MIGRATE_PATH, the environment spelling of --path.
    t.migrate()
        .env("MIGRATE_PATH", "custom/migrations")
        .arg("status")
        .run()
        .code(0)
        .stdout_has("1 applied");
}

#[test]
fn schema_is_created_and_used_as_search_path() {
    let t = TestEnv::new();
    t.migration(
        "001_users.sql",
        "CREATE TABLE users (id int);\nINSERT INTO users VALUES (1);",
    )
    .migration(
        "002_count.sql",
        "CREATE VIEW user_count AS SELECT count(*) AS n FROM users;",
    );
    t.migrate()
        .args(["up", "--yes", "--schema", "Auth Service"])
        .run()
        .code(0);
    assert!(t.table_exists("\"Auth Service\".users"));
    assert!(!t.table_exists("public.users"));
    assert_eq!(
        t.state_in("\"Auth Service\".schema_migrations"),
        ["001:applied", "002:applied"]
    );
    assert!(t.table_exists("\"Auth Service\".schema_migrations_log"));
    assert!(!t.table_exists("public.schema_migrations"));
}

#[test]
fn table_option_renames_the_state_table_and_journal() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "SELECT 1;");
    t.migrate()
        .args(["up", "--yes", "--table", "app_versions"])
        .run()
        .code(0);
    assert_eq!(t.state_in("public.app_versions"), ["001:applied"]);
    assert!(t.table_exists("public.app_versions_log"));
    assert!(!t.table_exists("public.schema_migrations"));
    // Another table is another history.
    t.migrate()
        .args(["status"])
        .run()
        .code(0)
        .stdout_has("0 applied, 1 pending");
}

#[test]
fn files_that_control_the_transaction_are_refused_before_anything_runs() {
    let t = TestEnv::new();
    t.migration("001_fine.sql", "CREATE TABLE fine (id int);")
        .migration("002_wrapped.sql", "-- golang-migrate style\nBEGIN;\nCREATE TABLE wrapped (id int);\nCOMMIT;\n")
        .migration(
            "003_savepoints.sql",
            "SAVEPOINT s;\nCREATE TABLE sp (id int);\nROLLBACK TO SAVEPOINT s;\nDO $$ BEGIN PERFORM 1; END $$;\n",
        )
        .migration("004_rollback.sql", "CREATE TABLE r (id int);\nrollback;");
    for args in [&["up", "--yes"][..], &["up", "--dry-run"][..]] {
        t.migrate()
            .args(args)
            .run()
            .code(2)
            .stderr_has("2 migration files cannot be used:")
            .stderr_has("migrations/002_wrapped.sql: line 2: BEGIN would take over the transaction")
            .stderr_has("migrations/004_rollback.sql: line 2: ROLLBACK would take over");
    }
    assert!(!t.table_exists("public.schema_migrations"));
    assert!(!t.table_exists("public.fine"));

    // Savepoints and blocks are fine; once the others are fixed, all apply.
    t.migration("002_wrapped.sql", "CREATE TABLE wrapped (id int);")
        .migration("004_rollback.sql", "CREATE TABLE r (id int);");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("done: 4 migrations applied");
    assert!(!t.table_exists("public.sp"), "rolled back to the savepoint");
}

/// A transaction statement the lexer cannot see is still caught at run
/// time: the record is written only in the transaction opened for it.
/// Here the database reads strings the pre-9.1 way
/// (standard_conforming_strings off), which the lexer does not follow.
#[test]
fn a_file_that_commits_behind_the_lexers_back_is_not_recorded_as_applied() {
    let t = TestEnv::new();
    t.client()
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET standard_conforming_strings = off",
            t.db_name
        ))
        .unwrap();
    t.migration(
        "001_sneaky.sql",
        "CREATE TABLE sneaky (note text);\n\
         INSERT INTO sneaky VALUES ('it\\'s');\nCOMMIT;\nCREATE TABLE after_commit (id int);\n",
    );
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(1)
        .stderr_has("migration 001_sneaky (migrations/001_sneaky.sql) failed: the file ended its transaction itself");
    assert_eq!(t.state(), ["001:failed"]);
    assert_eq!(t.journal(), ["failed:001"]);
    // Its statements committed on their own, without a record: the row says
    // failed and its message says what to check.
    assert!(t.table_exists("public.sneaky"));
    assert!(t.table_exists("public.after_commit"));
}

/// The same after a file that went well, when BEGIN goes in front of the
/// file and the record is checked in the query after it: a COMMIT the
/// lexer cannot see, and one followed by a BEGIN and more work in a
/// transaction of the file's own, are both refused their record.
#[test]
fn a_second_file_that_ends_its_transaction_is_not_recorded_either() {
    for (tail, left) in [
        (
            "COMMIT;\nCREATE TABLE after_commit (id int);\n",
            "public.after_commit",
        ),
        ("COMMIT;\nBEGIN;\nCREATE TABLE in_its_own (id int);\n", ""),
        // A role the file takes after its COMMIT does not write the failure.
        (
            "COMMIT;\nSET SESSION AUTHORIZATION ROLE_NAME;\n",
            "public.sneaky",
        ),
    ] {
        let t = TestEnv::new();
        let role = format!("{}_nobody", t.db_name);
        t.client()
            .batch_execute(&format!("CREATE ROLE \"{role}\" NOLOGIN"))
            .unwrap();
        let tail = tail.replace("ROLE_NAME", &format!("\"{role}\""));
        t.client()
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" SET standard_conforming_strings = off",
                t.db_name
            ))
            .unwrap();
        t.migration("001_first.sql", "CREATE TABLE first (id int);")
            .migration(
                "002_sneaky.sql",
                &format!("CREATE TABLE sneaky (note text);\nINSERT INTO sneaky VALUES ('it\\'s');\n{tail}"),
            );
        let out = t.migrate().args(["up", "--yes"]).run();
        out.code(1).stderr_has(
            "migration 002_sneaky (migrations/002_sneaky.sql) failed: the file ended its transaction itself",
        );
        assert!(
            !out.stderr.contains("could not be recorded"),
            "{}",
            out.stderr
        );
        assert_eq!(t.state(), ["001:applied", "002:failed"], "{tail}");
        assert_eq!(t.journal(), ["applied:001", "failed:002"], "{tail}");
        assert!(t.table_exists("public.sneaky"), "{tail}");
        if left.is_empty() {
            // What ran in the file's own transaction went with the record.
            assert!(!t.table_exists("public.in_its_own"));
        } else {
            assert!(t.table_exists(left));
        }
        t.client()
            .batch_execute(&format!("DROP ROLE \"{role}\""))
            .unwrap();
    }
}

/// A file that deallocates prepared statements (the record's among them)
/// never gets a record without its work, nor makes a later file fail: one
/// that does it where the lexer sees is applied and recorded once; one
/// that does it unseen (the first of a run, or later) is rolled back, not
/// run again, and applied by the rerun.
#[test]
fn a_file_that_deallocates_prepared_statements_is_applied_once_or_rolled_back() {
    let t = TestEnv::new();
    t.migration(
        "001_a.sql",
        "CREATE TABLE a (id int);\n\
         CREATE FUNCTION forget() RETURNS void LANGUAGE plpgsql \
         AS $$ BEGIN EXECUTE 'DEALL' || 'OCATE ALL'; END $$;\n\
         SELECT forget();",
    )
    .migration(
        "002_b.sql",
        "PREPARE ins AS INSERT INTO a VALUES (2);\nEXECUTE ins;",
    )
    .migration("003_c.sql", "CREATE TABLE c (id int);\nDEALLOCATE ALL;")
    .migration("004_d.sql", "CREATE TABLE d (id int);")
    .migration(
        "005_e.sql",
        "CREATE TABLE e (id int);\nINSERT INTO a VALUES (5);\nSELECT forget();",
    )
    .migration("006_f.sql", "INSERT INTO a VALUES (6);");
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(1).stderr_has(
        "migration 001_a (migrations/001_a.sql) failed: the prepared statement that records the file was gone",
    );
    assert!(
        out.stderr
            .contains("run up again: a file that failed before is recorded without it"),
        "{}",
        out.stderr
    );
    assert_eq!(t.state(), ["001:failed"]);
    assert!(!t.table_exists("public.a"));
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(1).stderr_has(
        "migration 005_e (migrations/005_e.sql) failed: the prepared statement that records the file was gone",
    );
    assert_eq!(
        t.state(),
        [
            "001:applied",
            "002:applied",
            "003:applied",
            "004:applied",
            "005:failed"
        ]
    );
    assert!(!t.table_exists("public.e"));
    assert_eq!(
        t.rows("SELECT id::text FROM a ORDER BY id"),
        [[Some("2".to_owned())]]
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("done: 2 migrations applied");
    assert_eq!(
        t.state(),
        [
            "001:applied",
            "002:applied",
            "003:applied",
            "004:applied",
            "005:applied",
            "006:applied"
        ]
    );
    assert_eq!(
        t.rows("SELECT id::text FROM a ORDER BY id"),
        [
            [Some("2".to_owned())],
            [Some("5".to_owned())],
            [Some("6".to_owned())]
        ]
    );
    assert!(t.table_exists("public.e"));
}

/// A division by zero at COMMIT (a deferred constraint trigger the file
/// made) is the record's failure, not the guard's: the file is rolled
/// back and said to be.
#[test]
fn a_failure_at_commit_is_not_taken_for_a_lost_lock_or_transaction() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration(
            "002_b.sql",
            "CREATE TABLE b (id int);\n\
             CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql \
             AS $$ BEGIN PERFORM 1 / 0; RETURN NULL; END $$;\n\
             CREATE CONSTRAINT TRIGGER later AFTER INSERT ON b \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION boom();\n\
             INSERT INTO b VALUES (1);",
        );
    let out = t.migrate().args(["up", "--yes"]).run();
    out.code(1)
        .stderr_has("ran, but recording it failed, so it was rolled back")
        .stderr_has("division by zero");
    assert!(
        !out.stderr.contains("ended its transaction"),
        "{}",
        out.stderr
    );
    assert!(!t.table_exists("public.b"));
    assert_eq!(t.state()[0], "001:applied");
}

#[test]
fn a_files_lexer_settings_do_not_change_how_the_next_is_read() {
    // The server reads a whole query text with the session's settings of
    // the moment: a file's session-level standard_conforming_strings or
    // client_encoding must be gone before the next file is sent, in a
    // transactional file (it commits) and a statement-by-statement one.
    let t = TestEnv::new();
    t.migration(
        "001_old_dump.sql",
        "SET standard_conforming_strings = off;\nSET client_encoding = 'LATIN1';\n\
         CREATE TABLE paths (n int, p text);",
    )
    .migration(
        "002_path.sql",
        "INSERT INTO paths VALUES (2, 'C:\\new\\tab é');\n\
         SET standard_conforming_strings = off;\nSET client_encoding = 'LATIN1';",
    )
    .migration(
        "003_path.sql",
        r"INSERT INTO paths VALUES (3, 'C:\new\tab é');",
    )
    .migration(
        "004_notx.sql",
        "-- migrate:no-transaction\nSET standard_conforming_strings = off;\n\
         SET client_encoding = 'LATIN1';\nSELECT 1;",
    )
    .migration(
        "005_path.sql",
        r"INSERT INTO paths VALUES (4, 'C:\new\tab é');",
    );
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("done: 5 migrations applied");
    assert_eq!(
        t.rows("SELECT n::text, p FROM paths ORDER BY n"),
        [
            [Some("2".to_owned()), Some(r"C:\new\tab é".to_owned())],
            [Some("3".to_owned()), Some(r"C:\new\tab é".to_owned())],
            [Some("4".to_owned()), Some(r"C:\new\tab é".to_owned())],
        ]
    );
}

#[test]
fn an_error_is_placed_in_its_file_whatever_the_schema_is_called() {
    let t = TestEnv::new();
    t.migration("001_ok.sql", "CREATE TABLE kept (id int);")
        .migration("002_bad.sql", "SELECT 'é';\nSELECT * FROM nope_ü;");
    t.migrate()
        .args(["up", "--yes", "--schema", "tenänt \"ü\""])
        .run()
        .code(1)
        .stderr_has("migration 002_bad failed at migrations/002_bad.sql:2:15: ERROR: relation \"nope_ü\" does not exist");
    assert_eq!(
        t.rows(r#"SELECT version, status FROM "tenänt ""ü"""."schema_migrations" ORDER BY 1"#),
        [
            [Some("001".to_owned()), Some("applied".to_owned())],
            [Some("002".to_owned()), Some("failed".to_owned())]
        ]
    );
}

#[test]
fn each_migration_starts_from_a_clean_session() {
    let t = TestEnv::new();
    let role = format!("{}_owner", t.db_name);
    t.migration(
        "001_settings.sql",
        &format!(
            "SET search_path TO public;\nCREATE TABLE in_public (id int);\n\
             CREATE ROLE \"{role}\" NOLOGIN;\nSET ROLE \"{role}\";\n\
             -- Last, so that it bounds nothing of this file.\n\
             SET statement_timeout = '1ms';\n"
        ),
    )
    .migration(
        "002_next.sql",
        "CREATE TABLE in_app (id int);\nSELECT pg_sleep(0.05);",
    );
    t.migrate()
        .args(["up", "--yes", "--schema", "app"])
        .run()
        .code(0)
        .stdout_has("done: 2 migrations applied");
    assert!(
        t.table_exists("public.in_public"),
        "a file's own search_path holds within it"
    );
    assert!(
        t.table_exists("app.in_app"),
        "the next file runs in the schema again"
    );
    assert_eq!(
        t.value("SELECT tableowner FROM pg_tables WHERE tablename = 'in_app'"),
        Some("postgres".into()),
        "the next file runs as the connection's role again"
    );
    assert_eq!(
        t.state_in("app.schema_migrations"),
        ["001:applied", "002:applied"]
    );
    // Roles belong to the cluster, which may be the developer's own.
    t.client()
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .unwrap();
}

#[test]
fn version_zero_crlf_files_and_byte_order_marks() {
    let t = TestEnv::new();
    t.migration(
        "000_zero.sql",
        "CREATE TABLE zero (id int);\r\nINSERT INTO zero VALUES (0);\r\n",
    );
    std::fs::write(
        t.migrations().join("001_bom.sql"),
        b"\xEF\xBB\xBFCREATE TABLE bom (id int);\n",
    )
    .unwrap();
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("done: 2 migrations applied");
    assert!(t.table_exists("public.bom"));
    // Converting an applied file from CRLF to LF is not an edit.
    t.migration(
        "000_zero.sql",
        "CREATE TABLE zero (id int);\nINSERT INTO zero VALUES (0);\n",
    );
    t.migrate()
        .arg("status")
        .run()
        .code(0)
        .stdout_has("2 migrations: 2 applied, 0 pending");
}

#[test]
fn a_foreign_state_table_is_refused() {
    let t = TestEnv::new();
    // golang-migrate's table has the same default name.
    t.client()
        .batch_execute("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
        .unwrap();
    t.migration("001_a.sql", "SELECT 1;");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(2)
        .stderr_has("public.schema_migrations exists but is not migrate's state table")
        .stderr_has("--table");
}

#[test]
fn the_servers_hint_is_kept_with_the_failure() {
    let t = TestEnv::new();
    t.migration("001_hint.sql", "SELECT lower(42);");
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(1)
        .stderr_has("function lower(integer) does not exist")
        .stderr_has("HINT: No function matches the given name and argument types.");
    let error = t
        .value("SELECT error FROM schema_migrations WHERE version = '001'")
        .unwrap();
    assert!(error.contains("HINT: No function matches"), "{error}");
}
