//! Running one script (an up file, or a down file) with its bookkeeping.
//!
//! A transactional up file on a direct connection takes two queries, each
//! one request and one answer ([`Store::run_in_two_queries`]):
//!
//! 1. `BEGIN`, the session reset and the transaction id, then the file, in
//!    one query text.
//! 2. `RESET ROLE`; a guard that fails unless the session holds the lock
//!    and the transaction is the one `BEGIN` opened; the record, a
//!    statement prepared once per run; `COMMIT`; `RESET ALL`.
//!
//! The server reads a whole query text with the session's settings of the
//! moment, so the file goes in front only when the session is as a
//! `RESET ALL` left it (the first PREPARE's, or the last file's): not after
//! a statement-by-statement file, a bootstrap script or a failure. Then,
//! and through a pooler, for a file that failed before (whatever made it
//! fail cannot fail it the same way again), for a file that builds an
//! index (whose table's indexes are checked before the record), for a down
//! file, and when a value of the record is not all ASCII, a script takes
//! two round trips, each a pipeline
//! (tokio-postgres sends a request when its future is first polled, and
//! `tokio::join!` polls in argument order, so requests reach the server in
//! the order written):
//!
//! 1. `BEGIN`, the session reset and the transaction id; clearing an
//!    earlier failed row; the script's SQL; whether the session still
//!    holds the migration lock.
//! 2. `RESET ROLE`; the record, guarded by the transaction id; `COMMIT`.
//!    (A script that released the lock gets `ROLLBACK` instead.)
//!
//! The guard: the record is written only if the transaction is still the
//! one `BEGIN` opened, so a file that ends its transaction itself (which
//! the engine refuses before running, when it can see the statement) never
//! gets a record for work that did not commit with it.
//!
//! A `-- migrate:no-transaction` script runs statement by statement in
//! autocommit. Its state row says `failed` with "not finished: k of n
//! statements ran" until it completes, so a killed run leaves a row that
//! says how far it got, and the next `up` runs it again. After each
//! statement the lock is checked, and after a `CREATE INDEX CONCURRENTLY`
//! the index it names must be valid.
//!
//! Both paths record an outcome the same way: [`Store::record_done`] for
//! success, [`Store::record_failure`] for a failure.

use super::sql::{self as bookkeeping, LOCK_NOT_AVAILABLE, SessionSettings};
use super::{Lock, Store, Tracking};
use crate::error::{DbFailure, Error, RunFailure};
use crate::migration::sql::{self, IndexTarget};
use crate::migration::{Migration, Script};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

/// Sent after a transactional script, before the bookkeeping in the same
/// transaction: the file's SET ROLE must not decide who writes the record,
/// nor its SET statement_timeout how long the bookkeeping may take, nor
/// its client_encoding or standard_conforming_strings how a record sent
/// after this is read.
pub(super) const RESET_FOR_BOOKKEEPING: &str = "RESET SESSION AUTHORIZATION; RESET ROLE; \
     SET LOCAL statement_timeout = 0; SET LOCAL client_encoding = 'UTF8'; \
     SET LOCAL standard_conforming_strings = on";

/// Why an up file that ran is not recorded: it ended the transaction the
/// engine opened for it.
const FILE_ENDED_TRANSACTION: &str = "the file ended its transaction itself (a COMMIT, \
     ROLLBACK or END outside a function body), so what it did before that was committed or \
     rolled back apart from its record; check the schema, remove the transaction statements \
     from the file, and run up again";

/// Why a file that ran is not recorded: an INVALID index on a table it
/// indexes.
const INVALID_AFTER: &str = "the table this statement indexes has an INVALID index (left by an \
     earlier CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY that failed or was killed, or \
     being built right now by another session): it is not used and enforces nothing, so the \
     file is not recorded as applied";

/// What a script does to the record when it succeeds.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// An up file: the version becomes applied, replacing the failed row
    /// with this version text if there is one.
    Apply { failed_row_version: Option<&'a str> },
    /// A down file: the applied row goes away, found by the version text
    /// it was recorded with (`7`, though the file now says `007`).
    RollBack { row_version: &'a str },
}

/// One script to run.
#[derive(Clone, Copy, Debug)]
pub struct Run<'a> {
    pub migration: &'a Migration,
    /// The file that runs: `migration.up` or its down file.
    pub script: &'a Script,
    pub action: Action<'a>,
    /// Recorded as `applied_by` / `actor`.
    pub actor: &'a str,
    /// The engine tries again if this attempt fails on `lock_timeout`:
    /// such a failure is rolled back but not recorded.
    pub retries_lock_timeout: bool,
    /// The migration lock this run holds (`None` without one,
    /// `--safe=false`). A script that releases it, or that runs when the
    /// lease is no longer this run's, is not recorded.
    pub lock: Option<&'a Lock>,
}

/// After a file in [`Store::run_in_two_queries`] that is not recorded:
/// what it set for the session after ending its transaction itself (a
/// role, settings) must not decide how its failure is recorded, and the
/// bookkeeping's own reset went with the rollback.
const ROLLBACK_AND_RESET: &str = "ROLLBACK; RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL";

/// Why a file in [`Store::run_in_two_queries`] is not recorded: the
/// prepared record was gone when it came to be written.
const FILE_DEALLOCATED: &str = "the prepared statement that records the file was gone (a \
     DEALLOCATE in a function or in dynamic SQL, in this file or one it calls), so its \
     transaction was rolled back; run up again: a file that failed before is recorded without it";

/// The longest file [`Store::run_in_two_queries`] copies behind `BEGIN`;
/// a longer one goes on its own, where a round trip more is nothing.
const ONE_QUERY_AT_MOST: usize = 1 << 20;

/// How the bookkeeping query of [`Store::run_in_two_queries`] ended.
enum Bookkept {
    /// The guard passed, the record was written and committed.
    Recorded,
    /// It all ran, but the record wrote no row (and that committed).
    NoRecord,
    /// The guard refused: the lock or the transaction was not the run's.
    Refused,
    /// After the guard passed, or before the server answered at all.
    Failed(tokio_postgres::Error),
}

/// The bookkeeping values of [`Store::run_in_two_queries`], as literals.
struct OneQuery {
    key: i64,
    version: String,
    name: String,
    checksum: String,
    actor: String,
}

/// A script that completed, with its record.
#[derive(Clone, Debug)]
pub struct Done {
    pub duration: Duration,
}

