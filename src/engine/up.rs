//! `up`: apply pending migrations in order, then run the bootstrap scripts.

use super::bootstrap::{self, Bootstrap};
use super::lock::{Locked, acquire_watching};
use super::run::{Direction, StepRun, run_steps};
use super::{
    Migrator, applied_count, check_drift, check_scripts, known_version, look_for_lost_rows,
    out_of_order,
};
use crate::error::Error;
use crate::migration::{MigrationSet, Version};
use crate::plan::{self, Step};
use crate::report::{Event, MigrationRef, Progress, Reporter, RunFailed, UpOutcome, UpReport};
use crate::state::DbState;
use crate::store::{Action, StateDetail, Store};

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
    /// The versions a person confirmed: a plan holding any other (another
    /// run rolled one back meanwhile, say) is refused with
    /// [`Error::Conflict`] before anything runs. `None`: no such check.
    pub expect: Option<Vec<String>>,
}

/// [`UpOptions::expect`]: every step must be among the confirmed versions.
fn check_expected(steps: &[Step<'_>], expect: Option<&[String]>) -> Result<(), Error> {
    let Some(expect) = expect else {
        return Ok(());
    };
    let unconfirmed: Vec<String> = steps
        .iter()
        .filter(|s| !expect.iter().any(|v| v == s.migration.version.as_str()))
        .map(|s| s.migration.label())
        .collect();
    if unconfirmed.is_empty() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "the pending migrations changed since they were confirmed: {} {} not among them; \
         nothing was run: look at the status again",
        unconfirmed.join(", "),
        if unconfirmed.len() == 1 { "is" } else { "are" }
    )))
}

impl Migrator {
    /// What a service calls at start-up (the seed's
    /// `RunMigrationsWithBootstrapSafe`): `up` with the lock, unless
    /// `SKIP_MIGRATIONS` says not to (then nothing is connected to), and
    /// without the bootstrap scripts if `SKIP_BOOTSTRAP` says so. A switch
    /// set to anything but `true false 1 0 yes no` is an error.
    pub async fn start_up(&self, reporter: &dyn Reporter) -> Result<UpReport, RunFailed> {
        let failed = |cause| RunFailed {
            done: Progress::default(),
            cause: Box::new(cause),
        };
        if super::env_switch("SKIP_MIGRATIONS")
            .map_err(failed)?
            .unwrap_or(false)
        {
            reporter.event(Event::SkippedByEnvironment);
            return Ok(UpReport::skipped());
        }
        let options = UpOptions {
            skip_bootstrap: super::env_switch("SKIP_BOOTSTRAP")
                .map_err(failed)?
                .unwrap_or(false),
            ..UpOptions::default()
        };
        self.up(&options, reporter).await
    }

    /// Applies pending migrations in order, each in its own transaction with
    /// its record (or statement by statement, for a no-transaction file),
    /// under the migration lock; stops at the first failure. Refuses to run
    /// over drift. Then, under the same lock, runs the bootstrap scripts.
    /// A failure carries what committed before it.
    pub async fn up(
        &self,
        options: &UpOptions,
        reporter: &dyn Reporter,
    ) -> Result<UpReport, RunFailed> {
        self.up_with(None, options, reporter).await
    }

