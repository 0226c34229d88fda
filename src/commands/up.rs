//! `migrate up`: apply pending migrations.

use crate::engine::UpOptions;
use crate::error::Error;
use crate::render::Printer;
use crate::settings::Settings;

pub async fn run(settings: &Settings, printer: &Printer) -> Result<(), Error> {
    let migrator = super::folder_migrator(settings)?;
    let options = UpOptions {
        target: settings.target.clone(),
        dry_run: settings.dry_run,
    };
    migrator.up(&options, printer).await.map(|_| ())
}
