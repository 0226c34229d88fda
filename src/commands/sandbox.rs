//! `migrate sandbox`: every migration of the folder, from scratch, on a
//! throwaway server that is removed afterwards.

use crate::dsn::Dsn;
use crate::engine::{Database, LockMode, Migrator, UpOptions};
use crate::error::Error;
use crate::migration::discover;
use crate::pgserver::{ClusterOptions, TempCluster};
use crate::render::{Printer, status_table};
use crate::settings::Settings;
use std::time::Duration;

pub async fn run(settings: &Settings, printer: &Printer) -> Result<(), Error> {
    let migrations = discover(&settings.migrations_dir).map_err(Error::Files)?;
    printer.line(format!(
        "starting a throwaway PostgreSQL server for {} ({} migrations)",
        settings.migrations_dir.display(),
        migrations.len()
    ));
    let cluster = tokio::task::spawn_blocking(|| TempCluster::start(ClusterOptions::default()))
        .await
        .map_err(|err| Error::Sandbox(format!("the server start-up panicked: {err}")))?
        .map_err(|err| Error::Sandbox(format!("cannot start a sandbox server: {err}")))?;
    printer.line(format!(
        "sandbox: PostgreSQL {} in {}",
        cluster.version(),
        cluster.root().display()
    ));
    let dsn = Dsn::parse(&cluster.socket_dsn("postgres")).map_err(Error::Sandbox)?;
    let migrator = Migrator::new(
        migrations,
        Database {
            dsn,
            tracking: settings.tracking.clone(),
            lock: LockMode::Wait(Duration::from_secs(60)),
            lock_key: None,
            actor: None,
        },
    );
    let options = UpOptions {
        target: settings.target.clone(),
        dry_run: false,
    };
    // The sandbox is throwaway: never ask.
    let quiet_yes = Printer::new(printer.terminal(), true);
    let outcome = tokio::select! {
        up = migrator.up(&options, &quiet_yes) => Some(up),
        _ = tokio::signal::ctrl_c() => None,
    };
    let result = match outcome {
        None => Err(Error::Sandbox("interrupted".into())),
        Some(up) => {
            match migrator.status().await {
                Ok(report) => printer.line(status_table(
                    &report.rows,
                    &report.totals,
                    printer.terminal().color,
                )),
                Err(err) => printer.error(format!("cannot read the sandbox's status: {err}")),
            }
            up.map(|_| ())
        }
    };
    let root = cluster.root().to_path_buf();
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .map_err(|err| Error::Sandbox(format!("stopping the server panicked: {err}")))?;
    printer.line(format!(
        "sandbox server stopped; {} removed",
        root.display()
    ));
    result
}
