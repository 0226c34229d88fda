//! What the engine tells its caller: progress events while it runs (the
//! engine never prints) and the typed reports it returns.

use crate::duration::serialize_micros;
use crate::error::{DbFailure, Error};
use crate::migration::{Migration, Version};
use crate::plan::{Drifted, StatusRow, Step, Totals};
use crate::state::JournalEntry;
use crate::state::{Blocker, LockHolder};
use crate::store::Done;
use serde::Serialize;
use std::time::Duration;

/// A progress event. The CLI prints them; a service embedding the engine
/// may log them or ignore them.
#[derive(Debug)]
pub enum Event<'a> {
    /// Nothing to apply (up to the target, when there is one; `after_target`
    /// counts the pending migrations past it).
    UpToDate { applied: usize, after_target: usize },
    /// What `up` is about to apply (or, with `dry_run`, would apply), and
    /// the bootstrap scripts it runs afterwards.
    Plan {
        steps: &'a [Step<'a>],
        /// Pending migrations past `--target`, left for a later run.
        after_target: usize,
        bootstrap: &'a [String],
        dry_run: bool,
    },
    /// Running with `--safe=false`: no lock is taken.
    LockDisabled,
    /// Another session holds the migration lock; waiting for it. Sent
    /// when the wait starts (`waited` zero), when the holder changes and
    /// every 30 s.
    LockWaiting {
        holder: Option<&'a LockHolder>,
        waited: Duration,
        limit: Duration,
    },
    /// The lock was taken after waiting this long.
    LockAcquired { waited: Duration },
    /// Another session holds the lock and `--skip-if-locked` was given.
    LockSkipped { holder: Option<&'a LockHolder> },
    /// While this instance waited for the lock, another applied the work.
    DoneElsewhere { applied: usize },
    /// A migration is starting (`index` counts from 0).
    Applying {
        migration: &'a Migration,
        index: usize,
        total: usize,
    },
    /// A migration committed.
    Applied {
        migration: &'a Migration,
        applied: &'a Done,
        index: usize,
        total: usize,
    },
    /// A migration waits for locks other sessions hold (sent when the
    /// blockers change).
    Blocked {
        migration: &'a Migration,
        blockers: &'a [Blocker],
    },
    /// A migration hit `lock_timeout` and is tried again after `pause`.
    Retrying {
        migration: &'a Migration,
        attempt: usize,
        attempts: usize,
        pause: Duration,
    },
    /// What `down` is about to roll back (or, with `dry_run`, would).
    RollbackPlan {
        steps: &'a [DownStep<'a>],
        dry_run: bool,
    },
    /// Nothing is applied, so there is nothing to roll back.
    NothingToRollBack,
    /// A migration is being rolled back.
    RollingBack {
        migration: &'a Migration,
        index: usize,
        total: usize,
    },
    /// A migration was rolled back (its row removed).
    RolledBack {
        migration: &'a Migration,
        done: &'a Done,
        index: usize,
        total: usize,
    },
    /// Every planned migration was rolled back.
    DownFinished { count: usize, elapsed: Duration },
    /// What `repair` will accept (or, with `dry_run`, would).
    RepairPlan { items: &'a [Drifted], dry_run: bool },
    /// Nothing to repair: files and records agree.
    NothingToRepair,
    /// The records now match the files.
    Repaired { count: usize },
    /// A bootstrap script is starting.
    Bootstrapping {
        script: &'a str,
        index: usize,
        total: usize,
    },
    /// `--target` leaves migrations pending: the bootstrap scripts, written
    /// for the newest schema, do not run this time.
    BootstrapHeldBack { after_target: usize },
    /// A bootstrap script committed.
    Bootstrapped { script: &'a str, duration: Duration },
    /// `SKIP_MIGRATIONS` is set: nothing was done.
    SkippedByEnvironment,
    /// Connected (shown with `--verbose`).
    Connected {
        target: &'a str,
        server_version: &'a str,
    },
    /// The key of the migration lock and which kind of lock the run takes,
    /// with why (shown with `--verbose`).
    LockKey { key: i64, kind: &'a str },
    /// The lease of another run had run out without being renewed: this
    /// run took it over.
    LeaseTakenOver { holder: &'a str, ran_out: &'a str },
    /// `wait`: migrations are still pending or failed (sent when the counts
    /// change).
    WaitingForMigrations {
        pending: usize,
        failed: usize,
        waited: Duration,
    },
    /// The first connection failed; trying again (`--wait-for-db`).
    WaitingForDatabase { error: &'a str, waited: Duration },
    /// The server turned the connection away (too many clients, starting
    /// up, shutting down); trying again for up to `limit`. Sent once.
    ServerBusy { error: &'a str, limit: Duration },
    /// A migration failed and was rolled back.
    Failed {
        migration: &'a Migration,
        failure: &'a DbFailure,
        duration: Duration,
    },
    /// Every planned migration was applied.
    Finished { applied: usize, elapsed: Duration },
}

/// Receives the engine's events, and answers the confirmation question.
pub trait Reporter: Send + Sync {
    fn event(&self, event: Event<'_>);

    /// Asked once before anything changes, after the plan event. The
    /// default proceeds (services, `--yes`, no TTY).
    fn confirm(&self) -> bool {
        true
    }

    /// Whether `confirm` puts the question to a person. When it does not,
    /// `up` shows its plan only once it holds the lock (a replica waiting
    /// behind another says what it will apply when that is settled).
    fn asks(&self) -> bool {
        false
    }
}

/// What a run was doing when a signal stopped it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Running {
    Applying { label: String, transactional: bool },
    RollingBack { label: String, transactional: bool },
    Bootstrap { script: String },
}

/// What a run is doing, as far as its events tell: what is running, how
/// many migrations finished, and whether each planned down file runs in a
/// transaction. Kept by the printer and by each target of a fleet, for
/// the line a signal leaves ([`interrupted_line`]).
#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub running: Option<Running>,
    /// Migrations applied or rolled back so far.
    pub finished: usize,
    /// Each planned down file's label and whether it runs in a transaction.
    down_transactional: Vec<(String, bool)>,
}

impl Activity {
    pub fn follow(&mut self, event: &Event<'_>) {
        match event {
            Event::Applying { migration, .. } => {
                self.running = Some(Running::Applying {
                    label: migration.label(),
                    transactional: migration.up.transactional,
                })
            }
            Event::RollbackPlan { steps, .. } => {
                self.down_transactional = steps
                    .iter()
                    .map(|s| (s.migration.label(), s.down.transactional))
                    .collect()
            }
            Event::RollingBack { migration, .. } => {
                let label = migration.label();
                let transactional = self
                    .down_transactional
                    .iter()
                    .find(|(l, _)| *l == label)
                    .is_none_or(|(_, t)| *t);
                self.running = Some(Running::RollingBack {
                    label,
                    transactional,
                })
            }
            Event::Bootstrapping { script, .. } => {
                self.running = Some(Running::Bootstrap {
                    script: (*script).to_owned(),
                })
            }
            Event::Applied { .. } | Event::RolledBack { .. } => {
                self.running = None;
                self.finished += 1;
            }
            Event::Failed { .. } | Event::Bootstrapped { .. } => self.running = None,
            _ => {}
        }
    }

    /// [`interrupted_line`] for what this activity was doing.
    pub fn interrupted_line(&self, signal: &str) -> String {
        interrupted_line(signal, self.running.as_ref(), self.finished)
    }
}

/// What an interrupted run leaves behind, in one line: the migration that
/// was running (if one was), what the server does with it, and how many
/// finished before. The same words for a single run and a fleet's target.
pub fn interrupted_line(signal: &str, running: Option<&Running>, finished: usize) -> String {
    let mut line = match running {
        Some(Running::Applying {
            label,
            transactional: true,
        }) => format!(
            "interrupted by {signal} while applying {label}: the server rolls back its \
             transaction, so nothing of it is applied or recorded"
        ),
        Some(Running::Applying {
            label,
            transactional: false,
        }) => format!(
            "interrupted by {signal} while applying {label}, which runs outside a \
             transaction: the server cancels the statement that was running, the ones before \
             it stay done, and its row says how far it got (the next `up` runs it again)"
        ),
        Some(Running::RollingBack {
            label,
            transactional: true,
        }) => format!(
            "interrupted by {signal} while rolling back {label}: the server rolls back its \
             transaction, so it stays applied"
        ),
        Some(Running::RollingBack {
            label,
            transactional: false,
        }) => format!(
            "interrupted by {signal} while rolling back {label}, which runs outside a \
             transaction: the statements of its down file that completed stay done, and it \
             stays recorded as applied"
        ),
        Some(Running::Bootstrap { script }) => format!(
            "interrupted by {signal} while running bootstrap script {script}: the server \
             rolls back its transaction"
        ),
        None if finished == 0 => {
            format!("interrupted by {signal} before any migration ran: nothing was changed")
        }
        None => format!("interrupted by {signal} between migrations"),
    };
    if finished > 0 {
        line.push_str(&format!(
            "; the {finished} {} that finished before stay{} so",
            if finished == 1 {
                "migration"
            } else {
                "migrations"
            },
            if finished == 1 { "s" } else { "" }
        ));
    }
    line
}

/// A reporter that ignores everything and always proceeds.
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _event: Event<'_>) {}
}

/// One migration `down` rolls back, with its down file read.
#[derive(Clone, Debug)]
pub struct DownStep<'a> {
    pub migration: &'a Migration,
    pub down: crate::migration::Script,
    /// The up file changed since it was applied: the down file may not fit
    /// what the database has.
    pub up_changed: bool,
}

/// How `up` ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpOutcome {
    /// Nothing was pending.
    UpToDate,
    /// Pending migrations were applied.
    Applied,
    /// `--dry-run`: the plan only.
    DryRun,
    /// `--skip-if-locked` and another instance held the lock.
    SkippedLocked,
    /// `SKIP_MIGRATIONS`: nothing was looked at.
    Skipped,
    /// Another instance applied everything while this one waited.
    DoneElsewhere,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MigrationRef {
    pub version: Version,
    pub name: String,
}

impl MigrationRef {
    pub fn of(migration: &Migration) -> MigrationRef {
        MigrationRef {
            version: migration.version.clone(),
            name: migration.name.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct AppliedMigration {
    #[serde(flatten)]
    pub migration: MigrationRef,
    #[serde(rename = "duration_us", serialize_with = "serialize_micros")]
    pub duration: Duration,
}

/// A bootstrap script that ran.
#[derive(Clone, Debug, Serialize)]
pub struct BootstrapRun {
    pub script: String,
    #[serde(rename = "duration_us", serialize_with = "serialize_micros")]
    pub duration: Duration,
}

/// What a run committed, and what it found, on success and on failure
/// alike: the CLI's output, the JSON document, the metrics and the API all
/// read it here.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    /// Migrations applied, in order.
    pub applied: Vec<AppliedMigration>,
    /// Migrations rolled back (`down`), in order.
    pub rolled_back: Vec<AppliedMigration>,
    /// The bootstrap scripts that ran.
    pub bootstrap: Vec<BootstrapRun>,
    /// The migration that failed (or released the lock), and how long it
    /// ran.
    pub failed: Option<AppliedMigration>,
    /// How long the run waited for the migration lock.
    #[serde(rename = "lock_waited_us", serialize_with = "serialize_micros")]
    pub lock_waited: Duration,
    /// Migrations still pending when the run ended, once it had looked.
    pub pending: Option<usize>,
    /// The newest applied version when the run looked, before it changed
    /// anything, and when it ended (a fleet's summary shows both); `None`
    /// for none, or before the run looked.
    #[serde(skip)]
    pub version_before: Option<Version>,
    #[serde(skip)]
    pub version_after: Option<Version>,
}

/// An `up` or `down` that failed, with what it committed before it did.
#[derive(Debug)]
pub struct RunFailed {
    pub done: Progress,
    pub cause: Box<Error>,
}

impl RunFailed {
    /// A run that ended on `cause`, having done `done`; a lock wait that
    /// ran out counts as waited.
    pub(crate) fn new(mut done: Progress, cause: Error) -> RunFailed {
        if let Error::LockTimeout { waited, .. } = &cause {
            done.lock_waited = *waited;
        }
        RunFailed {
            done,
            cause: Box::new(cause),
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.cause.exit_code()
    }
}

impl std::fmt::Display for RunFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

impl std::error::Error for RunFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.cause)
    }
}

/// A caller that wants the cause alone (`?` into `migrate::Error`).
impl From<RunFailed> for Error {
    fn from(failed: RunFailed) -> Error {
        *failed.cause
    }
}

/// The result of `up`.
#[derive(Clone, Debug, Serialize)]
pub struct UpReport {
    pub outcome: UpOutcome,
    /// What was pending when the run looked.
    pub planned: Vec<MigrationRef>,
    /// The bootstrap scripts this run was to run (none when skipped, or
    /// held back by `--target`).
    pub planned_bootstrap: Vec<String>,
    /// What it did.
    #[serde(flatten)]
    pub done: Progress,
}

impl UpReport {
    /// `SKIP_MIGRATIONS`: nothing looked at, nothing done.
    pub fn skipped() -> UpReport {
        UpReport {
            outcome: UpOutcome::Skipped,
            planned: Vec::new(),
            planned_bootstrap: Vec::new(),
            done: Progress::default(),
        }
    }
}

/// The result of `status`.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    #[serde(rename = "migrations")]
    pub rows: Vec<StatusRow>,
    pub totals: Totals,
    /// Pending versions older than the newest applied one (`up` refuses
    /// them without `--out-of-order`), by label.
    #[serde(serialize_with = "labels")]
    pub out_of_order: Vec<crate::error::OutOfOrder>,
    /// Pending versions whose rows are gone while the journal says they
    /// were applied (`up` refuses them; `repair` restores their rows).
    pub unrecorded: Vec<Drifted>,
}

