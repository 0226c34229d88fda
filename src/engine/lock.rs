//! Taking the migration lock as the settings say, for `up`, `down` and
//! `repair` alike: a session advisory lock on a direct connection, a lease
//! through a pooler in transaction mode.

use super::{Database, LockMode, Pooler};
use crate::error::Error;
use crate::report::{Event, Reporter};
use crate::state::DbState;
use crate::store::{
    LeaseClaim, Lock, LockWait, Renewer, Store, Taker, Tracking, Watch, default_lock_key,
};
use std::time::Duration;

/// What taking the lock came to.
pub(super) enum Locked {
    /// Held, after waiting this long; a lease is renewed meanwhile.
    Held {
        lock: Lock,
        waited: Duration,
        renewer: Option<Renewer>,
    },
    /// `--safe=false`: no lock.
    Unlocked,
    /// `--skip-if-locked` and another session holds it.
    Skipped,
    /// While waiting, another instance left nothing to do; not taken.
    NothingLeft { waited: Duration, state: DbState },
}

impl Locked {
    /// The lock held, if one is.
    pub(super) fn lock(&self) -> Option<&Lock> {
        match self {
            Locked::Held { lock, .. } => Some(lock),
            Locked::Unlocked | Locked::Skipped | Locked::NothingLeft { .. } => None,
        }
    }

    /// Gives the lock up. An advisory lock would go with the connection
    /// anyway; a lease is deleted, through a new connection if this one
    /// is broken, so the next run need not wait for it to run out.
    pub(super) async fn release(self, store: &Store, database: &Database) -> Result<(), Error> {
        match self {
            Locked::Held { lock, renewer, .. } => {
                if let Some(renewer) = renewer {
                    renewer.stop();
                }
                let released = store.release(&lock).await;
                if let Lock::Lease(claim) = &lock {
                    if released.is_err() {
                        give_up_elsewhere(database, claim).await;
                    }
                    crate::store::forget_lease(claim);
                }
                released
            }
            Locked::Unlocked | Locked::Skipped | Locked::NothingLeft { .. } => Ok(()),
        }
    }
}

/// Deletes a lease through a connection of its own, within 2 s; best
/// effort (else it runs out by itself).
async fn give_up_elsewhere(database: &Database, claim: &LeaseClaim) {
    let attempt = async {
        if let Ok(side) = Store::connect(&database.dsn).await {
            let _ = side.release_lease(claim).await;
            side.close().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), attempt).await;
}

/// Which lock a run takes, and why, for `-v`.
fn choose(store: &Store, database: &Database) -> (bool, String) {
    let lease = |why: &str| {
        (
            true,
            format!(
                "a lease in {}.{} of {} s, renewed every {} s ({why})",
                database.tracking.schema,
                database.tracking.lease_name(),
                database.lease.as_secs(),
                (database.lease / 3).as_secs_f64(),
            ),
        )
    };
    let advisory = |why: &str| (false, format!("a session advisory lock ({why})"));
    match database.pooler {
        Pooler::Transaction => lease("--pooler transaction"),
        Pooler::Session => advisory("--pooler session"),
        Pooler::None => advisory("--pooler none"),
        Pooler::Auto => match store.dialled_directly(&database.dsn) {
            Some(false) => lease(
                "the server listens on another port than the one dialled, so a pooler or \
                 proxy stands in between; --pooler none if it keeps each client's session",
            ),
            Some(true) => advisory(
                "the server listens on the port dialled: a direct connection; --pooler \
                 transaction if a pooler in transaction mode listens on the server's port",
            ),
            None => lease("the server did not say its port"),
        },
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
    let key = database
        .lock_key
        .unwrap_or_else(|| default_lock_key(database_name, &tracking.schema, &tracking.table));
    let (leased, kind) = choose(store, database);
    if leased {
        store.set_pooled(database.lease);
    }
    store.prepare_session(tracking).await?;
    reporter.event(Event::LockKey { key, kind: &kind });
    let lock = if leased {
        Lock::Lease(LeaseClaim::new(tracking, key, database.lease))
    } else {
        Lock::Advisory(key)
    };
    // Who takes it is written only into a lease (the advisory lock's holder
    // is its session): looked up only then.
    let actor = match &lock {
        Lock::Lease(_) => database.actor.clone().unwrap_or_else(super::default_actor),
        Lock::Advisory(_) => String::new(),
    };
    let application = database
        .dsn
        .config
        .get_application_name()
        .unwrap_or("migrate")
        .to_owned();
    let taker = Taker {
        tracking,
        actor: &actor,
        application: &application,
    };
    match database.lock {
        LockMode::Off => {
            reporter.event(Event::LockDisabled);
            Ok(Locked::Unlocked)
        }
        LockMode::SkipIfLocked => match store.try_take(&lock, &taker).await? {
            crate::store::Taken::Held { took_over } => {
                Ok(held(lock, Duration::ZERO, took_over, database, reporter))
            }
            crate::store::Taken::Busy => {
                let holder = store.lock_holder(tracking, key).await?;
                reporter.event(Event::LockSkipped {
                    holder: holder.as_ref(),
                });
                Ok(Locked::Skipped)
            }
        },
        LockMode::Wait(limit) => {
            if let crate::store::Taken::Held { took_over } = store.try_take(&lock, &taker).await? {
                return Ok(held(lock, Duration::ZERO, took_over, database, reporter));
            }
            let watch = work_left.map(|work_left| Watch {
                tracking,
                work_left,
            });
            let waited = store
                .wait_for_lock(&lock, &taker, limit, watch, |holder, waited| {
                    reporter.event(Event::LockWaiting {
                        holder,
                        waited,
                        limit,
                    })
                })
                .await?;
            match waited {
                LockWait::Acquired { waited, took_over } => {
                    reporter.event(Event::LockAcquired { waited });
                    Ok(held(lock, waited, took_over, database, reporter))
                }
                LockWait::NothingLeft(waited, state) => Ok(Locked::NothingLeft { waited, state }),
            }
        }
    }
}

/// The lock is this run's: a lease starts being renewed, and is given up
/// on an interruption.
fn held(
    lock: Lock,
    waited: Duration,
    took_over: Option<(String, String)>,
    database: &Database,
    reporter: &dyn Reporter,
) -> Locked {
    if let Some((holder, ran_out)) = &took_over {
        reporter.event(Event::LeaseTakenOver { holder, ran_out });
    }
    let renewer = match &lock {
        Lock::Lease(claim) => {
            crate::store::remember_lease(&database.dsn, claim);
            Some(Renewer::start(&database.dsn, claim))
        }
        Lock::Advisory(_) => None,
    };
    Locked::Held {
        lock,
        waited,
        renewer,
    }
}

/// The tracking tables' lock key as `lock` shows it: given, or derived.
pub(super) fn key_of(database: &Database, database_name: &str, tracking: &Tracking) -> i64 {
    database
        .lock_key
        .unwrap_or_else(|| default_lock_key(database_name, &tracking.schema, &tracking.table))
}
