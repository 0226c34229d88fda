//! Files and state rows in, status rows and the list of migrations to apply
//! out. Pure: no database, no output.

use crate::duration::serialize_opt_micros;
use crate::migration::{Migration, MigrationSet, Version};
use crate::state::{DbState, RowStatus, StateRow};
use serde::Serialize;
use std::time::Duration;

/// The status of one version, comparing its file with its state row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Applied, and the file is unchanged.
    Applied,
    /// A file with no state row.
    Pending,
    /// The last attempt failed; `up` retries it.
    Failed,
    /// Applied, but the file's checksum differs from the recorded one.
    Changed,
    /// Applied, but its file is gone.
    Missing,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Applied => "APPLIED",
            Status::Pending => "PENDING",
            Status::Failed => "FAILED",
            Status::Changed => "CHANGED",
            Status::Missing => "MISSING",
        }
    }
}

/// One line of `migrate status`.
#[derive(Clone, Debug, Serialize)]
pub struct StatusRow {
    pub version: Version,
    pub name: String,
    pub status: Status,
    /// When it was applied, or when it last failed (RFC 3339, UTC).
    pub applied_at: Option<String>,
    #[serde(rename = "duration_us", serialize_with = "serialize_opt_micros")]
    pub duration: Option<Duration>,
    pub error: Option<String>,
    /// Whether the version has a file in the folder.
    pub has_file: bool,
}

/// Every version known to the files or the database, in version order.
pub fn status_rows(files: &MigrationSet, rows: &[StateRow]) -> Vec<StatusRow> {
    let mut out = Vec::with_capacity(files.len().max(rows.len()));
    let mut files_iter = files.migrations.iter().peekable();
    let mut rows_iter = rows.iter().peekable();
    loop {
        let next = match (files_iter.peek(), rows_iter.peek()) {
            (None, None) => break,
            (Some(f), Some(r)) if f.version == r.version => (files_iter.next(), rows_iter.next()),
            (Some(f), Some(r)) if f.version < r.version => (files_iter.next(), None),
            (Some(_), None) => (files_iter.next(), None),
            _ => (None, rows_iter.next()),
        };
        out.push(match next {
            (Some(file), None) => StatusRow {
                version: file.version.clone(),
                name: file.name.clone(),
                status: Status::Pending,
                applied_at: None,
                duration: None,
                error: None,
                has_file: true,
            },
            (file, Some(row)) => {
                let status = match (row.status, file) {
                    (RowStatus::Failed, _) => Status::Failed,
                    (RowStatus::Applied, None) => Status::Missing,
                    (RowStatus::Applied, Some(f)) if f.up.checksum.as_str() != row.checksum => {
                        Status::Changed
                    }
                    (RowStatus::Applied, Some(_)) => Status::Applied,
                };
                let details = row.details.as_ref();
                StatusRow {
                    version: file.map_or_else(|| row.version.clone(), |f| f.version.clone()),
                    name: file.map_or_else(|| row.name.clone(), |f| f.name.clone()),
                    status,
                    applied_at: details.map(|d| d.applied_at.clone()),
                    duration: details.map(|d| d.duration),
                    error: details.and_then(|d| d.error.clone()),
                    has_file: file.is_some(),
                }
            }
            (None, None) => unreachable!("loop ends when both are empty"),
        });
    }
    out
}

/// A migration `up` will run, with the version text of the failed row it
/// replaces, if any.
#[derive(Clone, Debug)]
pub struct Step<'a> {
    pub migration: &'a Migration,
    pub failed_row_version: Option<String>,
}

/// The migrations to apply, in order: every file without a state row or
/// whose last attempt failed, up to and including `target`.
pub fn pending<'a>(
    files: &'a MigrationSet,
    rows: &[StateRow],
    target: Option<&Version>,
) -> Vec<Step<'a>> {
    let mut row_of = Cursor::new(rows, |r: &StateRow| &r.version);
    files
        .migrations
        .iter()
        .take_while(|m| target.is_none_or(|t| m.version <= *t))
        .filter_map(|m| match row_of.find(&m.version) {
            None => Some(Step {
                migration: m,
                failed_row_version: None,
            }),
            Some(r) if r.status == RowStatus::Failed => Some(Step {
                migration: m,
                failed_row_version: Some(r.version.as_str().to_owned()),
            }),
            Some(_) => None,
        })
        .collect()
}

