//! `migrate status`: every version and its status, read-only.

use crate::error::Error;
use crate::render::{Printer, status_table};
use crate::settings::Settings;

pub async fn run(settings: &Settings, printer: &Printer) -> Result<(), Error> {
    let migrator = super::folder_migrator(settings)?;
    let report = migrator.status().await?;
    printer.line(status_table(
        &report.rows,
        &report.totals,
        printer.terminal().color,
    ));
    Ok(())
}
