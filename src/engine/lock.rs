//! Taking the migration lock as the settings say, for `up`, `down` and
//! `repair` alike.

use super::{Database, LockMode};
use crate::error::Error;
use crate::report::{Event, Reporter};
use crate::state::DbState;
use crate::store::{LockWait, Store, Watch, default_lock_key};
use std::time::Duration;

/// What taking the lock came to.
pub(super) enum Locked {
    /// Held, after waiting this long.
    Held { key: i64, waited: Duration },
    /// `--safe=false`: no lock.
    Unlocked,
    /// `--skip-if-locked` and another session holds it.
    Skipped,
    /// While waiting, another instance left nothing to do; not taken.
    NothingLeft { waited: Duration },
}

impl Locked {
    /// The key of the lock held, if one is.
    pub(super) fn key(&self) -> Option<i64> {
        match self {
            Locked::Held { key, .. } => Some(*key),
            Locked::Unlocked | Locked::Skipped | Locked::NothingLeft { .. } => None,
        }
    }

    /// Releases the lock explicitly on the success path (closing the
    /// connection releases it on every other path).
    pub(super) async fn release(self, store: &Store) -> Result<(), Error> {
        match self {
            Locked::Held { key, .. } => store.unlock(key).await,
            Locked::Unlocked | Locked::Skipped | Locked::NothingLeft { .. } => Ok(()),
        }
    }
}

/// Sets up the session and takes the lock per `database.lock`. `database_name`
/// (the server's `current_database()`) goes into the default key.
pub(super) async fn acquire(
    store: &mut Store,
    database: &Database,
    database_name: &str,
    reporter: &dyn Reporter,
) -> Result<Locked, Error> {
    acquire_watching(store, database, database_name, None, reporter).await
}

/// As [`acquire`]; a waiter given `work_left` also watches the state while
/// it waits, and stops waiting, without the lock, once a state read leaves
/// it nothing to do ([`Locked::NothingLeft`]).
pub(super) async fn acquire_watching(
    store: &mut Store,
    database: &Database,
    database_name: &str,
    work_left: Option<&(dyn Fn(&DbState) -> bool + Sync)>,
    reporter: &dyn Reporter,
) -> Result<Locked, Error> {
    let tracking = &database.tracking;
    store.prepare_session(tracking).await?;
    let key = database
        .lock_key
        .unwrap_or_else(|| default_lock_key(database_name, &tracking.schema, &tracking.table));
    reporter.event(Event::LockKey { key });
    match database.lock {
        LockMode::Off => {
            reporter.event(Event::LockDisabled);
            Ok(Locked::Unlocked)
        }
        LockMode::SkipIfLocked => {
            if store.try_lock(key).await? {
                return Ok(Locked::Held {
                    key,
                    waited: Duration::ZERO,
                });
            }
            let holder = store.lock_holder(key).await?;
            reporter.event(Event::LockSkipped {
                holder: holder.as_ref(),
            });
            Ok(Locked::Skipped)
        }
        LockMode::Wait(limit) => {
            if store.try_lock(key).await? {
                return Ok(Locked::Held {
                    key,
                    waited: Duration::ZERO,
                });
            }
            let watch = work_left.map(|work_left| Watch {
                tracking,
                work_left,
            });
            let waited = store
                .wait_for_lock(key, limit, watch, |holder, waited| {
                    reporter.event(Event::LockWaiting {
                        holder,
                        waited,
                        limit,
                    })
                })
                .await?;
            match waited {
                LockWait::Acquired(waited) => {
                    reporter.event(Event::LockAcquired { waited });
                    Ok(Locked::Held { key, waited })
                }
                LockWait::NothingLeft(waited) => Ok(Locked::NothingLeft { waited }),
            }
        }
    }
}
