//! `migrate sandbox`: every migration of the folder, from scratch, on a
//! throwaway server that is removed afterwards; each migration with a down
//! file is also rolled back and applied again, and the schema compared.

use crate::dsn::Dsn;
use crate::engine::{Database, DownOptions, LockMode, Migrator, UpOptions};
use crate::error::Error;
use crate::migration::{MigrationSet, discover};
use crate::pgserver::{ClusterOptions, TempCluster};
use crate::render::{Printer, status_table};
use crate::report::{Event, Reporter, Silent};
use crate::settings::Settings;
use console::style;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub async fn run(settings: &Settings, printer: &Printer) -> Result<(), Error> {
    let migrations = discover(&settings.migrations_dir).map_err(Error::Files)?;
    let bootstrap = sandbox_bootstrap(settings, printer)?;
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
    let dsn_text = cluster.socket_dsn("postgres");
    let dsn = Dsn::parse(&dsn_text).map_err(Error::Sandbox)?;
    let database = Database {
        dsn,
        tracking: settings.tracking.clone(),
        lock: LockMode::Wait(Duration::from_secs(60)),
        lock_key: None,
        pooler: crate::engine::Pooler::None,
        lease: crate::engine::DEFAULT_LEASE,
        actor: None,
        session: settings.session.clone(),
        wait_for_db: Duration::ZERO,
        bootstrap: None,
    };
    let migrator = Migrator::new(migrations.clone(), database.clone());
    let with_bootstrap = bootstrap.map(|bootstrap| {
        Migrator::new(
            migrations.clone(),
            Database {
                bootstrap: Some(bootstrap),
                ..database
            },
        )
    });
    let sandbox = Sandbox {
        migrator: &migrator,
        migrations: &migrations,
        settings,
        printer,
        pg_dump: cluster.program("pg_dump"),
        dsn: dsn_text,
    };
    let exercise = async {
        sandbox.exercise().await?;
        if let Some(migrator) = &with_bootstrap {
            // Twice: bootstrap scripts run on every `up`, so they must be
            // safe to run again.
            migrator.up(&UpOptions::default(), &Lines(printer)).await?;
            migrator.up(&UpOptions::default(), &Silent).await?;
            printer.line("  bootstrap scripts ran twice without error");
        }
        Ok(())
    };
    let outcome = tokio::select! {
        result = exercise => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    let result = match outcome {
        None => Err(Error::Sandbox("interrupted".into())),
        Some(result) => {
            match migrator.status(&Silent).await {
                Ok(report) => printer.result(status_table(&report, printer.terminal().color)),
                Err(err) => printer.error(format!("cannot read the sandbox's status: {err}")),
            }
            result
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

struct Sandbox<'a> {
    migrator: &'a Migrator,
    migrations: &'a MigrationSet,
    settings: &'a Settings,
    printer: &'a Printer,
    pg_dump: Option<PathBuf>,
    dsn: String,
}

impl Sandbox<'_> {
    /// Applies each migration in turn; for one with a down file, rolls it
    /// back and applies it again, comparing the schema (as `pg_dump
    /// --schema-only` prints it): after down it must be as before up, and
    /// after the second up as after the first.
    async fn exercise(&self) -> Result<(), Error> {
        let lines = Lines(self.printer);
        let mut irreversible = None;
        // The tracking tables exist before the first dump, so that they
        // are not taken for something a migration left behind.
        self.migrator.init(&Silent).await?;
        for migration in &self.migrations.migrations {
            if self
                .settings
                .target
                .as_ref()
                .is_some_and(|t| migration.version > *t)
            {
                break;
            }
            let up = UpOptions {
                target: Some(migration.version.clone()),
                ..UpOptions::default()
            };
            let check = match (&migration.down_path, &self.pg_dump, &irreversible) {
                (None, _, _) => Err("no down file: reversibility not checked"),
                (Some(_), None, _) => {
                    Err("pg_dump is not next to the server programs: reversibility not checked")
                }
                (Some(_), Some(_), Some(_)) => Err(""),
                (Some(_), Some(pg_dump), None) => Ok(pg_dump),
            };
            let pg_dump = match check {
                Ok(pg_dump) => pg_dump,
                Err(note) => {
                    self.migrator.up(&up, &lines).await?;
                    if !note.is_empty() {
                        self.printer.line(format!("  {note}"));
                    }
                    continue;
                }
            };
            let before = self.dump(pg_dump).await?;
            self.migrator.up(&up, &lines).await?;
            let after_up = self.dump(pg_dump).await?;
            self.migrator.down(&DownOptions::default(), &Silent).await?;
            let after_down = self.dump(pg_dump).await?;
            self.migrator.up(&up, &Silent).await?;
            let again = self.dump(pg_dump).await?;
            let problem = if before != after_down {
                Some((
                    "after down the schema differs from before up",
                    &before,
                    &after_down,
                ))
            } else if after_up != again {
                Some((
                    "after down and up again the schema differs from after up",
                    &after_up,
                    &again,
                ))
            } else {
                None
            };
            match problem {
                None => self.printer.line(format!(
                    "  {}: down undoes up, and up runs again to the same schema",
                    style("reversible").green()
                )),
                Some((what, expected, found)) => {
                    self.printer.line(format!(
                        "  {}: {what}:\n{}",
                        style("not reversible").red().bold(),
                        difference(expected, found)
                    ));
                    irreversible = Some(migration.label());
                }
            }
        }
        match irreversible {
            Some(label) => Err(Error::Sandbox(format!(
                "the down file of {label} does not undo its up file (checks of later migrations \
                 were skipped)"
            ))),
            None => Ok(()),
        }
    }

    async fn dump(&self, pg_dump: &PathBuf) -> Result<String, Error> {
        let mut command = Command::new(pg_dump);
        command.args(["--schema-only", "--dbname", &self.dsn]);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|err| Error::Sandbox(format!("pg_dump panicked: {err}")))?
            .map_err(|err| Error::Sandbox(format!("cannot run pg_dump: {err}")))?;
        if !output.status.success() {
            return Err(Error::Sandbox(format!(
                "pg_dump failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(schema_lines(&String::from_utf8_lossy(&output.stdout)))
    }
}

/// What of a dump describes the schema: not comments, blank lines, or the
/// `\restrict` lines with a random key that pg_dump (15.14 and later)
/// writes around each dump.
fn schema_lines(dump: &str) -> String {
    dump.lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with("--")
                && !l.starts_with("\\restrict ")
                && !l.starts_with("\\unrestrict ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The bootstrap scripts, with a throwaway value for each declared variable
/// the environment lacks (this server is thrown away too).
fn sandbox_bootstrap(
    settings: &Settings,
    printer: &Printer,
) -> Result<Option<crate::engine::Bootstrap>, Error> {
    if settings.skip_bootstrap {
        return Ok(None);
    }
    let mut variables = Vec::new();
    for (name, value, _) in &settings.bootstrap.variables {
        let value = match value {
            Some(value) => value.0.clone(),
            None => {
                printer.line(format!(
                    "bootstrap variable {name} is not set: the sandbox uses a throwaway value"
                ));
                format!(
                    "sandbox-{}-{}",
                    name.to_ascii_lowercase(),
                    std::process::id()
                )
            }
        };
        variables.push((name.clone(), value));
    }
    let bootstrap = crate::engine::Bootstrap::read(
        &settings.bootstrap.dir,
        settings.bootstrap.named,
        variables,
    )?;
    Ok((!bootstrap.scripts.is_empty()).then_some(bootstrap))
}

/// The lines only one of two dumps has, a few of each.
fn difference(first: &str, second: &str) -> String {
    let lines = |text: &str| -> BTreeSet<String> { text.lines().map(str::to_owned).collect() };
    let (a, b) = (lines(first), lines(second));
    let mut out = Vec::new();
    for line in a.difference(&b).take(10) {
        out.push(format!("    - {line}"));
    }
    for line in b.difference(&a).take(10) {
        out.push(format!("    + {line}"));
    }
    if out.is_empty() {
        out.push("    (the same statements in another order)".into());
    }
    out.join("\n")
}

/// Passes on only the lines that say what happened to each migration.
struct Lines<'a>(&'a Printer);

impl Reporter for Lines<'_> {
    fn event(&self, event: Event<'_>) {
        if matches!(
            event,
            Event::Applied { .. }
                | Event::Failed { .. }
                | Event::Blocked { .. }
                | Event::Retrying { .. }
                | Event::Bootstrapped { .. }
        ) {
            self.0.event(event);
        }
    }
}
