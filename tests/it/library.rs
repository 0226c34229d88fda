//! The engine used as a library, as a service embedding it would.

use crate::common::TestEnv;
use migrate::store::SessionSettings;
use migrate::{
    Database, Dsn, Event, LockMode, Migrator, Reporter, Tracking, UpOptions, UpOutcome, discover,
};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
struct Collect(Mutex<Vec<String>>);

impl Reporter for Collect {
    fn event(&self, event: Event<'_>) {
        let line = match event {
            Event::Applied { migration, .. } => format!("applied {}", migration.label()),
            Event::Failed { migration, .. } => format!("failed {}", migration.label()),
            Event::UpToDate { .. } => "up to date".into(),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

pub(crate) fn migrator(t: &TestEnv) -> Migrator {
    Migrator::new(
        discover(&t.migrations()).unwrap(),
        Database {
            dsn: Dsn::parse(&t.dsn).unwrap(),
            tracking: Tracking {
                schema: "public".into(),
                table: "schema_migrations".into(),
            },
            lock: LockMode::Wait(Duration::from_secs(10)),
            lock_key: None,
            pooler: migrate::Pooler::Auto,
            lease: migrate::DEFAULT_LEASE,
            actor: Some("library-test".into()),
            session: SessionSettings {
                lock_timeout: Duration::from_secs(5),
                statement_timeout: None,
            },
            wait_for_db: Duration::ZERO,
            bootstrap: None,
        },
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn up_reports_events_and_a_typed_result() {
    let t = TestEnv::new();
    t.migration("001_a.sql", "CREATE TABLE a (id int);")
        .migration("002_b.sql", "CREATE TABLE b (id int);");
    let events = Collect::default();
    let report = runtime()
        .block_on(migrator(&t).up(&UpOptions::default(), &events))
        .unwrap();
    assert_eq!(report.outcome, UpOutcome::Applied);
    assert_eq!(report.done.applied.len(), 2);
    assert_eq!(
        *events.0.lock().unwrap(),
        ["applied 001_a", "applied 002_b"]
    );
    assert_eq!(
        t.value("SELECT applied_by FROM schema_migrations WHERE version = '001'"),
        Some("library-test".into())
    );
    let report = runtime()
        .block_on(migrator(&t).up(&UpOptions::default(), &events))
        .unwrap();
    assert_eq!(report.outcome, UpOutcome::UpToDate);
}

/// The lock is released on the failure path while the embedding process
/// lives on (a CLI process exiting would hide a leak).
#[test]
fn the_lock_is_released_when_up_fails_in_a_long_lived_process() {
    let t = TestEnv::new();
    t.migration("001_bad.sql", "SELECT * FROM nowhere;");
    let rt = runtime();
    let err = rt
        .block_on(migrator(&t).up(&UpOptions::default(), &Collect::default()))
        .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string()
            .contains("relation \"nowhere\" does not exist"),
        "{err}"
    );
    assert_eq!(t.advisory_locks(), 0);
    assert_eq!(t.migrate_sessions(), 0);
}
