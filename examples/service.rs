//! A service that applies its own migrations at start-up, as the seed's
//! `RunMigrationsWithBootstrapSafe` did: the migrations and bootstrap
//! scripts are compiled into the binary, `up` runs under the advisory lock
//! (so any number of replicas may start at once), `SKIP_MIGRATIONS=true`
//! skips it, and progress goes to the service's own log.
//!
//! ```sh
//! DATABASE_URL=postgres://app@localhost/app SUPER_ADMIN_EMAIL=admin@example.com \
//!   SUPER_ADMIN_PASSWORD=change-me cargo run --example service
//! ```

use migrate::engine::Bootstrap;
use migrate::include_dir::{self, Dir, include_dir};
use migrate::store::SessionSettings;
use migrate::{Database, Dsn, Event, LockMode, MigrationSet, Migrator, Reporter, Tracking};
use std::process::ExitCode;
use std::time::Duration;

static MIGRATIONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// The service's log: one line per event worth keeping.
struct Log;

impl Reporter for Log {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Applied {
                migration, applied, ..
            } => println!(
                "level=info msg=\"migration applied\" version={} name={} took_ms={}",
                migration.version,
                migration.name,
                applied.duration.as_millis()
            ),
            Event::LockWaiting { holder, .. } => println!(
                "level=info msg=\"waiting for the migration lock\" holder=\"{}\"",
                holder.map(|h| h.to_string()).unwrap_or_default()
            ),
            Event::Bootstrapped { script, .. } => {
                println!("level=info msg=\"bootstrap script ran\" script={script}")
            }
            Event::SkippedByEnvironment => {
                println!("level=info msg=\"SKIP_MIGRATIONS is set: not migrating\"")
            }
            _ => {}
        }
    }
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

async fn migrate_at_start_up() -> Result<(), String> {
    let migrations = MigrationSet::from_embedded(&MIGRATIONS).map_err(|problems| {
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    // The values are read when the scripts are about to run: a replica
    // started with SKIP_MIGRATIONS=true or SKIP_BOOTSTRAP=true needs none.
    let bootstrap = MIGRATIONS
        .get_dir("bootstrap")
        .map(|dir| {
            Bootstrap::from_embedded(dir, Vec::new())
                .map(|b| b.with_environment(["SUPER_ADMIN_EMAIL", "SUPER_ADMIN_PASSWORD"]))
        })
        .transpose()
        .map_err(|err| err.to_string())?;
    let database = Database {
        dsn: Dsn::parse(&env("DATABASE_URL")?)?,
        tracking: Tracking {
            schema: std::env::var("DB_SCHEMA").unwrap_or_else(|_| "app".into()),
            table: "schema_migrations".into(),
        },
        lock: LockMode::Wait(Duration::from_secs(300)),
        lock_key: None,
        pooler: migrate::Pooler::Auto,
        lease: migrate::DEFAULT_LEASE,
        actor: None,
        session: SessionSettings {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: None,
        },
        wait_for_db: Duration::from_secs(60),
        bootstrap,
    };
    let report = Migrator::new(migrations, database)
        .start_up(&Log)
        .await
        .map_err(|err| err.to_string())?;
    println!(
        "level=info msg=\"migrations done\" outcome={:?} applied={} bootstrap_scripts={}",
        report.outcome,
        report.done.applied.len(),
        report.done.bootstrap.len()
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    if let Err(message) = migrate_at_start_up().await {
        eprintln!("level=error msg=\"cannot migrate\" error=\"{message}\"");
        return ExitCode::FAILURE;
    }
    // ... the service would start serving here.
    ExitCode::SUCCESS
}
