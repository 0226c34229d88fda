//! Running migrations: the one loop `up` and `down` share, and each script
//! run with the engine's care around it: retries after a lock timeout, and
//! a watch on the sessions it waits for.

use super::Database;
use crate::error::{DbFailure, Error};
use crate::migration::{Migration, Script};
use crate::report::{AppliedMigration, Event, MigrationRef, Progress, Reporter};
use crate::state::Blocker;
use crate::store::{
    ACTIVE_SQL_TRANSACTION, Action, Done, LOCK_NOT_AVAILABLE, Lock, Run, RunError, Store,
};
use std::time::{Duration, Instant};

/// Which way the steps go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    Up,
    Down,
}

/// One migration to run: its up file to apply it, or its down file.
pub(super) struct StepRun<'a> {
    pub migration: &'a Migration,
    pub script: &'a Script,
    pub action: Action<'a>,
}

/// Runs the steps in order, under `lock`, and
/// stops at the first failure. What committed goes into `done` as it
/// commits, so a failure still tells it.
pub(super) async fn run_steps(
    store: &mut Store,
    database: &Database,
    steps: &[StepRun<'_>],
    direction: Direction,
    lock: Option<&Lock>,
    done: &mut Progress,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    let started = Instant::now();
    let total = steps.len();
    let actor = database.actor.clone().unwrap_or_else(super::default_actor);
    for (index, step) in steps.iter().enumerate() {
        let migration = step.migration;
        reporter.event(match direction {
            Direction::Up => Event::Applying {
                migration,
                index,
                total,
            },
            Direction::Down => Event::RollingBack {
                migration,
                index,
                total,
            },
        });
        let run = Run {
            migration,
            script: step.script,
            action: step.action,
            actor: &actor,
            retries_lock_timeout: false,
            lock,
        };
        match run_with_retries(store, database, run, reporter).await {
            Ok(finished) => {
                reporter.event(match direction {
                    Direction::Up => Event::Applied {
                        migration,
                        applied: &finished,
                        index,
                        total,
                    },
                    Direction::Down => Event::RolledBack {
                        migration,
                        done: &finished,
                        index,
                        total,
                    },
                });
                let entry = AppliedMigration {
                    migration: MigrationRef::of(migration),
                    duration: finished.duration,
                };
                match direction {
                    Direction::Up => {
                        done.applied.push(entry);
                        done.pending = done.pending.map(|p| p.saturating_sub(1));
                    }
                    Direction::Down => done.rolled_back.push(entry),
                }
            }
            Err((err, waited)) => {
                let (failure, duration) = match &err {
                    RunError::Failed(failure) => (failure.failure.clone(), failure.duration),
                    RunError::LockReleased { duration, .. } => {
                        (DbFailure::tool("it released the migration lock"), *duration)
                    }
                    RunError::Record(_) => (DbFailure::tool("its record failed"), Duration::ZERO),
                };
                if !matches!(err, RunError::Record(_)) {
                    reporter.event(Event::Failed {
                        migration,
                        failure: &failure,
                        duration,
                    });
                    done.failed = Some(AppliedMigration {
                        migration: MigrationRef::of(migration),
                        duration,
                    });
                }
                return Err(into_error(&run, direction == Direction::Down, err, &waited));
            }
        }
    }
    reporter.event(match direction {
        Direction::Up => Event::Finished {
            applied: total,
            elapsed: started.elapsed(),
        },
        Direction::Down => Event::DownFinished {
            count: total,
            elapsed: started.elapsed(),
        },
    });
    Ok(())
}

/// Attempts of a transactional script that keeps hitting `lock_timeout`:
/// the first and three retries, after 1 s, 2 s and 4 s.
const LOCK_TIMEOUT_ATTEMPTS: usize = 4;
const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// After how long a running script's blockers are looked up (on a second,
/// short-lived connection), and how often after that, at the most.
const WATCH_AFTER: Duration = Duration::from_millis(500);

/// Runs a script; a transactional one that fails on `lock_timeout` is
/// rolled back and tried again with backoff. The last failure names the
/// sessions it waited for.
pub(super) async fn run_with_retries(
    store: &mut Store,
    database: &Database,
    run: Run<'_>,
    reporter: &dyn Reporter,
) -> Result<Done, (RunError, Waited)> {
    let attempts = if run.script.transactional {
        LOCK_TIMEOUT_ATTEMPTS
    } else {
        1
    };
    let mut pause = FIRST_RETRY_PAUSE;
    for attempt in 1..=attempts {
        let last = attempt == attempts;
        let this_run = Run {
            retries_lock_timeout: !last,
            ..run
        };
        let (result, waited) = watched(store, database, this_run, reporter).await;
        match result {
            Err(RunError::Failed(failure))
                if !last && failure.failure.code.as_deref() == Some(LOCK_NOT_AVAILABLE) =>
            {
                reporter.event(Event::Retrying {
                    migration: run.migration,
                    attempt: attempt + 1,
                    attempts,
                    pause,
                });
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Ok(done) => return Ok(done),
            Err(err) => return Err((err, waited)),
        }
    }
    unreachable!("the last attempt returns")
}

/// What the watch saw of the sessions a script waited for.
#[derive(Default)]
pub(super) struct Waited {
    /// The last non-empty list seen: a lock timeout ends the wait, and by
    /// the time the failure arrives the blockers are gone from
    /// pg_blocking_pids.
    pub blockers: Vec<Blocker>,
    /// Whether the watch looked at all.
    pub checked: bool,
}

/// How long a script runs before the watch first looks, and then how
/// often: soon enough to see what a short lock_timeout waited for.
fn watch_interval(lock_timeout: Duration) -> Duration {
    if lock_timeout.is_zero() {
        WATCH_AFTER
    } else {
        (lock_timeout / 3).clamp(Duration::from_millis(50), WATCH_AFTER)
    }
}

/// One watching connection at a time in the process: a run has one script
/// running at a time anyway, and a fleet of N workers then holds at most
/// N+1 connections (a script that runs long while another's watch is open
/// is watched once that one ends).
static WATCH_SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Runs the script while a spawned task, on a second short-lived
/// connection, looks up which sessions it waits for; changes are reported.
async fn watched(
    store: &mut Store,
    database: &Database,
    run: Run<'_>,
    reporter: &dyn Reporter,
) -> (Result<Done, RunError>, Waited) {
    let (sender, mut seen) = tokio::sync::mpsc::unbounded_channel::<Vec<Blocker>>();
    let watch = store.backend_pid().map(|pid| {
        let dsn = database
            .dsn
            .with_application_name("migrate (watching locks)");
        let every = watch_interval(database.session.lock_timeout);
        tokio::spawn(async move {
            tokio::time::sleep(every).await;
            let Ok(_slot) = WATCH_SLOT.acquire().await else {
                return;
            };
            let Ok(side) = Store::connect(&dsn).await else {
                return;
            };
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let Ok(now) = side.blockers(pid).await else {
                    break;
                };
                if sender.send(now).is_err() {
                    break;
                }
            }
            side.close().await;
        })
    });
    let running = store.run_script(&database.tracking, &database.session, run);
    tokio::pin!(running);
    let mut waited = Waited::default();
    let note = |now: Vec<Blocker>, waited: &mut Waited, report: bool| {
        waited.checked = true;
        if !now.is_empty() && now != waited.blockers {
            if report {
                reporter.event(Event::Blocked {
                    migration: run.migration,
                    blockers: &now,
                });
            }
            waited.blockers = now;
        }
    };
    let result = loop {
        tokio::select! {
            result = &mut running => break result,
            Some(now) = seen.recv() => note(now, &mut waited, true),
        }
    };
    if let Some(watch) = watch {
        watch.abort();
    }
    while let Ok(now) = seen.try_recv() {
        note(now, &mut waited, false);
    }
    (result, waited)
}

/// The notes an error carries about blockers.
pub(super) fn blocker_notes(blockers: &[Blocker]) -> Vec<String> {
    blockers
        .iter()
        .map(|b| format!("it waited for {b}"))
        .collect()
}

/// Turns a run error into the engine's error.
pub(super) fn into_error(run: &Run<'_>, down: bool, err: RunError, waited: &Waited) -> Error {
    match err {
        RunError::Record(err) => err,
        RunError::LockReleased {
            lease,
            statements,
            journalled,
            ..
        } => Error::LockReleased {
            lease,
            label: run.migration.label(),
            path: run.script.path.clone(),
            statements,
            notes: match journalled {
                Ok(()) => Vec::new(),
                Err(err) => vec![format!("the journal entry could not be written: {err}")],
            },
        },
        RunError::Failed(failure) => {
            let mut notes = Vec::new();
            match &failure.recorded {
                Ok(()) => {}
                Err(err) if err.connection_lost || failure.failure.connection_lost => {
                    notes.push(if run.script.transactional {
                        "the connection was lost: the server rolls back the open transaction, so \
                         nothing of this file committed, and the failure is not recorded; run \
                         `migrate up` again once the server is back"
                            .to_owned()
                    } else {
                        "the connection was lost: the statements of this file that completed \
                         stay done, and the failure is not recorded; run `migrate up` again once \
                         the server is back (the file runs again from its start)"
                            .to_owned()
                    })
                }
                Err(err) => notes.push(format!("the failure could not be recorded: {err}")),
            }
            if failure.failure.code.as_deref() == Some(ACTIVE_SQL_TRANSACTION)
                && run.script.transactional
            {
                notes.push(
                    "the file runs in a transaction, and this statement cannot: put \
                     `-- migrate:no-transaction` on the file's first line to run it statement \
                     by statement outside one"
                        .to_owned(),
                );
            }
            if failure.failure.code.as_deref() == Some(LOCK_NOT_AVAILABLE) {
                if !waited.blockers.is_empty() {
                    notes.extend(blocker_notes(&waited.blockers));
                } else if waited.checked {
                    notes.push(
                        "it hit lock_timeout; the sessions holding the lock had let go by the \
                         time it looked"
                            .to_owned(),
                    );
                } else {
                    notes.push(
                        "it hit lock_timeout before the sessions holding the lock could be \
                         looked up"
                            .to_owned(),
                    );
                }
            }
            Error::MigrationFailed {
                label: run.migration.label(),
                path: run.script.path.clone(),
                down,
                failure,
                notes,
            }
        }
    }
}
