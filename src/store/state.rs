//! Reading and creating the state table and the journal.

use super::{DbFailure, Store, Tracking};
use crate::error::Error;
use crate::migration::Version;
use crate::plan::{Drift, Drifted};
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowStatus {
    Applied,
    Failed,
}

/// One row of the state table.
#[derive(Clone, Debug)]
pub struct StateRow {
    pub version: Version,
    pub name: String,
    pub checksum: String,
    pub status: RowStatus,
    /// Read for `status`; planning needs only the columns above.
    pub details: Option<RowDetails>,
}

/// The columns of a state row that only reports show.
#[derive(Clone, Debug)]
pub struct RowDetails {
    /// RFC 3339, UTC, microseconds.
    pub applied_at: String,
    pub duration: Duration,
    pub applied_by: String,
    pub error: Option<String>,
    pub in_transaction: bool,
}

/// How much of each state row to read. Planning, on the start-up path of
/// every replica, reads four columns; reports read them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateDetail {
    Plan,
    Full,
}

/// One journal entry.
#[derive(Clone, Debug)]
pub struct JournalEntry {
    pub id: i64,
    /// RFC 3339, UTC, microseconds.
    pub at: String,
    pub event: String,
    pub version: Option<String>,
    pub name: Option<String>,
    pub checksum: Option<String>,
    pub duration: Option<Duration>,
    pub actor: String,
    pub db_user: String,
    pub error: Option<String>,
    /// What a repair or rollback did, in words.
    pub note: Option<String>,
}

/// What the database holds for this folder's tracking tables.
#[derive(Clone, Debug)]
pub struct DbState {
    /// `current_database()`, for the default lock key.
    pub database: String,
    /// Ordered by version; empty when the table does not exist yet.
    pub rows: Vec<StateRow>,
}

impl DbState {
    pub fn row(&self, version: &Version) -> Option<&StateRow> {
        self.rows
            .binary_search_by(|r| r.version.cmp(version))
            .ok()
            .map(|i| &self.rows[i])
    }
}

/// Catalog look-ups by name: cheaper on a fresh session than joins over
/// pg_class, whose plans would have to be built first.
const EXISTENCE: &str = "\
SELECT to_regnamespace($1) IS NOT NULL, to_regclass($2) IS NOT NULL, to_regclass($3) IS NOT NULL";

const TIMESTAMP_FORMAT: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;

fn select_state(tracking: &Tracking, detail: StateDetail) -> String {
    let details = match detail {
        StateDetail::Plan => String::new(),
        StateDetail::Full => format!(
            ", to_char(applied_at AT TIME ZONE 'UTC', {TIMESTAMP_FORMAT}),
               (extract(epoch FROM duration) * 1000000)::bigint,
               applied_by, error, in_transaction"
        ),
    };
    format!(
        "SELECT version, name, checksum, status{details} FROM {}",
        tracking.state_table()
    )
}

fn select_journal(tracking: &Tracking) -> String {
    format!(
        "SELECT id, to_char(at AT TIME ZONE 'UTC', {TIMESTAMP_FORMAT}), event, version, name,
                checksum, (extract(epoch FROM duration) * 1000000)::bigint, actor, db_user, error,
                note
           FROM {} ORDER BY id",
        tracking.journal_table()
    )
}

/// The tracking tables. `version` is the text of the file name; the engine
/// matches it to files numerically. `duration` is an interval so that an
/// operator reading the table sees `00:00:01.25`, not a number of units.
fn create_tables(tracking: &Tracking, create_schema: bool) -> String {
    let schema = if create_schema {
        format!(
            "CREATE SCHEMA IF NOT EXISTS {};\n",
            super::quote_ident(&tracking.schema)
        )
    } else {
        String::new()
    };
    format!(
        "{schema}CREATE TABLE IF NOT EXISTS {state} (
    version        text PRIMARY KEY,
    name           text NOT NULL,
    checksum       text NOT NULL,
    status         text NOT NULL CHECK (status IN ('applied', 'failed')),
    applied_at     timestamptz NOT NULL DEFAULT now(),
    duration       interval NOT NULL DEFAULT '0',
    applied_by     text NOT NULL,
    error          text,
    in_transaction boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE {state} IS 'migrate: one row per migration version, applied or failed';
CREATE TABLE IF NOT EXISTS {journal} (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    event          text NOT NULL,
    version        text,
    name           text,
    checksum       text,
    duration       interval,
    actor          text NOT NULL,
    db_user        text NOT NULL DEFAULT current_user,
    error          text,
    note           text
);
COMMENT ON TABLE {journal} IS 'migrate: append-only journal of every apply, failure, rollback and repair';",
        state = tracking.state_table(),
        journal = tracking.journal_table(),
    )
}

