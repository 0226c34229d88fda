//! The migration lock: a session advisory lock on the connection that
//! applies the migrations, released by the server if that connection drops;
//! or, through a pooler in transaction mode, a lease ([`super::lease`]).

use super::lease::{Claimed, LeaseClaim};
use super::{StateDetail, Store, Tracking};
use crate::error::Error;
use crate::state::DbState;
use crate::state::{Blocker, LockHolder};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio_postgres::types::Type;

// A NULL backend_start means pg_stat_activity hid the session from this
// role: its client_addr is NULL then too, which must not read as a local
// socket.
const BLOCKERS: &str = "\
SELECT pid, coalesce(application_name, ''), usename::text,
       CASE WHEN backend_start IS NOT NULL THEN coalesce(host(client_addr), 'local socket') END,
       to_char(query_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
       state,
       CASE WHEN backend_start IS NOT NULL
            THEN left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 120) END
  FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids($1)) ORDER BY pid";

/// The default lock key: the first 8 bytes of
/// SHA-256(`migrate` NUL database NUL schema NUL table), big-endian. Stable
/// across versions and machines, so every instance pointed at the same
/// tracking table contends for the same lock, and different schemas or
/// tables of one database do not block each other.
pub fn default_lock_key(database: &str, schema: &str, table: &str) -> i64 {
    let mut hasher = Sha256::new();
    for part in ["migrate", database, schema, table] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

const HOLDER: &str = "\
SELECT a.pid, coalesce(a.application_name, ''), a.usename::text,
       CASE WHEN a.backend_start IS NOT NULL THEN coalesce(host(a.client_addr), 'local socket') END,
       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::bigint = $1 AND l.objid::bigint = $2
 LIMIT 1";

/// The first pause between tries for the lock, growing by half up to the
/// most: short, so that a waiter learns soon that the holder is done.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(100);
/// The most between tries for a waiter that listens for the holder's
/// notification (a direct connection): woken by it when the holder lets go,
/// it polls only for a holder that went without saying (killed).
const POLL_MAX_LISTENING: Duration = Duration::from_millis(500);

/// The channel a holder notifies when it lets go of the lock `key`.
fn channel(key: i64) -> String {
    super::quote_ident(&format!("migrate_lock_{key}"))
}
/// How often a waiter looks at who holds the lock, and reports it even if
/// unchanged.
const HOLDER_CHECK: Duration = Duration::from_secs(2);
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// The migration lock as a run holds it.
#[derive(Clone, Debug)]
pub enum Lock {
    /// A session advisory lock on this key, on the run's connection.
    Advisory(i64),
    /// A lease row (through a pooler in transaction mode).
    Lease(LeaseClaim),
}

impl Lock {
    pub fn key(&self) -> i64 {
        match self {
            Lock::Advisory(key) => *key,
            Lock::Lease(claim) => claim.key,
        }
    }
}

/// Who takes the lock, as a lease records it.
pub struct Taker<'a> {
    pub tracking: &'a Tracking,
    pub actor: &'a str,
    pub application: &'a str,
}

/// How one try for the lock went.
#[derive(Debug)]
pub enum Taken {
    /// Held now; `took_over` names the holder whose lease had run out, and
    /// when it ran out.
    Held {
        took_over: Option<(String, String)>,
    },
    Busy,
}

/// How a wait for the lock ended.
#[derive(Debug)]
pub enum LockWait {
    /// The lock is held now, after waiting this long.
    Acquired {
        waited: Duration,
        took_over: Option<(String, String)>,
    },
    /// While waiting, the state showed nothing left to do: the lock was
    /// not taken.
    NothingLeft(Duration, DbState),
}

/// What a waiter watches while it waits: the tracking tables, and whether
/// a state read still leaves it work to do.
pub struct Watch<'a> {
    pub tracking: &'a Tracking,
    pub work_left: &'a (dyn Fn(&DbState) -> bool + Sync),
}

