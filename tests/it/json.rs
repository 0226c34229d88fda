//! `--json`: one document on stdout, messages on stderr, the documented shape.

use crate::common::{Outcome, TestEnv};
use serde_json::Value;

/// Parses stdout as one document, and checks that the README documents
/// every field of it.
fn parse(out: &Outcome) -> Value {
    let doc = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("stdout is not one JSON document ({err}):\n{}", out.stdout));
    assert_documented(&doc);
    doc
}

/// The README's "JSON output" section.
fn readme_json_section() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## JSON output").nth(1).expect("the section");
    section.split("\n## ").next().unwrap().to_owned()
}

/// Each top-level field must be in the table row of its command (or, for
/// an error, of its kind); the fields of nested objects somewhere in the
/// section.
fn assert_documented(doc: &Value) {
    let section = readme_json_section();
    let row_for = |first_cell: &str| -> String {
        section
            .lines()
            .find(|l| {
                l.split('|')
                    .nth(1)
                    .is_some_and(|cell| cell.contains(&format!("`{first_cell}`")))
            })
            .unwrap_or_else(|| panic!("no README row for `{first_cell}`"))
            .to_owned()
    };
    let (row, fields) = if doc["ok"] == true {
        (row_for(doc["command"].as_str().unwrap()), doc)
    } else {
        // A failed run's document: the error, and what committed before.
        let failed_run = section
            .lines()
            .find(|l| l.starts_with("A failed `up`"))
            .expect("the README's sentence on failed runs");
        for key in doc.as_object().unwrap().keys() {
            assert!(
                ["json_version", "command", "ok", "error"].contains(&key.as_str())
                    || failed_run.contains(&format!("`{key}`")),
                "`{key}` of a failed run is not in the README: {failed_run}"
            );
        }
        (
            row_for(doc["error"]["kind"].as_str().unwrap()),
            &doc["error"],
        )
    };
    let common = [
        "json_version",
        "command",
        "ok",
        "exit_code",
        "kind",
        "message",
    ];
    for (key, value) in fields.as_object().unwrap() {
        if common.contains(&key.as_str()) {
            continue;
        }
        assert!(
            row.contains(key.as_str()),
            "`{key}` is missing from the README row:\n{row}"
        );
        let nested = match value {
            Value::Array(items) => items.first(),
            Value::Object(_) => Some(value),
            _ => None,
        };
        for inner in nested
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|o| o.keys())
        {
            assert!(
                section.contains(inner.as_str()),
                "`{key}.{inner}` is not in the README's JSON section"
            );
        }
    }
}

fn rfc3339(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() >= 20
            && s.ends_with('Z')
            && s.as_bytes()[10] == b'T'
            && s[..4].parse::<u16>().is_ok()
    })
}

#[test]
fn up_status_history_validate_down_and_lock_as_json() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_b.sql", "CREATE TABLE b (id int);")
        .migration("002_b.down.sql", "DROP TABLE b;");

    let out = t.migrate().args(["up", "--yes", "--json"]).run();
    out.code(0);
    assert!(
        out.stderr.contains("applied 001_a"),
        "messages go to stderr: {}",
        out.stderr
    );
    let up = parse(&out);
    assert_eq!(up["json_version"], 1);
    assert_eq!(up["command"], "up");
    assert_eq!(up["ok"], true);
    assert_eq!(up["outcome"], "applied");
    assert_eq!(
        up["applied"][0]["version"], "001",
        "versions are strings as written"
    );
    assert!(up["applied"][0]["duration_us"].is_u64());
    assert!(up["lock_waited_us"].is_u64());

    let status = parse(&t.migrate().args(["status", "--json"]).run());
    assert_eq!(status["migrations"].as_array().unwrap().len(), 2);
    assert_eq!(status["migrations"][1]["status"], "applied");
    assert!(
        rfc3339(&status["migrations"][0]["applied_at"]),
        "{}",
        status["migrations"][0]["applied_at"]
    );
    assert_eq!(status["totals"]["applied"], 2);

    let history = parse(&t.migrate().args(["history", "--json"]).run());
    assert_eq!(history["total"], 2);
    assert_eq!(history["entries"][0]["event"], "applied");
    assert!(rfc3339(&history["entries"][0]["at"]));

    let validate = parse(&t.migrate().args(["validate", "--json"]).run());
    assert_eq!(validate["agree"], true);

    let lock = parse(&t.migrate().args(["lock", "--json"]).run());
    assert_eq!(lock["held"], false);
    assert_eq!(lock["key"], t.default_lock_key().to_string());

    let out = t
        .migrate()
        .args(["down", "--yes", "--steps", "2", "--json"])
        .run();
    out.code(2);
    let down = parse(&out);
    assert_eq!(down["ok"], false);
    assert_eq!(down["error"]["kind"], "files");
    assert_eq!(down["error"]["exit_code"], 2);

    let down = parse(
        &t.migrate()
            .args(["down", "--yes", "--json", "--to", "1"])
            .run(),
    );
    assert_eq!(down["outcome"], "rolled_back");
    assert_eq!(down["rolled_back"][0]["version"], "002");
}

