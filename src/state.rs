//! What the tracking tables hold, as plain data: state rows, journal
//! entries and applies the journal remembers but the state table lost.
//! Read by `store`, compared with the files by `plan`; no database code.

use crate::migration::Version;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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
    /// Read for `status`; planning needs only the columns above. Boxed:
    /// a plan of ten thousand rows carries none.
    pub details: Option<Box<RowDetails>>,
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
#[derive(Clone, Debug, serde::Serialize)]
pub struct JournalEntry {
    pub id: i64,
    /// RFC 3339, UTC, microseconds.
    pub at: String,
    pub event: String,
    pub version: Option<String>,
    pub name: Option<String>,
    pub checksum: Option<String>,
    #[serde(
        rename = "duration_us",
        serialize_with = "crate::duration::serialize_opt_micros"
    )]
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

/// Who holds the migration lock: the session holding the advisory lock, as
/// `pg_stat_activity` shows it, or the run holding the lease (through a
/// pooler), as its row says.
///
/// For the advisory lock, a role sees the client and start time only of its own sessions (or of
/// all, with `pg_read_all_stats`); for another role's session they are
/// `None`, and the pid, application and user are all there is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LockHolder {
    /// The server process of the session holding the advisory lock; for a
    /// lease, the holding `migrate`'s process on its own machine.
    pub pid: i32,
    /// Empty when the session set no `application_name`.
    pub application: String,
    /// `None` when the role was dropped while the session stayed.
    pub user: Option<String>,
    /// The client address, or `local socket`; `None` when hidden.
    pub client: Option<String>,
    /// When the holding session connected (RFC 3339, UTC); `None` when
    /// hidden. PostgreSQL does not record when an advisory lock was
    /// granted; `migrate` takes it right after connecting, so for another
    /// `migrate` this is the time.
    /// For a lease: when it was claimed.
    #[serde(rename = "connected_since")]
    pub since: Option<String>,
    /// `None`: the advisory lock.
    pub lease: Option<LeaseHolder>,
}

/// What a lease row says beyond the session's fields.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    /// `user@host` of the holding run (in Kubernetes, the pod).
    pub actor: String,
    /// When it runs out unless renewed (RFC 3339, UTC).
    pub expires_at: String,
    pub expires_in_seconds: i64,
}

/// Said in place of what `pg_stat_activity` hides from the role.
pub const DETAILS_HIDDEN: &str =
    "details hidden: this role cannot see that session; grant it pg_read_all_stats";

impl LockHolder {
    /// Whether `pg_stat_activity` hid the session's details from the role.
    pub fn details_hidden(&self) -> bool {
        self.since.is_none()
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(lease) = &self.lease {
            let mut parts = session_parts(&self.application, self.user.as_deref());
            parts.push(format!("process {}", self.pid));
            parts.extend(self.since.as_ref().map(|s| format!("claimed {s}")));
            parts.push(format!(
                "runs out {} unless renewed, in {} s",
                lease.expires_at, lease.expires_in_seconds
            ));
            return write!(f, "lease of {} ({})", lease.actor, parts.join(", "));
        }
        let mut parts = session_parts(&self.application, self.user.as_deref());
        parts.extend(self.client.as_ref().map(|c| format!("from {c}")));
        parts.extend(self.since.as_ref().map(|s| format!("connected since {s}")));
        write!(f, "pid {} ({}", self.pid, parts.join(", "))?;
        if self.details_hidden() {
            write!(f, "; {DETAILS_HIDDEN}")?;
        }
        f.write_str(")")
    }
}

/// The application and user of a session, as the messages name them.
fn session_parts(application: &str, user: Option<&str>) -> Vec<String> {
    let application = if application.is_empty() {
        "no application_name"
    } else {
        application
    };
    let mut parts = vec![application.to_owned()];
    parts.extend(user.map(|u| format!("user {u}")));
    parts
}

/// A session another one waits for, as `pg_blocking_pids` and
/// `pg_stat_activity` show it; what the role may not see is `None`, as for
/// [`LockHolder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub pid: i32,
    pub application: String,
    pub user: Option<String>,
    pub client: Option<String>,
    /// When its current (or last) query started (RFC 3339, UTC).
    pub query_start: Option<String>,
    pub state: Option<String>,
    /// The start of its query.
    pub query: Option<String>,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = session_parts(&self.application, self.user.as_deref());
        parts.extend(self.client.as_ref().map(|c| format!("from {c}")));
        match (&self.state, &self.query_start) {
            (Some(state), Some(start)) => parts.push(format!("{state} since {start}")),
            (Some(state), None) => parts.push(state.clone()),
            (None, Some(start)) => parts.push(format!("query started {start}")),
            (None, None) => {}
        }
        write!(f, "pid {} ({}", self.pid, parts.join(", "))?;
        match &self.query {
            Some(query) => write!(f, "): {query}"),
            None => write!(f, "; {DETAILS_HIDDEN})"),
        }
    }
}