    /// [`Migrator::up`]; over `kept`, a connection the caller keeps from
    /// one target to the next (a fleet's worker), when given: then it is
    /// left open, the lock given up.
    pub(crate) async fn up_with(
        &self,
        kept: Option<&mut Store>,
        options: &UpOptions,
        reporter: &dyn Reporter,
    ) -> Result<UpReport, RunFailed> {
        let mut report = UpReport {
            outcome: UpOutcome::UpToDate,
            planned: Vec::new(),
            planned_bootstrap: Vec::new(),
            done: Progress::default(),
        };
        let result = async {
            // Variables from the environment: read now, before connecting.
            let bootstrap = match &self.database.bootstrap {
                Some(b) if !b.scripts.is_empty() && !options.skip_bootstrap => Some(b.resolved()?),
                _ => None,
            };
            let bootstrap = bootstrap.as_ref();
            match kept {
                Some(store) => {
                    let (migrations, state) = self.read_over(store, StateDetail::Plan).await?;
                    self.up_on(
                        &migrations,
                        store,
                        state,
                        bootstrap,
                        options,
                        &mut report,
                        reporter,
                    )
                    .await
                }
                None => {
                    let (migrations, mut store, state) =
                        self.open(StateDetail::Plan, reporter).await?;
                    let result = self
                        .up_on(
                            &migrations,
                            &mut store,
                            state,
                            bootstrap,
                            options,
                            &mut report,
                            reporter,
                        )
                        .await;
                    // Closing the connection also releases the lock on every
                    // error path.
                    store.close().await;
                    result
                }
            }
        }
        .await;
        let done = &mut report.done;
        done.version_after = done
            .applied
            .iter()
            .map(|a| &a.migration.version)
            .chain(done.version_before.as_ref())
            .chain(done.version_after.as_ref())
            .max()
            .cloned();
        match result {
            Ok(()) => Ok(report),
            Err(cause) => Err(RunFailed::new(report.done, cause)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn up_on(
        &self,
        migrations: &MigrationSet,
        store: &mut Store,
        state: DbState,
        bootstrap: Option<&Bootstrap>,
        options: &UpOptions,
        report: &mut UpReport,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        let target = options.target.as_ref();
        if let Some(target) = target {
            known_version(migrations, target, "--target")?;
        }
        report.done.version_before = plan::newest_applied(&state.rows).cloned();
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
        report.planned = steps
            .iter()
            .map(|s| MigrationRef::of(s.migration))
            .collect();
        report.planned_bootstrap = bootstrap_names.clone();
        report.done.pending = Some(steps.len() + after_target);
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
                return Ok(());
            }
            // Without bootstrap scripts this is the whole start-up path of
            // a replica: no lock, nothing written.
            if bootstrap.is_none() {
                return Ok(());
            }
        }
        // A person is shown the plan and asked before the lock is taken.
        // Otherwise the plan is shown once the lock is held and the state
        // read again: a replica waiting behind another says only what it
        // does itself, and if the other leaves nothing to do, it stops
        // waiting without taking the lock.
        let shown_first = !steps.is_empty() && (options.dry_run || reporter.asks());
        if !steps.is_empty() {
            check_scripts(steps.iter().map(|s| &s.migration.up))?;
            check_expected(&steps, options.expect.as_deref())?;
            if shown_first {
                reporter.event(Event::Plan {
                    steps: &steps,
                    after_target,
                    bootstrap: &bootstrap_names,
                    dry_run: options.dry_run,
                });
                if held_back {
                    reporter.event(Event::BootstrapHeldBack { after_target });
                }
            }
            if options.dry_run {
                report.outcome = UpOutcome::DryRun;
                return Ok(());
            }
            if !reporter.confirm() {
                return Err(Error::Aborted);
            }
        }

        let database = &self.database;
        let work_left =
            |state: &DbState| !plan::pending(migrations, &state.rows, target).is_empty();
        // Bootstrap scripts run under the lock every time: then it is taken
        // whatever the state says.
        let watch: Option<&(dyn Fn(&DbState) -> bool + Sync)> =
            (bootstrap.is_none() && !steps.is_empty()).then_some(&work_left);
        let locked = acquire_watching(store, database, &state.database, watch, reporter).await?;
        match &locked {
            Locked::Skipped => {
                report.outcome = UpOutcome::SkippedLocked;
                return Ok(());
            }
            Locked::NothingLeft { waited, state } => {
                report.done.lock_waited = *waited;
                report.done.version_after = plan::newest_applied(&state.rows).cloned();
                report.done.pending = Some(after_target);
                reporter.event(Event::DoneElsewhere {
                    applied: applied_count(&state.rows),
                });
                report.outcome = UpOutcome::DoneElsewhere;
                return Ok(());
            }
            Locked::Held { waited, .. } => report.done.lock_waited = *waited,
            Locked::Unlocked => {}
        }

        let result = self
            .up_locked(
                migrations,
                store,
                &locked,
                bootstrap,
                options,
                (after_target, held_back, shown_first, &bootstrap_names),
                report,
                reporter,
            )
            .await;
        // A lease is given up on every path; the advisory lock would go with
        // the connection anyway.
        let released = locked.release(store, database).await;
        result.and(released)
    }

    /// The part of `up` under the lock.
    #[allow(clippy::too_many_arguments)]
    async fn up_locked(
        &self,
        migrations: &MigrationSet,
        store: &mut Store,
        locked: &Locked,
        bootstrap: Option<&Bootstrap>,
        options: &UpOptions,
        shown: (usize, bool, bool, &[String]),
        report: &mut UpReport,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        let (after_target, held_back, shown_first, bootstrap_names) = shown;
        let database = &self.database;
        // Another instance may have worked while this one waited or prompted.
        store.ensure_tracking_tables(&database.tracking).await?;
        let mut state = store
            .read_state(&database.tracking, StateDetail::Plan)
            .await?;
        look_for_lost_rows(store.client(), &database.tracking, migrations, &mut state).await?;
        report.done.version_after = plan::newest_applied(&state.rows).cloned();
        let steps = self.plan(migrations, &state, options)?;
        check_expected(&steps, options.expect.as_deref())?;
        report.done.pending = Some(steps.len() + after_target);
        if steps.is_empty() {
            if !report.planned.is_empty() {
                reporter.event(Event::DoneElsewhere {
                    applied: applied_count(&state.rows),
                });
                report.outcome = UpOutcome::DoneElsewhere;
            }
        } else {
            if !shown_first {
                reporter.event(Event::Plan {
                    steps: &steps,
                    after_target,
                    bootstrap: bootstrap_names,
                    dry_run: false,
                });
                if held_back {
                    reporter.event(Event::BootstrapHeldBack { after_target });
                }
                report.planned = steps
                    .iter()
                    .map(|s| MigrationRef::of(s.migration))
                    .collect();
            }
            let runs: Vec<StepRun> = steps
                .iter()
                .map(|step| StepRun {
                    migration: step.migration,
                    script: &step.migration.up,
                    action: Action::Apply {
                        failed_row_version: step.failed_row_version.as_deref(),
                    },
                })
                .collect();
            run_steps(
                store,
                database,
                &runs,
                Direction::Up,
                locked.lock(),
                &mut report.done,
                reporter,
            )
            .await?;
            report.outcome = UpOutcome::Applied;
        }
        if let Some(bootstrap) = bootstrap {
            bootstrap::run(
                store,
                database,
                bootstrap,
                locked.lock(),
                &mut report.done.bootstrap,
                reporter,
            )
            .await?;
        }
        Ok(())
    }

    /// The steps to run, after refusing drift (lost rows included: the
    /// state was read with them) and out-of-order files.
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