/// Why a script did not complete.
#[derive(Debug)]
pub enum RunError {
    /// It failed. `recorded` says whether the failure reached the state
    /// table and journal.
    Failed(Box<RunFailure>),
    /// It released the migration lock (`pg_advisory_unlock_all()`, say),
    /// or the lease was no longer this run's (`lease`). A transactional
    /// script was rolled back; of a statement-by-statement one,
    /// `statements` ran. Only the journal heard of it: without the lock,
    /// the state table is another instance's to write.
    LockReleased {
        lease: bool,
        statements: Option<(usize, usize)>,
        duration: Duration,
        journalled: Result<(), DbFailure>,
    },
    /// Its bookkeeping failed; `Error` says whether the outcome is known.
    Record(Error),
}

/// The bookkeeping statements and session preambles, built once per run.
/// Each is sent as an unnamed statement with its parameter types (parse,
/// bind and execute in one request): nothing outlives the request on the
/// server, so a pooler may hand each transaction to another server
/// connection.
pub(super) struct Statements {
    /// Where the records go, for the statements written with their values.
    tracking: Tracking,
    begin: String,
    session: String,
    clear_failed: Sql,
    record_applied: Sql,
    record_rolled_back: Sql,
    upsert_failed: Sql,
    progress: Sql,
    journal: Sql,
    /// Whether [`bookkeeping::prepare_record`] is prepared for the session
    /// (on a direct connection only: through a pooler each transaction
    /// may find another server connection).
    record_prepared: AtomicBool,
    /// Whether to prepare it (again) before the next script: at first, and
    /// after anything that may have deallocated it unseen (a script that
    /// did not go as two queries, a bootstrap script, a record that found
    /// it gone).
    prepare_record: AtomicBool,
    /// Whether the session's settings are as `RESET ALL` left them (after
    /// the first PREPARE of the record, or at the end of the last file's
    /// bookkeeping), so that a query text sent now is read with the
    /// connection's own settings. Cleared as each script starts.
    clean: AtomicBool,
}

/// A statement's text and the types of its parameters.
struct Sql {
    text: String,
    types: &'static [Type],
}

impl Sql {
    fn new(text: String, types: &'static [Type]) -> Sql {
        Sql { text, types }
    }
}

impl Store {
    /// Runs a bookkeeping statement; returns the rows it changed.
    async fn exec(
        &self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
            .iter()
            .zip(sql.types)
            .map(|(param, ty)| (*param, ty.clone()))
            .collect();
        self.client().execute_typed(&sql.text, &typed).await
    }

    fn statements(&mut self, tracking: &Tracking, settings: &SessionSettings) {
        if self.statements.is_none() {
            use Type as T;
            let major = self.server_major();
            let preamble = self.transaction_preamble(tracking, settings);
            self.statements = Some(Statements {
                tracking: tracking.clone(),
                begin: format!("{}; {preamble}SELECT txid_current()", self.pooled_begin()),
                session: bookkeeping::session(tracking, major, settings, false),
                clear_failed: Sql::new(bookkeeping::clear_failed(tracking), &[T::TEXT]),
                record_applied: Sql::new(
                    bookkeeping::record_applied(tracking),
                    &[
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                        T::INT8,
                        T::TEXT,
                        T::BOOL,
                        T::INT8,
                    ],
                ),
                record_rolled_back: Sql::new(
                    bookkeeping::record_rolled_back(tracking),
                    &[T::TEXT, T::INT8, T::TEXT, T::INT8, T::TEXT, T::TEXT],
                ),
                upsert_failed: Sql::new(
                    bookkeeping::upsert_failed(tracking),
                    &[
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                        T::INT8,
                        T::TEXT,
                        T::BOOL,
                        T::TEXT,
                    ],
                ),
                progress: Sql::new(bookkeeping::progress(tracking), &[T::TEXT, T::TEXT]),
                journal: Sql::new(
                    bookkeeping::journal(tracking),
                    &[
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                        T::INT8,
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                    ],
                ),
                record_prepared: AtomicBool::new(false),
                prepare_record: AtomicBool::new(true),
                clean: AtomicBool::new(false),
            });
        }
    }

    /// Prepares the record when [`Statements::prepare_record`] says to: one
    /// request more per run, for a record planned once instead of once per
    /// file. The first time, `RESET ALL` follows, which leaves the session
    /// `clean`. Once prepared, it is looked up instead (one request, and no
    /// error in the server's log when it is still there), and prepared
    /// again only if it is gone. One of that name counts only if it is this
    /// one.
    async fn prepare_record(&self, tracking: &Tracking) {
        let statements = self.prepared();
        // Through a pooler each transaction may find another server
        // connection, where a prepared statement would be left behind.
        if !statements.prepare_record.swap(false, Ordering::Relaxed) || self.pooled.is_some() {
            return;
        }
        let client = self.client();
        let text = bookkeeping::prepare_record(tracking);
        let there = || async {
            client
                .query_typed(
                    bookkeeping::PREPARED_TEXT,
                    &[(&bookkeeping::PREPARED_RECORD, Type::TEXT)],
                )
                .await
                .map(|rows| {
                    rows.first()
                        .map(|row| row.get::<_, Option<String>>(0).is_some_and(|t| t == text))
                })
        };
        let prepared = if statements.record_prepared.load(Ordering::Relaxed) {
            match there().await {
                Ok(Some(ours)) => ours,
                Ok(None) => client.batch_execute(&text).await.is_ok(),
                Err(_) => false,
            }
        } else {
            // The first on this session: with the session's settings reset
            // after it, the first file can go in two queries as well. Two
            // requests, one pipeline: a PREPARE in a query of several
            // statements keeps the whole query as its text, which the
            // look-up would then never find equal to the record's.
            let (prepared, reset) = tokio::join!(
                client.batch_execute(&text),
                client.batch_execute("RESET ALL")
            );
            if reset.is_ok() {
                statements.clean.store(true, Ordering::Relaxed);
            }
            match prepared {
                Ok(()) => true,
                Err(err) if err.code() == Some(&SqlState::DUPLICATE_PSTATEMENT) => {
                    there().await.is_ok_and(|ours| ours == Some(true))
                }
                Err(_) => false,
            }
        };
        statements
            .record_prepared
            .store(prepared, Ordering::Relaxed);
    }

