//! The SQL text of the bookkeeping: recording an apply, a rollback, a
//! failure and a journal entry, the session every script starts from, and
//! the checks made around a script. Plain text, built once per run; the
//! parameters are listed above each.

use super::{Tracking, quote_ident};
use std::time::Duration;

/// Records an applied migration if the transaction is still the one opened
/// for it. $1 version, $2 name, $3 checksum, $4 duration (µs), $5 actor,
/// $6 in_transaction, $7 transaction id.
pub(super) fn record_applied(tracking: &Tracking) -> String {
    record_applied_of(tracking, ["$1", "$2", "$3", "$4", "$5", "$6", "$7"])
}

/// [`record_applied`] with its seven values written into the text (SQL
/// literals, each made by [`literal`] or a number), then `COMMIT`: one
/// simple query, so the record and the commit are one request and one
/// answer.
pub(super) fn record_applied_and_commit(tracking: &Tracking, values: [&str; 7]) -> String {
    format!("{}; COMMIT", record_applied_of(tracking, values))
}

fn record_applied_of(
    tracking: &Tracking,
    [version, name, checksum, micros, actor, in_transaction, txid]: [&str; 7],
) -> String {
    format!(
        "WITH recorded AS (
             INSERT INTO {state}
                    (version, name, checksum, status, applied_at, duration, applied_by, error, in_transaction)
             SELECT {version}, {name}, {checksum}, 'applied', now(), {micros}::float8 * interval '1 microsecond', {actor}, NULL, {in_transaction}
              WHERE txid_current() = {txid}
             RETURNING version, name, checksum, duration, applied_by)
         INSERT INTO {journal} (event, version, name, checksum, duration, actor)
         SELECT 'applied', version, name, checksum, duration, applied_by FROM recorded",
        state = tracking.state_table(),
        journal = tracking.journal_table(),
    )
}

/// The name [`prepare_record`] gives the record of an up file.
pub(super) const PREPARED_RECORD: &str = "migrate_record_applied";

/// The text a prepared statement was prepared with. $1 its name.
pub(super) const PREPARED_TEXT: &str =
    "SELECT statement FROM pg_catalog.pg_prepared_statements WHERE name = $1";

/// Prepares, for the session, the record of a transactional up file (the
/// guards are in [`record_prepared_and_commit`]). Returns one row. Planned
/// once per session instead of once per file. $1 version, $2 name, $3
/// checksum, $4 duration (µs), $5 actor, $6 in_transaction.
pub(super) fn prepare_record(tracking: &Tracking) -> String {
    format!(
        "PREPARE {PREPARED_RECORD} (text, text, text, int8, text, bool) AS
         WITH recorded AS (
             INSERT INTO {state}
                    (version, name, checksum, status, applied_at, duration, applied_by, error, in_transaction)
             VALUES ($1, $2, $3, 'applied', now(), $4::float8 * interval '1 microsecond', $5, NULL, $6)
             RETURNING version, name, checksum, duration, applied_by)
         INSERT INTO {journal} (event, version, name, checksum, duration, actor)
         SELECT 'applied', version, name, checksum, duration, applied_by FROM recorded
         RETURNING 1",
        state = tracking.state_table(),
        journal = tracking.journal_table(),
    )
}

/// The bookkeeping of a transactional up file after it ran, as one simple
/// query: `reset` (the session for the bookkeeping); the guard, which
/// divides by zero unless the session still holds the lock on `key`
/// ([`LOCK_HELD`]) and the transaction is still `txid`, so that the
/// transaction aborts and nothing after it runs (it answers with a row
/// when it passes, which nothing before it does); the [`prepare_record`]ed
/// record with its values; `COMMIT`; and `RESET ALL`, so that the next
/// query text is read with the connection's own settings (the server reads
/// a whole query with the settings of the moment: a file's session-level
/// `standard_conforming_strings` or `client_encoding` must not change how
/// the next file is read). `values` are SQL literals ([`ascii_literal`]) or
/// numbers: version, name, checksum, duration (µs), actor, in_transaction.
pub(super) fn record_prepared_and_commit(
    reset: &str,
    (key, txid): (i64, i64),
    values: [&str; 6],
) -> String {
    format!(
        "{reset}; SELECT 1 OPERATOR(pg_catalog./) CASE WHEN {held} AND txid_current() = {txid} \
         THEN 1 ELSE 0 END; EXECUTE {PREPARED_RECORD}({}); COMMIT; RESET ALL",
        values.join(", "),
        held = lock_held_of(key).trim_start_matches("SELECT "),
    )
}

