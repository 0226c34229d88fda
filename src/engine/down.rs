//! `down`: roll back the newest applied migrations with their down files.

use super::lock::{Locked, acquire};
use super::run::{into_error, run_with_retries};
use super::{Migrator, check_scripts};
use crate::error::Error;
use crate::migration::{FileProblem, MigrationSet, Script, Version};
use crate::report::{
    AppliedMigration, DownOutcome, DownReport, DownStep, Event, MigrationRef, Reporter,
};
use crate::store::{Action, DbState, RowStatus, Run, RunError, StateDetail, StateRow, Store};
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct DownOptions {
    /// How many of the newest applied migrations to roll back (default 1).
    pub steps: Option<usize>,
    /// Roll back every applied migration newer than this version, which
    /// must be applied (or `0`: roll back everything).
    pub to: Option<Version>,
    /// Print the plan; change nothing, take no lock.
    pub dry_run: bool,
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
    ) -> Result<DownReport, Error> {
        if options.steps.is_some() && options.to.is_some() {
            return Err(Error::Usage(
                "--steps and --to both say how far to roll back; give one".into(),
            ));
        }
        if options.steps == Some(0) {
            return Err(Error::Usage("--steps must be at least 1".into()));
        }
        let (migrations, mut store, state) = self.open(StateDetail::Full, reporter).await?;
        let result = self
            .down_on(&migrations, &mut store, state, options, reporter)
            .await;
        store.close().await;
        result
    }

    async fn down_on(
        &self,
        migrations: &MigrationSet,
        store: &mut Store,
        state: DbState,
        options: &DownOptions,
        reporter: &dyn Reporter,
    ) -> Result<DownReport, Error> {
        let mut report = DownReport {
            outcome: DownOutcome::NothingToDo,
            planned: Vec::new(),
            rolled_back: Vec::new(),
        };
        let chosen = choose(&state, options)?;
        if chosen.is_empty() {
            reporter.event(Event::NothingToRollBack);
            return Ok(report);
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
            return Ok(report);
        }
        if !reporter.confirm() {
            return Err(Error::Aborted);
        }

        let database = &self.database;
        let locked = acquire(store, database, &state.database, reporter).await?;
        if let Locked::Skipped = locked {
            report.outcome = DownOutcome::SkippedLocked;
            return Ok(report);
        }
        // What was confirmed must still be what the options choose: another
        // instance may have applied or rolled back meanwhile.
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
        let still: Vec<&DownStep> = steps.iter().collect();

        let started = Instant::now();
        let total = still.len();
        let actor = database.actor.clone().unwrap_or_else(super::default_actor);
        for (index, step) in still.into_iter().enumerate() {
            let migration = step.migration;
            reporter.event(Event::RollingBack {
                migration,
                index,
                total,
            });
            let run = Run {
                migration,
                script: &step.down,
                action: Action::RollBack,
                actor: &actor,
                retries_lock_timeout: false,
            };
            match run_with_retries(store, database, run, reporter).await {
                Ok(done) => {
                    reporter.event(Event::RolledBack {
                        migration,
                        done: &done,
                        index,
                        total,
                    });
                    report.rolled_back.push(AppliedMigration {
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
                    return Err(into_error(&run, true, err, &waited));
                }
            }
        }
        locked.release(store).await?;
        report.outcome = DownOutcome::RolledBack;
        reporter.event(Event::DownFinished {
            count: report.rolled_back.len(),
            elapsed: started.elapsed(),
        });
        Ok(report)
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
            if *to != zero && !applied.iter().any(|r| r.version == *to) {
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
            Some(down) => Ok(down.clone()),
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