    /// Something other than the engine's own statements ran on the session
    /// (a bootstrap script): the next file is not sent behind `BEGIN`
    /// until a bookkeeping's `RESET ALL` has run again.
    pub(super) fn session_touched(&self) {
        if let Some(statements) = &self.statements {
            statements.clean.store(false, Ordering::Relaxed);
            statements.prepare_record.store(true, Ordering::Relaxed);
        }
    }

    fn prepared(&self) -> &Statements {
        self.statements.as_ref().expect("built by run_script")
    }

    /// Runs one script and records the outcome.
    pub async fn run_script(
        &mut self,
        tracking: &Tracking,
        settings: &SessionSettings,
        run: Run<'_>,
    ) -> Result<Done, RunError> {
        self.statements(tracking, settings);
        self.prepare_record(tracking).await;
        let statements = self.prepared();
        let clean = statements.clean.swap(false, Ordering::Relaxed);
        if run.script.transactional
            && let Some(values) = self.one_query_values(&run, clean)
        {
            return self.run_in_two_queries(run, values).await;
        }
        // Whatever a script on another path runs may deallocate the record.
        statements.prepare_record.store(true, Ordering::Relaxed);
        if run.script.transactional {
            self.run_in_transaction(run).await
        } else {
            self.run_statements(run, settings).await
        }
    }

    async fn run_in_transaction(&self, run: Run<'_>) -> Result<Done, RunError> {
        let statements = self.prepared();
        let client = self.client();
        let script = run.script;
        let start = Instant::now();
        let clear = async {
            match run.action {
                Action::Apply {
                    failed_row_version: Some(version),
                } => self
                    .exec(&statements.clear_failed, &[&version])
                    .await
                    .map(|_| ()),
                _ => Ok(()),
            }
        };
        let targets = index_targets(script);
        let reset_sql = self.reset_for_bookkeeping();
        let (begun, cleared, ran, held, invalid) = tokio::join!(
            client.simple_query(&statements.begin),
            clear,
            client.batch_execute(&script.sql),
            self.reset_and_check_claim(&reset_sql, run.lock),
            self.invalid_on(&targets),
        );
        let duration = start.elapsed();
        let failure = match (begun, cleared, ran) {
            (Ok(begun), Ok(()), Ok(())) => {
                match held {
                    Ok(true) => {}
                    Ok(false) => {
                        client.batch_execute("ROLLBACK").await.ok();
                        return Err(self.lock_released(run, None, duration).await);
                    }
                    Err(err) => {
                        client.batch_execute("ROLLBACK").await.ok();
                        return Err(RunError::Record(record_error(&run, err)));
                    }
                }
                match invalid {
                    Ok(invalid) if invalid.is_empty() => {}
                    Ok(invalid) => {
                        client.batch_execute("ROLLBACK").await.ok();
                        let failure = RunFailure {
                            invalid_indexes: invalid,
                            ..RunFailure::new(DbFailure::tool(INVALID_AFTER), duration)
                        };
                        return Err(self.record_failure(run, failure).await);
                    }
                    Err(err) => {
                        client.batch_execute("ROLLBACK").await.ok();
                        return Err(RunError::Record(record_error(&run, err)));
                    }
                }
                let txid = transaction_id(&begun);
                let (recorded, commit) = match run.action {
                    Action::Apply { .. } => match self.record_and_commit(&run, txid, duration) {
                        Some(text) => match client.simple_query(&text).await {
                            Ok(answer) => {
                                // Its RESET ALL ran: the next file may go
                                // with BEGIN in front of it.
                                if self.pooled.is_none() {
                                    statements.clean.store(true, Ordering::Relaxed);
                                }
                                (Ok(first_count(&answer)), Ok(()))
                            }
                            Err(err) => {
                                // The record failed (the transaction stays
                                // open, aborted) or the commit did.
                                client.batch_execute("ROLLBACK").await.ok();
                                (Err(err), Ok(()))
                            }
                        },
                        None => tokio::join!(
                            self.record_done(&run, txid, duration),
                            client.batch_execute("COMMIT"),
                        ),
                    },
                    // A down file's record may find no applied row: then its
                    // work must not commit, so COMMIT waits for the answer
                    // (one round trip more, on a rare path).
                    Action::RollBack { .. } => match self.record_done(&run, txid, duration).await {
                        Ok(1) => (Ok(1), client.batch_execute("COMMIT").await),
                        other => (other, Ok(())),
                    },
                };
                match (recorded, commit) {
                    (Ok(1), Ok(())) => return Ok(Done { duration }),
                    (Ok(_), Ok(())) => DbFailure::tool(match run.action {
                        Action::Apply { .. } => FILE_ENDED_TRANSACTION,
                        Action::RollBack { .. } => {
                            "the down file ended its transaction itself, or the migration was no \
                             longer recorded as applied; what ran in its transaction was rolled \
                             back and its record left as it was: check with `migrate status`"
                        }
                    }),
                    (recorded, commit) => {
                        let err = recorded
                            .map(|_| ())
                            .and(commit)
                            .expect_err("one of them failed");
                        return Err(RunError::Record(record_error(&run, err)));
                    }
                }
            }
            // The script's own error comes first; the others follow from
            // the same cause (a lost connection) or from it.
            (_, _, Err(err)) | (_, Err(err), Ok(())) | (Err(err), Ok(()), Ok(())) => {
                DbFailure::from(err)
            }
        };
        Err(self
            .roll_back_and_record(run, "ROLLBACK", failure, duration)
            .await)
    }

    /// A transactional file's failure: `rollback` sent, the error placed in
    /// the file, and the failure recorded ([`Store::record_failure`]).
    async fn roll_back_and_record(
        &self,
        run: Run<'_>,
        rollback: &str,
        failure: DbFailure,
        duration: Duration,
    ) -> RunError {
        self.client().batch_execute(rollback).await.ok();
        let sql = &run.script.sql;
        let location = failure
            .position
            .map(|p| sql::locate(sql, sql::position_to_offset(sql, p)));
        let failure = RunFailure {
            failure,
            duration,
            location,
            statements: None,
            invalid_indexes: Vec::new(),
            recorded: Ok(()),
        };
        self.record_failure(run, failure).await
    }

