//! Reading and creating the state table and the journal.

use super::{Store, Tracking};
use crate::error::{DbFailure, Error};
use crate::migration::Version;
use crate::plan::{Drift, Drifted};
use crate::state::{DbState, JournalEntry, RowDetails, RowStatus, StateRow, Unrecorded};
use std::time::Duration;
use tokio_postgres::Client;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// How much of each state row to read. Planning, on the start-up path of
/// every replica, reads four columns; reports read them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateDetail {
    Plan,
    Full,
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

/// A repair's journal note when it removed a row whose file is gone: the
/// one repair after which the version is not applied.
const FORGOT_NOTE: &str = "forgot it: its file is gone (this journal keeps its history)";

/// Versions the journal says are applied, and that have no state row. The
/// journal's last word on a version (failed rollbacks aside, which leave
/// the row applied) says applied when it is an apply, or a repair other
/// than one that forgot the row; the apply it goes back to gives when and
/// by whom, and the checksum is the last one recorded. `state`: the state
/// table does not exist (dropped whole: every version the journal says is
/// applied lost its row).
fn select_unrecorded(tracking: &Tracking, state: bool) -> String {
    // Without the state table, only while it is still missing: another
    // run may have created it (and applied, and journalled) since the
    // statement that found it missing, and its rows are then not lost.
    let no_row = if state {
        format!(
            "AND NOT EXISTS (SELECT 1 FROM {} s WHERE s.version = l.version)",
            tracking.state_table()
        )
    } else {
        format!(
            "AND to_regclass('{}') IS NULL",
            tracking.state_table().replace('\'', "''")
        )
    };
    format!(
        "WITH last AS (
             SELECT DISTINCT ON (version) version, event, note, checksum
               FROM {journal}
              WHERE version IS NOT NULL AND event <> 'rollback_failed'
              ORDER BY version, id DESC),
         applied AS (
             SELECT DISTINCT ON (version) version, name, checksum, at, actor, duration
               FROM {journal}
              WHERE version IS NOT NULL AND event = 'applied'
              ORDER BY version, id DESC)
         SELECT l.version, coalesce(a.name, ''), coalesce(l.checksum, a.checksum, ''),
                to_char(a.at AT TIME ZONE 'UTC', {TIMESTAMP_FORMAT}), a.actor,
                coalesce((extract(epoch FROM a.duration) * 1000000)::bigint, 0)
           FROM last l JOIN applied a ON a.version = l.version
          WHERE (l.event = 'applied'
                 OR (l.event = 'repaired' AND coalesce(l.note, '') <> '{forgot}'))
            {no_row}
          ORDER BY l.version",
        journal = tracking.journal_table(),
        forgot = FORGOT_NOTE.replace('\'', "''"),
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
    // The rows are taken as they arrive, so ten thousand of them are never
    // held twice (as the server's rows and as state rows).
    let read_rows = async {
        use futures_util::TryStreamExt;
        let stream = client.simple_query_raw(&select).await?;
        let mut stream = std::pin::pin!(stream);
        let mut rows = Vec::new();
        while let Some(message) = stream.try_next().await? {
            if let SimpleQueryMessage::Row(row) = message {
                match state_row(&row, tracking, detail) {
                    Ok(row) => rows.push(row),
                    Err(err) => return Ok(Err(err)),
                }
            }
        }
        Ok::<_, tokio_postgres::Error>(Ok(rows))
    };
    let (database, rows) =
        tokio::join!(client.simple_query("SELECT current_database()"), read_rows);
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
        unrecorded: Vec::new(),
    };
    let rows = match rows {
        Ok(rows) => rows,
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
    state.rows = rows?;
    state.rows.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(state)
}

/// One row of the state table, as read by [`read_state`].
fn state_row(
    row: &tokio_postgres::SimpleQueryRow,
    tracking: &Tracking,
    detail: StateDetail,
) -> Result<StateRow, Error> {
    let text = |i: usize| row.get(i).unwrap_or("").to_owned();
    let version_text = row.get(0).unwrap_or("");
    let Some(version) = Version::parse(version_text) else {
        return Err(Error::ForeignStateTable {
            table: tracking.display_state(),
            missing: format!("a numeric version (it holds `{version_text}`)"),
        });
    };
    let details = (detail == StateDetail::Full).then(|| {
        Box::new(RowDetails {
            applied_at: text(4),
            duration: micros(row.get(5)).unwrap_or_default(),
            applied_by: text(6),
            error: row.get(7).map(str::to_owned),
            in_transaction: row.get(8) != Some("f"),
        })
    });
    Ok(StateRow {
        version,
        name: text(1),
        checksum: text(2),
        status: if row.get(3) == Some("failed") {
            RowStatus::Failed
        } else {
            RowStatus::Applied
        },
        details,
    })
}