/// Whether `err` says the [`prepare_record`]ed record is gone (a file
/// deallocated it).
pub(super) fn is_record_gone(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&tokio_postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME)
        && err
            .as_db_error()
            .is_some_and(|db| db.message().contains(PREPARED_RECORD))
}

/// A string as an SQL literal, if it is all ASCII and holds no NUL:
/// a literal of ASCII characters escaped this way reads the same whatever
/// `client_encoding` and `standard_conforming_strings` a file left set.
pub(super) fn ascii_literal(text: &str) -> Option<String> {
    (text.is_ascii() && !text.contains('\0'))
        .then(|| postgres_protocol::escape::escape_literal(text))
}

/// A string as an SQL literal, or `None` if it holds a NUL (which no text
/// value may, and which would end the query text early).
pub(super) fn literal(text: &str) -> Option<String> {
    (!text.contains('\0')).then(|| postgres_protocol::escape::escape_literal(text))
}

/// Removes a rolled-back migration's row if the transaction is still the
/// one opened for it. $1 version, $2 transaction id, $3 the down file's
/// checksum, $4 duration (µs), $5 actor, $6 note.
pub(super) fn record_rolled_back(tracking: &Tracking) -> String {
    format!(
        "WITH removed AS (
             DELETE FROM {state}
              WHERE version = $1 AND status = 'applied' AND txid_current() = $2
             RETURNING version, name)
         INSERT INTO {journal} (event, version, name, checksum, duration, actor, note)
         SELECT 'rolled_back', version, name, $3, $4::float8 * interval '1 microsecond', $5, $6
           FROM removed",
        state = tracking.state_table(),
        journal = tracking.journal_table(),
    )
}

/// Writes a failed row; never overwrites one that says applied. $1 version,
/// $2 name, $3 checksum, $4 duration (µs), $5 actor, $6 in_transaction,
/// $7 error.
pub(super) fn upsert_failed(tracking: &Tracking) -> String {
    format!(
        "INSERT INTO {state} AS s
                (version, name, checksum, status, applied_at, duration, applied_by, error, in_transaction)
         VALUES ($1, $2, $3, 'failed', now(), $4::float8 * interval '1 microsecond', $5, $7, $6)
         ON CONFLICT (version) DO UPDATE
            SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, status = 'failed',
                applied_at = EXCLUDED.applied_at, duration = EXCLUDED.duration,
                applied_by = EXCLUDED.applied_by, error = EXCLUDED.error,
                in_transaction = EXCLUDED.in_transaction
          WHERE s.status = 'failed'",
        state = tracking.state_table(),
    )
}

/// $1 event, $2 version, $3 name, $4 checksum, $5 duration (µs), $6 actor,
/// $7 error, $8 note.
pub(super) fn journal(tracking: &Tracking) -> String {
    format!(
        "INSERT INTO {} (event, version, name, checksum, duration, actor, error, note)
         VALUES ($1, $2, $3, $4, $5::float8 * interval '1 microsecond', $6, $7, $8)",
        tracking.journal_table(),
    )
}

/// Removes an earlier failed row before the retry's record. $1 version.
pub(super) fn clear_failed(tracking: &Tracking) -> String {
    format!(
        "DELETE FROM {} WHERE version = $1 AND status = 'failed'",
        tracking.state_table()
    )
}

/// How far a statement-by-statement script got. $1 version, $2 text.
pub(super) fn progress(tracking: &Tracking) -> String {
    format!(
        "UPDATE {} SET error = $2 WHERE version = $1 AND status = 'failed'",
        tracking.state_table()
    )
}

/// SQLSTATE lock_not_available: `lock_timeout` ran out.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";