    /// The values of the bookkeeping query, when [`Store::run_in_two_queries`]
    /// may be used: an up file on a direct connection under the advisory
    /// lock, with the record prepared and the session `clean`; a file of
    /// at most [`ONE_QUERY_AT_MOST`] bytes that builds no index (whose
    /// table's indexes are checked before the record) and does not
    /// deallocate prepared statements (the record's);
    /// with values all ASCII ([`bookkeeping::ascii_literal`]). The lock key,
    /// the version, name, checksum and actor as literals, and
    /// in_transaction.
    fn one_query_values(&self, run: &Run<'_>, clean: bool) -> Option<OneQuery> {
        let Some(Lock::Advisory(key)) = run.lock else {
            return None;
        };
        // A file that failed before goes on the pipelined path: a
        // DEALLOCATE the lexer cannot see fails it here, not there.
        let Action::Apply {
            failed_row_version: None,
        } = run.action
        else {
            return None;
        };
        let statements = self.prepared();
        if !clean
            || !statements.record_prepared.load(Ordering::Relaxed)
            || self.pooled.is_some()
            // Before 13 a simple query's statements share one timeout
            // (the session's), not each its own.
            || self.server_major() < 13
            // The server counts an error's position in characters, or in
            // bytes (SQL_ASCII): the same in front of the file.
            || !statements.begin.is_ascii()
            || !index_targets(run.script).is_empty()
            || run.script.sql.len() > ONE_QUERY_AT_MOST
            || mentions(&run.script.sql, b"deallocate")
        {
            return None;
        }
        Some(OneQuery {
            key: *key,
            version: bookkeeping::ascii_literal(record_version(run))?,
            name: bookkeeping::ascii_literal(&run.migration.name)?,
            checksum: bookkeeping::ascii_literal(run.script.checksum.as_str())?,
            actor: bookkeeping::ascii_literal(run.actor)?,
        })
    }

    /// A transactional up file in two queries, where psql's `BEGIN; \i
    /// file; COMMIT` makes three: `BEGIN`, the session and the transaction
    /// id in front of the file; then the bookkeeping
    /// ([`bookkeeping::record_prepared_and_commit`]): the reset, the guard
    /// (the lock and the transaction id), the record, `COMMIT` and `RESET
    /// ALL`. The file is read with the connection's own settings, since
    /// the session is `clean`. When the guard refuses, one more question
    /// tells why; when the prepared record is gone (the file deallocated
    /// it where the lexer could not see), the guard has passed, so what the
    /// file did in the database is rolled back with its transaction, and
    /// it fails (a rerun starts with it, on the path that needs no
    /// prepared record).
    async fn run_in_two_queries(&self, run: Run<'_>, values: OneQuery) -> Result<Done, RunError> {
        let statements = self.prepared();
        let client = self.client();
        let script = run.script;
        let start = Instant::now();
        let prefix = format!("{}; ", statements.begin);
        let ran = self.begin_and_run(&prefix, &script.sql).await;
        let duration = start.elapsed();
        let failure = match ran {
            Ok(txid) => {
                let micros = (duration.as_micros() as i64).to_string();
                let text = bookkeeping::record_prepared_and_commit(
                    &self.reset_for_bookkeeping(),
                    (values.key, txid),
                    [
                        &values.version,
                        &values.name,
                        &values.checksum,
                        &micros,
                        &values.actor,
                        "true",
                    ],
                );
                match self.bookkeep(&text).await {
                    Bookkept::Recorded => {
                        statements.clean.store(true, Ordering::Relaxed);
                        return Ok(Done { duration });
                    }
                    // No row, and it committed: a trigger on the state
                    // table skipped the insert.
                    Bookkept::NoRecord => DbFailure::tool(FILE_ENDED_TRANSACTION),
                    Bookkept::Refused => {
                        client.batch_execute(ROLLBACK_AND_RESET).await.ok();
                        match self.holds_claim(run.lock).await {
                            Ok(false) => {
                                return Err(self.lock_released(run, None, duration).await);
                            }
                            Ok(true) => DbFailure::tool(FILE_ENDED_TRANSACTION),
                            Err(err) => return Err(RunError::Record(record_error(&run, err))),
                        }
                    }
                    // The guard passed, so what the file did in the
                    // database was in the transaction rolled back; it is
                    // not run again here (what it did outside, through
                    // dblink or a sequence, would be done twice). The
                    // record is prepared again before the next file, and a
                    // rerun starts with this one, which needs no prepared
                    // record.
                    Bookkept::Failed(err) if bookkeeping::is_record_gone(&err) => {
                        client.batch_execute(ROLLBACK_AND_RESET).await.ok();
                        statements.prepare_record.store(true, Ordering::Relaxed);
                        DbFailure::tool(FILE_DEALLOCATED)
                    }
                    Bookkept::Failed(err) => {
                        client.batch_execute(ROLLBACK_AND_RESET).await.ok();
                        return Err(RunError::Record(record_error(&run, err)));
                    }
                }
            }
            // The position counts from the start of the file, not of what
            // went before it.
            Err(err) => {
                let mut failure = DbFailure::from(err);
                let before = prefix.chars().count() as u32;
                failure.position = failure
                    .position
                    .and_then(|p| p.checked_sub(before))
                    .filter(|&p| p > 0);
                failure
            }
        };
        Err(self
            .roll_back_and_record(run, ROLLBACK_AND_RESET, failure, duration)
            .await)
    }

    /// Sends the bookkeeping query of [`Store::run_in_two_queries`] and
    /// tells how far it got: the guard answers with a row when it passes,
    /// before anything else of the query does, so an error before that row
    /// is the guard's refusal (or the reset's), and one after it the
    /// record's or the commit's (a trigger or deferred constraint, the
    /// prepared record gone, the connection lost).
    async fn bookkeep(&self, text: &str) -> Bookkept {
        use futures_util::TryStreamExt;
        let mut rows = 0;
        let result = async {
            let stream = self.client().simple_query_raw(text).await?;
            let mut stream = std::pin::pin!(stream);
            while let Some(message) = stream.try_next().await? {
                if let SimpleQueryMessage::Row(_) = message {
                    rows += 1;
                }
            }
            Ok::<(), tokio_postgres::Error>(())
        }
        .await;
        match (result, rows) {
            (Ok(()), 0 | 1) => Bookkept::NoRecord,
            (Ok(()), _) => Bookkept::Recorded,
            (Err(err), 0) if err.as_db_error().is_some() => Bookkept::Refused,
            (Err(err), _) => Bookkept::Failed(err),
        }
    }

