//! Running one script (an up file, or a down file) with its bookkeeping.
//!
//! A transactional script takes two round trips, each a pipeline
//! (tokio-postgres sends a request when its future is first polled, and
//! `tokio::join!` polls in argument order, so requests reach the server in
//! the order written):
//!
//! 1. `BEGIN`, the session reset and the transaction id; clearing an
//!    earlier failed row; the script's SQL.
//! 2. `RESET ROLE`; the record, guarded by the transaction id; `COMMIT`.
//!
//! The guard: the record is written only if the transaction is still the
//! one `BEGIN` opened, so a file that ends its transaction itself (which
//! the engine refuses before running, when it can see the statement) never
//! gets a record for work that did not commit with it.
//!
//! A `-- migrate:no-transaction` script runs statement by statement in
//! autocommit. Its state row says `failed` with "not finished: k of n
//! statements ran" until it completes, so a killed run leaves a row that
//! says how far it got, and the next `up` runs it again.

use super::{DbFailure, Store, Tracking, quote_ident};
use crate::error::Error;
use crate::migration::sql::{self, Location};
use crate::migration::{Migration, Script};
use std::time::{Duration, Instant};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{SimpleQueryMessage, Statement};

/// What a script does to the record when it succeeds.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// An up file: the version becomes applied, replacing the failed row
    /// with this version text if there is one.
    Apply { failed_row_version: Option<&'a str> },
    /// A down file: the applied row goes away.
    RollBack,
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
    /// Its bookkeeping failed; `Error` says whether the outcome is known.
    Record(Error),
}

#[derive(Debug)]
pub struct RunFailure {
    pub failure: DbFailure,
    pub duration: Duration,
    /// Where in the file the server's error points.
    pub location: Option<Location>,
    /// For a statement-by-statement script: how many statements completed,
    /// of how many.
    pub statements: Option<(usize, usize)>,
    /// Indexes left INVALID (a failed `CREATE INDEX CONCURRENTLY`), as
    /// `schema.name`.
    pub invalid_indexes: Vec<String>,
    pub recorded: Result<(), DbFailure>,
}

impl RunFailure {
    /// The text stored with the failure: the server's words, where, how far.
    fn record_text(&self) -> String {
        let mut text = self.failure.to_string();
        if let Some(at) = &self.location {
            text.push_str(&format!("\n  at line {}, column {}", at.line, at.column));
        }
        if let Some((ran, total)) = self.statements {
            text.push_str(&format!("\n  {ran} of {total} statements ran"));
        }
        for index in &self.invalid_indexes {
            text.push_str(&format!(
                "\n  index {index} is INVALID: DROP INDEX CONCURRENTLY IF EXISTS {index};"
            ));
        }
        text
    }
}

/// Session settings every script starts from.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// `lock_timeout` for each statement; zero turns it off.
    pub lock_timeout: Duration,
    /// `statement_timeout`; `None` leaves the session's own.
    pub statement_timeout: Option<Duration>,
}

/// The bookkeeping statements and session preambles, prepared once per run.
pub(super) struct Statements {
    begin: String,
    session: String,
    clear_failed: Statement,
    record_applied: Statement,
    record_rolled_back: Statement,
    upsert_failed: Statement,
    progress: Statement,
    journal: Statement,
}

/// Records an applied migration if the transaction is still the one opened
/// for it. $1 version, $2 name, $3 checksum, $4 duration (µs), $5 actor,
/// $6 in_transaction, $7 transaction id.
fn record_applied_sql(tracking: &Tracking) -> String {
    format!(
        "WITH recorded AS (
             INSERT INTO {state}
                    (version, name, checksum, status, applied_at, duration, applied_by, error, in_transaction)
             SELECT $1, $2, $3, 'applied', now(), $4::float8 * interval '1 microsecond', $5, NULL, $6
              WHERE txid_current() = $7
             RETURNING version, name, checksum, duration, applied_by)
         INSERT INTO {journal} (event, version, name, checksum, duration, actor)
         SELECT 'applied', version, name, checksum, duration, applied_by FROM recorded",
        state = tracking.state_table(),
        journal = tracking.journal_table(),
    )
}