/// SQLSTATE active_sql_transaction: a statement that cannot run inside a
/// transaction block (`CREATE INDEX CONCURRENTLY`, `VACUUM`, ...).
pub const ACTIVE_SQL_TRANSACTION: &str = "25001";

/// Every index left INVALID in the database, as `schema.name`.
pub(super) const INVALID_INDEXES: &str = "\
SELECT format('%I.%I', n.nspname, c.relname)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'pg_toast')
 ORDER BY 1";

/// The INVALID indexes of the tables index statements work on, as
/// `schema.name`. $1 tables as the statements name them, $2 indexes whose
/// tables count (`REINDEX INDEX`); both resolved with the session's
/// search_path, as the statements were.
pub(super) const INVALID_ON: &str = "\
SELECT format('%s.%I', c.relnamespace::regnamespace, c.relname)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE NOT i.indisvalid
   AND i.indrelid = ANY (ARRAY(
         SELECT to_regclass(t) FROM unnest($1::text[]) t
         UNION ALL
         SELECT x.indrelid FROM pg_index x
          WHERE x.indexrelid = ANY (ARRAY(SELECT to_regclass(n) FROM unnest($2::text[]) n))))
 ORDER BY 1";

/// Whether this session still holds the migration lock, a session
/// advisory lock on the bigint key $1, checked in the transaction about to
/// commit. Taking the key for the transaction as well fails only when
/// another session holds it; once taken, nobody else can until the commit,
/// so one session-level hold can be given up and taken back at once:
/// giving it up fails only when this session had none (a script released
/// it). Three lookups in the lock table, where reading `pg_locks` would
/// copy all of it under every partition's lock, which concurrent runs (a
/// fleet's) contend for.
pub(super) const LOCK_HELD: &str = "\
SELECT CASE WHEN pg_try_advisory_xact_lock($1)
            THEN CASE WHEN pg_advisory_unlock($1) THEN pg_try_advisory_lock($1) ELSE false END
            ELSE false END";

/// [`LOCK_HELD`] for `key`, written into the text, to end a simple query.
pub(super) fn lock_held_of(key: i64) -> String {
    LOCK_HELD.replace("$1", &format!("({key})::int8"))
}

/// The two halves of a lock key, as `pg_locks` shows them.
pub(super) fn lock_key_halves(key: i64) -> (i64, i64) {
    ((key as u64 >> 32) as i64, (key as u64 & 0xffff_ffff) as i64)
}

fn millis(d: Duration) -> String {
    format!("'{}ms'", d.as_millis())
}

/// Session settings every script starts from.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// `lock_timeout` for each statement; zero turns it off.
    pub lock_timeout: Duration,
    /// `statement_timeout`; `None` leaves the session's own.
    pub statement_timeout: Option<Duration>,
}

/// The settings each script starts from: the session as the connection
/// string set it up (what an earlier file did with SET or SET ROLE does
/// not leak into the next), search_path set to the schema, the timeouts,
/// and on PostgreSQL 14+ a check for a vanished client every second, so a
/// killed `migrate` stops holding locks within a second even mid-statement.
/// `local`: for a transaction (SET LOCAL), or for the session.
pub(super) fn session(
    tracking: &Tracking,
    server_major: u32,
    settings: &SessionSettings,
    local: bool,
) -> String {
    let set = if local { "SET LOCAL" } else { "SET" };
    let mut sql = format!(
        "RESET ALL; RESET SESSION AUTHORIZATION; RESET ROLE; {set} search_path TO {}; \
         {set} lock_timeout = {}; ",
        quote_ident(&tracking.schema),
        millis(settings.lock_timeout)
    );
    if let Some(timeout) = settings.statement_timeout {
        sql.push_str(&format!("{set} statement_timeout = {}; ", millis(timeout)));
    }
    if server_major >= 14 {
        sql.push_str(&format!("{set} client_connection_check_interval = '1s'; "));
    }
    sql
}

/// `SET lock_timeout` back to the session's value after a CONCURRENTLY
/// statement ran without one.
pub(super) fn restore_lock_timeout(settings: &SessionSettings) -> String {
    format!("SET lock_timeout = {}", millis(settings.lock_timeout))
}