    /// Runs `prefix` (`BEGIN`, the session, `SELECT txid_current()`) and
    /// the file as one simple query; returns the transaction id. The
    /// file's own rows are read and dropped as they come.
    async fn begin_and_run(&self, prefix: &str, sql: &str) -> Result<i64, tokio_postgres::Error> {
        use futures_util::TryStreamExt;
        let stream = self
            .client()
            .simple_query_raw(&format!("{prefix}{sql}"))
            .await?;
        let mut stream = std::pin::pin!(stream);
        let mut txid = None;
        while let Some(message) = stream.try_next().await? {
            if let (None, SimpleQueryMessage::Row(row)) = (txid, &message) {
                txid = Some(row.get(0).and_then(|v| v.parse().ok()).unwrap_or(0));
            }
        }
        Ok(txid.unwrap_or(0))
    }

    /// A `-- migrate:no-transaction` script: each statement on its own.
    async fn run_statements(
        &self,
        run: Run<'_>,
        settings: &SessionSettings,
    ) -> Result<Done, RunError> {
        let statements = self.prepared();
        let client = self.client();
        let script = run.script;
        let version = record_version(&run);
        let parts = sql::split(&script.sql).map_err(|err| {
            RunError::Failed(Box::new(RunFailure {
                failure: DbFailure::tool(&format!("cannot split the file into statements: {err}")),
                duration: Duration::ZERO,
                location: None,
                statements: None,
                invalid_indexes: Vec::new(),
                recorded: Ok(()),
            }))
        })?;
        let total = parts.len();
        let start = Instant::now();
        let progress_text = |ran: usize| format!("not finished: {ran} of {total} statements ran");

        // The session, and for an up file a row that says how far it got.
        // Through a pooler nothing is set for the session (each statement
        // brings its settings), and the row is written only if the lease is
        // still this run's with time to spare.
        let pooled = self.pooled.is_some();
        let session = async {
            if pooled {
                client.batch_execute(&self.pooled_begin()).await
            } else {
                client.batch_execute(&statements.session).await
            }
        };
        let held = async {
            if pooled {
                self.holds_claim(run.lock).await
            } else {
                Ok(true)
            }
        };
        let marked = async {
            match run.action {
                Action::Apply { .. } => self
                    .exec(
                        &statements.upsert_failed,
                        &[
                            &version,
                            &run.migration.name,
                            &script.checksum.as_str(),
                            &0i64,
                            &run.actor,
                            &false,
                            &progress_text(0),
                        ],
                    )
                    .await
                    .map(|_| ()),
                Action::RollBack { .. } => Ok(()),
            }
        };
        let (session, held, marked) = tokio::join!(session, held, marked);
        let started = match (session, held, marked) {
            (Ok(()), Ok(false), _) => {
                client.batch_execute("ROLLBACK").await.ok();
                return Err(self
                    .lock_released(run, Some((0, total)), start.elapsed())
                    .await);
            }
            (Ok(()), Ok(true), Ok(())) if pooled => client.batch_execute("COMMIT").await,
            (session, held, marked) => session.and(held.map(|_| ())).and(marked),
        };
        if let Err(err) = started {
            if pooled {
                client.batch_execute("ROLLBACK").await.ok();
            }
            let failure =
                RunFailure::new(DbFailure::from(err), start.elapsed()).after_statements(0, total);
            return Err(self.record_failure(run, failure).await);
        }

        // Through a pooler: the file's own SET statements so far, sent again
        // before each later statement (which may run on another server
        // connection).
        let mut carried = String::new();
        for (index, part) in parts.iter().enumerate() {
            // A CONCURRENTLY statement waits for every older transaction of
            // the database, which lock_timeout would cut short; it blocks
            // no reads or writes meanwhile, so it runs without one. Indexes
            // it may leave INVALID are told apart from ones that were.
            let invalid_before = if part.concurrently {
                self.invalid_indexes().await
            } else {
                Vec::new()
            };
            // Through a pooler, the settings go with each statement (and
            // with each look at the indexes it names).
            let preamble = pooled.then(|| format!("{}{carried}", statements.session));
            let ran = if let Some(preamble) = &preamble {
                let mut preamble = preamble.clone();
                if part.concurrently {
                    preamble.push_str("SET lock_timeout = 0; ");
                }
                self.in_own_session(&preamble, client.batch_execute(part.text))
                    .await
            } else if part.concurrently && !settings.lock_timeout.is_zero() {
                let restore = bookkeeping::restore_lock_timeout(settings);
                let (lifted, ran, restored) = tokio::join!(
                    client.batch_execute("SET lock_timeout = 0"),
                    client.batch_execute(part.text),
                    client.batch_execute(&restore),
                );
                lifted.and(ran).and(restored).map_err(DbFailure::from)
            } else {
                client
                    .batch_execute(part.text)
                    .await
                    .map_err(DbFailure::from)
            };
            if pooled && part.is_session_set() {
                carried.push_str(part.text.trim_end().trim_end_matches(';'));
                carried.push_str("; ");
            }
            let at = |position: Option<u32>| {
                sql::locate(
                    &script.sql,
                    part.offset + position.map_or(0, |p| sql::position_to_offset(part.text, p)),
                )
            };
            let target = sql::index_target(part.text);
            if let Err(failure) = ran {
                let location = failure.position.map(|p| at(Some(p)));
                let mut invalid_indexes = Vec::new();
                if !failure.connection_lost {
                    // What this statement left INVALID, and what is INVALID
                    // on the table it indexes (left by an earlier run: a
                    // rerun then fails on "already exists").
                    if part.concurrently {
                        invalid_indexes.extend(
                            self.invalid_indexes()
                                .await
                                .into_iter()
                                .filter(|index| !invalid_before.contains(index)),
                        );
                    }
                    if let Some(target) = &target {
                        let on_table = self
                            .invalid_on_in(preamble.as_deref(), std::slice::from_ref(target))
                            .await;
                        for index in on_table.unwrap_or_default() {
                            if !invalid_indexes.contains(&index) {
                                invalid_indexes.push(index);
                            }
                        }
                    }
                }
                let failure = RunFailure {
                    location,
                    invalid_indexes,
                    ..RunFailure::new(failure, start.elapsed()).after_statements(index, total)
                };
                return Err(self.record_failure(run, failure).await);
            }
            // `CREATE INDEX ... IF NOT EXISTS` succeeds over the INVALID
            // index a failed or killed earlier run left, and a REINDEX
            // CONCURRENTLY leaves its failed copy behind: an INVALID index
            // enforces nothing, so the file is never recorded applied while
            // the table it indexes has one.
            if let Some(target) = &target {
                match self
                    .invalid_on_in(preamble.as_deref(), std::slice::from_ref(target))
                    .await
                {
                    Ok(invalid) if invalid.is_empty() => {}
                    Ok(invalid) => {
                        let failure = RunFailure {
                            location: Some(at(None)),
                            invalid_indexes: invalid,
                            ..RunFailure::new(DbFailure::tool(INVALID_AFTER), start.elapsed())
                                .after_statements(index, total)
                        };
                        return Err(self.record_failure(run, failure).await);
                    }
                    Err(err) => {
                        let failure = RunFailure::new(err, start.elapsed())
                            .after_statements(index + 1, total);
                        return Err(self.record_failure(run, failure).await);
                    }
                }
            }
            let progress = async {
                if matches!(run.action, Action::Apply { .. }) {
                    // Best effort: a lost connection shows at the next
                    // statement, and a file that SET ROLE to a role that
                    // may not write the state table keeps that role for its
                    // later statements.
                    let _ = self
                        .exec(&statements.progress, &[&version, &progress_text(index + 1)])
                        .await;
                }
            };
            // As the progress, the look at the lock runs in the file's
            // session, whose SET statement_timeout or SET ROLE may fail it:
            // only a certain answer counts (a lost connection shows at the
            // next statement).
            let (held, ()) = tokio::join!(self.holds_claim(run.lock), progress);
            // Through a pooler nothing else holds the lease: a check that
            // fails leaves it unconfirmed, and no statement runs then.
            let unconfirmed = pooled && held.is_err() && index + 1 < total;
            if let Ok(false) = held {
                return Err(self
                    .lock_released(run, Some((index + 1, total)), start.elapsed())
                    .await);
            }
            if unconfirmed {
                let failure = RunFailure::new(
                    DbFailure::tool("the migration lease could not be confirmed after a statement"),
                    start.elapsed(),
                )
                .after_statements(index + 1, total);
                return Err(self.record_failure(run, failure).await);
            }
        }
        let duration = start.elapsed();

        // Done: the record, in a transaction of its own, if the lock is
        // still this run's.
        let begin_record = format!(
            "RESET SESSION AUTHORIZATION; RESET ROLE; {}; SELECT txid_current()",
            self.pooled_begin()
        );
        let (begun, cleared, held) = tokio::join!(
            client.simple_query(&begin_record),
            async {
                match run.action {
                    Action::Apply { .. } => self
                        .exec(&statements.clear_failed, &[&version])
                        .await
                        .map(|_| ()),
                    Action::RollBack { .. } => Ok(()),
                }
            },
            self.holds_claim(run.lock),
        );
        if let (Ok(_), Ok(()), Ok(false)) = (&begun, &cleared, &held) {
            client.batch_execute("ROLLBACK").await.ok();
            return Err(self
                .lock_released(run, Some((total, total)), duration)
                .await);
        }
        let recorded = match (begun, cleared, held) {
            (Ok(begun), Ok(()), Ok(_)) => {
                let txid = transaction_id(&begun);
                let (recorded, commit) = tokio::join!(
                    self.record_done(&run, txid, duration),
                    client.batch_execute("COMMIT")
                );
                recorded.and_then(|n| commit.map(|()| n))
            }
            (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => Err(err),
        };
        match recorded {
            Ok(1) => Ok(Done { duration }),
            Ok(_) => {
                client.batch_execute("ROLLBACK").await.ok();
                let failure = RunFailure::new(
                    DbFailure::tool(
                        "every statement ran, but the record was not where it was expected \
                         (another process changed it?): check with `migrate status`",
                    ),
                    duration,
                )
                .after_statements(total, total);
                Err(self.record_failure(run, failure).await)
            }
            Err(err) => {
                client.batch_execute("ROLLBACK").await.ok();
                Err(RunError::Record(record_error(&run, err)))
            }
        }
    }

    /// Records a success, inside the transaction whose id is `txid`: the
    /// applied row (or, for a down file, the row's removal) and its
    /// journal entry. Returns the rows recorded: 1, or 0 if the transaction
    /// is no longer that one.
    async fn record_done(
        &self,
        run: &Run<'_>,
        txid: i64,
        duration: Duration,
    ) -> Result<u64, tokio_postgres::Error> {
        let statements = self.prepared();
        let script = run.script;
        let micros = duration.as_micros() as i64;
        let version = record_version(run);
        match run.action {
            Action::Apply { .. } => {
                self.exec(
                    &statements.record_applied,
                    &[
                        &version,
                        &run.migration.name,
                        &script.checksum.as_str(),
                        &micros,
                        &run.actor,
                        &script.transactional,
                        &txid,
                    ],
                )
                .await
            }
            Action::RollBack { .. } => {
                let note = if script.transactional {
                    format!("ran {}", script.file_name())
                } else {
                    format!("ran {} statement by statement", script.file_name())
                };
                self.exec(
                    &statements.record_rolled_back,
                    &[
                        &version,
                        &txid,
                        &script.checksum.as_str(),
                        &micros,
                        &run.actor,
                        &note,
                    ],
                )
                .await
            }
        }
    }

    /// [`Store::record_done`] of an up file and `COMMIT`, as one simple
    /// query with the values written in; `None` if the actor holds a NUL
    /// (then the record goes as a statement with parameters, which the
    /// server refuses with its own message).
    fn record_and_commit(&self, run: &Run<'_>, txid: i64, duration: Duration) -> Option<String> {
        let actor = bookkeeping::literal(run.actor)?;
        let micros = (duration.as_micros() as i64).to_string();
        let txid = txid.to_string();
        let mut text = bookkeeping::record_applied_and_commit(
            &self.prepared().tracking,
            [
                &bookkeeping::literal(record_version(run))?,
                &bookkeeping::literal(&run.migration.name)?,
                &bookkeeping::literal(run.script.checksum.as_str())?,
                &micros,
                &actor,
                if run.script.transactional {
                    "true"
                } else {
                    "false"
                },
                &txid,
            ],
        );
        // On a direct connection the session's settings go back to the
        // connection's own ([`bookkeeping::record_prepared_and_commit`]).
        if self.pooled.is_none() {
            text.push_str("; RESET ALL");
        }
        Some(text)
    }

    /// The session reset after a script ([`Store::reset_for_bookkeeping`])
    /// and [`Store::holds_claim`]. With an advisory lock, one simple query
    /// (the key written in), so that the server answers both at once.
    async fn reset_and_check_claim(
        &self,
        reset_sql: &str,
        lock: Option<&Lock>,
    ) -> Result<bool, tokio_postgres::Error> {
        match lock {
            Some(Lock::Advisory(key)) => {
                let text = format!("{reset_sql}; {}", bookkeeping::lock_held_of(*key));
                let answer = self.client().simple_query(&text).await?;
                Ok(answer.iter().any(|message| {
                    matches!(message, SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))
                }))
            }
            _ => {
                let (reset, held) = tokio::join!(
                    self.client().batch_execute(reset_sql),
                    self.holds_claim(lock)
                );
                reset.and(held)
            }
        }
    }

