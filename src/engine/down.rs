//! `down`: roll back the newest applied migrations with their down files.

use super::lock::{Locked, acquire};
use super::run::{Direction, StepRun, run_steps};
use super::{Migrator, check_scripts};
use crate::error::Error;
use crate::migration::{FileProblem, MigrationSet, Script, Version};
use crate::report::{
    AppliedMigration, DownOutcome, DownReport, DownStep, Event, MigrationRef, Progress, Reporter,
    RunFailed,
};
use crate::state::{DbState, RowStatus, StateRow};
use crate::store::{Action, StateDetail, Store};

#[derive(Clone, Debug, Default)]
pub struct DownOptions {
    /// How many of the newest applied migrations to roll back (default 1).
    pub steps: Option<usize>,
    /// Roll back every applied migration newer than this version, which
    /// must be applied (or `0`: roll back everything).
    pub to: Option<Version>,
    /// Print the plan; change nothing, take no lock.
    pub dry_run: bool,
    /// A database that never reached `to` has nothing to roll back, rather
    /// than `to` being a mistake (a fleet's targets stand at different
    /// versions).
    pub to_may_be_ahead: bool,
}

impl Migrator {
    /// Rolls back the newest applied migrations, newest first, each with
    /// its down file in its own transaction (or statement by statement),
    /// under the migration lock. Every down file of the range must exist
    /// before anything runs.
    pub async fn down(
        &self,
        options: &DownOptions,
        reporter: &dyn Reporter,
    ) -> Result<DownReport, RunFailed> {
        self.down_with(None, options, reporter).await
    }

    /// [`Migrator::down`]; over `kept`, a connection the caller keeps from
    /// one target to the next, when given: then it is left open.
    pub(crate) async fn down_with(
        &self,
        kept: Option<&mut Store>,
        options: &DownOptions,
        reporter: &dyn Reporter,
    ) -> Result<DownReport, RunFailed> {
        let mut report = DownReport {
            outcome: DownOutcome::NothingToDo,
            planned: Vec::new(),
            done: Progress::default(),
        };
        let result = async {
            if options.steps.is_some() && options.to.is_some() {
                return Err(Error::Usage(
                    "--steps and --to both say how far to roll back; give one".into(),
                ));
            }
            if options.steps == Some(0) {
                return Err(Error::Usage("--steps must be at least 1".into()));
            }
            match kept {
                Some(store) => {
                    let (migrations, state) = self.read_over(store, StateDetail::Full).await?;
                    self.down_on(&migrations, store, state, options, &mut report, reporter)
                        .await
                }
                None => {
                    let (migrations, mut store, state) =
                        self.open(StateDetail::Full, reporter).await?;
                    let result = self
                        .down_on(
                            &migrations,
                            &mut store,
                            state,
                            options,
                            &mut report,
                            reporter,
                        )
                        .await;
                    store.close().await;
                    result
                }
            }
        }
        .await;
        match result {
            Ok(()) => Ok(report),
            Err(cause) => Err(RunFailed::new(report.done, cause)),
        }
    }