impl Store {
    /// Takes the lock if it is free; never waits. An advisory lock is let go
    /// again when a live lease holds the key, and a lease when a session
    /// holds the advisory lock: a run through a pooler and one on a direct
    /// connection exclude each other.
    pub async fn try_take(&self, lock: &Lock, taker: &Taker<'_>) -> Result<Taken, Error> {
        match lock {
            Lock::Advisory(key) => {
                let locked: bool = self
                    .client()
                    .query_typed("SELECT pg_try_advisory_lock($1)", &[(key, Type::INT8)])
                    .await
                    .map_err(|err| Error::database("cannot take the migration lock", err))?[0]
                    .get(0);
                if !locked {
                    return Ok(Taken::Busy);
                }
                // Only once taken: most tries of a waiter fail, and need not
                // look. A lease that ran out is taken over here as a
                // pooled run would (deleted, so its holder's next renewal
                // finds it gone), not just passed over: its holder may be
                // alive, held up, and about to renew it.
                match self.live_lease_removing_lapsed(taker.tracking, *key).await {
                    Ok(None) => Ok(Taken::Held { took_over: None }),
                    Ok(Some(_)) => {
                        self.unlock(*key).await?;
                        Ok(Taken::Busy)
                    }
                    Err(err) => {
                        self.unlock(*key).await?;
                        Err(err)
                    }
                }
            }
            Lock::Lease(claim) => {
                match self
                    .try_claim(taker.tracking, claim, taker.actor, taker.application)
                    .await?
                {
                    Claimed::Busy => Ok(Taken::Busy),
                    Claimed::Held { took_over } => match self.advisory_holder(claim.key).await {
                        Ok(None) => Ok(Taken::Held { took_over }),
                        Ok(Some(_)) => {
                            self.release_lease(claim).await?;
                            Ok(Taken::Busy)
                        }
                        Err(err) => {
                            self.release_lease(claim).await?;
                            Err(err)
                        }
                    },
                }
            }
        }
    }

    /// Gives the lock up, and wakes the waiters that listen.
    pub async fn release(&self, lock: &Lock) -> Result<(), Error> {
        let notify = format!("NOTIFY {}", channel(lock.key()));
        let (released, _) = tokio::join!(
            async {
                match lock {
                    Lock::Advisory(key) => self.unlock(*key).await,
                    Lock::Lease(claim) => self.release_lease(claim).await,
                }
            },
            self.client().batch_execute(&notify)
        );
        released
    }

    /// Waits for the lock up to `limit`, calling `waiting` with the holder
    /// whenever it changes and every 30 s. With a `watch`, each try also
    /// reads the state (in the same round trip), and the wait ends without
    /// the lock once another instance has left nothing to do.
    ///
    /// The wait polls `pg_try_advisory_lock` (every 20 ms at first, backing
    /// off to 100 ms) instead of blocking in `pg_advisory_lock`: a blocked
    /// statement keeps its snapshot open for the whole wait, and the holder's
    /// `CREATE INDEX CONCURRENTLY` waits for every such snapshot to go away,
    /// while the waiter waits for the holder: a deadlock. Polling holds no
    /// snapshot between tries. Waiters are not served in arrival order.
    pub async fn wait_for_lock(
        &self,
        lock: &Lock,
        taker: &Taker<'_>,
        limit: Duration,
        watch: Option<Watch<'_>>,
        mut waiting: impl FnMut(Option<&LockHolder>, Duration),
    ) -> Result<LockWait, Error> {
        let start = Instant::now();
        let pause = POLL_FIRST;
        // On a direct connection, the holder's notification wakes the wait;
        // through a pooler a LISTEN would stay on a pooled server connection.
        let listening = matches!(lock, Lock::Advisory(_))
            && self
                .client()
                .batch_execute(&format!("LISTEN {}", channel(lock.key())))
                .await
                .is_ok();
        let most = if listening {
            POLL_MAX_LISTENING
        } else {
            POLL_MAX
        };
        let ended = self
            .poll_for_lock(lock, taker, limit, watch, &mut waiting, pause, most, start)
            .await;
        if listening {
            let _ = self.client().batch_execute("UNLISTEN *").await;
        }
        ended
    }