/// Removes a rolled-back migration's row if the transaction is still the
/// one opened for it. $1 version, $2 transaction id, $3 the down file's
/// checksum, $4 duration (µs), $5 actor, $6 note.
fn record_rolled_back_sql(tracking: &Tracking) -> String {
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
fn upsert_failed_sql(tracking: &Tracking) -> String {
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
fn journal_sql(tracking: &Tracking) -> String {
    format!(
        "INSERT INTO {} (event, version, name, checksum, duration, actor, error, note)
         VALUES ($1, $2, $3, $4, $5::float8 * interval '1 microsecond', $6, $7, $8)",
        tracking.journal_table(),
    )
}

/// SQLSTATE lock_not_available: `lock_timeout` ran out.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";

const INVALID_INDEXES: &str = "\
SELECT format('%I.%I', n.nspname, c.relname)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'pg_toast')
 ORDER BY 1";

fn millis(d: Duration) -> String {
    format!("'{}ms'", d.as_millis())
}

/// The settings each script starts from: the session as the connection
/// string set it up (what an earlier file did with SET or SET ROLE does
/// not leak into the next), search_path set to the schema, the timeouts,
/// and on PostgreSQL 14+ a check for a vanished client every second, so a
/// killed `migrate` stops holding locks within a second even mid-statement.
/// `local`: for a transaction (SET LOCAL), or for the session.
fn session_sql(
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

impl Store {
    async fn statements(
        &mut self,
        tracking: &Tracking,
        settings: &SessionSettings,
    ) -> Result<&Statements, Error> {
        if self.statements.is_none() {
            let client = self.client();
            let clear = format!(
                "DELETE FROM {} WHERE version = $1 AND status = 'failed'",
                tracking.state_table()
            );
            let progress = format!(
                "UPDATE {} SET error = $2 WHERE version = $1 AND status = 'failed'",
                tracking.state_table()
            );
            let (record_applied_text, rolled_back_text, upsert_text, journal_text) = (
                record_applied_sql(tracking),
                record_rolled_back_sql(tracking),
                upsert_failed_sql(tracking),
                journal_sql(tracking),
            );
            use Type as T;
            let (
                clear_failed,
                record_applied,
                record_rolled_back,
                upsert_failed,
                progress,
                journal,
            ) = tokio::join!(
                client.prepare_typed(&clear, &[T::TEXT]),
                client.prepare_typed(
                    &record_applied_text,
                    &[
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                        T::INT8,
                        T::TEXT,
                        T::BOOL,
                        T::INT8
                    ]
                ),
                client.prepare_typed(
                    &rolled_back_text,
                    &[T::TEXT, T::INT8, T::TEXT, T::INT8, T::TEXT, T::TEXT]
                ),
                client.prepare_typed(
                    &upsert_text,
                    &[
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                        T::INT8,
                        T::TEXT,
                        T::BOOL,
                        T::TEXT
                    ]
                ),
                client.prepare_typed(&progress, &[T::TEXT, T::TEXT]),
                client.prepare_typed(
                    &journal_text,
                    &[
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                        T::TEXT,
                        T::INT8,
                        T::TEXT,
                        T::TEXT,
                        T::TEXT
                    ]
                ),
            );
            let prepare_error =
                |err| Error::database("cannot prepare the bookkeeping statements", err);
            let major = self.server_major();
            self.statements = Some(Statements {
                begin: format!(
                    "BEGIN; {}SELECT txid_current()",
                    session_sql(tracking, major, settings, true)
                ),
                session: session_sql(tracking, major, settings, false),
                clear_failed: clear_failed.map_err(prepare_error)?,
                record_applied: record_applied.map_err(prepare_error)?,
                record_rolled_back: record_rolled_back.map_err(prepare_error)?,
                upsert_failed: upsert_failed.map_err(prepare_error)?,
                progress: progress.map_err(prepare_error)?,
                journal: journal.map_err(prepare_error)?,
            });
        }
        Ok(self.statements.as_ref().expect("set above"))
    }

    /// Runs one script and records the outcome.
    pub async fn run_script(
        &mut self,
        tracking: &Tracking,
        settings: &SessionSettings,
        run: Run<'_>,
    ) -> Result<Done, RunError> {
        self.statements(tracking, settings)
            .await
            .map_err(RunError::Record)?;
        if run.script.transactional {
            self.run_in_transaction(run).await
        } else {
            self.run_statements(run, settings).await
        }
    }

    async fn run_in_transaction(&self, run: Run<'_>) -> Result<Done, RunError> {
        let statements = self.statements.as_ref().expect("prepared by run_script");
        let client = self.client();
        let script = run.script;
        let start = Instant::now();
        let clear = async {
            match run.action {
                Action::Apply {
                    failed_row_version: Some(version),
                } => client
                    .execute(&statements.clear_failed, &[&version])
                    .await
                    .map(|_| ()),
                _ => Ok(()),
            }
        };
        let (begun, cleared, ran) = tokio::join!(
            client.simple_query(&statements.begin),
            clear,
            client.batch_execute(&script.sql)
        );
        let duration = start.elapsed();
        let failure = match (begun, cleared, ran) {
            (Ok(begun), Ok(()), Ok(())) => {
                let txid = transaction_id(&begun);
                let micros = duration.as_micros() as i64;
                let version = record_version(&run);
                let note = format!("ran {}", script.file_name());
                let record = async {
                    match run.action {
                        Action::Apply { .. } => {
                            client
                                .execute(
                                    &statements.record_applied,
                                    &[
                                        &version,
                                        &run.migration.name,
                                        &script.checksum.as_str(),
                                        &micros,
                                        &run.actor,
                                        &true,
                                        &txid,
                                    ],
                                )
                                .await
                        }
                        Action::RollBack => {
                            client
                                .execute(
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
                };
                let (reset, recorded, commit) = tokio::join!(
                    client.batch_execute("RESET SESSION AUTHORIZATION; RESET ROLE"),
                    record,
                    client.batch_execute("COMMIT"),
                );
                match (reset, recorded, commit) {
                    (Ok(()), Ok(1), Ok(())) => return Ok(Done { duration }),
                    (Ok(()), Ok(_), Ok(())) => DbFailure::tool(match run.action {
                        Action::Apply { .. } => {
                            "the file ended its transaction itself (a COMMIT, ROLLBACK or END \
                             outside a function body), so what it did before that was committed \
                             or rolled back apart from its record; check the schema, remove the \
                             transaction statements from the file, and run up again"
                        }
                        Action::RollBack => {
                            "the down file ended its transaction itself, or the migration was no \
                             longer applied; its record was left as it was: check with \
                             `migrate status`"
                        }
                    }),
                    (reset, recorded, commit) => {
                        let err = reset
                            .and(recorded.map(|_| ()))
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
        client.batch_execute("ROLLBACK").await.ok();
        let location = failure
            .position
            .map(|p| sql::locate(&script.sql, sql::position_to_offset(&script.sql, p)));
        let failure = RunFailure {
            failure,
            duration,
            location,
            statements: None,
            invalid_indexes: Vec::new(),
            recorded: Ok(()),
        };
        Err(self.record_failure(run, failure).await)
    }

    /// A `-- migrate:no-transaction` script: each statement on its own.
    async fn run_statements(
        &self,
        run: Run<'_>,
        settings: &SessionSettings,
    ) -> Result<Done, RunError> {
        let statements = self.statements.as_ref().expect("prepared by run_script");
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
        let session = client.batch_execute(&statements.session);
        let marked = async {
            match run.action {
                Action::Apply { .. } => client
                    .execute(
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
                Action::RollBack => Ok(()),
            }
        };
        let (session, marked) = tokio::join!(session, marked);
        if let Err(err) = session.and(marked) {
            let failure = RunFailure {
                failure: DbFailure::from(err),
                duration: start.elapsed(),
                location: None,
                statements: Some((0, total)),
                invalid_indexes: Vec::new(),
                recorded: Ok(()),
            };
            return Err(self.record_failure(run, failure).await);
        }

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
            let ran = if part.concurrently && !settings.lock_timeout.is_zero() {
                let restore = format!("SET lock_timeout = {}", millis(settings.lock_timeout));
                let (lifted, ran, restored) = tokio::join!(
                    client.batch_execute("SET lock_timeout = 0"),
                    client.batch_execute(part.text),
                    client.batch_execute(&restore),
                );
                lifted.and(ran).and(restored)
            } else {
                client.batch_execute(part.text).await
            };
            if let Err(err) = ran {
                let failure = DbFailure::from(err);
                let location = failure.position.map(|p| {
                    sql::locate(
                        &script.sql,
                        part.offset + sql::position_to_offset(part.text, p),
                    )
                });
                let invalid_indexes = if part.concurrently && !failure.connection_lost {
                    self.invalid_indexes()
                        .await
                        .into_iter()
                        .filter(|index| !invalid_before.contains(index))
                        .collect()
                } else {
                    Vec::new()
                };
                let failure = RunFailure {
                    failure,
                    duration: start.elapsed(),
                    location,
                    statements: Some((index, total)),
                    invalid_indexes,
                    recorded: Ok(()),
                };
                return Err(self.record_failure(run, failure).await);
            }
            if matches!(run.action, Action::Apply { .. }) {
                // Best effort: a lost connection shows at the next statement,
                // and a file that SET ROLE to a role that may not write the
                // state table keeps that role for its later statements.
                let _ = client
                    .execute(&statements.progress, &[&version, &progress_text(index + 1)])
                    .await;
            }
        }
        let duration = start.elapsed();

        // Done: the record, in a transaction of its own.
        let micros = duration.as_micros() as i64;
        let note = format!("ran {} statement by statement", script.file_name());
        let (begun, cleared) = tokio::join!(
            client.simple_query(
                "RESET SESSION AUTHORIZATION; RESET ROLE; BEGIN; SELECT txid_current()"
            ),
            async {
                match run.action {
                    Action::Apply { .. } => client
                        .execute(&statements.clear_failed, &[&version])
                        .await
                        .map(|_| ()),
                    Action::RollBack => Ok(()),
                }
            }
        );
        let recorded = match (begun, cleared) {
            (Ok(begun), Ok(())) => {
                let txid = transaction_id(&begun);
                let record = async {
                    match run.action {
                        Action::Apply { .. } => {
                            client
                                .execute(
                                    &statements.record_applied,
                                    &[
                                        &version,
                                        &run.migration.name,
                                        &script.checksum.as_str(),
                                        &micros,
                                        &run.actor,
                                        &false,
                                        &txid,
                                    ],
                                )
                                .await
                        }
                        Action::RollBack => {
                            client
                                .execute(
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
                };
                let (recorded, commit) = tokio::join!(record, client.batch_execute("COMMIT"));
                recorded.and_then(|n| commit.map(|()| n))
            }
            (Err(err), _) | (_, Err(err)) => Err(err),
        };
        match recorded {
            Ok(1) => Ok(Done { duration }),
            Ok(_) => {
                client.batch_execute("ROLLBACK").await.ok();
                let failure = RunFailure {
                    failure: DbFailure::tool(
                        "every statement ran, but the record was not where it was expected \
                         (another process changed it?): check with `migrate status`",
                    ),
                    duration,
                    location: None,
                    statements: Some((total, total)),
                    invalid_indexes: Vec::new(),
                    recorded: Ok(()),
                };
                Err(self.record_failure(run, failure).await)
            }
            Err(err) => {
                client.batch_execute("ROLLBACK").await.ok();
                Err(RunError::Record(record_error(&run, err)))
            }
        }
    }

    /// Records a failure (unless the engine retries it): a failed row and
    /// a journal entry for an up file, a journal entry for a down file.
    async fn record_failure(&self, run: Run<'_>, mut failure: RunFailure) -> RunError {
        if run.retries_lock_timeout && failure.failure.code.as_deref() == Some(LOCK_NOT_AVAILABLE) {
            return RunError::Failed(Box::new(failure));
        }
        let statements = self.statements.as_ref().expect("prepared by run_script");
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
        let event = match run.action {
            Action::Apply { .. } => "failed",
            Action::RollBack => "rollback_failed",
        };
        let note: Option<String> = None;
        let journal_params: [&(dyn ToSql + Sync); 8] = [
            &event,
            &version,
            &run.migration.name,
            &checksum,
            &micros,
            &run.actor,
            &error_text,
            &note,
        ];
        let journal = client.execute(&statements.journal, &journal_params);
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
                    tokio::join!(client.execute(&statements.upsert_failed, &params), journal);
                row.and(journal)
            }
            Action::RollBack => journal.await,
        };
        failure.recorded = recorded.map(|_| ()).map_err(DbFailure::from);
        RunError::Failed(Box::new(failure))
    }

    /// Runs a bootstrap script in a transaction, with each `names[i]` set to
    /// `values[i]` for that transaction only (bound parameters, never
    /// spliced into SQL).
    pub async fn run_bootstrap_script(
        &self,
        tracking: &Tracking,
        settings: &SessionSettings,
        script: &Script,
        names: &[String],
        values: &[String],
    ) -> Result<Duration, DbFailure> {
        let client = self.client();
        let start = Instant::now();
        // Which failed: migrate's own statements around the script (the
        // transaction, the session, the variables), or the script.
        enum Failed {
            Setup(tokio_postgres::Error),
            Script(tokio_postgres::Error),
        }
        let result = async {
            if names.is_empty() {
                let begin = format!(
                    "BEGIN; {}",
                    session_sql(tracking, self.server_major(), settings, true)
                );
                let (begun, ran) =
                    tokio::join!(client.batch_execute(&begin), client.batch_execute(&script.sql));
                begun.map_err(Failed::Setup)?;
                return ran.map_err(Failed::Script);
            }
            // The values travel as COPY data, which no statement log
            // (log_statement, log_min_duration_statement, pgaudit) records,
            // as bound parameters would be; set_config makes them
            // transaction-local settings and the table is gone before the
            // script runs.
            let begin = format!(
                "BEGIN; {} CREATE TEMPORARY TABLE {VALUES_TABLE} (name text, value text) ON COMMIT DROP;",
                session_sql(tracking, self.server_major(), settings, true)
            );
            let copy = format!("COPY {VALUES_TABLE} FROM STDIN");
            let (begun, sink) = tokio::join!(
                client.batch_execute(&begin),
                client.copy_in::<_, std::io::Cursor<Vec<u8>>>(&copy)
            );
            begun.map_err(Failed::Setup)?;
            let mut sink = std::pin::pin!(sink.map_err(Failed::Setup)?);
            let mut data = String::new();
            for (name, value) in names.iter().zip(values) {
                data.push_str(&copy_text(name));
                data.push('\t');
                data.push_str(&copy_text(value));
                data.push('\n');
            }
            futures_util::SinkExt::send(&mut sink, std::io::Cursor::new(data.into_bytes()))
                .await
                .map_err(Failed::Setup)?;
            sink.finish().await.map_err(Failed::Setup)?;
            let set = format!(
                "SELECT set_config(name, value, true) FROM {VALUES_TABLE}; DROP TABLE {VALUES_TABLE};"
            );
            let (set, ran) =
                tokio::join!(client.batch_execute(&set), client.batch_execute(&script.sql));
            set.map_err(Failed::Setup)?;
            ran.map_err(Failed::Script)
        }
        .await;
        let duration = start.elapsed();
        match result {
            Ok(()) => client
                .batch_execute("COMMIT")
                .await
                .map(|()| duration)
                .map_err(DbFailure::from),
            Err(Failed::Setup(err)) => {
                client.batch_execute("ROLLBACK").await.ok();
                let mut failure = DbFailure::from(err);
                // Its position is in migrate's statements, not the script.
                failure.position = None;
                let mut context =
                    "before the script ran, while preparing its transaction".to_owned();
                if !names.is_empty() {
                    context.push_str(
                        " and passing the bootstrap variables, which go through a temporary \
                         table: the role needs the TEMPORARY privilege on the database",
                    );
                }
                failure.context = Some(context);
                Err(failure)
            }
            Err(Failed::Script(err)) => {
                client.batch_execute("ROLLBACK").await.ok();
                let mut failure = DbFailure::from(err);
                if let Some(position) = failure.position {
                    let at =
                        sql::locate(&script.sql, sql::position_to_offset(&script.sql, position));
                    failure.context = Some(match failure.context.take() {
                        Some(context) => {
                            format!("{context}\nat line {}, column {}", at.line, at.column)
                        }
                        None => format!("at line {}, column {}", at.line, at.column),
                    });
                }
                Err(failure)
            }
        }
    }

    /// Indexes left INVALID anywhere in the database.
    async fn invalid_indexes(&self) -> Vec<String> {
        match self.client().simple_query(INVALID_INDEXES).await {
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

/// Holds the bootstrap values for the moment `set_config` reads them.
const VALUES_TABLE: &str = "pg_temp.migrate_bootstrap_values";

/// A field of COPY's text format: backslash, tab, newline and carriage
/// return escaped.
fn copy_text(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The version text the record uses: an earlier failed row's, or the
/// file's.
fn record_version<'a>(run: &Run<'a>) -> &'a str {
    match run.action {
        Action::Apply {
            failed_row_version: Some(version),
        } => version,
        _ => run.migration.version.as_str(),
    }
}

fn transaction_id(messages: &[SimpleQueryMessage]) -> i64 {
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

#[cfg(test)]
mod tests {
    use super::copy_text;

    #[test]
    fn copy_text_escapes_what_the_format_reads_specially() {
        assert_eq!(copy_text("plain ü"), "plain ü");
        assert_eq!(copy_text("a\\b\tc\nd\re"), "a\\\\b\\tc\\nd\\re");
    }
}
