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

/// A NUL byte used to reach the server, which refused the whole file with a
/// message that named neither the file nor the line.
#[test]
fn a_nul_byte_in_a_migration_is_named_with_its_line_before_connecting() {
    let t = TestEnv::new();
    t.migration("001_ok.sql", "SELECT 1;");
    std::fs::write(
        t.migrations().join("002_nul.sql"),
        b"SELECT 1;\n\nSELECT 'a\0b';\n",
    )
    .unwrap();
    for command in ["up", "status", "validate"] {
        t.migrate_bare()
            .args([command, "--dsn", UNREACHABLE])
            .run()
            .code(2)
            .stderr_has("migrations/002_nul.sql: contains a NUL byte (line 3, byte 20)");
    }
}

/// Down files are read when `down` needs them: a NUL byte there stops the
/// rollback before it runs, and the migration stays applied.
#[test]
fn a_nul_byte_in_a_down_file_is_named_with_its_line() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("001_a.down.sql", "DROP TABLE a;");
    t.migrate().args(["up", "--yes"]).run().code(0);
    std::fs::write(t.migrations().join("001_a.down.sql"), b"DROP TABLE a;\0\n").unwrap();
    t.migrate()
        .args(["down", "--yes"])
        .run()
        .code(2)
        .stderr_has("migrations/001_a.down.sql: contains a NUL byte (line 1, byte 13)");
    assert_eq!(t.state(), ["001:applied"]);
    assert!(t.table_exists("public.a"));
}

/// Bootstrap scripts are read before `up` connects, and checked alike.
#[test]
fn a_nul_byte_in_a_bootstrap_script_is_named_with_its_line_before_connecting() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "SELECT 1;");
    std::fs::create_dir(t.migrations().join("bootstrap")).unwrap();
    std::fs::write(
        t.migrations().join("bootstrap/001_seed.sql"),
        b"-- seed\nSELECT '\0';\n",
    )
    .unwrap();
    t.migrate_bare()
        .args(["up", "--dsn", UNREACHABLE])
        .run()
        .code(2)
        .stderr_has("migrations/bootstrap/001_seed.sql: contains a NUL byte (line 2, byte 16)");
}

/// A symlink named like a migration whose target is missing, a folder or a
/// loop was skipped, and `validate` said files and database agree.
#[cfg(unix)]
#[test]
fn a_symlink_named_like_a_migration_that_is_not_a_file_is_named_before_connecting() {
    use std::os::unix::fs::symlink;
    let t = TestEnv::new();
    t.migration("001_ok.sql", "SELECT 1;");
    let dir = t.migrations();
    symlink("nowhere", dir.join("009_x.sql")).unwrap();
    std::fs::create_dir(t.dir().join("a_folder")).unwrap();
    symlink("../a_folder", dir.join("010_folder.sql")).unwrap();
    symlink("011_loop.sql", dir.join("011_loop.sql")).unwrap();
    // Links that are not named like migrations stay ignored.
    symlink("nowhere", dir.join("notes.txt")).unwrap();
    symlink("../a_folder", dir.join("shared")).unwrap();
    for command in ["up", "status", "validate"] {
        let out = t.migrate_bare().args([command, "--dsn", UNREACHABLE]).run();
        out.code(2)
            .stderr_has("3 migration files cannot be used:")
            .stderr_has("migrations/009_x.sql: a symbolic link to `nowhere`, which does not exist")
            .stderr_has("migrations/010_folder.sql: a symbolic link to `../a_folder`, which is a folder, not a file")
            .stderr_has("migrations/011_loop.sql: a symbolic link to `011_loop.sql`, which cannot be followed:");
        assert!(!out.stderr.contains("notes.txt"), "{}", out.stderr);
        assert!(!out.stderr.contains("shared"), "{}", out.stderr);
    }
}

/// A symlink to a regular file is a migration like any other, also in a
/// chain of links.
#[cfg(unix)]
#[test]
fn a_symlink_to_a_migration_file_is_applied() {
    use std::os::unix::fs::symlink;
    let t = TestEnv::new();
    t.file("shared/001_a.sql", "CREATE TABLE a (id int);")
        .file("shared/002_b.sql", "CREATE TABLE b (id int);");
    symlink("../shared/001_a.sql", t.migrations().join("001_a.sql")).unwrap();
    symlink("../shared/002_b.sql", t.dir().join("shared/link_b.sql")).unwrap();
    symlink("../shared/link_b.sql", t.migrations().join("002_b.sql")).unwrap();
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(0)
        .stdout_has("applied 001_a")
        .stdout_has("applied 002_b");
    assert!(t.table_exists("public.a") && t.table_exists("public.b"));
    t.migrate()
        .arg("validate")
        .run()
        .code(0)
        .stdout_has("files and database agree: 2 applied, 0 pending");
}

/// A dangling link in the bootstrap folder was skipped without a word.
#[test]
fn a_dangling_bootstrap_script_link_is_a_file_problem() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "SELECT 1;");
    std::fs::create_dir_all(t.migrations().join("bootstrap")).unwrap();
    std::os::unix::fs::symlink("/nowhere", t.migrations().join("bootstrap/002_y.sql")).unwrap();
    t.migrate()
        .args(["up", "--yes"])
        .run()
        .code(2)
        .stderr_has("002_y.sql: cannot be read");
}
