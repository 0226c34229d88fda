//! `migrate history`: the journal, read-only.

use crate::engine::Migrator;
use crate::error::Error;
use crate::migration::MigrationSet;
use crate::render::{Printer, history_table};
use crate::settings::Settings;

pub async fn run(settings: &Settings, printer: &Printer) -> Result<(), Error> {
    // The journal does not depend on the files, so a bad file name does not
    // hide it.
    let migrator = Migrator::new(MigrationSet::default(), super::database(settings)?);
    let report = migrator.history().await?;
    printer.line(history_table(&report.entries, printer.terminal().color));
    Ok(())
}
