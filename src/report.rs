//! What the engine tells its caller: progress events while it runs (the
//! engine never prints) and the typed reports it returns.

use crate::migration::{Migration, Version};
use crate::plan::{StatusRow, Step, Totals};
use crate::store::{Applied, DbFailure, JournalEntry, LockHolder};
use std::time::Duration;

/// A progress event. The CLI prints them; a service embedding the engine
/// may log them or ignore them.
#[derive(Debug)]
pub enum Event<'a> {
    /// Nothing to apply (up to the target, when there is one; `after_target`
    /// counts the pending migrations past it).
    UpToDate { applied: usize, after_target: usize },
    /// What `up` is about to apply (or, with `dry_run`, would apply).
    Plan {
        steps: &'a [Step<'a>],
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
        applied: &'a Applied,
        index: usize,
        total: usize,
    },
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

    /// Asked once before anything changes, after the `Plan` event. The
    /// default proceeds (services, `--yes`, no TTY).
    fn confirm(&self, _steps: &[Step<'_>]) -> bool {
        true
    }
}

/// A reporter that ignores everything and always proceeds.
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _event: Event<'_>) {}
}

/// How `up` ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpOutcome {
    /// Nothing was pending.
    UpToDate,
    /// Pending migrations were applied.
    Applied,
    /// `--dry-run`: the plan only.
    DryRun,
    /// `--skip-if-locked` and another instance held the lock.
    SkippedLocked,
    /// Another instance applied everything while this one waited.
    DoneElsewhere,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug)]
pub struct AppliedMigration {
    pub migration: MigrationRef,
    pub duration: Duration,
}

/// The result of `up`.
#[derive(Clone, Debug)]
pub struct UpReport {
    pub outcome: UpOutcome,
    /// What was pending when the run looked.
    pub planned: Vec<MigrationRef>,
    pub applied: Vec<AppliedMigration>,
    pub lock_waited: Duration,
}

/// The result of `status`.
#[derive(Clone, Debug)]
pub struct StatusReport {
    pub rows: Vec<StatusRow>,
    pub totals: Totals,
}

/// The result of `history`.
#[derive(Clone, Debug)]
pub struct HistoryReport {
    pub entries: Vec<JournalEntry>,
}
