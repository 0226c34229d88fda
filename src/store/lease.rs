//! The lease lock, for connections through a pooler in transaction mode,
//! where a session advisory lock would stay on a pooled server connection
//! after `migrate` is gone. Nothing of it outlives a transaction on the
//! server connection.
//!
//! The lease is a row of `<schema>.<table>_lock`, one per lock key: its
//! owner (a token of this run), who and where, and until when it holds.
//! - Claimed by one statement that inserts the row, or takes over one whose
//!   time ran out, under a 200 ms `lock_timeout` (a claim never blocks for
//!   long behind a holder's transaction).
//! - Renewed from a second connection every third of its length, so a long
//!   statement keeps it.
//! - Checked, and renewed, in the transaction of every record (the row lock
//!   makes a takeover wait for that transaction to end and see what it
//!   committed, and a long migration's commit starts the lease anew), and
//!   before each statement of a no-transaction file. A lease that
//!   ran out stays this run's until another run takes it over: a renewer
//!   held up (a pool with no free server connection) loses nothing unless
//!   another run was there to claim it.
//! - Each migration's transaction also gets `idle_in_transaction_session_timeout`
//!   set to the lease's length: a holder stopped mid-transaction (SIGSTOP,
//!   a paused VM) has its transaction ended by the server, instead of
//!   blocking every takeover with the row lock it took.
//! - Released by deleting the row; a killed holder's lease runs out by
//!   itself.
//!
//! A direct connection's advisory lock and a pooled run's lease exclude each
//! other too: the advisory side takes its lock and then looks for a live
//! lease, the lease side commits its row and then looks for the advisory
//! lock, and either backs off when it finds the other.

use super::{Store, Tracking, quote_ident};
use crate::error::{DbFailure, Error};
use crate::state::{LeaseHolder, LockHolder};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};

/// SQLSTATE undefined_table.
const UNDEFINED_TABLE: &str = "42P01";

/// How long a claim waits for a row lock (a holder's record transaction, or
/// another claim) before it counts as not taken this time.
const CLAIM_LOCK_TIMEOUT: &str = "200ms";

impl Tracking {
    /// `<table>_lock`: the lease lock's table.
    pub fn lease_name(&self) -> String {
        format!("{}_lock", self.table)
    }

    /// `"schema"."<table>_lock"`, quoted for SQL.
    pub fn lease_table(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.lease_name())
        )
    }
}

/// Creates the lease table. Two sessions creating it at once would fail on
/// the catalog's unique index: a transaction-level advisory lock on the two
/// halves of the key (a lock of its own, not the bigint one) orders them,
/// and it is gone at commit.
pub(super) fn create_lease_table(tracking: &Tracking, key: i64) -> String {
    let (high, low) = ((key >> 32) as i32, key as i32);
    format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock({high}, {low});
         CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {lease} (
             lock_key    bigint PRIMARY KEY,
             owner       text NOT NULL,
             actor       text NOT NULL,
             application text NOT NULL,
             process     integer NOT NULL,
             db_user     text NOT NULL,
             claimed_at  timestamptz NOT NULL,
             renewed_at  timestamptz NOT NULL,
             expires_at  timestamptz NOT NULL);
         COMMIT",
        schema = quote_ident(&tracking.schema),
        lease = tracking.lease_table(),
    )
}

/// Inserts the lease, or takes over one whose time ran out. Returns the
/// owner (this run's token) and, on a takeover, who held it and when it
/// ran out. $1 key, $2 owner, $3 actor, $4 application, $5 process,
/// $6 length (µs).
fn claim_sql(lease: &str) -> String {
    format!(
        "WITH before AS (SELECT actor, expires_at FROM {lease} WHERE lock_key = $1)
         INSERT INTO {lease} AS l
                (lock_key, owner, actor, application, process, db_user, claimed_at, renewed_at, expires_at)
         SELECT $1, $2, $3, $4, $5, current_user, clock_timestamp(), clock_timestamp(),
                clock_timestamp() + $6::float8 * interval '1 microsecond'
          WHERE NOT EXISTS (SELECT 1 FROM before WHERE expires_at > clock_timestamp())
         ON CONFLICT (lock_key) DO UPDATE
            SET owner = EXCLUDED.owner, actor = EXCLUDED.actor,
                application = EXCLUDED.application, process = EXCLUDED.process,
                db_user = EXCLUDED.db_user, claimed_at = EXCLUDED.claimed_at,
                renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
          WHERE l.expires_at <= clock_timestamp()
         RETURNING (SELECT actor FROM before),
                   (SELECT to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM before)"
    )
}