/// Applies the journal remembers and the state table lost (see
/// [`Unrecorded`]); empty when the tables do not exist yet. Read only when
/// something is pending: the start-up path of a replica with nothing to do
/// never pays for it. `state_rows`: how many rows the state read found.
pub async fn read_unrecorded(
    client: &Client,
    tracking: &Tracking,
    state_rows: usize,
) -> Result<Vec<Unrecorded>, Error> {
    // With no state row, the tables may not be there yet (a first run):
    // looked for first, since a query of a missing table is an ERROR in
    // the server's log.
    let with_state = if state_rows == 0 {
        let exists = client
            .query_typed(
                "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
                &[
                    (&tracking.state_table(), Type::TEXT),
                    (&tracking.journal_table(), Type::TEXT),
                ],
            )
            .await
            .map_err(|err| journal_error(tracking, err))?;
        match exists
            .first()
            .map(|row| (row.get::<_, bool>(0), row.get::<_, bool>(1)))
        {
            Some((_, false)) => return Ok(Vec::new()),
            Some((state, true)) => state,
            None => true,
        }
    } else {
        true
    };
    let mut query = client
        .simple_query(&select_unrecorded(tracking, with_state))
        .await;
    // The state table gone and the journal kept: everything the journal
    // says is applied lost its row (if the table is still gone: see
    // `select_unrecorded`).
    if with_state
        && let Err(err) = &query
        && err.code() == Some(&SqlState::UNDEFINED_TABLE)
    {
        query = client
            .simple_query(&select_unrecorded(tracking, false))
            .await;
    }
    let messages = match query {
        Ok(messages) => messages,
        Err(err) if missing(&err) => return Ok(Vec::new()),
        Err(err) => return Err(journal_error(tracking, err)),
    };
    Ok(messages
        .into_iter()
        .filter_map(|message| {
            let SimpleQueryMessage::Row(row) = message else {
                return None;
            };
            let text = |i: usize| row.get(i).unwrap_or("").to_owned();
            Some(Unrecorded {
                version: Version::parse(row.get(0)?)?,
                name: text(1),
                checksum: text(2),
                applied_at: text(3),
                actor: text(4),
                duration: micros(row.get(5)).unwrap_or_default(),
            })
        })
        .collect())
}

/// The schema or table is not there (yet).
fn missing(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::UNDEFINED_TABLE) | Some(&SqlState::INVALID_SCHEMA_NAME)
    )
}

fn journal_error(tracking: &Tracking, err: tokio_postgres::Error) -> Error {
    Error::database(
        format!(
            "cannot read {}.{}",
            tracking.schema,
            tracking.journal_name()
        ),
        err,
    )
}

/// [`Store::read_journal`] on any connection.
pub async fn read_journal(
    client: &Client,
    tracking: &Tracking,
) -> Result<Vec<JournalEntry>, Error> {
    let messages = match client.simple_query(&select_journal(tracking)).await {
        Ok(messages) => messages,
        Err(err) if missing(&err) => return Ok(Vec::new()),
        Err(err) => return Err(journal_error(tracking, err)),
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
        lock: Option<&super::Lock>,
    ) -> Result<(), Error> {
        let state = tracking.state_table();
        let journal = tracking.journal_table();
        let failed = |err| Error::database("cannot repair the records", err);
        let transaction = self.client_mut().transaction().await.map_err(failed)?;
        // Still this run's lock, in the repair's transaction.
        let held = match lock {
            None => true,
            Some(super::Lock::Advisory(key)) => {
                let rows = transaction
                    .query_typed(super::sql::LOCK_HELD, &[(key, Type::INT8)])
                    .await
                    .map_err(failed)?;
                rows.first().is_some_and(|row| row.get(0))
            }
            Some(super::Lock::Lease(claim)) => {
                let length = claim.length_micros();
                transaction
                    .execute_typed(
                        &claim.guard(),
                        &[
                            (&claim.key, Type::INT8),
                            (&claim.owner, Type::TEXT),
                            (&length, Type::INT8),
                        ],
                    )
                    .await
                    .map_err(failed)?
                    == 1
            }
        };
        if !held {
            return Err(Error::Conflict(
                "the migration lock was no longer this run's when repair came to write; nothing \
                 was repaired: run it again"
                    .into(),
            ));
        }
        for (item, name) in items.iter().zip(names) {
            let version = item.version.as_str();
            // The checksum the row now records (none: the row is gone).
            let checksum: Option<&str> = match &item.drift {
                Drift::Changed { current, .. } => Some(current),
                Drift::Unrecorded { checksum, .. } => Some(checksum),
                Drift::Missing => None,
            };
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
                Drift::Unrecorded {
                    applied_at,
                    actor: applied_by,
                    checksum,
                    duration,
                    ..
                } => (
                    transaction
                        .execute(
                            &format!(
                                "INSERT INTO {state}
                                        (version, name, checksum, status, applied_at, duration,
                                         applied_by, in_transaction)
                                 VALUES ($1, $2, $3, 'applied', $4::text::timestamptz,
                                         $5::float8 * interval '1 microsecond', $6, true)
                                 ON CONFLICT (version) DO NOTHING"
                            ),
                            &[
                                &version,
                                name,
                                checksum,
                                applied_at,
                                &(duration.as_micros() as f64),
                                applied_by,
                            ],
                        )
                        .await
                        .map_err(failed)?,
                    format!(
                        "restored its row from the journal: it was applied at {applied_at} by \
                         {applied_by}, and its row had gone"
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
                    FORGOT_NOTE.to_owned(),
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
                        "INSERT INTO {journal} (event, version, name, checksum, actor, note)
                         VALUES ('repaired', $1, $2, $5, $3, $4)"
                    ),
                    &[&version, name, &actor, &note, &checksum],
                )
                .await
                .map_err(failed)?;
        }
        transaction.commit().await.map_err(failed)
    }
}
