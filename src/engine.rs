//! The `Migrator`: the one path every caller takes to change a schema.
//! Connect, read the state, plan, take the lock, re-read, apply.

use crate::dsn::Dsn;
use crate::error::Error;
use crate::migration::{FileProblem, MigrationSet, ScannedFolder, Version, sql};
use crate::plan::{self, Step};
use crate::report::{
    AppliedMigration, Event, HistoryReport, MigrationRef, Reporter, StatusReport, UpOutcome,
    UpReport,
};
use crate::store::{ApplyError, DbState, StateDetail, Store, Tracking, default_lock_key};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How `up` treats the migration lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Wait for it, at most this long.
    Wait(Duration),
    /// Return at once, successfully, if another instance holds it.
    SkipIfLocked,
    /// Take no lock (`--safe=false`): for a single instance only.
    Off,
}

/// Everything the engine needs to know about the database side.
#[derive(Clone, Debug)]
pub struct Database {
    pub dsn: Dsn,
    pub tracking: Tracking,
    pub lock: LockMode,
    /// `None`: derived from database, schema and table.
    pub lock_key: Option<i64>,
    /// Recorded as `applied_by` and in the journal. `None`: `user@host` of
    /// this process, looked up only when there is something to record.
    pub actor: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Stop after this version.
    pub target: Option<Version>,
    /// Print the plan; change nothing, take no lock.
    pub dry_run: bool,
}

/// Where the migrations come from.
enum Source {
    /// Already read (embedded in a binary, or loaded by the caller).
    Loaded(Arc<MigrationSet>),
    /// A folder whose names are checked; the contents are read while the
    /// connection is being opened.
    Folder(Arc<ScannedFolder>),
}

pub struct Migrator {
    source: Source,
    database: Database,
}

impl Migrator {
    /// A migrator for migrations already read.
    pub fn new(migrations: MigrationSet, database: Database) -> Migrator {
        Migrator {
            source: Source::Loaded(Arc::new(migrations)),
            database,
        }
    }

    /// A migrator for a folder whose names were checked by
    /// [`scan`](crate::migration::scan). The contents are read concurrently
    /// with connecting, which with many files is most of the start-up time.
    pub fn from_folder(folder: ScannedFolder, database: Database) -> Migrator {
        Migrator {
            source: Source::Folder(Arc::new(folder)),
            database,
        }
    }

    async fn load(&self) -> Result<Arc<MigrationSet>, Error> {
        match &self.source {
            Source::Loaded(set) => Ok(Arc::clone(set)),
            Source::Folder(folder) => {
                let folder = Arc::clone(folder);
                tokio::task::spawn_blocking(move || folder.load())
                    .await
                    // The task is never cancelled; a panic in it is a bug
                    // and stays one.
                    .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
                    .map(Arc::new)
                    .map_err(Error::Files)
            }
        }
    }

    /// Reads the files and, at the same time, connects and reads the state.
    /// A problem with the files wins over one with the connection: it is
    /// the operator's to fix either way, and it is certain.
    async fn open(
        &self,
        detail: StateDetail,
    ) -> Result<(Arc<MigrationSet>, Store, DbState), Error> {
        let tracking = &self.database.tracking;
        let connect = async {
            let store = Store::connect(&self.database.dsn).await?;
            match store.read_state(tracking, detail).await {
                Ok(state) => Ok((store, state)),
                Err(err) => {
                    store.close().await;
                    Err(err)
                }
            }
        };
        let (files, connected) = tokio::join!(self.load(), connect);
        match (files, connected) {
            (Ok(files), Ok((store, state))) => Ok((files, store, state)),
            (Err(err), Ok((store, _))) => {
                store.close().await;
                Err(err)
            }
            (Err(err), Err(_)) | (Ok(_), Err(err)) => Err(err),
        }
    }