/// How an applied migration and its file disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// The file's checksum (`current`) is not the one recorded when it was
    /// applied. A CRLF-only change is no change.
    Changed { recorded: String, current: String },
    /// The file is gone.
    Missing,
    /// No state row, but the journal's last word on the version is that it
    /// was applied (the row was deleted by hand): applying the file again
    /// would run it twice.
    Unrecorded {
        /// When it was applied, by whom, with which checksum and how long
        /// it took, per the journal: what `repair` restores the row from.
        applied_at: String,
        actor: String,
        checksum: String,
        duration: Duration,
        /// The file's checksum now.
        current: String,
    },
}

/// One recorded version whose file does not match the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drifted {
    pub version: Version,
    /// The name recorded when it was applied.
    pub name: String,
    /// Applied, or failed (a failed row is drift only when its file is gone:
    /// nothing can retry it).
    pub status: RowStatus,
    pub drift: Drift,
    /// The file, when there is one.
    pub path: Option<std::path::PathBuf>,
}

impl Drifted {
    pub fn label(&self) -> String {
        format!("{}_{}", self.version, self.name)
    }
}

impl std::fmt::Display for Drifted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.drift, &self.path) {
            (Drift::Changed { recorded, current }, Some(path)) => write!(
                f,
                "{} CHANGED: {} now has checksum {}, but {} was applied",
                self.label(),
                path.display(),
                short(current),
                short(recorded)
            ),
            (
                Drift::Unrecorded {
                    applied_at, actor, ..
                },
                _,
            ) => write!(
                f,
                "{} has no row in the state table, but the journal says it was applied at \
                 {applied_at} by {actor} and never rolled back (was its row deleted by hand?); \
                 applying it again would run it twice",
                self.label()
            ),
            (Drift::Changed { .. }, None) | (Drift::Missing, _) => write!(
                f,
                "{} MISSING: it {}, but no file has version {}",
                self.label(),
                if self.status == RowStatus::Failed {
                    "failed (perhaps part-way, if it ran outside a transaction)"
                } else {
                    "was applied"
                },
                self.version
            ),
        }
    }
}

/// `{version, name, drift, recorded_status, recorded_checksum,
/// file_checksum, file}`, `drift` being `changed`, `missing` or
/// `unrecorded`.
impl Serialize for Drifted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (kind, recorded, current) = match &self.drift {
            Drift::Changed { recorded, current } => ("changed", Some(recorded), Some(current)),
            Drift::Missing => ("missing", None, None),
            Drift::Unrecorded {
                checksum, current, ..
            } => ("unrecorded", Some(checksum), Some(current)),
        };
        let mut out = s.serialize_struct("Drifted", 7)?;
        out.serialize_field("version", &self.version)?;
        out.serialize_field("name", &self.name)?;
        out.serialize_field("drift", kind)?;
        out.serialize_field("recorded_status", &self.status)?;
        out.serialize_field("recorded_checksum", &recorded)?;
        out.serialize_field("file_checksum", &current)?;
        out.serialize_field("file", &self.path.as_ref().map(|p| p.display().to_string()))?;
        out.end()
    }
}

/// The first 12 hex digits of a checksum, enough to tell versions apart.
fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

