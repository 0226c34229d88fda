//! `up`: apply pending migrations in order, then run the bootstrap scripts.

use super::bootstrap::{self, Bootstrap};
use super::lock::{Locked, acquire};
use super::run::{into_error, run_with_retries};
use super::{Migrator, applied_count, check_drift, check_scripts, known_version, out_of_order};
use crate::error::Error;
use crate::migration::{MigrationSet, Version};
use crate::plan::{self, Step};
use crate::report::{AppliedMigration, Event, MigrationRef, Reporter, UpOutcome, UpReport};
use crate::store::{Action, DbState, Run, RunError, StateDetail, Store};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Stop after this version.
    pub target: Option<Version>,
    /// Print the plan; change nothing, take no lock.
    pub dry_run: bool,
    /// Apply pending files older than the newest applied one.
    pub out_of_order: bool,
    /// Run no bootstrap scripts this time.
    pub skip_bootstrap: bool,
}

impl Migrator {
    /// What a service calls at start-up (the seed's
    /// `RunMigrationsWithBootstrapSafe`): `up` with the lock, unless
    /// `SKIP_MIGRATIONS` says not to (then nothing is connected to), and
    /// without the bootstrap scripts if `SKIP_BOOTSTRAP` says so. A switch
    /// set to anything but `true false 1 0 yes no` is an error.
    pub async fn start_up(&self, reporter: &dyn Reporter) -> Result<UpReport, Error> {
        if super::env_switch("SKIP_MIGRATIONS")?.unwrap_or(false) {
            reporter.event(Event::SkippedByEnvironment);
            return Ok(UpReport {
                outcome: UpOutcome::Skipped,
                planned: Vec::new(),
                applied: Vec::new(),
                planned_bootstrap: Vec::new(),
                bootstrap: Vec::new(),
                lock_waited: Duration::ZERO,
            });
        }
        let options = UpOptions {
            skip_bootstrap: super::env_switch("SKIP_BOOTSTRAP")?.unwrap_or(false),
            ..UpOptions::default()
        };
        self.up(&options, reporter).await
    }

    /// Applies pending migrations in order, each in its own transaction with
    /// its record (or statement by statement, for a no-transaction file),
    /// under the migration lock; stops at the first failure. Refuses to run
    /// over drift. Then, under the same lock, runs the bootstrap scripts.
    pub async fn up(
        &self,
        options: &UpOptions,
        reporter: &dyn Reporter,
    ) -> Result<UpReport, Error> {
        // Variables from the environment: read now, before connecting.
        let bootstrap = match &self.database.bootstrap {
            Some(b) if !b.scripts.is_empty() && !options.skip_bootstrap => Some(b.resolved()?),
            _ => None,
        };
        let (migrations, mut store, state) = self.open(StateDetail::Plan, reporter).await?;
        let result = self
            .up_on(
                &migrations,
                &mut store,
                state,
                bootstrap.as_ref(),
                options,
                reporter,
            )
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
        bootstrap: Option<&Bootstrap>,
        options: &UpOptions,
        reporter: &dyn Reporter,
    ) -> Result<UpReport, Error> {
        let target = options.target.as_ref();
        if let Some(target) = target {
            known_version(migrations, target, "--target")?;
        }
        let steps = self.plan(migrations, &state, options)?;
        // The bootstrap scripts are written for the newest schema: a run
        // that `--target` stops short of it leaves them for a later run.
        let after_target = match target {
            Some(_) => plan::pending(migrations, &state.rows, None)
                .len()
                .saturating_sub(steps.len()),
            None => 0,
        };
        let mut bootstrap = bootstrap;
        let held_back = bootstrap.is_some() && after_target > 0;
        if held_back {
            bootstrap = None;
        }
        let bootstrap_names: Vec<String> = bootstrap
            .map(|b| b.scripts.iter().map(|s| s.file_name()).collect())
            .unwrap_or_default();
        let mut report = UpReport {
            outcome: UpOutcome::UpToDate,
            planned: steps
                .iter()
                .map(|s| MigrationRef::of(s.migration))
                .collect(),
            applied: Vec::new(),
            planned_bootstrap: bootstrap_names.clone(),
            bootstrap: Vec::new(),
            lock_waited: Duration::ZERO,
        };
        if steps.is_empty() {
            reporter.event(Event::UpToDate {
                applied: applied_count(&state.rows),
                after_target,
            });
            if held_back {
                reporter.event(Event::BootstrapHeldBack { after_target });
            }
            if options.dry_run {
                if bootstrap.is_some() {
                    reporter.event(Event::Plan {
                        steps: &steps,
                        after_target,
                        bootstrap: &bootstrap_names,
                        dry_run: true,
                    });
                }
                report.outcome = UpOutcome::DryRun;
                return Ok(report);
            }
            // Without bootstrap scripts this is the whole start-up path of
            // a replica: no lock, nothing written.
            if bootstrap.is_none() {
                return Ok(report);
            }
        } else {
            check_scripts(steps.iter().map(|s| &s.migration.up))?;
            reporter.event(Event::Plan {
                steps: &steps,
                after_target,
                bootstrap: &bootstrap_names,
                dry_run: options.dry_run,
            });
            if held_back {
                reporter.event(Event::BootstrapHeldBack { after_target });
            }
            if options.dry_run {
                report.outcome = UpOutcome::DryRun;
                return Ok(report);
            }
            if !reporter.confirm() {
                return Err(Error::Aborted);
            }
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
            if !report.planned.is_empty() {
                reporter.event(Event::DoneElsewhere {
                    applied: applied_count(&state.rows),
                });
                report.outcome = UpOutcome::DoneElsewhere;
            }
        } else {
            self.apply(store, &steps, &mut report, reporter).await?;
            report.outcome = UpOutcome::Applied;
        }
        if let Some(bootstrap) = bootstrap {
            report.bootstrap = bootstrap::run(store, database, bootstrap, reporter).await?;
        }
        locked.release(store).await?;
        Ok(report)
    }

    /// Applies the steps in order; stops at the first failure.
    async fn apply(
        &self,
        store: &mut Store,
        steps: &[Step<'_>],
        report: &mut UpReport,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        let database = &self.database;
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
                    if let RunError::Failed(failure) = &err {
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
        reporter.event(Event::Finished {
            applied: report.applied.len(),
            elapsed: started.elapsed(),
        });
        Ok(())
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