#[test]
fn errors_are_documents_too() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration(
            "002_bad.sql",
            "CREATE TABLE b (id int);\nSELECT * FROM nowhere;",
        );
    let out = t.migrate().args(["up", "--yes", "--json"]).run();
    out.code(1);
    let doc = parse(&out);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["kind"], "migration_failed");
    assert_eq!(doc["error"]["migration"], "002_bad");
    assert_eq!(doc["error"]["sqlstate"], "42P01");
    assert_eq!(doc["error"]["line"], 2);
    assert_eq!(doc["error"]["column"], 15);
    assert_eq!(doc["applied"][0]["version"], "001", "what committed before");
    assert_eq!(doc["applied"].as_array().unwrap().len(), 1);
    assert!(out.stderr.contains("error: migration 002_bad failed"));

    t.migration("001_a.sql", "CREATE TABLE a (id bigint);");
    let out = t.migrate().args(["validate", "--json"]).run();
    out.code(3);
    let doc = parse(&out);
    assert_eq!(doc["error"]["kind"], "drift");
    assert_eq!(doc["error"]["drift"][0]["version"], "001");
    assert_eq!(doc["error"]["drift"][0]["drift"], "changed");

    let out = t
        .migrate_bare()
        .args(["status", "--json", "--dsn", "host=127.0.0.1 port=1 user=x"])
        .run();
    out.code(5);
    assert_eq!(parse(&out)["error"]["kind"], "connect");
    let out = t
        .migrate()
        .args(["status", "--json", "--lock-wait", "soon"])
        .run();
    out.code(2);
    assert_eq!(parse(&out)["error"]["kind"], "config");
    let out = t.migrate().args(["status", "--json", "--bogus"]).run();
    out.code(2).stderr_has("unexpected argument '--bogus'");
    assert_eq!(parse(&out)["error"]["kind"], "usage");
}

#[test]
fn a_held_lock_wait_new_and_repair_as_json() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);");

    let holder = t.hold_lock("json-holder", t.default_lock_key());
    let lock = parse(t.migrate().args(["lock", "--json"]).run().code(0));
    assert_eq!(lock["held"], true);
    assert_eq!(lock["holder"]["application"], "json-holder");
    assert!(lock["holder"]["pid"].is_i64());
    assert!(rfc3339(&lock["holder"]["connected_since"]));
    let out = t
        .migrate()
        .args(["up", "--yes", "--json", "--lock-wait", "200ms"])
        .run();
    out.code(4);
    let doc = parse(&out);
    assert_eq!(doc["error"]["kind"], "lock_timeout");
    assert_eq!(doc["error"]["holder"]["application"], "json-holder");
    drop(holder);

    let out = t
        .migrate()
        .args(["wait", "--json", "--timeout", "300ms"])
        .run();
    out.code(1);
    let doc = parse(&out);
    assert_eq!(doc["command"], "wait");
    assert_eq!(doc["error"]["kind"], "wait_timeout");
    assert_eq!(doc["error"]["waiting"][0], "001_a (PENDING)");

    t.migrate().args(["up", "--yes", "-q"]).run().code(0);
    let wait = parse(t.migrate().args(["wait", "--json"]).run().code(0));
    assert_eq!(wait["command"], "wait");
    assert_eq!(wait["totals"]["applied"], 1);
    assert!(wait["waited_us"].is_u64());

    let new = parse(t.migrate().args(["new", "add_b", "--json"]).run().code(0));
    assert_eq!(new["command"], "new");
    assert!(new["up"].as_str().unwrap().ends_with("002_add_b.sql"));
    assert!(
        new["down"]
            .as_str()
            .unwrap()
            .ends_with("002_add_b.down.sql")
    );

    t.migration("001_a.sql", "CREATE TABLE a (id bigint);");
    let repair = parse(
        t.migrate()
            .args(["repair", "--yes", "--json"])
            .run()
            .code(0),
    );
    assert_eq!(repair["command"], "repair");
    assert_eq!(repair["repaired"][0]["version"], "001");
    assert_eq!(repair["repaired"][0]["drift"], "changed");
}