    #[allow(clippy::too_many_arguments)]
    async fn poll_for_lock(
        &self,
        lock: &Lock,
        taker: &Taker<'_>,
        limit: Duration,
        watch: Option<Watch<'_>>,
        waiting: &mut impl FnMut(Option<&LockHolder>, Duration),
        mut pause: Duration,
        most: Duration,
        start: Instant,
    ) -> Result<LockWait, Error> {
        let mut last_holder: Option<LockHolder> = None;
        let mut last_report: Option<Instant> = None;
        let mut last_check: Option<Instant> = None;
        loop {
            match &watch {
                Some(watch) => {
                    let (state, taken) = tokio::join!(
                        self.read_state(watch.tracking, StateDetail::Plan),
                        self.try_take(lock, taker)
                    );
                    match (state, taken?) {
                        (_, Taken::Held { took_over }) => {
                            return Ok(LockWait::Acquired {
                                waited: start.elapsed(),
                                took_over,
                            });
                        }
                        (Ok(state), Taken::Busy) if !(watch.work_left)(&state) => {
                            return Ok(LockWait::NothingLeft(start.elapsed(), state));
                        }
                        (Ok(_), Taken::Busy) => {}
                        (Err(err), Taken::Busy) => return Err(err),
                    }
                }
                None => {
                    if let Taken::Held { took_over } = self.try_take(lock, taker).await? {
                        return Ok(LockWait::Acquired {
                            waited: start.elapsed(),
                            took_over,
                        });
                    }
                }
            }
            let waited = start.elapsed();
            if waited >= limit {
                // The holder is for the message; failing to look it up
                // must not turn a timeout into another error.
                return Err(Error::LockTimeout {
                    waited: limit,
                    holder: self
                        .lock_holder(taker.tracking, lock.key())
                        .await
                        .ok()
                        .flatten()
                        .map(Box::new),
                });
            }
            if last_check.is_none_or(|at| at.elapsed() >= HOLDER_CHECK) {
                last_check = Some(Instant::now());
                let holder = self.lock_holder(taker.tracking, lock.key()).await?;
                let due = last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY);
                if due || holder.as_ref().map(|h| h.pid) != last_holder.as_ref().map(|h| h.pid) {
                    // The first report says "waiting", later ones "still waiting".
                    let reported = if last_report.is_none() {
                        Duration::ZERO
                    } else {
                        waited
                    };
                    waiting(holder.as_ref(), reported);
                    last_report = Some(Instant::now());
                    last_holder = holder;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause.min(limit - waited)) => {}
                () = self.notified.notified() => {}
            }
            pause = pause.mul_f64(1.5).min(most);
        }
    }

    /// Who holds the lock, if anyone: the session with the advisory lock,
    /// else the run with a live lease.
    pub async fn lock_holder(
        &self,
        tracking: &Tracking,
        key: i64,
    ) -> Result<Option<LockHolder>, Error> {
        lock_holder(self.client(), tracking, key).await
    }

    /// The session holding the advisory lock, if any.
    async fn advisory_holder(&self, key: i64) -> Result<Option<LockHolder>, Error> {
        advisory_holder(self.client(), key).await
    }

    /// The sessions that session `pid` waits for.
    pub async fn blockers(&self, pid: i32) -> Result<Vec<Blocker>, Error> {
        let rows = self
            .client()
            .query_typed(BLOCKERS, &[(&pid, Type::INT4)])
            .await
            .map_err(|err| Error::database("cannot look up blocking sessions", err))?;
        Ok(rows
            .iter()
            .map(|row| Blocker {
                pid: row.get(0),
                application: row.get(1),
                user: row.get(2),
                client: row.get(3),
                query_start: row.get(4),
                state: row.get(5),
                query: row.get(6),
            })
            .collect())
    }

    /// Releases the advisory lock. Closing the connection would too; this
    /// keeps the release explicit on the success path.
    async fn unlock(&self, key: i64) -> Result<(), Error> {
        self.client()
            .query_typed("SELECT pg_advisory_unlock($1)", &[(&key, Type::INT8)])
            .await
            .map(|_| ())
            .map_err(|err| Error::database("cannot release the migration lock", err))
    }
}

