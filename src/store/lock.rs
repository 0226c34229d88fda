//! The migration lock: a session advisory lock on the connection that
//! applies the migrations, released by the server if that connection drops.

use super::Store;
use crate::error::Error;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::{Duration, Instant};
use tokio_postgres::types::Type;

/// The session holding the migration lock, as `pg_stat_activity` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: i32,
    pub application: String,
    pub user: String,
    /// The client address, or `local socket`.
    pub client: String,
    /// When the holding session connected (RFC 3339, UTC). PostgreSQL does
    /// not record when an advisory lock was granted; `migrate` takes it
    /// right after connecting, so for another `migrate` this is the time.
    pub since: String,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let application = if self.application.is_empty() {
            "no application_name"
        } else {
            &self.application
        };
        write!(
            f,
            "pid {} ({application}, user {}, from {}, connected since {})",
            self.pid, self.user, self.client, self.since
        )
    }
}

/// A session another one waits for, as `pg_blocking_pids` and
/// `pg_stat_activity` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub pid: i32,
    pub application: String,
    pub user: String,
    pub client: String,
    /// When its current (or last) query started (RFC 3339, UTC).
    pub query_start: String,
    pub state: String,
    /// The start of its query.
    pub query: String,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let application = if self.application.is_empty() {
            "no application_name"
        } else {
            &self.application
        };
        write!(
            f,
            "pid {} ({application}, user {}, from {}, {} since {}): {}",
            self.pid, self.user, self.client, self.state, self.query_start, self.query
        )
    }
}

const BLOCKERS: &str = "\
SELECT pid, coalesce(application_name, ''), coalesce(usename::text, ''),
       coalesce(host(client_addr), 'local socket'),
       coalesce(to_char(query_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''),
       coalesce(state, ''), left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 120)
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
SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''),
       coalesce(host(a.client_addr), 'local socket'),
       coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.classid::bigint = $1 AND l.objid::bigint = $2
 LIMIT 1";

/// The first pause between tries for the lock, doubling up to the most.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(500);
/// How often a waiter looks at who holds the lock, and reports it even if
/// unchanged.
const HOLDER_CHECK: Duration = Duration::from_secs(2);
const REPORT_EVERY: Duration = Duration::from_secs(30);

impl Store {
    /// Takes the lock if it is free; never waits.
    pub async fn try_lock(&self, key: i64) -> Result<bool, Error> {
        let rows = self
            .client()
            .query_typed("SELECT pg_try_advisory_lock($1)", &[(&key, Type::INT8)])
            .await
            .map_err(|err| Error::database("cannot take the migration lock", err))?;
        Ok(rows[0].get(0))
    }

    /// Waits for the lock up to `limit`, calling `waiting` with the holder
    /// whenever it changes and every 30 s. Returns how long it waited.
    ///
    /// The wait polls `pg_try_advisory_lock` (every 50 ms at first, backing
    /// off to 500 ms) instead of blocking in `pg_advisory_lock`: a blocked
    /// statement keeps its snapshot open for the whole wait, and the holder's
    /// `CREATE INDEX CONCURRENTLY` waits for every such snapshot to go away,
    /// while the waiter waits for the holder: a deadlock. Polling holds no
    /// snapshot between tries. Waiters are not served in arrival order.
    pub async fn wait_for_lock(
        &self,
        key: i64,
        limit: Duration,
        mut waiting: impl FnMut(Option<&LockHolder>, Duration),
    ) -> Result<Duration, Error> {
        let start = Instant::now();
        let mut last_holder: Option<LockHolder> = None;
        let mut last_report: Option<Instant> = None;
        let mut last_check: Option<Instant> = None;
        let mut pause = POLL_FIRST;
        loop {
            if self.try_lock(key).await? {
                return Ok(start.elapsed());
            }
            let waited = start.elapsed();
            if waited >= limit {
                // The holder is for the message; failing to look it up
                // must not turn a timeout into another error.
                return Err(Error::LockTimeout {
                    waited: limit,
                    holder: self.lock_holder(key).await.ok().flatten(),
                });
            }
            if last_check.is_none_or(|at| at.elapsed() >= HOLDER_CHECK) {
                last_check = Some(Instant::now());
                let holder = self.lock_holder(key).await?;
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
            tokio::time::sleep(pause.min(limit - waited)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Who holds the lock, if anyone.
    pub async fn lock_holder(&self, key: i64) -> Result<Option<LockHolder>, Error> {
        let classid = (key as u64 >> 32) as i64;
        let objid = (key as u64 & 0xffff_ffff) as i64;
        let rows = self
            .client()
            .query_typed(HOLDER, &[(&classid, Type::INT8), (&objid, Type::INT8)])
            .await
            .map_err(|err| Error::database("cannot look up the lock holder", err))?;
        Ok(rows.first().map(|row| LockHolder {
            pid: row.get(0),
            application: row.get(1),
            user: row.get(2),
            client: row.get(3),
            since: row.get(4),
        }))
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

    /// Releases the lock. Closing the connection would too; this keeps the
    /// release explicit on the success path.
    pub async fn unlock(&self, key: i64) -> Result<(), Error> {
        self.client()
            .query_typed("SELECT pg_advisory_unlock($1)", &[(&key, Type::INT8)])
            .await
            .map(|_| ())
            .map_err(|err| Error::database("cannot release the migration lock", err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
