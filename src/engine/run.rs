//! Running one script with the engine's care around it: retries after a
//! lock timeout, and a watch on the sessions it waits for.

use super::Database;
use crate::error::Error;
use crate::report::{Event, Reporter};
use crate::store::{Blocker, Done, LOCK_NOT_AVAILABLE, Run, RunError, Store};
use std::time::Duration;

/// Attempts of a transactional script that keeps hitting `lock_timeout`:
/// the first and three retries, after 1 s, 2 s and 4 s.
const LOCK_TIMEOUT_ATTEMPTS: usize = 4;
const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// After how long a running script's blockers are looked up (on a second,
/// short-lived connection), and how often after that.
const WATCH_AFTER: Duration = Duration::from_millis(500);

/// Runs a script; a transactional one that fails on `lock_timeout` is
/// rolled back and tried again with backoff. The last failure names the
/// sessions it waited for.
pub(super) async fn run_with_retries(
    store: &mut Store,
    database: &Database,
    run: Run<'_>,
    reporter: &dyn Reporter,
) -> Result<Done, (RunError, Vec<Blocker>)> {
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
        let (result, blockers) = watched(store, database, this_run, reporter).await;
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
            Err(err) => return Err((err, blockers)),
        }
    }
    unreachable!("the last attempt returns")
}

/// Runs the script; while it runs longer than `WATCH_AFTER`, looks up who
/// it waits for and reports changes. Returns the last blockers seen.
async fn watched(
    store: &mut Store,
    database: &Database,
    run: Run<'_>,
    reporter: &dyn Reporter,
) -> (Result<Done, RunError>, Vec<Blocker>) {
    let pid = store.backend_pid();
    let running = store.run_script(&database.tracking, &database.session, run);
    tokio::pin!(running);
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + WATCH_AFTER, WATCH_AFTER);
    let mut side: Option<Store> = None;
    // The last non-empty list is kept for the error message: a lock
    // timeout ends the wait, and by the time the failure arrives the
    // blockers are gone from pg_blocking_pids.
    let mut blockers: Vec<Blocker> = Vec::new();
    let result = loop {
        tokio::select! {
            result = &mut running => break result,
            _ = ticks.tick() => {
                let Some(pid) = pid else { continue };
                if side.is_none() {
                    let watch = database.dsn.with_application_name("migrate (watching locks)");
                    side = Store::connect(&watch).await.ok();
                }
                let Some(watcher) = side.as_ref() else { continue };
                if let Ok(now) = watcher.blockers(pid).await
                    && !now.is_empty()
                    && now != blockers
                {
                    reporter.event(Event::Blocked {
                        migration: run.migration,
                        blockers: &now,
                    });
                    blockers = now;
                }
            }
        }
    };
    if let Some(side) = side {
        side.close().await;
    }
    (result, blockers)
}

/// The notes an error carries about blockers.
pub(super) fn blocker_notes(blockers: &[Blocker]) -> Vec<String> {
    blockers
        .iter()
        .map(|b| format!("it waited for {b}"))
        .collect()
}

/// Turns a run error into the engine's error.
pub(super) fn into_error(run: &Run<'_>, down: bool, err: RunError, blockers: &[Blocker]) -> Error {
    match err {
        RunError::Record(err) => err,
        RunError::Failed(failure) => {
            let mut notes = Vec::new();
            match &failure.recorded {
                Ok(()) => {}
                Err(err) if err.connection_lost || failure.failure.connection_lost => notes.push(
                    "the connection was lost: the server rolls back the open transaction, so \
                     nothing of this file committed with a record, and the failure is not \
                     recorded; run `migrate up` again once the server is back"
                        .to_owned(),
                ),
                Err(err) => notes.push(format!("the failure could not be recorded: {err}")),
            }
            if failure.failure.code.as_deref() == Some(LOCK_NOT_AVAILABLE) {
                if blockers.is_empty() {
                    notes.push(
                        "it hit lock_timeout; the sessions holding the lock were gone by the \
                         time it was checked"
                            .to_owned(),
                    );
                } else {
                    notes.extend(blocker_notes(blockers));
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
