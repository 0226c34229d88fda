//! Running one migration: its SQL, its state row and its journal entry
//! commit in one transaction; a failure is rolled back, then recorded.

use super::{DbFailure, Store, Tracking};
use crate::error::Error;
use crate::migration::Migration;
use std::time::{Duration, Instant};
use tokio_postgres::Statement;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

/// A migration that committed.
#[derive(Clone, Debug)]
pub struct Applied {
    pub duration: Duration,
    /// The file ended the transaction itself (its own COMMIT or ROLLBACK),
    /// so its changes did not commit atomically with their record.
    pub left_transaction: bool,
}

/// Why a migration did not commit.
#[derive(Debug)]
pub enum ApplyError {
    /// Its SQL failed; the transaction was rolled back. `recorded` says
    /// whether the failure reached the state table and journal.
    Sql {
        failure: DbFailure,
        duration: Duration,
        recorded: Result<(), DbFailure>,
    },
    /// The SQL ran but its record could not be written; nothing committed.
    Record(Error),
}

/// The bookkeeping statements, prepared once per run.
pub(super) struct Statements {
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

fn record_applied_sql(tracking: &Tracking) -> String {
    format!(
        "WITH recorded AS (
             INSERT INTO {state}
                    (version, name, checksum, status, applied_at, duration, applied_by, error, in_transaction)
             VALUES ($1, $2, $3, 'applied', now(), $4::float8 * interval '1 microsecond', $5, NULL, $6)
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

impl Store {
    async fn statements(&mut self, tracking: &Tracking) -> Result<&Statements, Error> {
        if self.statements.is_none() {
            let client = self.client();
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
                client.prepare_typed(&applied_sql, &PARAM_TYPES),
                client.prepare_typed(&failed_sql, &failed_types),
            );
            let prepare_error =
                |err| Error::database("cannot prepare the bookkeeping statements", err);
            self.statements = Some(Statements {
                clear_failed: clear_failed.map_err(prepare_error)?,
                record_applied: record_applied.map_err(prepare_error)?,
                record_failed: record_failed.map_err(prepare_error)?,
            });
        }
        Ok(self.statements.as_ref().expect("set above"))
    }

    /// Runs `migration` in a transaction with its record.
    ///
    /// `row_version` is the version text of an existing failed row for
    /// this version (it is replaced), `actor` goes to `applied_by`.
    /// Two round trips: BEGIN with the SQL, then the record with COMMIT.
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

        let start = Instant::now();
        let (begin, run) = tokio::join!(
            client.batch_execute("BEGIN"),
            client.batch_execute(&migration.sql)
        );
        let duration = start.elapsed();
        if let Err(err) = begin.and(run) {
            let failure = DbFailure::from(err);
            let micros = duration.as_micros() as i64;
            let error_text = failure.record_text();
            let in_transaction = true;
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
            return Err(ApplyError::Sql {
                failure,
                duration,
                recorded: recorded.map(|_| ()).map_err(DbFailure::from),
            });
        }

        let micros = duration.as_micros() as i64;
        let in_transaction = true;
        let clear = async {
            match failed_row_version {
                Some(v) => client
                    .execute(&statements.clear_failed, &[&v])
                    .await
                    .map(|_| ()),
                None => Ok(()),
            }
        };
        let params: [&(dyn ToSql + Sync); 6] = [
            &version,
            &migration.name,
            &checksum,
            &micros,
            &actor,
            &in_transaction,
        ];
        let (savepoint, cleared, recorded, commit) = tokio::join!(
            client.batch_execute("SAVEPOINT migrate_record"),
            clear,
            client.execute(&statements.record_applied, &params),
            client.batch_execute("COMMIT"),
        );
        let left_transaction = matches!(
            &savepoint,
            Err(err) if err.code() == Some(&SqlState::NO_ACTIVE_SQL_TRANSACTION)
        );
        let outcome = if left_transaction { Ok(()) } else { savepoint };
        match outcome.and(cleared).and(recorded.map(|_| ())).and(commit) {
            Ok(()) => Ok(Applied {
                duration,
                left_transaction,
            }),
            Err(err) => Err(ApplyError::Record(Error::database(
                format!(
                    "migration {} ran, but recording it failed, so it was rolled back",
                    migration.label()
                ),
                err,
            ))),
        }
    }
}