/// [`Store::lock_holder`] over a connection the caller holds (a pooled one).
pub async fn lock_holder(
    client: &tokio_postgres::Client,
    tracking: &Tracking,
    key: i64,
) -> Result<Option<LockHolder>, Error> {
    match advisory_holder(client, key).await? {
        Some(holder) => Ok(Some(holder)),
        None => super::lease::lease_holder(client, tracking, key).await,
    }
}

async fn advisory_holder(
    client: &tokio_postgres::Client,
    key: i64,
) -> Result<Option<LockHolder>, Error> {
    let (classid, objid) = super::sql::lock_key_halves(key);
    let rows = client
        .query_typed(HOLDER, &[(&classid, Type::INT8), (&objid, Type::INT8)])
        .await
        .map_err(|err| Error::database("cannot look up the lock holder", err))?;
    Ok(rows.first().map(|row| LockHolder {
        pid: row.get(0),
        application: row.get(1),
        user: row.get(2),
        client: row.get(3),
        since: row.get(4),
        lease: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DETAILS_HIDDEN;

    #[test]
    fn hidden_details_are_said_to_be_hidden_not_left_empty() {
        let seen = LockHolder {
            pid: 7,
            application: "migrate".into(),
            user: Some("app".into()),
            client: Some("10.0.0.5".into()),
            since: Some("2026-11-21T08:40:50Z".into()),
            lease: None,
        };
        assert_eq!(
            seen.to_string(),
            "pid 7 (migrate, user app, from 10.0.0.5, connected since 2026-11-21T08:40:50Z)"
        );
        let hidden = LockHolder {
            application: String::new(),
            user: None,
            client: None,
            since: None,
            ..seen
        };
        assert_eq!(
            hidden.to_string(),
            format!("pid 7 (no application_name; {DETAILS_HIDDEN})")
        );
        let blocker = Blocker {
            pid: 8,
            application: "psql".into(),
            user: Some("admin".into()),
            client: Some("local socket".into()),
            query_start: Some("2026-11-21T08:40:50Z".into()),
            state: Some("idle in transaction".into()),
            query: Some("LOCK TABLE t".into()),
        };
        assert_eq!(
            blocker.to_string(),
            "pid 8 (psql, user admin, from local socket, idle in transaction since \
             2026-11-21T08:40:50Z): LOCK TABLE t"
        );
        let hidden = Blocker {
            client: None,
            query_start: None,
            state: None,
            query: None,
            ..blocker
        };
        assert_eq!(
            hidden.to_string(),
            format!("pid 8 (psql, user admin; {DETAILS_HIDDEN})")
        );
    }

    #[test]
    fn default_key_is_pinned_and_depends_on_every_part() {
        // Changing the derivation would let an old and a new binary migrate
        // the same database at once.
        assert_eq!(
            default_lock_key("app", "public", "schema_migrations"),
            2006417248032747282
        );
        let base = default_lock_key("app", "public", "schema_migrations");
        assert_ne!(
            base,
            default_lock_key("app2", "public", "schema_migrations")
        );
        assert_ne!(base, default_lock_key("app", "auth", "schema_migrations"));
        assert_ne!(base, default_lock_key("app", "public", "other"));
        assert_ne!(
            default_lock_key("ab", "c", "t"),
            default_lock_key("a", "bc", "t")
        );
    }
}
