//! Running one migration: its SQL, its state row and its journal entry
//! commit in one transaction; a failure is rolled back, then recorded.
//!
//! Two round trips per migration, each a pipeline (tokio-postgres sends a
//! request when its future is first polled, and `tokio::join!` polls in
//! argument order, so the requests reach the server in the order written):
//!
//! 1. `BEGIN`, the session reset and the transaction id; clearing an
//!    earlier failed row; the migration's SQL.
//! 2. `RESET ROLE`; the record, guarded by the transaction id; `COMMIT`.
//!
//! The guard: the record is written only if the transaction is still the
//! one `BEGIN` opened. A file that ends its transaction itself (which the
//! engine refuses before running, when it can see the statement) therefore
//! never gets an `applied` row for work that did not commit with it.

use super::{DbFailure, Store, Tracking, quote_ident};
use crate::error::Error;
use crate::migration::Migration;
use std::time::{Duration, Instant};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{SimpleQueryMessage, Statement};

/// A migration that committed.
#[derive(Clone, Debug)]
pub struct Applied {
    pub duration: Duration,
}

/// Why a migration did not commit.
#[derive(Debug)]
pub enum ApplyError {
    /// It failed and nothing of it committed with a record. `recorded`
    /// says whether the failure reached the state table and journal.
    Failed {
        failure: Box<DbFailure>,
        duration: Duration,
        recorded: Result<(), Box<DbFailure>>,
    },
    /// Its record could not be written; `Error` says whether the outcome is
    /// known.
    Record(Error),
}

/// The bookkeeping statements and the transaction preamble, prepared once
/// per run.
pub(super) struct Statements {
    begin: String,
    clear_failed: Statement,
    record_applied: Statement,
    record_failed: Statement,
}

const PARAM_TYPES: [Type; 6] = [
    Type::TEXT, // $1 version
    Type::TEXT, // $2 name
    Type::TEXT, // $3 checksum
    Type::INT8, // $4 duration, microseconds
    Type::TEXT, // $5 applied_by
    Type::BOOL, // $6 in_transaction
];

/// Records an applied migration, if the transaction is still the one
/// opened for it (`$7`, from `txid_current()` right after `BEGIN`).
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

/// Records a failure; never overwrites a row that says applied.
fn record_failed_sql(tracking: &Tracking) -> String {
    format!(
        "WITH recorded AS (
             INSERT INTO {state} AS s
                    (version, name, checksum, status, applied_at, duration, applied_by, error, in_transaction)
             VALUES ($1, $2, $3, 'failed', now(), $4::float8 * interval '1 microsecond', $5, $7, $6)
             ON CONFLICT (version) DO UPDATE
                SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, status = 'failed',
                    applied_at = EXCLUDED.applied_at, duration = EXCLUDED.duration,
                    applied_by = EXCLUDED.applied_by, error = EXCLUDED.error,
                    in_transaction = EXCLUDED.in_transaction
              WHERE s.status = 'failed')
         INSERT INTO {journal} (event, version, name, checksum, duration, actor, error)
         VALUES ('failed', $1, $2, $3, $4::float8 * interval '1 microsecond', $5, $7)",
        state = tracking.state_table(),
        journal = tracking.journal_table(),
    )
}

/// Every migration starts from the session as the connection string set it
/// up (what an earlier file did with SET or SET ROLE does not leak into the
/// next), with search_path set to the schema. PostgreSQL 14 and later
/// also check for a vanished client every second, so a killed `migrate`
/// stops holding locks within a second even mid-statement.
fn begin_sql(tracking: &Tracking, server_major: u32) -> String {
    let check = if server_major >= 14 {
        "SET LOCAL client_connection_check_interval = '1s'; "
    } else {
        ""
    };
    format!(
        "BEGIN; RESET ALL; RESET ROLE; SET LOCAL search_path TO {}; {check}SELECT txid_current()",
        quote_ident(&tracking.schema)
    )
}

