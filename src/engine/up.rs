//! `up`: apply pending migrations in order.

use super::lock::{Locked, acquire};
use super::run::{into_error, run_with_retries};
use super::{Migrator, applied_count, check_drift, check_scripts, known_version, out_of_order};
use crate::error::Error;
use crate::migration::{MigrationSet, Version};
use crate::plan::{self, Step};
use crate::report::{AppliedMigration, Event, MigrationRef, Reporter, UpOutcome, UpReport};
use crate::store::{Action, DbState, Run, StateDetail, Store};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Stop after this version.
    pub target: Option<Version>,
    /// Print the plan; change nothing, take no lock.
    pub dry_run: bool,
    /// Apply pending files older than the newest applied one.
    pub out_of_order: bool,
}

impl Migrator {
    /// Applies pending migrations in order, each in its own transaction with
    /// its record (or statement by statement, for a no-transaction file),
    /// under the migration lock; stops at the first failure. Refuses to run
    /// over drift.
    pub async fn up(
        &self,
        options: &UpOptions,
        reporter: &dyn Reporter,
    ) -> Result<UpReport, Error> {
        let (migrations, mut store, state) = self.open(StateDetail::Plan, reporter).await?;
        let result = self
            .up_on(&migrations, &mut store, state, options, reporter)
            .await;
        // Closing the connection also releases the lock on every error path.
        store.close().await;
        result
    }

    async fn up_on(
        &self,
        migrations: &MigrationSet,
        store: &mut Store,
        state: DbState,
        options: &UpOptions,
        reporter: &dyn Reporter,
    ) -> Result<UpReport, Error> {
        let target = options.target.as_ref();
        if let Some(target) = target {
            known_version(migrations, target, "--target")?;
        }
        let steps = self.plan(migrations, &state, options)?;
        let mut report = UpReport {
            outcome: UpOutcome::UpToDate,
            planned: steps
                .iter()
                .map(|s| MigrationRef::of(s.migration))
                .collect(),
            applied: Vec::new(),
            lock_waited: Duration::ZERO,
        };
        if steps.is_empty() {
            let after_target = match target {
                Some(_) => plan::pending(migrations, &state.rows, None).len(),
                None => 0,
            };
            reporter.event(Event::UpToDate {
                applied: applied_count(&state.rows),
                after_target,
            });
            return Ok(report);
        }
        check_scripts(steps.iter().map(|s| &s.migration.up))?;
        reporter.event(Event::Plan {
            steps: &steps,
            dry_run: options.dry_run,
        });
        if options.dry_run {
            report.outcome = UpOutcome::DryRun;
            return Ok(report);
        }
        if !reporter.confirm() {
            return Err(Error::Aborted);
        }

        let database = &self.database;
        let locked = acquire(store, database, &state.database, reporter).await?;
        match locked {
            Locked::Skipped => {
                report.outcome = UpOutcome::SkippedLocked;
                return Ok(report);
            }
            Locked::Held { waited, .. } => report.lock_waited = waited,
            Locked::Unlocked => {}
        }

        // Another instance may have worked while this one waited or prompted.
        store.ensure_tracking_tables(&database.tracking).await?;
        let state = store
            .read_state(&database.tracking, StateDetail::Plan)
            .await?;
        let steps = self.plan(migrations, &state, options)?;
        if steps.is_empty() {
            reporter.event(Event::DoneElsewhere {
                applied: applied_count(&state.rows),
            });
            report.outcome = UpOutcome::DoneElsewhere;
            return Ok(report);
        }

        let started = Instant::now();
        let total = steps.len();
        let actor = database.actor.clone().unwrap_or_else(super::default_actor);
        for (index, step) in steps.iter().enumerate() {
            let migration = step.migration;
            reporter.event(Event::Applying {
                migration,
                index,
                total,
            });
            let run = Run {
                migration,
                script: &migration.up,
                action: Action::Apply {
                    failed_row_version: step.failed_row_version.as_deref(),
                },
                actor: &actor,
                retries_lock_timeout: false,
            };
            match run_with_retries(store, database, run, reporter).await {
                Ok(done) => {
                    reporter.event(Event::Applied {
                        migration,
                        applied: &done,
                        index,
                        total,
                    });
                    report.applied.push(AppliedMigration {
                        migration: MigrationRef::of(migration),
                        duration: done.duration,
                    });
                }
                Err((err, waited)) => {
                    if let crate::store::RunError::Failed(failure) = &err {
                        reporter.event(Event::Failed {
                            migration,
                            failure: &failure.failure,
                            duration: failure.duration,
                        });
                    }
                    return Err(into_error(&run, false, err, &waited));
                }
            }
        }
        locked.release(store).await?;
        report.outcome = UpOutcome::Applied;
        reporter.event(Event::Finished {
            applied: report.applied.len(),
            elapsed: started.elapsed(),
        });
        Ok(report)
    }

    /// The steps to run, after refusing drift and out-of-order files.
    fn plan<'m>(
        &self,
        migrations: &'m MigrationSet,
        state: &DbState,
        options: &UpOptions,
    ) -> Result<Vec<Step<'m>>, Error> {
        let steps = plan::pending(migrations, &state.rows, options.target.as_ref());
        let late = if options.out_of_order {
            Vec::new()
        } else {
            out_of_order(&steps, state)
        };
        check_drift(migrations, state, &late)?;
        Ok(steps)
    }
}
