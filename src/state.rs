//! What the tracking tables hold, as plain data: state rows, journal
//! entries and applies the journal remembers but the state table lost.
//! Read by `store`, compared with the files by `plan`; no database code.

use crate::migration::Version;
use std::time::Duration;

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
    /// Versions the journal says were applied (and never rolled back or
    /// repaired since) that have no state row: a row deleted by hand.
    /// Read only where it matters (see `store::read_unrecorded`).
    pub unrecorded: Vec<Unrecorded>,
}

impl DbState {
    pub fn row(&self, version: &Version) -> Option<&StateRow> {
        self.rows
            .binary_search_by(|r| r.version.cmp(version))
            .ok()
            .map(|i| &self.rows[i])
    }
}

/// A version whose last journal entry says it was applied, while the
/// state table has no row for it. Applying its file again would run it
/// twice; `repair` restores the row from this entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrecorded {
    pub version: Version,
    pub name: String,
    /// The checksum the journal recorded when it was applied.
    pub checksum: String,
    /// When it was applied (RFC 3339, UTC) and by whom, per the journal.
    pub applied_at: String,
    pub actor: String,
    pub duration: Duration,
}