/// Extends a lease that is still this run's (even one that ran out, as long
/// as no other run took it over): one row if it is. In a transaction, the
/// row stays locked until the end, so a takeover waits for that
/// transaction and then sees what it committed; and the lease starts anew
/// when a long migration commits. $1 key, $2 owner, $3 length (µs).
fn renew_sql(lease: &str) -> String {
    format!(
        "UPDATE {lease}
            SET renewed_at = clock_timestamp(),
                expires_at = clock_timestamp() + $3::float8 * interval '1 microsecond'
          WHERE lock_key = $1 AND owner = $2"
    )
}

/// The live lease of a key, if any. $1 key.
fn holder_sql(lease: &str) -> String {
    format!(
        "SELECT process, application, db_user, actor,
                to_char(claimed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                ceil(extract(epoch FROM expires_at - clock_timestamp()))::int8
           FROM {lease} WHERE lock_key = $1 AND expires_at > clock_timestamp()"
    )
}

/// What identifies a lease claim: the table, the key, this run's token and
/// the lease's length.
#[derive(Clone, Debug)]
pub struct LeaseClaim {
    pub key: i64,
    pub owner: String,
    pub length: Duration,
    table: String,
}

impl LeaseClaim {
    /// A claim for `key` in the tracking's lease table, with a token no other
    /// run has.
    pub fn new(tracking: &Tracking, key: i64, length: Duration) -> LeaseClaim {
        LeaseClaim {
            key,
            owner: new_token(),
            length,
            table: tracking.lease_table(),
        }
    }

    /// The guard's SQL, which renews the lease: $1 key, $2 owner, $3 length
    /// (µs, [`LeaseClaim::length_micros`]). One row changed: still this
    /// run's.
    pub(super) fn guard(&self) -> String {
        renew_sql(&self.table)
    }

    pub(super) fn length_micros(&self) -> i64 {
        micros(self.length)
    }
}

/// A token for one claim: the process, the time and the host, hashed.
fn new_token() -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(now.as_nanos().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    if let Ok(host) = nix::unistd::gethostname() {
        hasher.update(host.as_encoded_bytes());
    }
    // Two claims of one process in the same nanosecond still differ.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    hasher.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    hasher
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a claim went.
#[derive(Debug)]
pub enum Claimed {
    /// The lease is this run's; `took_over` names the holder whose lease had
    /// run out, and when it did.
    Held { took_over: Option<(String, String)> },
    /// Another run holds it.
    Busy,
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

impl Store {
    /// The live lease of `key`, after deleting it if it ran out (its
    /// holder's next renewal then finds it gone, and stops). A lease table
    /// missing is no lease, and is not queried.
    pub(super) async fn live_lease_removing_lapsed(
        &self,
        tracking: &Tracking,
        key: i64,
    ) -> Result<Option<LockHolder>, Error> {
        let table = tracking.lease_table();
        if !lease_table_exists(self.client(), &table).await? {
            return Ok(None);
        }
        let delete =
            format!("DELETE FROM {table} WHERE lock_key = $1 AND expires_at <= clock_timestamp()");
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&key, Type::INT8)];
        // One pipeline: the DELETE reaches the server first.
        let (_, live) = tokio::join!(
            self.client().execute_typed(&delete, &params),
            live_lease(self.client(), &table, key)
        );
        live
    }

    /// Creates the lease table if it is missing (`init` does, so that a run
    /// through a pooler by a role that may not create tables finds it). The
    /// schema is created only when it is missing too: `CREATE SCHEMA IF NOT
    /// EXISTS` wants the database's CREATE privilege even when it exists.
    pub async fn ensure_lease_table(&self, tracking: &Tracking, key: i64) -> Result<(), Error> {
        let rows = self
            .client()
            .query_typed(
                "SELECT to_regnamespace($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
                &[
                    (&quote_ident(&tracking.schema), Type::TEXT),
                    (&tracking.lease_table(), Type::TEXT),
                ],
            )
            .await
            .map_err(|err| Error::database("cannot read the database catalog", err))?;
        let (schema_exists, table_exists): (bool, bool) = (rows[0].get(0), rows[0].get(1));
        if table_exists {
            return Ok(());
        }
        let mut sql = create_lease_table(tracking, key);
        if schema_exists {
            sql = sql.replace(
                &format!(
                    "CREATE SCHEMA IF NOT EXISTS {};",
                    quote_ident(&tracking.schema)
                ),
                "",
            );
        }
        self.client().batch_execute(&sql).await.map_err(|err| {
            Error::database(
                format!(
                    "cannot create the lease table {}.{}",
                    tracking.schema,
                    tracking.lease_name()
                ),
                err,
            )
        })
    }

    /// Tries once to claim the lease, creating its table if it is missing.
    pub async fn try_claim(
        &self,
        tracking: &Tracking,
        claim: &LeaseClaim,
        actor: &str,
        application: &str,
    ) -> Result<Claimed, Error> {
        match self.claim_once(claim, actor, application).await {
            Err(err) if DbFailure::from_ref(&err).code.as_deref() == Some(UNDEFINED_TABLE) => {
                self.ensure_lease_table(tracking, claim.key).await?;
                self.claim_once(claim, actor, application)
                    .await
                    .map_err(|err| Error::database("cannot claim the migration lease", err))
            }
            other => other.map_err(|err| Error::database("cannot claim the migration lease", err)),
        }
    }

    async fn claim_once(
        &self,
        claim: &LeaseClaim,
        actor: &str,
        application: &str,
    ) -> Result<Claimed, tokio_postgres::Error> {
        let client = self.client();
        let sql = claim_sql(&claim.table);
        let process = std::process::id() as i32;
        let length = micros(claim.length);
        let begin = format!("BEGIN; SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT}'");
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 6] = [
            (&claim.key, Type::INT8),
            (&claim.owner, Type::TEXT),
            (&actor, Type::TEXT),
            (&application, Type::TEXT),
            (&process, Type::INT4),
            (&length, Type::INT8),
        ];
        let (begun, claimed, committed) = tokio::join!(
            client.batch_execute(&begin),
            client.query_typed(&sql, &params),
            client.batch_execute("COMMIT"),
        );
        begun?;
        let rows = match claimed {
            Ok(rows) => rows,
            // Another claim or a holder's record transaction has the row.
            Err(err)
                if DbFailure::from_ref(&err).code.as_deref()
                    == Some(super::sql::LOCK_NOT_AVAILABLE) =>
            {
                return Ok(Claimed::Busy);
            }
            Err(err) => return Err(err),
        };
        committed?;
        Ok(match rows.first() {
            None => Claimed::Busy,
            Some(row) => {
                let before: Option<String> = row.get(0);
                let ran_out: Option<String> = row.get(1);
                Claimed::Held {
                    took_over: before.zip(ran_out),
                }
            }
        })
    }

    /// Whether the lease is still this run's, renewing it; in a transaction,
    /// the row stays locked until it ends.
    pub(super) async fn holds_lease(
        &self,
        claim: &LeaseClaim,
    ) -> Result<bool, tokio_postgres::Error> {
        let length = claim.length_micros();
        let renewed = self
            .client()
            .execute_typed(
                &claim.guard(),
                &[
                    (&claim.key, Type::INT8),
                    (&claim.owner, Type::TEXT),
                    (&length, Type::INT8),
                ],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up, if it is still this run's.
    pub async fn release_lease(&self, claim: &LeaseClaim) -> Result<(), Error> {
        self.client()
            .execute_typed(
                &format!(
                    "DELETE FROM {} WHERE lock_key = $1 AND owner = $2",
                    claim.table
                ),
                &[(&claim.key, Type::INT8), (&claim.owner, Type::TEXT)],
            )
            .await
            .map(|_| ())
            .map_err(|err| Error::database("cannot give up the migration lease", err))
    }

    /// Whether a live lease is held for `key` (the lease table missing: no).
    pub async fn lease_holder(
        &self,
        tracking: &Tracking,
        key: i64,
    ) -> Result<Option<LockHolder>, Error> {
        lease_holder(self.client(), tracking, key).await
    }
}

/// [`Store::lease_holder`] over a connection the caller holds.
pub(super) async fn lease_holder(
    client: &tokio_postgres::Client,
    tracking: &Tracking,
    key: i64,
) -> Result<Option<LockHolder>, Error> {
    let table = tracking.lease_table();
    if !lease_table_exists(client, &table).await? {
        return Ok(None);
    }
    live_lease(client, &table, key).await
}

/// Whether the lease table is there: looked for first, since a query of a
/// missing table would be an ERROR in the server's log each time a run
/// takes the lock, a waiter looks, or the admin page asks.
async fn lease_table_exists(client: &tokio_postgres::Client, table: &str) -> Result<bool, Error> {
    let rows = client
        .query_typed(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&table, Type::TEXT)],
        )
        .await
        .map_err(|err| Error::database("cannot look up the lease table", err))?;
    Ok(rows.first().is_some_and(|row| row.get::<_, bool>(0)))
}

