//! One module per command: settings in, engine call, output through the
//! printer, an exit code out.

mod history;
mod sandbox;
mod status;
mod up;

use crate::cli::{Cli, Command};
use crate::engine::{Database, Migrator};
use crate::error::{Error, exit};
use crate::migration::scan;
use crate::render::{Printer, Terminal};
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
    let result = runtime.block_on(async {
        match command {
            Command::Up => up::run(&settings, &printer).await,
            Command::Status => status::run(&settings, &printer).await,
            Command::History => history::run(&settings, &printer).await,
            Command::Sandbox => sandbox::run(&settings, &printer).await,
        }
    });
    match result {
        Ok(()) => exit::OK,
        Err(err) => {
            printer.error(err.to_string());
            err.exit_code()
        }
    }
}

fn database(settings: &Settings) -> Result<Database, Error> {
    Ok(Database {
        dsn: settings.dsn()?,
        tracking: settings.tracking.clone(),
        lock: settings.lock,
        lock_key: settings.lock_key,
        actor: None,
    })
}

/// A migrator for the settings' folder; every naming problem is reported
/// here, before any connection.
fn folder_migrator(settings: &Settings) -> Result<Migrator, Error> {
    let scanned = scan(&settings.migrations_dir).map_err(Error::Files)?;
    Ok(Migrator::from_folder(scanned, database(settings)?))
}