/// Applied versions whose files changed or disappeared, failed ones whose
/// files disappeared, and files whose rows are gone while the journal says
/// they were applied. A failed row with a file is not drift: `up` retries
/// it with whatever the file now says.
pub fn drift(files: &MigrationSet, state: &DbState) -> Vec<Drifted> {
    let mut file_of = Cursor::new(&files.migrations, |m: &Migration| &m.version);
    let mut drifted: Vec<Drifted> = state
        .rows
        .iter()
        .filter_map(|row| {
            let file = file_of.find(&row.version);
            let drift = match file {
                None => Drift::Missing,
                Some(_) if row.status == RowStatus::Failed => return None,
                Some(file) if file.up.checksum.as_str() != row.checksum => Drift::Changed {
                    recorded: row.checksum.clone(),
                    current: file.up.checksum.as_str().to_owned(),
                },
                Some(_) => return None,
            };
            Some(Drifted {
                version: row.version.clone(),
                name: row.name.clone(),
                status: row.status,
                drift,
                path: file.map(|f| f.up.path.clone()),
            })
        })
        .collect();
    for lost in &state.unrecorded {
        let Some(file) = files.find(&lost.version) else {
            continue;
        };
        if state.row(&lost.version).is_some() {
            continue;
        }
        drifted.push(Drifted {
            version: file.version.clone(),
            name: lost.name.clone(),
            status: RowStatus::Applied,
            drift: Drift::Unrecorded {
                applied_at: lost.applied_at.clone(),
                actor: lost.actor.clone(),
                checksum: lost.checksum.clone(),
                duration: lost.duration,
                current: file.up.checksum.as_str().to_owned(),
            },
            path: Some(file.up.path.clone()),
        });
    }
    drifted.sort_by(|a, b| a.version.cmp(&b.version));
    drifted
}

/// Finds items of a slice sorted by version, for versions asked in
/// ascending order: a merge of two sorted lists, linear where a binary
/// search per version would compare ten thousand versions fourteen times
/// each. A version asked out of order is still found, by binary search.
struct Cursor<'a, T, F> {
    items: &'a [T],
    at: usize,
    version: F,
}

impl<'a, T, F: Fn(&T) -> &Version> Cursor<'a, T, F> {
    fn new(items: &'a [T], version: F) -> Self {
        Cursor {
            items,
            at: 0,
            version,
        }
    }

    fn find(&mut self, wanted: &Version) -> Option<&'a T> {
        let items = self.items;
        if self.at > 0 && (self.version)(&items[self.at - 1]) >= wanted {
            return items
                .binary_search_by(|item| (self.version)(item).cmp(wanted))
                .ok()
                .map(|i| &items[i]);
        }
        while self.at < items.len() && (self.version)(&items[self.at]) < wanted {
            self.at += 1;
        }
        match items.get(self.at) {
            Some(item) if (self.version)(item) == wanted => {
                self.at += 1;
                Some(item)
            }
            _ => None,
        }
    }
}

/// The newest applied version.
pub fn newest_applied(rows: &[StateRow]) -> Option<&Version> {
    rows.iter()
        .filter(|r| r.status == RowStatus::Applied)
        .map(|r| &r.version)
        .max()
}

/// Steps whose version is below the newest applied one: files merged late,
/// which `up` applies only with `--out-of-order`.
pub fn out_of_order<'a, 'b>(steps: &'b [Step<'a>], rows: &[StateRow]) -> Vec<&'b Step<'a>> {
    match newest_applied(rows) {
        Some(newest) => steps
            .iter()
            .filter(|s| s.migration.version < *newest)
            .collect(),
        None => Vec::new(),
    }
}

/// Counts per status, for the totals line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub applied: usize,
    pub pending: usize,
    pub failed: usize,
    pub changed: usize,
    pub missing: usize,
}

