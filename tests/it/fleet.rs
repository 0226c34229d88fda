//! Fleets: `--each-schema`, `--targets`, `--targets-query`, `--parallel`,
//! `--canary`, `--keep-going`, `--shard`, the summary, the exit codes.

use crate::common::{TestEnv, tally};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// `count` schemas `tenant_000`...; and a schema that the pattern leaves
/// out.
fn tenants(t: &TestEnv, count: usize) {
    let mut sql = String::new();
    for n in 0..count {
        sql.push_str(&format!("CREATE SCHEMA tenant_{n:03};"));
    }
    sql.push_str("CREATE SCHEMA other;");
    t.client().batch_execute(&sql).unwrap();
}

fn three(t: &TestEnv) {
    t.migration("001_users.sql", "CREATE TABLE users (id int PRIMARY KEY);")
        .migration("002_email.sql", "ALTER TABLE users ADD COLUMN email text;")
        .migration(
            "003_seed.sql",
            "INSERT INTO users VALUES (1, 'a@example.com');",
        );
}

/// Applied versions per schema, from every state table the pattern's
/// schemas have, as `schema:version` → how many rows.
fn applied(t: &TestEnv, pattern: &str) -> Vec<(String, String)> {
    let schemas: Vec<String> = t
        .rows(&format!(
            "SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid \
              WHERE c.relname = 'schema_migrations' AND n.nspname LIKE '{pattern}' \
              ORDER BY 1"
        ))
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let mut all = Vec::new();
    for schema in schemas {
        for row in t.rows(&format!(
            "SELECT version FROM \"{schema}\".schema_migrations WHERE status = 'applied' \
              ORDER BY version"
        )) {
            all.push((schema.clone(), row[0].clone().unwrap()));
        }
    }
    all
}

/// How many times the journals of the pattern's schemas record each
/// `schema:version` as applied.
fn journalled(t: &TestEnv, pattern: &str) -> std::collections::BTreeMap<String, usize> {
    let schemas: Vec<String> = t
        .rows(&format!(
            "SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid \
              WHERE c.relname = 'schema_migrations_log' AND n.nspname LIKE '{pattern}'"
        ))
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let mut seen = Vec::new();
    for schema in schemas {
        for row in t.rows(&format!(
            "SELECT version FROM \"{schema}\".schema_migrations_log WHERE event = 'applied'"
        )) {
            seen.push(format!("{schema}:{}", row[0].clone().unwrap()));
        }
    }
    tally(seen)
}