impl Store {
    async fn statements(&mut self, tracking: &Tracking) -> Result<&Statements, Error> {
        if self.statements.is_none() {
            let client = self.client();
            let mut guarded_types = PARAM_TYPES.to_vec();
            guarded_types.push(Type::INT8); // $7 transaction id
            let mut failed_types = PARAM_TYPES.to_vec();
            failed_types.push(Type::TEXT); // $7 error
            let clear = format!(
                "DELETE FROM {} WHERE version = $1 AND status = 'failed'",
                tracking.state_table()
            );
            let applied_sql = record_applied_sql(tracking);
            let failed_sql = record_failed_sql(tracking);
            let (clear_failed, record_applied, record_failed) = tokio::join!(
                client.prepare_typed(&clear, &[Type::TEXT]),
                client.prepare_typed(&applied_sql, &guarded_types),
                client.prepare_typed(&failed_sql, &failed_types),
            );
            let prepare_error =
                |err| Error::database("cannot prepare the bookkeeping statements", err);
            self.statements = Some(Statements {
                begin: begin_sql(tracking, self.server_major()),
                clear_failed: clear_failed.map_err(prepare_error)?,
                record_applied: record_applied.map_err(prepare_error)?,
                record_failed: record_failed.map_err(prepare_error)?,
            });
        }
        Ok(self.statements.as_ref().expect("set above"))
    }

    /// Runs `migration` in a transaction with its record.
    ///
    /// `failed_row_version` is the version text of an earlier failed row
    /// for this version (it is replaced); `actor` goes to `applied_by`.
    pub async fn apply_in_transaction(
        &mut self,
        tracking: &Tracking,
        migration: &Migration,
        failed_row_version: Option<&str>,
        actor: &str,
    ) -> Result<Applied, ApplyError> {
        self.statements(tracking)
            .await
            .map_err(ApplyError::Record)?;
        let statements = self.statements.as_ref().expect("prepared above");
        let client = &self.client;
        let version = failed_row_version.unwrap_or(migration.version.as_str());
        let checksum = migration.checksum.as_str();
        let in_transaction = true;

        let start = Instant::now();
        let clear = async {
            match failed_row_version {
                Some(v) => client
                    .execute(&statements.clear_failed, &[&v])
                    .await
                    .map(|_| ()),
                None => Ok(()),
            }
        };
        let (begun, cleared, ran) = tokio::join!(
            client.simple_query(&statements.begin),
            clear,
            client.batch_execute(&migration.sql)
        );
        let duration = start.elapsed();
        let micros = duration.as_micros() as i64;

        let failure = match (begun, cleared, ran) {
            (Ok(begun), Ok(()), Ok(())) => {
                let txid = transaction_id(&begun);
                let params: [&(dyn ToSql + Sync); 7] = [
                    &version,
                    &migration.name,
                    &checksum,
                    &micros,
                    &actor,
                    &in_transaction,
                    &txid,
                ];
                let (reset, recorded, commit) = tokio::join!(
                    client.batch_execute("RESET ROLE"),
                    client.execute(&statements.record_applied, &params),
                    client.batch_execute("COMMIT"),
                );
                match (reset, recorded, commit) {
                    (Ok(()), Ok(1), Ok(())) => return Ok(Applied { duration }),
                    (Ok(()), Ok(_), Ok(())) => DbFailure::tool(
                        "the file ended its transaction itself (a COMMIT, ROLLBACK or END \
                         outside a function body), so what it did before that was committed \
                         or rolled back apart from its record; check the schema, remove the \
                         transaction statements from the file, and run up again",
                    ),
                    (reset, recorded, commit) => {
                        let err = reset
                            .and(recorded.map(|_| ()))
                            .and(commit)
                            .expect_err("one of them failed");
                        return Err(ApplyError::Record(record_error(migration, err)));
                    }
                }
            }
            // The migration's own error comes first; the others follow from
            // the same cause (a lost connection) or from it.
            (_, _, Err(err)) | (_, Err(err), Ok(())) | (Err(err), Ok(()), Ok(())) => {
                DbFailure::from(err)
            }
        };

        let error_text = failure.record_text();
        let params: [&(dyn ToSql + Sync); 7] = [
            &version,
            &migration.name,
            &checksum,
            &micros,
            &actor,
            &in_transaction,
            &error_text,
        ];
        let (_, recorded) = tokio::join!(
            client.batch_execute("ROLLBACK"),
            client.execute(&statements.record_failed, &params)
        );
        Err(ApplyError::Failed {
            failure: Box::new(failure),
            duration,
            recorded: recorded
                .map(|_| ())
                .map_err(|err| Box::new(DbFailure::from(err))),
        })
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

fn record_error(migration: &Migration, err: tokio_postgres::Error) -> Error {
    let failure = DbFailure::from(err);
    let context = if failure.connection_lost {
        format!(
            "the connection was lost while committing migration {}: whether it committed is \
             unknown; run `migrate status` once the server is back",
            migration.label()
        )
    } else {
        format!(
            "migration {} ran, but recording it failed, so it was rolled back",
            migration.label()
        )
    };
    Error::Database {
        context,
        failure: Box::new(failure),
    }
}