/// The live lease of `key` in `table` (`"schema"."<table>_lock"`), if any.
async fn live_lease(
    client: &tokio_postgres::Client,
    table: &str,
    key: i64,
) -> Result<Option<LockHolder>, Error> {
    match client
        .query_typed(&holder_sql(table), &[(&key, Type::INT8)])
        .await
    {
        Ok(rows) => Ok(rows.first().map(|row| LockHolder {
            pid: row.get(0),
            application: row.get(1),
            user: Some(row.get(2)),
            client: None,
            since: Some(row.get(4)),
            lease: Some(LeaseHolder {
                actor: row.get(3),
                expires_at: row.get(5),
                expires_in_seconds: row.get(6),
            }),
        })),
        Err(err) if DbFailure::from_ref(&err).code.as_deref() == Some(UNDEFINED_TABLE) => Ok(None),
        Err(err) => Err(Error::database("cannot look up the lease holder", err)),
    }
}

/// Renews a lease from a connection of its own every third of its length,
/// while the run's connection is busy with a migration. Stops when the
/// lease is no longer this run's; a connection that fails is opened again
/// at the next renewal.
pub struct Renewer {
    task: JoinHandle<()>,
}

impl Renewer {
    pub fn start(dsn: &crate::dsn::Dsn, claim: &LeaseClaim) -> Renewer {
        let dsn = dsn.with_application_name("migrate (renewing the lease)");
        let claim = Arc::new(claim.clone());
        let task = tokio::spawn(async move {
            let every = claim.length / 3;
            let sql = renew_sql(&claim.table);
            let length = micros(claim.length);
            let mut side: Option<Store> = None;
            loop {
                tokio::time::sleep(every).await;
                if side.is_none() {
                    side = tokio::time::timeout(every, Store::connect(&dsn))
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                let Some(store) = &side else { continue };
                let renewed = tokio::time::timeout(
                    every,
                    store.client().execute_typed(
                        &sql,
                        &[
                            (&claim.key, Type::INT8),
                            (&claim.owner, Type::TEXT),
                            (&length, Type::INT8),
                        ],
                    ),
                )
                .await;
                match renewed {
                    Ok(Ok(1)) => {}
                    // No longer this run's: the guards stop the run.
                    Ok(Ok(_)) => break,
                    Ok(Err(_)) | Err(_) => {
                        if let Some(store) = side.take() {
                            store.close().await;
                        }
                    }
                }
            }
            if let Some(store) = side.take() {
                store.close().await;
            }
        });
        Renewer { task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The leases this process holds, so that an interrupted run (SIGINT,
/// SIGTERM) can give them up on its way out instead of leaving them to
/// run out.
static HELD: std::sync::Mutex<Vec<(crate::dsn::Dsn, LeaseClaim)>> =
    std::sync::Mutex::new(Vec::new());

pub fn remember_lease(dsn: &crate::dsn::Dsn, claim: &LeaseClaim) {
    if let Ok(mut held) = HELD.lock() {
        held.push((dsn.clone(), claim.clone()));
    }
}

pub fn forget_lease(claim: &LeaseClaim) {
    if let Ok(mut held) = HELD.lock() {
        held.retain(|(_, c)| c.owner != claim.owner);
    }
}

/// How soon the lease of an interrupted run runs out.
const INTERRUPTED_GRACE: Duration = Duration::from_secs(5);

/// Shortens every lease this process still holds to
/// [`INTERRUPTED_GRACE`], each through a connection of its own, within
/// `limit` in all; best effort.
pub async fn give_up_leases(limit: Duration) {
    let held: Vec<(crate::dsn::Dsn, LeaseClaim)> = match HELD.lock() {
        Ok(mut held) => std::mem::take(&mut *held),
        Err(_) => return,
    };
    if held.is_empty() {
        return;
    }
    // Not deleted: the statement the run was sending may still be running
    // on its server connection until the server sees the client gone
    // (within a second or two of the exit). The lease runs out a few
    // seconds from now instead, rather than at the end of its length.
    let attempt = async {
        for (dsn, claim) in &held {
            if let Ok(side) = Store::connect(dsn).await {
                let _ = side
                    .client()
                    .execute_typed(
                        &format!(
                            "UPDATE {} SET expires_at = least(expires_at, clock_timestamp() + \
                             interval '{} seconds') WHERE lock_key = $1 AND owner = $2",
                            claim.table,
                            INTERRUPTED_GRACE.as_secs()
                        ),
                        &[(&claim.key, Type::INT8), (&claim.owner, Type::TEXT)],
                    )
                    .await;
                side.close().await;
            }
        }
    };
    let _ = tokio::time::timeout(limit, attempt).await;
}
