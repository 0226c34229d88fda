//! One module per command: settings in, engine call, output through the
//! printer, an exit code out.

mod sandbox;

use crate::cli::{Cli, Command, DownArgs, RepairArgs};
use crate::engine::{Database, DownOptions, Migrator, RepairOptions, UpOptions};
use crate::error::{Error, exit};
use crate::migration::{MigrationSet, Version, scan};
use crate::render::{Printer, Terminal, history_table, lock_table, status_table};
use crate::settings::Settings;

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let terminal = Terminal::detect();
    let command = match cli.command() {
        Ok(command) => command,
        Err(message) => {
            Printer::new(terminal, false).error(message);
            return exit::USAGE;
        }
    };
    let settings = match Settings::resolve(&cli.global, &|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(err) => {
            Printer::new(terminal, false).error(err.to_string());
            return err.exit_code();
        }
    };
    let printer = Printer::new(terminal, settings.yes);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            printer.error(format!("cannot start the async runtime: {err}"));
            return exit::FAILED;
        }
    };
    let result = runtime.block_on(run_command(&command, &settings, &printer));
    match result {
        Ok(()) => exit::OK,
        Err(err) => {
            printer.error(err.to_string());
            err.exit_code()
        }
    }
}

async fn run_command(
    command: &Command,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), Error> {
    let color = printer.terminal().color;
    match command {
        Command::Up => {
            let options = UpOptions {
                target: settings.target.clone(),
                dry_run: settings.dry_run,
                out_of_order: settings.out_of_order,
            };
            folder_migrator(settings)?.up(&options, printer).await?;
        }
        Command::Down(args) => {
            let options = down_options(args, settings)?;
            folder_migrator(settings)?.down(&options, printer).await?;
        }
        Command::Status => {
            let report = folder_migrator(settings)?.status(printer).await?;
            printer.line(status_table(&report, color));
        }
        Command::History => {
            // The journal does not depend on the files, so a bad file name
            // does not hide it.
            let migrator = Migrator::new(MigrationSet::default(), database(settings)?);
            let report = migrator.history(printer).await?;
            printer.line(history_table(&report.entries, color));
        }
        Command::Validate => {
            let report = folder_migrator(settings)?.validate(printer).await?;
            let t = report.totals;
            let mut line = format!(
                "files and database agree: {} applied, {} pending",
                t.applied, t.pending
            );
            if t.failed > 0 {
                line.push_str(&format!(", {} failed (up retries them)", t.failed));
            }
            printer.line(line);
        }
        Command::Repair(args) => {
            let options = repair_options(args, settings)?;
            folder_migrator(settings)?.repair(&options, printer).await?;
        }
        Command::Lock => {
            let migrator = Migrator::new(MigrationSet::default(), database(settings)?);
            let report = migrator.lock_status(printer).await?;
            printer.line(lock_table(&report, color));
        }
        Command::Sandbox => sandbox::run(settings, printer).await?,
    }
    Ok(())
}

fn down_options(args: &DownArgs, settings: &Settings) -> Result<DownOptions, Error> {
    let to = args
        .to
        .as_deref()
        .map(|t| {
            Version::parse(t)
                .ok_or_else(|| Error::Usage(format!("--to: `{t}` is not a version (digits only)")))
        })
        .transpose()?;
    Ok(DownOptions {
        steps: args.steps,
        to,
        dry_run: settings.dry_run,
    })
}

fn repair_options(args: &RepairArgs, settings: &Settings) -> Result<RepairOptions, Error> {
    let versions = args
        .versions
        .iter()
        .map(|v| {
            Version::parse(v)
                .ok_or_else(|| Error::Usage(format!("`{v}` is not a version (digits only)")))
        })
        .collect::<Result<_, _>>()?;
    Ok(RepairOptions {
        versions,
        dry_run: settings.dry_run,
    })
}

pub(crate) fn database(settings: &Settings) -> Result<Database, Error> {
    Ok(Database {
        dsn: settings.dsn()?,
        tracking: settings.tracking.clone(),
        lock: settings.lock,
        lock_key: settings.lock_key,
        actor: None,
        session: settings.session.clone(),
        wait_for_db: settings.wait_for_db,
    })
}

/// A migrator for the settings' folder; every naming problem is reported
/// here, before any connection.
fn folder_migrator(settings: &Settings) -> Result<Migrator, Error> {
    let scanned = scan(&settings.migrations_dir).map_err(Error::Files)?;
    Ok(Migrator::from_folder(scanned, database(settings)?))
}