    /// Applies pending migrations in order, each in its own transaction with
    /// its record, under the migration lock; stops at the first failure.
    pub async fn up(
        &self,
        options: &UpOptions,
        reporter: &dyn Reporter,
    ) -> Result<UpReport, Error> {
        let (migrations, mut store, state) = self.open(StateDetail::Plan).await?;
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
        let tracking = &self.database.tracking;
        let target = options.target.as_ref();
        if let Some(target) = target
            && migrations.find(target).is_none()
        {
            return Err(Error::Usage(format!(
                "--target {target}: no migration file in {} has that version",
                migrations.dir.display()
            )));
        }
        let steps = plan::pending(migrations, &state.rows, target);
        let planned: Vec<MigrationRef> = steps
            .iter()
            .map(|s| MigrationRef::of(s.migration))
            .collect();
        let mut report = UpReport {
            outcome: UpOutcome::UpToDate,
            planned,
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
        refuse_transaction_control(&steps)?;
        reporter.event(Event::Plan {
            steps: &steps,
            dry_run: options.dry_run,
        });
        if options.dry_run {
            report.outcome = UpOutcome::DryRun;
            return Ok(report);
        }
        if !reporter.confirm(&steps) {
            return Err(Error::Aborted);
        }

        store.prepare_session(tracking).await?;
        let key = self.database.lock_key.unwrap_or_else(|| {
            default_lock_key(&state.database, &tracking.schema, &tracking.table)
        });
        let locked = match self.database.lock {
            LockMode::Off => {
                reporter.event(Event::LockDisabled);
                false
            }
            LockMode::SkipIfLocked => {
                if !store.try_lock(key).await? {
                    let holder = store.lock_holder(key).await?;
                    reporter.event(Event::LockSkipped {
                        holder: holder.as_ref(),
                    });
                    report.outcome = UpOutcome::SkippedLocked;
                    return Ok(report);
                }
                true
            }
            LockMode::Wait(limit) => {
                if !store.try_lock(key).await? {
                    let waited = store
                        .wait_for_lock(key, limit, |holder, waited| {
                            reporter.event(Event::LockWaiting {
                                holder,
                                waited,
                                limit,
                            })
                        })
                        .await?;
                    report.lock_waited = waited;
                    reporter.event(Event::LockAcquired { waited });
                }
                true
            }
        };

        // Another instance may have worked while this one waited or prompted.
        store.ensure_tracking_tables(tracking).await?;
        let state = store.read_state(tracking, StateDetail::Plan).await?;
        let steps: Vec<Step> = plan::pending(migrations, &state.rows, target);
        if steps.is_empty() {
            reporter.event(Event::DoneElsewhere {
                applied: applied_count(&state.rows),
            });
            report.outcome = UpOutcome::DoneElsewhere;
            return Ok(report);
        }

        let started = Instant::now();
        let total = steps.len();
        let actor = self.database.actor.clone().unwrap_or_else(default_actor);
        for (index, step) in steps.iter().enumerate() {
            let migration = step.migration;
            reporter.event(Event::Applying {
                migration,
                index,
                total,
            });
            match store
                .apply_in_transaction(
                    tracking,
                    migration,
                    step.failed_row_version.as_deref(),
                    &actor,
                )
                .await
            {
                Ok(applied) => {
                    reporter.event(Event::Applied {
                        migration,
                        applied: &applied,
                        index,
                        total,
                    });
                    report.applied.push(AppliedMigration {
                        migration: MigrationRef::of(migration),
                        duration: applied.duration,
                    });
                }
                Err(ApplyError::Failed {
                    failure,
                    duration,
                    recorded,
                }) => {
                    reporter.event(Event::Failed {
                        migration,
                        failure: &failure,
                        duration,
                    });
                    let note = match recorded {
                        Ok(()) => None,
                        Err(err) if err.connection_lost || failure.connection_lost => Some(
                            "the connection was lost: the server rolls back the open \
                             transaction, so nothing of this migration committed, and the \
                             failure is not recorded; run `migrate up` again once the server \
                             is back"
                                .to_owned(),
                        ),
                        Err(err) => Some(format!("the failure could not be recorded: {err}")),
                    };
                    return Err(Error::MigrationFailed {
                        label: migration.label(),
                        path: migration.path.clone(),
                        failure,
                        note,
                    });
                }
                Err(ApplyError::Record(err)) => return Err(err),
            }
        }
        if locked {
            store.unlock(key).await?;
        }
        report.outcome = UpOutcome::Applied;
        reporter.event(Event::Finished {
            applied: report.applied.len(),
            elapsed: started.elapsed(),
        });
        Ok(report)
    }

    /// Every version with its status; reads only, creates nothing.
    pub async fn status(&self) -> Result<StatusReport, Error> {
        let (migrations, store, state) = self.open(StateDetail::Full).await?;
        store.close().await;
        let rows = plan::status_rows(&migrations, &state.rows);
        let totals = plan::totals(&rows);
        Ok(StatusReport { rows, totals })
    }

    /// The journal, oldest first; reads only, creates nothing.
    pub async fn history(&self) -> Result<HistoryReport, Error> {
        let store = Store::connect(&self.database.dsn).await?;
        let entries = store.read_journal(&self.database.tracking).await;
        store.close().await;
        Ok(HistoryReport { entries: entries? })
    }
}

/// Refuses, before anything runs, pending files that would end the
/// transaction they run in: their work would commit apart from its record.
/// A file the lexer cannot read is left to the server to judge.
fn refuse_transaction_control(steps: &[Step]) -> Result<(), Error> {
    let problems: Vec<FileProblem> = steps
        .iter()
        .filter_map(|step| {
            let statements = sql::split(&step.migration.sql).ok()?;
            let (line, keyword) = statements
                .iter()
                .find_map(|s| s.transaction_control().map(|k| (s.line, k)))?;
            Some(FileProblem {
                path: step.migration.path.clone(),
                reason: format!(
                    "line {line}: {keyword} would take over the transaction the migration runs \
                     in, so its work would not commit together with its record; remove the \
                     file's transaction statements (each migration already runs in one \
                     transaction)"
                ),
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Files(problems))
    }
}

fn applied_count(rows: &[crate::store::StateRow]) -> usize {
    rows.iter()
        .filter(|r| r.status == crate::store::RowStatus::Applied)
        .count()
}

/// `user@host`: who ran a migration, for `applied_by` and the journal. In
/// Kubernetes the host name is the pod's name.
pub fn default_actor() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()));
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{user}@{host}")
}