/// How `down` ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DownOutcome {
    /// Nothing in the range was applied.
    NothingToDo,
    RolledBack,
    DryRun,
    SkippedLocked,
}

/// The result of `down`.
#[derive(Clone, Debug, Serialize)]
pub struct DownReport {
    pub outcome: DownOutcome,
    /// What the plan chose to roll back.
    pub planned: Vec<MigrationRef>,
    /// What it did.
    #[serde(flatten)]
    pub done: Progress,
}

/// The result of `validate`: the files agree with the database.
#[derive(Clone, Debug, Serialize)]
pub struct ValidateReport {
    pub totals: Totals,
}

/// The result of `repair`.
#[derive(Clone, Debug, Serialize)]
pub struct RepairReport {
    /// What was (or, with a dry run, would be) accepted.
    pub repaired: Vec<Drifted>,
    pub dry_run: bool,
}

/// The result of `lock`.
#[derive(Clone, Debug)]
pub struct LockReport {
    pub key: i64,
    pub holder: Option<LockHolder>,
}

/// `key` as a string (a 64-bit key loses digits as a JSON number in most
/// readers), `held`, `holder`.
impl Serialize for LockReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("LockReport", 3)?;
        out.serialize_field("key", &self.key.to_string())?;
        out.serialize_field("held", &self.holder.is_some())?;
        out.serialize_field("holder", &self.holder)?;
        out.end()
    }
}

/// The result of `history`.
#[derive(Clone, Debug)]
pub struct HistoryReport {
    pub entries: Vec<JournalEntry>,
}

/// `entries`, oldest first, and their `total`.
impl Serialize for HistoryReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("HistoryReport", 2)?;
        out.serialize_field("entries", &self.entries)?;
        out.serialize_field("total", &self.entries.len())?;
        out.end()
    }
}

fn labels<S: serde::Serializer>(
    items: &[crate::error::OutOfOrder],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(|o| &o.label))
}