    /// Records a failure (unless the engine retries it): a failed row and
    /// a journal entry for an up file, a journal entry for a down file.
    async fn record_failure(&self, run: Run<'_>, mut failure: RunFailure) -> RunError {
        if run.retries_lock_timeout && failure.failure.code.as_deref() == Some(LOCK_NOT_AVAILABLE) {
            return RunError::Failed(Box::new(failure));
        }
        let statements = self.prepared();
        let client = self.client();
        if !run.script.transactional {
            // A transaction's SET ROLE went with its rollback; a
            // statement-by-statement file's did not.
            let _ = client
                .batch_execute("RESET SESSION AUTHORIZATION; RESET ROLE")
                .await;
        }
        let version = record_version(&run);
        let micros = failure.duration.as_micros() as i64;
        let error_text = failure.record_text();
        let checksum = run.script.checksum.as_str();
        // Through a pooler the failure is recorded in a transaction of its
        // own, if the lease is still this run's.
        let pooled = self.pooled.is_some();
        if pooled {
            let begin = self.pooled_begin();
            let (begun, held) =
                tokio::join!(client.batch_execute(&begin), self.holds_claim(run.lock));
            let refused = match (begun, held) {
                (Ok(()), Ok(true)) => None,
                (Ok(()), Ok(false)) => Some(DbFailure::tool(
                    "not recorded: the lease was no longer this run's",
                )),
                (Err(err), _) | (_, Err(err)) => Some(DbFailure::from(err)),
            };
            if let Some(refused) = refused {
                client.batch_execute("ROLLBACK").await.ok();
                failure.recorded = Err(refused);
                return RunError::Failed(Box::new(failure));
            }
        }
        let journal = self.journal_failure(&run, &error_text, failure.duration);
        let recorded = match run.action {
            Action::Apply { .. } => {
                let params: [&(dyn ToSql + Sync); 7] = [
                    &version,
                    &run.migration.name,
                    &checksum,
                    &micros,
                    &run.actor,
                    &run.script.transactional,
                    &error_text,
                ];
                let (row, journal) =
                    tokio::join!(self.exec(&statements.upsert_failed, &params), journal);
                row.and(journal)
            }
            Action::RollBack { .. } => journal.await,
        };
        let recorded = match recorded {
            Ok(_) if pooled => client.batch_execute("COMMIT").await,
            Ok(_) => Ok(()),
            Err(err) => {
                if pooled {
                    client.batch_execute("ROLLBACK").await.ok();
                }
                Err(err)
            }
        };
        failure.recorded = recorded.map_err(DbFailure::from);
        RunError::Failed(Box::new(failure))
    }

