//! `repair`: accept applied files as they are now. Nothing else changes.

use super::Migrator;
use super::lock::{Locked, acquire};
use crate::error::Error;
use crate::migration::Version;
use crate::plan::{self, Drifted};
use crate::report::{Event, RepairReport, Reporter};
use crate::store::StateDetail;

#[derive(Clone, Debug, Default)]
pub struct RepairOptions {
    /// The versions to repair; empty: every drifted one.
    pub versions: Vec<Version>,
    /// Print what would be accepted; change nothing, take no lock.
    pub dry_run: bool,
}

impl Migrator {
    /// For each CHANGED applied migration, records the file's current
    /// checksum; for each MISSING one, removes its row (the journal keeps
    /// its history); for each one whose row was deleted while the journal
    /// says it is applied, restores the row from the journal. Each is journalled as `repaired`. Runs no SQL of any
    /// migration.
    pub async fn repair(
        &self,
        options: &RepairOptions,
        reporter: &dyn Reporter,
    ) -> Result<RepairReport, Error> {
        let (migrations, mut store, state) = self.open(StateDetail::Plan, reporter).await?;
        let result = async {
            let drifted = plan::drift(&migrations, &state);
            let chosen = choose(drifted, &options.versions)?;
            let mut report = RepairReport {
                repaired: Vec::new(),
                dry_run: options.dry_run,
            };
            if chosen.is_empty() {
                reporter.event(Event::NothingToRepair);
                return Ok(report);
            }
            reporter.event(Event::RepairPlan {
                items: &chosen,
                dry_run: options.dry_run,
            });
            if options.dry_run {
                report.repaired = chosen;
                return Ok(report);
            }
            if !reporter.confirm() {
                return Err(Error::Aborted);
            }
            let database = &self.database;
            let locked = acquire(&mut store, database, &state.database, reporter).await?;
            if let Locked::Skipped = locked {
                return Ok(report);
            }
            let result = async {
                // A state table dropped whole is made again for the rows the
                // journal restores.
                store.ensure_tracking_tables(&database.tracking).await?;
                // Only what still drifts the same way as confirmed.
                let mut state = store
                    .read_state(&database.tracking, StateDetail::Plan)
                    .await?;
                super::look_for_lost_rows(
                    store.client(),
                    &database.tracking,
                    &migrations,
                    &mut state,
                )
                .await?;
                let now = plan::drift(&migrations, &state);
                let chosen: Vec<Drifted> = chosen.into_iter().filter(|c| now.contains(c)).collect();
                if chosen.is_empty() {
                    reporter.event(Event::NothingToRepair);
                    return Ok(None);
                }
                let actor = database.actor.clone().unwrap_or_else(super::default_actor);
                let names: Vec<String> = chosen
                    .iter()
                    .map(|item| {
                        migrations
                            .find(&item.version)
                            .map_or_else(|| item.name.clone(), |m| m.name.clone())
                    })
                    .collect();
                store
                    .repair(&database.tracking, &chosen, &names, &actor, locked.lock())
                    .await?;
                Ok(Some(chosen))
            }
            .await;
            let released = locked.release(&store, database).await;
            let Some(chosen) = result.and_then(|chosen| released.map(|()| chosen))? else {
                return Ok(report);
            };
            reporter.event(Event::Repaired {
                count: chosen.len(),
            });
            report.repaired = chosen;
            Ok(report)
        }
        .await;
        store.close().await;
        result
    }
}

/// The drifted versions to repair: all, or the ones named, each of which
/// must be drifted.
fn choose(drifted: Vec<Drifted>, versions: &[Version]) -> Result<Vec<Drifted>, Error> {
    if versions.is_empty() {
        return Ok(drifted);
    }
    let clean: Vec<String> = versions
        .iter()
        .filter(|v| !drifted.iter().any(|d| d.version == **v))
        .map(|v| v.to_string())
        .collect();
    if !clean.is_empty() {
        return Err(Error::Usage(format!(
            "nothing to repair for {}: not an applied migration whose file changed or is gone, \
             nor one whose row is gone while the journal says it is applied",
            clean.join(", ")
        )));
    }
    Ok(drifted
        .into_iter()
        .filter(|d| versions.contains(&d.version))
        .collect())
}