fn json(out: &crate::common::Outcome) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn names_with(doc: &serde_json::Value, outcome: &str) -> Vec<String> {
    doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == outcome)
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Counts the sessions of `migrate` (any application_name it uses) in the
/// test's database until `done`; returns the most seen at once.
fn count_sessions(t: &TestEnv, done: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let most = Arc::new(AtomicUsize::new(0));
    {
        let (most, dsn, db) = (most.clone(), t.dsn.clone(), t.db_name.clone());
        std::thread::spawn(move || {
            let mut client = crate::common::connect(&dsn);
            while !done.load(Ordering::SeqCst) {
                let row = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                           AND application_name LIKE 'migrate%'",
                        &[&db],
                    )
                    .unwrap();
                let now: i64 = row.get(0);
                most.fetch_max(now as usize, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
            most.load(Ordering::SeqCst)
        })
    }
}

#[test]
fn each_schema_migrates_every_tenant_once_in_its_own_schema_within_n_plus_one_connections() {
    let t = TestEnv::new();
    tenants(&t, 200);
    three(&t);
    let done = Arc::new(AtomicBool::new(false));
    let watcher = count_sessions(&t, done.clone());
    let out = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%", "--parallel", "3"])
        .run();
    done.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    out.code(0)
        .stdout_has("200 targets, 3 at a time")
        .stdout_has("tenant_000: applied 3 (none → 003)")
        .stdout_has("200 targets in ")
        .stdout_has(": 200 applied");
    assert!(
        (1..=4).contains(&seen),
        "{seen} sessions of migrate at once"
    );
    let rows = applied(&t, "%");
    assert_eq!(rows.len(), 600, "{rows:?}");
    assert!(rows.iter().all(|(schema, _)| schema.starts_with("tenant_")));
    // Each tenant's table is in its own schema; nothing went to public or
    // to the schema the pattern leaves out.
    assert_eq!(
        t.value("SELECT count(*) FROM pg_tables WHERE tablename = 'users'"),
        Some("200".into())
    );
    assert_eq!(
        t.value("SELECT count(*) FROM tenant_123.users"),
        Some("1".into())
    );
    assert!(!t.table_exists("public.users"));
    assert!(!t.table_exists("other.schema_migrations"));
    assert!(!t.table_exists("public.schema_migrations"));
    assert_eq!(t.advisory_locks(), 0);

    // A rerun: every target up to date, nothing journalled twice.
    t.migrate()
        .args(["up", "--each-schema", "tenant_%", "--json"])
        .run()
        .code(0);
    let journal = journalled(&t, "tenant_%");
    assert_eq!(journal.len(), 600);
    assert!(journal.values().all(|n| *n == 1), "{journal:?}");
    let out = t
        .migrate()
        .args(["status", "--each-schema", "tenant_1%", "--json"])
        .run();
    out.code(0);
    let doc = json(&out);
    assert_eq!(doc["fleet"]["targets"], 100);
    assert_eq!(doc["totals"]["checked"], 100);
    let first = &doc["targets"][0];
    assert_eq!(first["name"], "tenant_100");
    assert_eq!(first["schema"], "tenant_100");
    assert_eq!(first["version_after"], "003");
    assert_eq!(first["detail"]["totals"]["applied"], 3);
}

#[test]
fn a_failure_starts_no_new_target_and_keep_going_goes_on() {
    let t = TestEnv::new();
    tenants(&t, 6);
    three(&t);
    // tenant_002 already has the table the first migration creates.
    t.client()
        .batch_execute("CREATE TABLE tenant_002.users (id int)")
        .unwrap();
    let out = t
        .migrate()
        .args([
            "up",
            "--each-schema",
            "tenant_%",
            "--parallel",
            "1",
            "--json",
        ])
        .run();
    out.code(1);
    let doc = json(&out);
    assert_eq!(names_with(&doc, "applied"), ["tenant_000", "tenant_001"]);
    assert_eq!(names_with(&doc, "failed"), ["tenant_002"]);
    assert_eq!(
        names_with(&doc, "not_started"),
        ["tenant_003", "tenant_004", "tenant_005"]
    );
    assert_eq!(doc["exit_code"], 1);
    assert!(
        doc["stopped"]
            .as_str()
            .unwrap()
            .starts_with("tenant_002 failed")
    );
    let failed = &doc["targets"][2];
    assert_eq!(failed["error"]["kind"], "migration_failed");
    assert_eq!(failed["version_before"], serde_json::Value::Null);
    assert!(!t.table_exists("tenant_003.schema_migrations"));

    // The summary table says the same to a person.
    let out = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%", "--parallel", "1"])
        .run();
    out.code(1)
        .stdout_has("tenant_002 failed: the targets not yet started were left")
        .stdout_has("not started")
        .stderr_has("1 of 6 targets failed (exit 1, the most severe)");

    // --keep-going: the others are migrated; the rerun finds the first two
    // done and re-applies nothing.
    let out = t
        .migrate()
        .args([
            "up",
            "--each-schema",
            "tenant_%",
            "--parallel",
            "2",
            "--keep-going",
            "--json",
        ])
        .run();
    out.code(1);
    let doc = json(&out);
    assert_eq!(names_with(&doc, "up_to_date"), ["tenant_000", "tenant_001"]);
    assert_eq!(names_with(&doc, "failed"), ["tenant_002"]);
    assert_eq!(
        names_with(&doc, "applied"),
        ["tenant_003", "tenant_004", "tenant_005"]
    );
    assert_eq!(doc["stopped"], serde_json::Value::Null);
    let journal = journalled(&t, "tenant_%");
    assert_eq!(journal.len(), 15, "{journal:?}");
    assert!(journal.values().all(|n| *n == 1), "{journal:?}");
}

#[test]
fn a_failing_canary_stops_the_fleet_even_with_keep_going() {
    let t = TestEnv::new();
    tenants(&t, 8);
    three(&t);
    t.client()
        .batch_execute("CREATE TABLE tenant_001.users (id int)")
        .unwrap();
    let out = t
        .migrate()
        .args([
            "up",
            "--each-schema",
            "tenant_%",
            "--canary",
            "2",
            "--keep-going",
            "--json",
        ])
        .run();
    out.code(1);
    let doc = json(&out);
    assert_eq!(names_with(&doc, "applied"), ["tenant_000"]);
    assert_eq!(names_with(&doc, "failed"), ["tenant_001"]);
    assert_eq!(names_with(&doc, "not_started").len(), 6);
    assert!(
        doc["stopped"]
            .as_str()
            .unwrap()
            .contains("a canary failed (tenant_001)")
    );
    // Canaries that pass let the rest go.
    t.client()
        .batch_execute("DROP TABLE tenant_001.users")
        .unwrap();
    let out = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%", "--canary", "3"])
        .run();
    out.code(0)
        .stdout_has("the first 3 alone first")
        .stdout_has(": 7 applied, 1 up to date");
}

#[test]
fn a_fleet_killed_halfway_is_finished_by_a_rerun_that_reapplies_nothing() {
    let t = TestEnv::new();
    tenants(&t, 40);
    t.migration(
        "001_a.sql",
        "CREATE TABLE a (id int); SELECT pg_sleep(0.03);",
    )
    .migration(
        "002_b.sql",
        "CREATE TABLE b (id int); SELECT pg_sleep(0.03);",
    );
    let mut child = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%", "--parallel", "2"])
        .spawn();
    crate::common::wait_until(Duration::from_secs(30), "some tenants migrated", || {
        applied(&t, "tenant_%").len() >= 20
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let before = applied(&t, "tenant_%").len();
    assert!(before < 80, "the run ended before it was killed ({before})");
    crate::common::wait_until(Duration::from_secs(10), "the killed sessions gone", || {
        t.migrate_sessions() == 0
    });
    let out = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%", "--json"])
        .run();
    out.code(0);
    let doc = json(&out);
    assert!(!names_with(&doc, "up_to_date").is_empty());
    assert_eq!(applied(&t, "tenant_%").len(), 80);
    let journal = journalled(&t, "tenant_%");
    assert_eq!(journal.len(), 80);
    assert!(journal.values().all(|n| *n == 1), "{journal:?}");
}

#[test]
fn shards_run_as_separate_processes_migrate_each_target_exactly_once() {
    let t = TestEnv::new();
    tenants(&t, 60);
    three(&t);
    let shards = 4;
    let children: Vec<_> = (0..shards)
        .map(|i| {
            t.migrate()
                .args(["up", "--each-schema", "tenant_%", "--shards", "4", "--json"])
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .spawn()
        })
        .collect();
    let mut taken = BTreeSet::new();
    let mut total = 0;
    for child in children {
        let out = crate::common::Outcome::from_output(child.wait_with_output().unwrap());
        out.code(0);
        let doc = json(&out);
        assert_eq!(doc["fleet"]["found"], 60);
        let names = names_with(&doc, "applied");
        assert!(!names.is_empty(), "a shard with nothing: {}", out.stdout);
        total += names.len();
        taken.extend(names);
    }
    assert_eq!(total, 60, "a target was in two shards");
    assert_eq!(taken.len(), 60);
    let journal = journalled(&t, "tenant_%");
    assert_eq!(journal.len(), 180);
    assert!(journal.values().all(|n| *n == 1), "{journal:?}");
    // --shard I/N says the same as the index.
    let out = t
        .migrate()
        .args([
            "status",
            "--each-schema",
            "tenant_%",
            "--shard",
            "2/4",
            "--json",
        ])
        .run();
    out.code(0);
    assert!(json(&out)["fleet"]["shard"] == "2/4");
}

#[test]
fn targets_from_a_file_and_an_unreachable_one_fails_only_its_own_row() {
    let t = TestEnv::new();
    tenants(&t, 2);
    three(&t);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    t.file(
        "targets.yaml",
        &format!(
            "- name: first\n  schema: tenant_000\n\
             - name: gone\n  dsn: postgres://nobody:${{GONE_PW}}@127.0.0.1:{closed}/x?sslmode=disable&connect_timeout=2\n\
             - name: second\n  dsn: '{}'\n  schema: tenant_001\n",
            t.dsn
        ),
    );
    let out = t
        .migrate()
        .args([
            "up",
            "--targets",
            "targets.yaml",
            "--parallel",
            "1",
            "--json",
        ])
        .env("GONE_PW", "hunter2-secret")
        .run();
    out.code(5);
    assert!(!out.stdout.contains("hunter2-secret") && !out.stderr.contains("hunter2-secret"));
    let doc = json(&out);
    assert_eq!(names_with(&doc, "applied"), ["first"]);
    assert_eq!(names_with(&doc, "failed"), ["gone"]);
    // An unreachable target stops the fleet like any failure.
    assert_eq!(names_with(&doc, "not_started"), ["second"]);
    assert_eq!(doc["targets"][1]["error"]["exit_code"], 5);
    let out = t
        .migrate()
        .args(["up", "--targets", "targets.yaml", "--keep-going"])
        .env("GONE_PW", "x")
        .run();
    out.code(5).stdout_has("second ").stdout_has("applied");
    assert_eq!(applied(&t, "tenant_%").len(), 6);
}

#[test]
fn targets_from_a_query_on_a_tenants_table() {
    let t = TestEnv::new();
    tenants(&t, 3);
    three(&t);
    t.client()
        .batch_execute(
            "CREATE TABLE public.tenants (slug text, schema_name text, active bool);
             INSERT INTO public.tenants VALUES ('acme', 'tenant_000', true),
               ('globex', 'tenant_002', true), ('gone', 'tenant_001', false);",
        )
        .unwrap();
    let out = t
        .migrate()
        .args([
            "up",
            "--targets-query",
            "SELECT slug AS name, schema_name AS schema FROM tenants WHERE active ORDER BY slug",
        ])
        .run();
    out.code(0)
        .stdout_has("acme: applied 3")
        .stdout_has("globex: applied 3");
    assert!(!t.table_exists("tenant_001.schema_migrations"));
    // The query's mistakes are the operator's: exit 2, with the reason.
    let bad = |query: &str, says: &str| {
        t.migrate()
            .args(["up", "--targets-query", query])
            .run()
            .code(2)
            .stderr_has(says);
    };
    bad(
        "SELECT slug AS name FROM tenants",
        "need a `schema` or a `dsn` column",
    );
    bad(
        "SELECT schema_name AS schema FROM tenants",
        "need a `name` column",
    );
    bad(
        "SELECT slug AS name, schema_name AS schema FROM tenants WHERE false",
        "returned no rows",
    );
    bad("SELEKT 1", "--targets-query failed");
    bad(
        "SELECT NULL::text AS name, 'x' AS schema",
        "row 1 has no name",
    );
    // The query runs with the search path set to --schema, as migrations do.
    t.client()
        .batch_execute(
            "CREATE SCHEMA app; CREATE TABLE app.customers (slug text, home text);
             INSERT INTO app.customers VALUES ('initech', 'tenant_001');",
        )
        .unwrap();
    t.migrate()
        .args([
            "up",
            "--schema",
            "app",
            "--targets-query",
            "SELECT slug AS name, home AS schema FROM customers",
        ])
        .run()
        .code(0)
        .stdout_has("initech: applied 3");
    assert!(t.table_exists("tenant_001.schema_migrations"));
    assert!(!t.table_exists("app.schema_migrations"));
}

#[test]
fn bad_fleet_input_is_refused_before_anything_runs() {
    let t = TestEnv::new();
    tenants(&t, 2);
    three(&t);
    let refused = |args: &[&str], says: &str| {
        let out = t.migrate().args(args).run();
        out.code(2).stderr_has(says);
    };
    refused(
        &["up", "--each-schema", "nomatch_%"],
        "--each-schema nomatch_%: no schema of",
    );
    // Two targets on one tracking table.
    t.file(
        "twice.yaml",
        &format!(
            "- name: a\n  schema: tenant_000\n- name: b\n  schema: tenant_000\n  dsn: '{}'\n",
            t.dsn
        ),
    );
    refused(
        &["up", "--targets", "twice.yaml"],
        "targets `a` and `b` are the same database",
    );
    t.file(
        "names.yaml",
        "- name: a\n  schema: tenant_000\n- name: a\n  schema: tenant_001\n",
    );
    refused(
        &["up", "--targets", "names.yaml"],
        "the name `a` is given to targets 1 and 2",
    );
    t.file(
        "broken.yaml",
        "- name: a\n  schema: tenant_000\n- name: b\n  schemas: x\n",
    );
    refused(&["up", "--targets", "broken.yaml"], "broken.yaml:4");
    refused(
        &["up", "--each-schema", "tenant_%", "--schema", "app"],
        "--schema and --each-schema tenant_% both say which schema",
    );
    refused(
        &["down", "--each-schema", "tenant_%"],
        "down across a fleet needs --to VERSION or --steps N",
    );
    refused(
        &["history", "--each-schema", "tenant_%"],
        "`history` does not run across a fleet",
    );
    refused(&["up", "--parallel", "3"], "--parallel is for a fleet");
    refused(
        &["up", "--each-schema", "tenant_%", "--lock-key", "7"],
        "a lock key",
    );
    refused(
        &["up", "--each-schema", "tenant_%", "--parallel", "0"],
        "--parallel",
    );
    // A fleet variable set for a whole pod leaves its other commands be.
    t.migrate()
        .args(["history"])
        .env("MIGRATE_EACH_SCHEMA", "tenant_%")
        .env("MIGRATE_PARALLEL", "8")
        .run()
        .code(0)
        .stdout_has("the journal is empty");
    // None of it touched a tenant.
    assert!(applied(&t, "%").is_empty());
    assert!(!t.table_exists("tenant_000.schema_migrations"));
}

#[test]
fn the_most_severe_exit_code_wins_and_down_and_validate_run_across_the_fleet() {
    let t = TestEnv::new();
    tenants(&t, 3);
    three(&t);
    t.migration("001_users.down.sql", "DROP TABLE users;")
        .migration("002_email.down.sql", "ALTER TABLE users DROP COLUMN email;")
        .migration("003_seed.down.sql", "DELETE FROM users;");
    t.migrate()
        .args(["up", "--each-schema", "tenant_%"])
        .run()
        .code(0);
    // Drift on one tenant: validate says 3 for the fleet.
    t.client()
        .batch_execute(
            "UPDATE tenant_001.schema_migrations SET checksum = 'x' WHERE version = '002'",
        )
        .unwrap();
    let out = t
        .migrate()
        .args(["validate", "--each-schema", "tenant_%", "--json"])
        .run();
    out.code(3);
    let doc = json(&out);
    assert_eq!(names_with(&doc, "checked"), ["tenant_000", "tenant_002"]);
    assert_eq!(doc["targets"][1]["error"]["kind"], "drift");
    // Drift (3) on one and a failed migration (1) on another: 1 wins.
    t.migration("004_bad.sql", "SELECT no_such_column FROM users;");
    let out = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%", "--keep-going", "--json"])
        .run();
    out.code(1);
    let doc = json(&out);
    let codes: Vec<i64> = doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [1, 3, 1]);
    // Fixed: the failed ones are retried, the drift put right.
    t.migration("004_bad.sql", "SELECT 1;")
        .migration("004_bad.down.sql", "SELECT 1;");
    t.client()
        .batch_execute(
            "UPDATE tenant_001.schema_migrations SET checksum = \
               (SELECT checksum FROM tenant_000.schema_migrations WHERE version = '002') \
             WHERE version = '002'",
        )
        .unwrap();
    t.migrate()
        .args(["up", "--each-schema", "tenant_%"])
        .run()
        .code(0)
        .stdout_has(": 3 applied");
    let out = t
        .migrate()
        .args([
            "down",
            "--each-schema",
            "tenant_%",
            "--steps",
            "2",
            "--yes",
            "--json",
        ])
        .run();
    out.code(0);
    let doc = json(&out);
    assert_eq!(names_with(&doc, "rolled_back").len(), 3);
    assert_eq!(doc["targets"][0]["version_before"], "004");
    assert_eq!(doc["targets"][0]["version_after"], "002");
    assert_eq!(doc["targets"][0]["rolled_back"], 2);
    assert_eq!(applied(&t, "tenant_%").len(), 6);
    // wait: done at once when nothing is left; bounded when something is.
    t.migrate()
        .args(["wait", "--each-schema", "tenant_%", "--timeout", "2s"])
        .run()
        .code(1)
        .stdout_has("tenant_000: FAILED");
    t.migrate()
        .args(["up", "--each-schema", "tenant_%", "-q"])
        .run()
        .code(0);
    t.migrate()
        .args(["wait", "--each-schema", "tenant_%", "--timeout", "5s"])
        .run()
        .code(0)
        .stdout_has(": 3 ok");
}

#[test]
fn the_metrics_file_has_a_row_per_target() {
    let t = TestEnv::new();
    tenants(&t, 3);
    three(&t);
    t.client()
        .batch_execute("CREATE TABLE tenant_002.users (id int)")
        .unwrap();
    t.migrate()
        .args([
            "up",
            "--each-schema",
            "tenant_%",
            "--keep-going",
            "--metrics-file",
            "fleet.prom",
        ])
        .run()
        .code(1);
    let text = std::fs::read_to_string(t.dir().join("fleet.prom")).unwrap();
    for line in [
        "migrate_target_outcome{target=\"tenant_000\",outcome=\"applied\"} 1",
        "migrate_target_outcome{target=\"tenant_002\",outcome=\"failed\"} 1",
        "migrate_target_migrations{target=\"tenant_001\"} 3",
        "migrate_target_pending_migrations{target=\"tenant_002\"} 3",
        "migrate_migrations_total{status=\"applied\"} 6",
        "migrate_migrations_total{status=\"failed\"} 1",
        "migrate_last_run_success 0",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    assert!(text.contains("migrate_target_duration_seconds{target=\"tenant_001\"}"));
}

#[test]
fn the_library_runs_the_same_fleet() {
    use migrate::fleet::{Fleet, FleetOptions, Operation, Outcome, Quiet, Targets};
    let t = TestEnv::new();
    tenants(&t, 5);
    three(&t);
    let migrator = crate::library::migrator(&t);
    let fleet = Fleet::new(
        migrator,
        FleetOptions {
            parallel: 2,
            ..FleetOptions::default()
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let chosen = fleet
            .select(&Targets::EachSchema("tenant_%".into()))
            .await
            .unwrap();
        assert_eq!(chosen.targets.len(), 5);
        fleet
            .run(&chosen, &Operation::Up(Default::default()), &Quiet)
            .await
            .unwrap()
    });
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.count(Outcome::Applied), 5);
    assert_eq!(report.targets[4].name, "tenant_004");
    assert_eq!(
        report.targets[4].versions().1.map(|v| v.to_string()),
        Some("003".into())
    );
    assert_eq!(applied(&t, "tenant_%").len(), 15);
}

#[test]
fn the_indexed_job_recipe_splits_the_fleet_over_its_pods() {
    // The recipe's own command line, run as its pods would run it: one
    // process per completion index, at the same time.
    let recipe =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/fleet-indexed-job.yaml");
    let job: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&recipe).unwrap()).unwrap();
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = spec["completions"].as_u64().unwrap() as usize;
    let command: Vec<String> = spec["template"]["spec"]["containers"][0]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(command[0], "/migrate");
    let shards_at = command.iter().position(|a| a == "--shards").unwrap();
    assert_eq!(command[shards_at + 1], completions.to_string());

    let t = TestEnv::new();
    tenants(&t, 30);
    three(&t);
    let pods: Vec<_> = (0..completions)
        .map(|index| {
            t.migrate()
                .args(&command[1..])
                .arg("--json")
                .env("JOB_COMPLETION_INDEX", index.to_string())
                .env(
                    "MIGRATE_METRICS_FILE",
                    t.dir().join(format!("pod-{index}.prom")),
                )
                .spawn()
        })
        .collect();
    let mut migrated = Vec::new();
    for pod in pods {
        let out = crate::common::Outcome::from_output(pod.wait_with_output().unwrap());
        out.code(0);
        migrated.extend(names_with(&json(&out), "applied"));
    }
    migrated.sort();
    let all: Vec<String> = (0..30).map(|n| format!("tenant_{n:03}")).collect();
    assert_eq!(migrated, all, "each tenant in exactly one pod");
    let journal = journalled(&t, "tenant_%");
    assert!(
        journal.len() == 90 && journal.values().all(|n| *n == 1),
        "{journal:?}"
    );
}