    /// The journal entry of a failed script: `failed` for an up file,
    /// `rollback_failed` for a down file.
    async fn journal_failure(
        &self,
        run: &Run<'_>,
        error_text: &str,
        duration: Duration,
    ) -> Result<u64, tokio_postgres::Error> {
        let event = match run.action {
            Action::Apply { .. } => "failed",
            Action::RollBack { .. } => "rollback_failed",
        };
        let note: Option<String> = None;
        let params: [&(dyn ToSql + Sync); 8] = [
            &event,
            &record_version(run),
            &run.migration.name,
            &run.script.checksum.as_str(),
            &(duration.as_micros() as i64),
            &run.actor,
            &error_text,
            &note,
        ];
        self.exec(&self.prepared().journal, &params).await
    }

    /// A script released the migration lock: journalled, and nothing else
    /// written, since the state table may already be another instance's.
    async fn lock_released(
        &self,
        run: Run<'_>,
        statements: Option<(usize, usize)>,
        duration: Duration,
    ) -> RunError {
        let lease = matches!(run.lock, Some(Lock::Lease(_)));
        let mut text = if lease {
            format!(
                "the migration lease was no longer this run's when {} came to be recorded or to \
                 run its next statement",
                run.script.file_name()
            )
        } else {
            format!(
                "{} released the migration lock while it ran",
                run.script.file_name()
            )
        };
        match statements {
            None => text.push_str("; it was rolled back"),
            Some((ran, total)) => text.push_str(&format!("; {ran} of {total} statements ran")),
        }
        let journalled = self
            .journal_failure(&run, &text, duration)
            .await
            .map(|_| ())
            .map_err(DbFailure::from);
        RunError::LockReleased {
            lease,
            statements,
            duration,
            journalled,
        }
    }

    /// Whether this run still holds the migration lock (`None`: there is
    /// none to hold): the advisory lock on this session, or the lease,
    /// renewed (in a transaction, its row stays locked until the end, so a
    /// takeover waits for it). Sent as one request, so it can follow a
    /// script in the same pipeline.
    pub(super) async fn holds_claim(
        &self,
        lock: Option<&Lock>,
    ) -> Result<bool, tokio_postgres::Error> {
        match lock {
            None => Ok(true),
            Some(Lock::Lease(claim)) => self.holds_lease(claim).await,
            Some(Lock::Advisory(key)) => {
                let rows = self
                    .client()
                    .query_typed(bookkeeping::LOCK_HELD, &[(key, Type::INT8)])
                    .await?;
                Ok(rows.first().is_some_and(|row| row.get(0)))
            }
        }
    }