impl Store {
    /// Reads the state table in one round trip; creates nothing and looks
    /// at no catalog (this is the start-up path of every replica). A
    /// missing schema or table reads as an empty history.
    pub async fn read_state(
        &self,
        tracking: &Tracking,
        detail: StateDetail,
    ) -> Result<DbState, Error> {
        read_state(self.client(), tracking, detail).await
    }

    /// The journal, oldest first; empty when it does not exist yet.
    pub async fn read_journal(&self, tracking: &Tracking) -> Result<Vec<JournalEntry>, Error> {
        read_journal(self.client(), tracking).await
    }
}

/// [`Store::read_state`] on any connection (a pooled one, say): the
/// queries name the schema, so the session's search_path does not matter.
pub async fn read_state(
    client: &Client,
    tracking: &Tracking,
    detail: StateDetail,
) -> Result<DbState, Error> {
    let select = select_state(tracking, detail);
    let (database, rows) = tokio::join!(
        client.simple_query("SELECT current_database()"),
        client.simple_query(&select)
    );
    let database = database
        .map_err(|err| Error::database("cannot read the database name", err))?
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default();
    let mut state = DbState {
        database,
        rows: Vec::new(),
    };
    let messages = match rows {
        Ok(messages) => messages,
        Err(err) => {
            let code = err.code().cloned();
            if code == Some(SqlState::UNDEFINED_TABLE)
                || code == Some(SqlState::INVALID_SCHEMA_NAME)
            {
                return Ok(state);
            }
            if code == Some(SqlState::UNDEFINED_COLUMN) {
                let failure = DbFailure::from(err);
                return Err(Error::ForeignStateTable {
                    table: tracking.display_state(),
                    missing: failure.message,
                });
            }
            return Err(Error::database(
                format!("cannot read {}", tracking.display_state()),
                err,
            ));
        }
    };
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let text = |i: usize| row.get(i).unwrap_or("").to_owned();
        let version_text = text(0);
        let Some(version) = Version::parse(&version_text) else {
            return Err(Error::ForeignStateTable {
                table: tracking.display_state(),
                missing: format!("a numeric version (it holds `{version_text}`)"),
            });
        };
        let details = (detail == StateDetail::Full).then(|| RowDetails {
            applied_at: text(4),
            duration: micros(row.get(5)).unwrap_or_default(),
            applied_by: text(6),
            error: row.get(7).map(str::to_owned),
            in_transaction: row.get(8) != Some("f"),
        });
        state.rows.push(StateRow {
            version,
            name: text(1),
            checksum: text(2),
            status: if row.get(3) == Some("failed") {
                RowStatus::Failed
            } else {
                RowStatus::Applied
            },
            details,
        });
    }
    state.rows.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(state)
}

/// [`Store::read_journal`] on any connection.
pub async fn read_journal(
    client: &Client,
    tracking: &Tracking,
) -> Result<Vec<JournalEntry>, Error> {
    let messages = match client.simple_query(&select_journal(tracking)).await {
        Ok(messages) => messages,
        Err(err)
            if matches!(
                err.code(),
                Some(&SqlState::UNDEFINED_TABLE) | Some(&SqlState::INVALID_SCHEMA_NAME)
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(err) => {
            return Err(Error::database(
                format!(
                    "cannot read {}.{}",
                    tracking.schema,
                    tracking.journal_name()
                ),
                err,
            ));
        }
    };
    let mut entries = Vec::new();
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let opt = |i: usize| row.get(i).map(str::to_owned);
        entries.push(JournalEntry {
            id: row.get(0).and_then(|v| v.parse().ok()).unwrap_or_default(),
            at: opt(1).unwrap_or_default(),
            event: opt(2).unwrap_or_default(),
            version: opt(3),
            name: opt(4),
            checksum: opt(5),
            duration: micros(row.get(6)),
            actor: opt(7).unwrap_or_default(),
            db_user: opt(8).unwrap_or_default(),
            error: opt(9),
            note: opt(10),
        });
    }
    Ok(entries)
}