pub fn totals(rows: &[StatusRow]) -> Totals {
    let mut totals = Totals::default();
    for row in rows {
        match row.status {
            Status::Applied => totals.applied += 1,
            Status::Pending => totals.pending += 1,
            Status::Failed => totals.failed += 1,
            Status::Changed => totals.changed += 1,
            Status::Missing => totals.missing += 1,
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::{Script, checksum};
    use crate::state::RowDetails;
    use std::path::PathBuf;

    fn file(version: &str, name: &str, sql: &str) -> Migration {
        Migration {
            version: Version::parse(version).unwrap(),
            name: name.into(),
            up: Script {
                path: PathBuf::from(format!("{version}_{name}.sql")),
                sql: sql.into(),
                checksum: checksum(sql.as_bytes()),
                transactional: true,
            },
            down_path: None,
            down: None,
        }
    }

    fn row(version: &str, name: &str, sql: &str, status: RowStatus) -> StateRow {
        StateRow {
            version: Version::parse(version).unwrap(),
            name: name.into(),
            checksum: checksum(sql.as_bytes()).to_string(),
            status,
            details: Some(Box::new(RowDetails {
                applied_at: "2026-01-01T00:00:00.000000Z".into(),
                duration: Duration::from_millis(5),
                applied_by: "test".into(),
                error: (status == RowStatus::Failed).then(|| "ERROR: boom".into()),
                in_transaction: true,
            })),
        }
    }

    fn set(files: Vec<Migration>) -> MigrationSet {
        MigrationSet {
            dir: PathBuf::from("migrations"),
            migrations: files,
        }
    }

    #[test]
    fn every_status_is_told_apart() {
        let files = set(vec![
            file("001", "applied", "SELECT 1;"),
            file("002", "changed", "SELECT 2; -- edited"),
            file("003", "failed", "SELECT 3;"),
            file("005", "pending", "SELECT 5;"),
        ]);
        let rows = vec![
            row("001", "applied", "SELECT 1;", RowStatus::Applied),
            row("002", "changed", "SELECT 2;", RowStatus::Applied),
            row("003", "failed", "SELECT 3;", RowStatus::Failed),
            row("004", "missing", "SELECT 4;", RowStatus::Applied),
        ];
        let status: Vec<(String, Status, bool)> = status_rows(&files, &rows)
            .into_iter()
            .map(|r| (format!("{}_{}", r.version, r.name), r.status, r.has_file))
            .collect();
        assert_eq!(
            status,
            [
                ("001_applied".into(), Status::Applied, true),
                ("002_changed".into(), Status::Changed, true),
                ("003_failed".into(), Status::Failed, true),
                ("004_missing".into(), Status::Missing, false),
                ("005_pending".into(), Status::Pending, true),
            ]
        );
        let plan: Vec<String> = pending(&files, &rows, None)
            .iter()
            .map(|s| s.migration.label())
            .collect();
        assert_eq!(plan, ["003_failed", "005_pending"]);
        assert_eq!(
            pending(&files, &rows, None)[0]
                .failed_row_version
                .as_deref(),
            Some("003")
        );
    }

    #[test]
    fn rows_match_files_numerically() {
        let files = set(vec![file("0007", "a", "SELECT 7;")]);
        let rows = vec![row("7", "a", "SELECT 7;", RowStatus::Applied)];
        let status = status_rows(&files, &rows);
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].status, Status::Applied);
        assert_eq!(status[0].version.as_str(), "0007");
        assert!(pending(&files, &rows, None).is_empty());
    }

    #[test]
    fn the_cursor_finds_in_order_out_of_order_and_not_at_all() {
        let versions: Vec<Version> = ["1", "03", "5", "0008", "13"]
            .iter()
            .map(|v| Version::parse(v).unwrap())
            .collect();
        let mut cursor = Cursor::new(&versions, |v: &Version| v);
        let found = |c: &mut Cursor<'_, Version, _>, v: &str| {
            c.find(&Version::parse(v).unwrap())
                .map(|v| v.as_str().to_owned())
        };
        assert_eq!(found(&mut cursor, "0"), None);
        assert_eq!(found(&mut cursor, "1").as_deref(), Some("1"));
        assert_eq!(found(&mut cursor, "4"), None);
        assert_eq!(found(&mut cursor, "5").as_deref(), Some("5"));
        // Asked again, and asked backwards: still found.
        assert_eq!(found(&mut cursor, "005").as_deref(), Some("5"));
        assert_eq!(found(&mut cursor, "3").as_deref(), Some("03"));
        assert_eq!(found(&mut cursor, "2"), None);
        assert_eq!(found(&mut cursor, "13").as_deref(), Some("13"));
        assert_eq!(found(&mut cursor, "8").as_deref(), Some("0008"));
        assert_eq!(found(&mut cursor, "99"), None);
    }

    #[test]
    fn target_stops_the_plan_after_it() {
        let files = set(vec![
            file("1", "a", "SELECT 1;"),
            file("2", "b", "SELECT 2;"),
            file("10", "c", "SELECT 10;"),
        ]);
        let target = Version::parse("002").unwrap();
        let plan: Vec<String> = pending(&files, &[], Some(&target))
            .iter()
            .map(|s| s.migration.label())
            .collect();
        assert_eq!(plan, ["1_a", "2_b"]);
    }

    #[test]
    fn drift_is_changed_or_missing_rows_but_not_failed_rows_with_files() {
        let files = set(vec![
            file("001", "same", "SELECT 1;"),
            file("002", "edited", "SELECT 2; -- edited"),
            file("003", "failed_edit", "SELECT 3; -- fixed"),
            file("004", "crlf", "SELECT 4;\r\n"),
        ]);
        let rows = vec![
            row("001", "same", "SELECT 1;", RowStatus::Applied),
            row("002", "edited", "SELECT 2;", RowStatus::Applied),
            row("003", "failed_edit", "SELECT 3;", RowStatus::Failed),
            row("004", "crlf", "SELECT 4;\n", RowStatus::Applied),
            row("005", "gone", "SELECT 5;", RowStatus::Applied),
            row("006", "gone_failed", "SELECT 6;", RowStatus::Failed),
        ];
        let state = DbState {
            database: "app".into(),
            rows,
            unrecorded: Vec::new(),
        };
        let drift = drift(&files, &state);
        let labels: Vec<String> = drift.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            labels,
            [
                format!(
                    "002_edited CHANGED: 002_edited.sql now has checksum {}, but {} was applied",
                    &checksum(b"SELECT 2; -- edited").as_str()[..12],
                    &checksum(b"SELECT 2;").as_str()[..12]
                ),
                "005_gone MISSING: it was applied, but no file has version 005".to_owned(),
                "006_gone_failed MISSING: it failed (perhaps part-way, if it ran outside a \
                 transaction), but no file has version 006"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn a_row_deleted_after_an_apply_is_drift_when_its_file_is_there() {
        let files = set(vec![
            file("001", "kept", "SELECT 1;"),
            file("002", "lost", "SELECT 2;"),
        ]);
        let lost = |version: &str, name: &str| crate::state::Unrecorded {
            version: Version::parse(version).unwrap(),
            name: name.into(),
            checksum: checksum(b"SELECT 2;").to_string(),
            applied_at: "2026-01-01T00:00:00.000000Z".into(),
            actor: "ops@host".into(),
            duration: Duration::from_millis(3),
        };
        let state = DbState {
            database: "app".into(),
            rows: vec![row("001", "kept", "SELECT 1;", RowStatus::Applied)],
            // 003 has no file: nothing would apply it again.
            unrecorded: vec![lost("002", "lost"), lost("003", "gone")],
        };
        let labels: Vec<String> = drift(&files, &state)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            labels,
            [
                "002_lost has no row in the state table, but the journal says it was applied at \
              2026-01-01T00:00:00.000000Z by ops@host and never rolled back (was its row deleted \
              by hand?); applying it again would run it twice"
            ]
        );
    }

    #[test]
    fn out_of_order_steps_are_below_the_newest_applied() {
        let files = set(vec![
            file("1", "a", "x"),
            file("2", "late", "y"),
            file("3", "b", "z"),
            file("4", "next", "w"),
        ]);
        let rows = vec![
            row("1", "a", "x", RowStatus::Applied),
            row("3", "b", "z", RowStatus::Applied),
        ];
        let steps = pending(&files, &rows, None);
        let late: Vec<String> = out_of_order(&steps, &rows)
            .iter()
            .map(|s| s.migration.label())
            .collect();
        assert_eq!(late, ["2_late"]);
        assert_eq!(newest_applied(&rows).map(Version::as_str), Some("3"));
        assert!(out_of_order(&steps, &[]).is_empty());
    }

    #[test]
    fn totals_count_each_status() {
        let files = set(vec![file("1", "a", "x"), file("2", "b", "y")]);
        let rows = vec![row("1", "a", "x", RowStatus::Applied)];
        let totals = totals(&status_rows(&files, &rows));
        assert_eq!(
            totals,
            Totals {
                applied: 1,
                pending: 1,
                ..Totals::default()
            }
        );
    }
}