    /// Through a pooler: runs `work` with `preamble` sent before it and
    /// the session reset after it, all in one pipeline, which a pooler in
    /// transaction mode keeps on one server connection. Whether it did is
    /// checked: the server process before and after must be the same.
    async fn in_own_session<T>(
        &self,
        preamble: &str,
        work: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbFailure> {
        let client = self.client();
        let before = format!("{preamble}SELECT pg_backend_pid()");
        let (before, done, after) = tokio::join!(
            client.simple_query(&before),
            work,
            client.simple_query(
                "SELECT pg_backend_pid(); RESET ALL; RESET SESSION AUTHORIZATION; RESET ROLE"
            ),
        );
        let before = before.map_err(DbFailure::from)?;
        let done = done.map_err(DbFailure::from)?;
        let after = after.map_err(DbFailure::from)?;
        if first_number(&before) != first_number(&after) {
            return Err(DbFailure::tool(
                "the pooler ran this statement on another server connection than its settings \
                 (search_path, timeouts), so what it did is uncertain; check it, and run up \
                 again (the file runs again from its start)",
            ));
        }
        Ok(done)
    }

    /// [`Store::invalid_on`], through a pooler with the statement's
    /// settings (`preamble`), so names resolve as they did for it.
    async fn invalid_on_in(
        &self,
        preamble: Option<&str>,
        targets: &[IndexTarget],
    ) -> Result<Vec<String>, DbFailure> {
        match preamble {
            Some(preamble) if !targets.is_empty() => {
                self.in_own_session(preamble, self.invalid_on(targets))
                    .await
            }
            _ => self.invalid_on(targets).await.map_err(DbFailure::from),
        }
    }

    /// `BEGIN`, and through a pooler the transaction's isolation pinned to
    /// READ COMMITTED (the lease's renewals commit meanwhile) and its idle
    /// time bounded by the lease, so a holder stopped mid-transaction does
    /// not keep the lease's row locked.
    pub(super) fn pooled_begin(&self) -> String {
        match self.pooled {
            Some(length) => format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; \
                 SET LOCAL idle_in_transaction_session_timeout = '{}ms'",
                length.as_millis()
            ),
            None => "BEGIN".to_owned(),
        }
    }

    /// Sent after a transactional script, before its bookkeeping
    /// ([`RESET_FOR_BOOKKEEPING`]); through a pooler also `RESET ALL`, so a
    /// session `SET` in the file does not stay on the pooled server
    /// connection after the commit (the idle bound is set again).
    pub(super) fn reset_for_bookkeeping(&self) -> String {
        match self.pooled {
            Some(length) => format!(
                "RESET ALL; {RESET_FOR_BOOKKEEPING}; \
                 SET LOCAL idle_in_transaction_session_timeout = '{}ms'",
                length.as_millis()
            ),
            None => RESET_FOR_BOOKKEEPING.to_owned(),
        }
    }

    /// What a transaction of the run starts with: the session settings for
    /// the transaction, and, through a pooler, the longest it may sit idle
    /// (the lease's length), so a holder stopped mid-transaction does not
    /// keep its row lock on the lease past the lease.
    pub(super) fn transaction_preamble(
        &self,
        tracking: &Tracking,
        settings: &SessionSettings,
    ) -> String {
        let mut preamble = bookkeeping::session(tracking, self.server_major(), settings, true);
        if let Some(length) = self.pooled {
            preamble.push_str(&format!(
                "SET LOCAL idle_in_transaction_session_timeout = '{}ms'; ",
                length.as_millis()
            ));
        }
        preamble
    }

    /// The INVALID indexes of the tables index statements work on; none
    /// asked of the server when there are no targets.
    async fn invalid_on(
        &self,
        targets: &[IndexTarget],
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let (mut tables, mut indexes): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for target in targets {
            match target {
                IndexTarget::Table(name) => tables.push(name),
                IndexTarget::Index(name) => indexes.push(name),
            }
        }
        let rows = self
            .client()
            .query_typed(
                bookkeeping::INVALID_ON,
                &[(&tables, Type::TEXT_ARRAY), (&indexes, Type::TEXT_ARRAY)],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Indexes left INVALID anywhere in the database.
    async fn invalid_indexes(&self) -> Vec<String> {
        match self
            .client()
            .simple_query(bookkeeping::INVALID_INDEXES)
            .await
        {
            Ok(messages) => messages
                .into_iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Whether `text` holds `word`, in any case, anywhere (a comment too).
fn mentions(text: &str, word: &[u8]) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// The tables a transactional file's index statements work on; the file
/// is split only when it mentions an index at all.
fn index_targets(script: &Script) -> Vec<IndexTarget> {
    if !mentions(&script.sql, b"index") {
        return Vec::new();
    }
    sql::split(&script.sql)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|part| sql::index_target(part.text))
                .collect()
        })
        .unwrap_or_default()
}

/// The version text the record uses: the row's as recorded (a failed row
/// an apply replaces, the applied row a rollback removes), or the file's.
fn record_version<'a>(run: &Run<'a>) -> &'a str {
    match run.action {
        Action::Apply {
            failed_row_version: Some(version),
        }
        | Action::RollBack {
            row_version: version,
        } => version,
        Action::Apply {
            failed_row_version: None,
        } => run.migration.version.as_str(),
    }
}

pub(super) fn transaction_id(messages: &[SimpleQueryMessage]) -> i64 {
    first_number(messages)
}

/// The first column of the first row, as a number (0 if none).
/// The rows the first statement of a simple query changed.
fn first_count(messages: &[SimpleQueryMessage]) -> u64 {
    messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::CommandComplete(rows) => Some(*rows),
            _ => None,
        })
        .unwrap_or(0)
}

fn first_number(messages: &[SimpleQueryMessage]) -> i64 {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or_default()
}

fn record_error(run: &Run<'_>, err: tokio_postgres::Error) -> Error {
    let failure = DbFailure::from(err);
    let label = run.migration.label();
    let file = run.script.file_name();
    let context = match (run.script.transactional, failure.connection_lost) {
        (true, true) => format!(
            "the connection was lost while committing {file} of {label}: whether it committed \
             is unknown; run `migrate status` once the server is back"
        ),
        (true, false) => {
            format!("{file} of {label} ran, but recording it failed, so it was rolled back")
        }
        (false, _) => format!(
            "every statement of {file} ({label}) ran and stays done, but recording that failed; \
             its row still says it did not finish, so the next `up` runs the file again"
        ),
    };
    Error::Database {
        context,
        failure: Box::new(failure),
    }
}