impl Store {
    /// Creates the schema and the tracking tables that are missing. Called
    /// under the migration lock, so concurrent instances never race on the
    /// catalog; the schema is only created when absent, so a role without
    /// CREATE on the database can use an existing one.
    pub async fn ensure_tracking_tables(&self, tracking: &Tracking) -> Result<(), Error> {
        let schema = super::quote_ident(&tracking.schema);
        let state_table = tracking.state_table();
        let journal_table = tracking.journal_table();
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 3] = [
            (&schema, Type::TEXT),
            (&state_table, Type::TEXT),
            (&journal_table, Type::TEXT),
        ];
        let existence = self
            .client()
            .query_typed(EXISTENCE, &params)
            .await
            .map_err(|err| Error::database("cannot read the database catalog", err))?;
        let (schema_exists, state_exists, journal_exists): (bool, bool, bool) = (
            existence[0].get(0),
            existence[0].get(1),
            existence[0].get(2),
        );
        if state_exists && journal_exists {
            return Ok(());
        }
        self.client()
            .batch_execute(&create_tables(tracking, !schema_exists))
            .await
            .map_err(|err| {
                Error::database(
                    format!(
                        "cannot create the tracking tables in schema {}",
                        tracking.schema
                    ),
                    err,
                )
            })
    }
}

fn micros(text: Option<&str>) -> Option<Duration> {
    text.and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_micros)
}

impl Store {
    /// Accepts the files as they are now, in one transaction: a CHANGED
    /// row takes the file's checksum and name, a MISSING row goes away; each
    /// gets a `repaired` journal entry. Fails, changing nothing, if a row is
    /// no longer as it was read.
    pub async fn repair(
        &mut self,
        tracking: &Tracking,
        items: &[Drifted],
        names: &[String],
        actor: &str,
    ) -> Result<(), Error> {
        let state = tracking.state_table();
        let journal = tracking.journal_table();
        let failed = |err| Error::database("cannot repair the records", err);
        let transaction = self.client_mut().transaction().await.map_err(failed)?;
        for (item, name) in items.iter().zip(names) {
            let version = item.version.as_str();
            let (changed, note) = match &item.drift {
                Drift::Changed { recorded, current } => (
                    transaction
                        .execute(
                            &format!(
                                "UPDATE {state} SET checksum = $3, name = $4
                                  WHERE version = $1 AND status = 'applied' AND checksum = $2"
                            ),
                            &[&version, recorded, current, name],
                        )
                        .await
                        .map_err(failed)?,
                    format!(
                        "accepted the file as it is now: checksum {} was {}",
                        &current[..12.min(current.len())],
                        &recorded[..12.min(recorded.len())]
                    ),
                ),
                Drift::Missing => (
                    transaction
                        .execute(
                            &format!("DELETE FROM {state} WHERE version = $1 AND status = $2"),
                            &[
                                &version,
                                &match item.status {
                                    RowStatus::Applied => "applied",
                                    RowStatus::Failed => "failed",
                                },
                            ],
                        )
                        .await
                        .map_err(failed)?,
                    "forgot it: its file is gone (this journal keeps its history)".to_owned(),
                ),
            };
            if changed != 1 {
                return Err(Error::Conflict(format!(
                    "the record of {} changed while repair ran; nothing was repaired: run it \
                     again",
                    item.label()
                )));
            }
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {journal} (event, version, name, actor, note)
                         VALUES ('repaired', $1, $2, $3, $4)"
                    ),
                    &[&version, name, &actor, &note],
                )
                .await
                .map_err(failed)?;
        }
        transaction.commit().await.map_err(failed)
    }
}