#[test]
fn two_fleets_racing_over_the_same_tenants_apply_each_migration_once() {
    let t = TestEnv::new();
    tenants(&t, 40);
    three(&t);
    let racers: Vec<_> = (0..3)
        .map(|_| {
            t.migrate()
                .args([
                    "up",
                    "--each-schema",
                    "tenant_%",
                    "--parallel",
                    "3",
                    "--json",
                ])
                .spawn()
        })
        .collect();
    let mut applied_by_anyone = 0;
    for racer in racers {
        let out = crate::common::Outcome::from_output(racer.wait_with_output().unwrap());
        out.code(0);
        let doc = json(&out);
        applied_by_anyone += doc["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["applied"].as_u64().unwrap())
            .sum::<u64>();
    }
    assert_eq!(applied_by_anyone, 120, "each of 40 x 3 applied once in all");
    let journal = journalled(&t, "tenant_%");
    assert!(
        journal.len() == 120 && journal.values().all(|n| *n == 1),
        "{journal:?}"
    );
    assert_eq!(t.advisory_locks(), 0);
}

#[test]
fn sigterm_rolls_back_the_running_targets_and_prints_the_summary() {
    let t = TestEnv::new();
    tenants(&t, 6);
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration(
            "002_slow.sql",
            "CREATE TABLE b (id int); SELECT pg_sleep(30);",
        );
    let child = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%", "--parallel", "2"])
        .spawn();
    crate::common::wait_until(Duration::from_secs(30), "two tenants in 002", || {
        t.value(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' \
               AND application_name = 'migrate'",
        ) == Some("2".into())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = crate::common::Outcome::from_output(child.wait_with_output().unwrap());
    out.code(143)
        .stdout_has(
            "interrupted by SIGTERM while applying 002_slow: the server rolls back its \
             transaction, so nothing of it is applied or recorded; the 1 migration that \
             finished before stays so",
        )
        .stdout_has("not started")
        .stdout_has("6 targets in ");
    // The interrupted rows still say what committed: 001, one each.
    assert!(
        out.stdout.contains("│ tenant_000  ┆ -      ┆ 001   ┆ 1 ")
            || out.stdout.contains("│ tenant_000 ┆ -      ┆ 001   ┆ 1 "),
        "{}",
        out.stdout
    );
    crate::common::wait_until(Duration::from_secs(10), "the sessions gone", || {
        t.migrate_sessions() == 0
    });
    // 001 committed on the two that ran; 002 rolled back with its table.
    let rows = applied(&t, "tenant_%");
    assert_eq!(
        rows,
        [
            ("tenant_000".to_owned(), "001".to_owned()),
            ("tenant_001".to_owned(), "001".to_owned())
        ]
    );
    assert!(!t.table_exists("tenant_000.b"));
    assert_eq!(t.advisory_locks(), 0);
    // And the rerun finishes the lot.
    t.client().batch_execute("SELECT 1").unwrap();
    t.migration(
        "002_slow.sql",
        "CREATE TABLE b (id int); SELECT pg_sleep(0);",
    );
    t.migrate()
        .args(["up", "--each-schema", "tenant_%"])
        .run()
        .code(0)
        .stdout_has(": 6 applied");
}

#[test]
fn odd_schema_names_are_targets_like_any_other() {
    let t = TestEnv::new();
    t.client()
        .batch_execute(
            r#"CREATE SCHEMA "tenant_Ünïcode"; CREATE SCHEMA "tenant_with ""quotes"" and space";
               CREATE SCHEMA "tenant_'; DROP TABLE x; --"; CREATE SCHEMA "TENANT_upper";"#,
        )
        .unwrap();
    three(&t);
    let out = t
        .migrate()
        .args([
            "up",
            "--each-schema",
            "tenant_%",
            "--json",
            "--metrics-file",
            "m.prom",
        ])
        .run();
    out.code(0);
    let doc = json(&out);
    let mut names = names_with(&doc, "applied");
    names.sort();
    assert_eq!(
        names,
        [
            "tenant_'; DROP TABLE x; --",
            "tenant_with \"quotes\" and space",
            "tenant_Ünïcode"
        ]
    );
    assert_eq!(
        t.value(r#"SELECT count(*) FROM "tenant_with ""quotes"" and space".users"#),
        Some("1".into())
    );
    assert!(!t.table_exists(r#""TENANT_upper".users"#));
    let metrics = std::fs::read_to_string(t.dir().join("m.prom")).unwrap();
    assert!(
        metrics
            .contains(r#"migrate_target_migrations{target="tenant_with \"quotes\" and space"} 3"#),
        "{metrics}"
    );
    // A name that would repaint the terminal is shown escaped.
    t.client()
        .batch_execute("CREATE SCHEMA \"tenant_\x1b[2Jwiped\"")
        .unwrap();
    let out = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%wiped"])
        .run();
    out.code(0).stdout_has("tenant_\\u{1b}[2Jwiped: applied 3");
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
    // A pattern of the LIKE syntax, quoted as the shell passes it.
    t.migrate()
        .args(["status", "--each-schema", "tenant\\_Ü%"])
        .run()
        .code(0)
        .stdout_has("tenant_Ünïcode");
}

#[test]
fn long_migrations_keep_a_fleet_within_n_plus_one_connections() {
    // A script that runs past the watch's first look (0.5 s) has a second
    // connection watch whom it waits for: one at a time in the process.
    let t = TestEnv::new();
    tenants(&t, 6);
    t.migration("001_slow.sql", "SELECT pg_sleep(1.2);");
    let done = Arc::new(AtomicBool::new(false));
    let watcher = count_sessions(&t, done.clone());
    let out = t
        .migrate()
        .args(["up", "--each-schema", "tenant_%", "--parallel", "3"])
        .run();
    done.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    out.code(0).stdout_has(": 6 applied");
    assert!(
        (3..=4).contains(&seen),
        "{seen} sessions of migrate at once"
    );
}

#[test]
fn at_a_terminal_up_asks_once_for_the_fleet_and_draws_a_bar() {
    use crate::common::pty::run_on_pty;
    let t = TestEnv::new();
    tenants(&t, 4);
    three(&t);
    // tenant_003 is done already: three have work.
    t.migrate()
        .args(["up", "--each-schema", "tenant_003", "-q"])
        .run()
        .code(0);
    let mut run = t.migrate();
    run.args(["up", "--each-schema", "tenant_%"]);
    let out = run_on_pty(run.into_command(), Some(("Continue?", "n")));
    assert_eq!(out.code, 1, "{}", out.output);
    assert!(
        out.output
            .contains("3 of 4 targets have migrations to apply, 9 in all: tenant_000 (3), tenant_001 (3), tenant_002 (3)"),
        "{}",
        out.output
    );
    assert!(!t.table_exists("tenant_000.schema_migrations"));

    // Ctrl-C at the prompt: as for a single run, 130 and nothing changed.
    let mut run = t.migrate();
    run.args(["up", "--each-schema", "tenant_%"]);
    let out = run_on_pty(run.into_command(), Some(("Continue?", "\u{3}")));
    assert_eq!(out.code, 130, "{}", out.output);
    assert!(
        out.output
            .contains("interrupted at the prompt: nothing was changed"),
        "{}",
        out.output
    );
    assert!(!t.table_exists("tenant_000.schema_migrations"));

    let mut run = t.migrate();
    run.args(["up", "--each-schema", "tenant_%"]);
    let out = run_on_pty(run.into_command(), Some(("Continue?", "y")));
    assert_eq!(out.code, 0, "{}", out.output);
    // The bar, not a line per target; then the table.
    assert!(!out.output.contains("[1/4]"), "{}", out.output);
    assert!(out.output.contains("4 targets in "), "{}", out.output);
    assert!(
        out.output.contains("3 applied, 1 up to date"),
        "{}",
        out.output
    );
    assert_eq!(applied(&t, "tenant_%").len(), 12);
}

#[test]
fn down_to_a_version_some_targets_never_reached_leaves_them_be() {
    let t = TestEnv::new();
    tenants(&t, 3);
    three(&t);
    for (v, sql) in [
        ("001_users", "DROP TABLE users;"),
        ("002_email", "ALTER TABLE users DROP COLUMN email;"),
        ("003_seed", "DELETE FROM users;"),
    ] {
        t.migration(&format!("{v}.down.sql"), sql);
    }
    t.migrate()
        .args(["up", "--each-schema", "tenant_%"])
        .run()
        .code(0);
    t.migrate()
        .args([
            "down",
            "--each-schema",
            "tenant_000",
            "--to",
            "001",
            "--yes",
        ])
        .run()
        .code(0);
    let out = t
        .migrate()
        .args([
            "down",
            "--each-schema",
            "tenant_%",
            "--to",
            "002",
            "--yes",
            "--json",
        ])
        .run();
    out.code(0);
    let doc = json(&out);
    assert_eq!(names_with(&doc, "nothing_to_do"), ["tenant_000"]);
    assert_eq!(
        names_with(&doc, "rolled_back"),
        ["tenant_001", "tenant_002"]
    );
    assert_eq!(applied(&t, "tenant_%").len(), 1 + 2 + 2);
    // A single database keeps refusing a version it never had.
    t.migrate()
        .args(["down", "--schema", "tenant_000", "--to", "002", "--yes"])
        .run()
        .code(2)
        .stderr_has("no applied migration has that version");
}

#[test]
fn two_fleets_through_a_transaction_pool_of_two_apply_each_migration_once() {
    use crate::common::bouncer::Bouncer;
    // More workers than server connections: the pooler queues them, each
    // target takes a lease (no session survives a transaction), and the
    // connection kept between targets is reset through the pooler.
    let Some(bouncer) = Bouncer::start("transaction", 2) else {
        return;
    };
    let t = TestEnv::new();
    tenants(&t, 8);
    three(&t);
    let dsn = bouncer.dsn(&t.db_name);
    let racers: Vec<_> = (0..2)
        .map(|_| {
            t.migrate_bare()
                .args([
                    "up",
                    "--yes",
                    "--dsn",
                    &dsn,
                    "--each-schema",
                    "tenant_%",
                    "--parallel",
                    "3",
                    "--json",
                ])
                .spawn()
        })
        .collect();
    let mut applied_by_anyone = 0;
    for racer in racers {
        let out = crate::common::Outcome::from_output(racer.wait_with_output().unwrap());
        out.code(0);
        applied_by_anyone += json(&out)["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["applied"].as_u64().unwrap())
            .sum::<u64>();
    }
    assert_eq!(applied_by_anyone, 24);
    let journal = journalled(&t, "tenant_%");
    assert!(
        journal.len() == 24 && journal.values().all(|n| *n == 1),
        "{journal:?}"
    );
    // Each target locked with a lease, and every lease was given up.
    for n in 0..8 {
        let lease = format!("tenant_{n:03}.schema_migrations_lock");
        assert!(t.table_exists(&lease), "{lease}");
        assert_eq!(
            t.value(&format!("SELECT count(*) FROM {lease}")),
            Some("0".into())
        );
    }
    assert_eq!(t.advisory_locks(), 0);
}

#[test]
fn a_fleet_wider_than_the_server_has_connections_waits_its_turn_and_finishes() {
    use migrate::pgserver::ClusterOptions;
    // 5 connections in all (superusers may take the reserved ones too),
    // and 8 workers: the ones turned away "too many clients" try again
    // until others close, within --lock-wait.
    let t = TestEnv::on_own_server_with(ClusterOptions {
        settings: vec![("max_connections".into(), "5".into())],
        ..ClusterOptions::default()
    });
    tenants(&t, 12);
    three(&t);
    let out = t
        .migrate()
        .args([
            "up",
            "--each-schema",
            "tenant_%",
            "--parallel",
            "8",
            "--lock-wait",
            "60s",
            "--json",
        ])
        .run();
    out.code(0);
    assert_eq!(names_with(&json(&out), "applied").len(), 12);
    let journal = journalled(&t, "tenant_%");
    assert!(
        journal.len() == 36 && journal.values().all(|n| *n == 1),
        "{journal:?}"
    );
}

#[test]
fn the_server_going_away_mid_fleet_fails_the_rows_it_touched_and_a_rerun_finishes() {
    let t = TestEnv::on_own_server();
    tenants(&t, 12);
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration(
            "002_slow.sql",
            "CREATE TABLE b (id int); SELECT pg_sleep(0.3);",
        );
    let child = t
        .migrate()
        .args([
            "up",
            "--each-schema",
            "tenant_%",
            "--parallel",
            "2",
            "--keep-going",
            "--json",
        ])
        .spawn();
    crate::common::wait_until(Duration::from_secs(30), "a few tenants done", || {
        applied(&t, "tenant_%").len() >= 4
    });
    t.stop_server();
    let out = crate::common::Outcome::from_output(child.wait_with_output().unwrap());
    // The connection lost mid-migration (1) is the most severe; the ones
    // that could not connect at all are 5.
    assert!(matches!(out.code, 1 | 5), "{out:?}");
    let doc = json(&out);
    assert!(!names_with(&doc, "applied").is_empty(), "{}", out.stdout);
    assert!(!names_with(&doc, "failed").is_empty(), "{}", out.stdout);
    assert!(
        names_with(&doc, "not_started").is_empty(),
        "--keep-going: {}",
        out.stdout
    );
    t.start_server();
    t.migrate()
        .args(["up", "--each-schema", "tenant_%"])
        .run()
        .code(0);
    let journal = journalled(&t, "tenant_%");
    assert!(
        journal.len() == 24 && journal.values().all(|n| *n == 1),
        "{journal:?}"
    );
}

/// How many transactions of the test's database were rolled back, once
/// every other session has ended (a session's counts reach the statistics
/// as it exits). Every statement that fails rolls one back, and is an
/// ERROR in the server's log.
fn rollbacks(t: &TestEnv) -> i64 {
    let mut client = t.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let others: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                  WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        if others == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sessions left over");
        std::thread::sleep(Duration::from_millis(50));
    }
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .unwrap();
    client
        .query_one(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0)
}

/// Runs that go as they should leave no ERROR in the server's log, but
/// for one on a target's first run: the state read, which looks at no
/// catalog (it is every start-up's one query), finds no table. The lease
/// table and a lost row's journal are looked for before they are read,
/// and the record is looked up before it is prepared again.
#[test]
fn runs_that_succeed_leave_no_error_in_the_server_log_after_the_first() {
    let t = TestEnv::new();
    tenants(&t, 3);
    three(&t);
    let fleet_up = |parallel: &str| {
        t.migrate()
            .args([
                "up",
                "--yes",
                "--each-schema",
                "tenant_%",
                "--parallel",
                parallel,
            ])
            .run()
            .code(0);
    };
    let before = rollbacks(&t);
    fleet_up("2");
    t.migrate().args(["up", "--yes"]).run().code(0);
    let first = rollbacks(&t);
    assert_eq!(first - before, 4, "one for each of the four targets");
    t.migration(
        "004_more.sql",
        "INSERT INTO users VALUES (2, 'b@example.com');",
    );
    fleet_up("1");
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migrate().args(["up", "--yes"]).run().code(0);
    t.migrate()
        .args(["status", "--each-schema", "tenant_%"])
        .run()
        .code(0);
    t.migrate().args(["validate"]).run().code(0);
    assert_eq!(applied(&t, "tenant_%").len(), 12);
    assert_eq!(
        t.state(),
        ["001:applied", "002:applied", "003:applied", "004:applied"]
    );
    assert_eq!(rollbacks(&t) - first, 0);
}

/// A file on the pipelined path (one that builds an index) leaves the
/// record prepared as it was: the files after it still go in two queries
/// (their `current_query()` starts with the `BEGIN` in front of them), and
/// nothing is prepared a second time, so nothing fails in the server's
/// log; nor does `down`.
#[test]
fn a_file_on_the_pipelined_path_leaves_the_rest_in_two_queries_and_no_error() {
    let t = TestEnv::new();
    t.migration(
        "001_a.sql",
        "CREATE TABLE a (id int); CREATE TABLE q (v text, two bool);",
    );
    t.migrate().args(["up", "--yes"]).run().code(0);
    let probe = |v: &str| format!("INSERT INTO q SELECT '{v}', current_query() LIKE 'BEGIN;%';");
    t.migration("002_b.sql", &probe("002")).migration(
        "003_i.sql",
        &format!("CREATE INDEX a_id ON a (id); {}", probe("003")),
    );
    for v in 4..=6 {
        t.migration(&format!("{v:03}_x.sql"), &probe(&format!("{v:03}")));
    }
    for v in 2..=6 {
        t.file(
            &format!(
                "migrations/{v:03}_{}.down.sql",
                ["b", "i", "x", "x", "x"][v - 2]
            ),
            &format!("DELETE FROM q WHERE v = '{v:03}';"),
        );
    }
    let before = rollbacks(&t);
    t.migrate().args(["up", "--yes"]).run().code(0);
    assert_eq!(
        t.rows("SELECT v || ':' || two FROM q ORDER BY v"),
        ["002:true", "003:false", "004:true", "005:true", "006:true"]
            .map(|r| vec![Some(r.to_owned())])
    );
    t.migrate()
        .args(["down", "--yes", "--steps", "3"])
        .run()
        .code(0);
    assert_eq!(t.state(), ["001:applied", "002:applied", "003:applied"]);
    assert_eq!(rollbacks(&t) - before, 0);
}