    async fn down_on(
        &self,
        migrations: &MigrationSet,
        store: &mut Store,
        state: DbState,
        options: &DownOptions,
        report: &mut DownReport,
        reporter: &dyn Reporter,
    ) -> Result<(), Error> {
        let newest = |state: &DbState, gone: &[AppliedMigration]| {
            state
                .rows
                .iter()
                .filter(|r| r.status == RowStatus::Applied)
                .map(|r| &r.version)
                .filter(|v| !gone.iter().any(|g| g.migration.version == **v))
                .max()
                .cloned()
        };
        report.done.version_before = newest(&state, &[]);
        report.done.version_after = report.done.version_before.clone();
        let chosen = choose(&state, options)?;
        if chosen.is_empty() {
            reporter.event(Event::NothingToRollBack);
            return Ok(());
        }
        let steps = read_down_files(migrations, &state, &chosen)?;
        report.planned = steps
            .iter()
            .map(|s| MigrationRef::of(s.migration))
            .collect();
        check_scripts(steps.iter().map(|s| &s.down))?;
        reporter.event(Event::RollbackPlan {
            steps: &steps,
            dry_run: options.dry_run,
        });
        if options.dry_run {
            report.outcome = DownOutcome::DryRun;
            return Ok(());
        }
        if !reporter.confirm() {
            return Err(Error::Aborted);
        }

        let database = &self.database;
        let locked = acquire(store, database, &state.database, reporter).await?;
        match locked {
            Locked::Held { waited, .. } | Locked::NothingLeft { waited, .. } => {
                report.done.lock_waited = waited
            }
            Locked::Unlocked | Locked::Skipped => {}
        }
        if let Locked::Skipped = locked {
            report.outcome = DownOutcome::SkippedLocked;
            return Ok(());
        }
        let result = async {
            // What was confirmed must still be what the options choose:
            // another instance may have applied or rolled back meanwhile.
            let state = store
                .read_state(&database.tracking, StateDetail::Full)
                .await?;
            if choose(&state, options)? != chosen {
                return Err(Error::Conflict(
                    "the applied migrations changed while down waited for the lock; nothing was \
                     rolled back: run it again to see the new plan"
                        .into(),
                ));
            }
            let runs: Vec<StepRun> = steps
                .iter()
                .map(|step| StepRun {
                    migration: step.migration,
                    script: &step.down,
                    action: Action::RollBack {
                        row_version: state
                            .row(&step.migration.version)
                            .map_or(step.migration.version.as_str(), |r| r.version.as_str()),
                    },
                })
                .collect();
            let ran = run_steps(
                store,
                database,
                &runs,
                Direction::Down,
                locked.lock(),
                &mut report.done,
                reporter,
            )
            .await;
            report.done.version_after = newest(&state, &report.done.rolled_back);
            ran?;
            report.outcome = DownOutcome::RolledBack;
            Ok(())
        }
        .await;
        let released = locked.release(store, database).await;
        result.and(released)
    }
}

/// The applied versions to roll back, last applied first (with
/// `--out-of-order` that is not always the highest version). `--to` takes
/// every applied version above it; it must itself be applied, or `0`.
fn choose(state: &DbState, options: &DownOptions) -> Result<Vec<Version>, Error> {
    let mut applied: Vec<&StateRow> = state
        .rows
        .iter()
        .filter(|r| r.status == RowStatus::Applied)
        .collect();
    let applied_at = |r: &StateRow| r.details.as_ref().map(|d| d.applied_at.clone());
    applied.sort_by(|a, b| {
        applied_at(b)
            .cmp(&applied_at(a))
            .then_with(|| b.version.cmp(&a.version))
    });
    Ok(match &options.to {
        Some(to) => {
            let zero = Version::parse("0").expect("digits");
            let ahead = options.to_may_be_ahead && applied.iter().all(|r| r.version < *to);
            if *to != zero && !ahead && !applied.iter().any(|r| r.version == *to) {
                return Err(Error::Usage(format!(
                    "--to {to}: no applied migration has that version (give an applied \
                     version, which stays applied, or 0 to roll back everything)"
                )));
            }
            applied
                .into_iter()
                .filter(|r| r.version > *to)
                .map(|r| r.version.clone())
                .collect()
        }
        None => applied
            .into_iter()
            .take(options.steps.unwrap_or(1))
            .map(|r| r.version.clone())
            .collect(),
    })
}

/// Reads the down file of each version; every missing or unreadable one is
/// reported before anything runs.
fn read_down_files<'m>(
    migrations: &'m MigrationSet,
    state: &DbState,
    versions: &[Version],
) -> Result<Vec<DownStep<'m>>, Error> {
    let mut steps = Vec::new();
    let mut problems = Vec::new();
    for version in versions {
        let Some(migration) = migrations.find(version) else {
            problems.push(FileProblem {
                path: migrations.dir.clone(),
                reason: format!(
                    "version {version} is applied, but no file has it, so it has no down file \
                     to roll it back with"
                ),
            });
            continue;
        };
        let Some(path) = &migration.down_path else {
            let expected = migration
                .up
                .path
                .with_file_name(format!("{}.down.sql", migration.label()));
            problems.push(FileProblem {
                path: expected,
                reason: format!(
                    "{} has no down file to roll it back with",
                    migration.label()
                ),
            });
            continue;
        };
        let read = match &migration.down {
            Some(down) => Ok(Script::clone(down)),
            None => Script::read(path),
        };
        match read {
            Ok(down) => steps.push(DownStep {
                migration,
                down,
                up_changed: state
                    .row(version)
                    .is_some_and(|r| r.checksum != migration.up.checksum.as_str()),
            }),
            Err(reason) => problems.push(FileProblem {
                path: path.clone(),
                reason,
            }),
        }
    }
    if problems.is_empty() {
        Ok(steps)
    } else {
        Err(Error::Files(problems))
    }
}
