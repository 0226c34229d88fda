//! The JSON bodies of the admin API, as SPEC gives them: statuses
//! `completed` / `pending` / `failed` (drift as a `drift` field),
//! durations in nanoseconds, RFC 3339 times. Built from the engine's typed
//! reports, here alone.

use crate::plan::{Status, StatusRow};
use crate::report::{AppliedMigration, HistoryReport, LockReport, StatusReport, UpReport};
use crate::state::{JournalEntry, LockHolder};
use serde_json::{Value, json};
use std::time::Duration;

fn nanos(duration: Option<Duration>) -> Value {
    duration.map_or(Value::Null, |d| json!(d.as_nanos() as u64))
}

/// `{"error": ..., "details": ...}`: every refusal and failure.
pub(super) fn error(error: &str, details: impl Into<String>) -> Value {
    json!({ "error": error, "details": details.into() })
}

fn migration(row: &StatusRow) -> Value {
    let (status, drift) = match row.status {
        Status::Applied => ("completed", None),
        Status::Pending => ("pending", None),
        Status::Failed => ("failed", None),
        Status::Changed => ("completed", Some("changed")),
        Status::Missing => ("completed", Some("missing")),
    };
    let mut value = json!({
        "version": row.version.as_str(),
        "name": row.name,
        "status": status,
        "applied_at": row.applied_at,
        "duration": nanos(row.duration),
    });
    if let Some(drift) = drift {
        value["drift"] = json!(drift);
    }
    if let Some(error) = &row.error {
        value["error"] = json!(error);
    }
    value
}

/// `GET /admin/migrations/status`, and how many are pending (failed ones
/// count: `up` retries them).
pub(super) fn status(report: &StatusReport) -> (Value, usize) {
    let all: Vec<Value> = report.rows.iter().map(migration).collect();
    let pending: Vec<Value> = report
        .rows
        .iter()
        .filter(|r| matches!(r.status, Status::Pending | Status::Failed))
        .map(migration)
        .collect();
    let applied: Vec<Value> = report
        .rows
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                Status::Applied | Status::Changed | Status::Missing
            )
        })
        .map(migration)
        .collect();
    let pending_count = pending.len();
    let body = json!({
        "summary": crate::render::totals_line(all.len(), &report.totals),
        "totals": report.totals,
        "total": all.len(),
        "pending_count": pending_count,
        "applied_count": applied.len(),
        "all_migrations": all,
        "pending_migrations": pending,
        "applied_migrations": applied,
    });
    (body, pending_count)
}

fn journal_entry(entry: &JournalEntry) -> Value {
    json!({
        "id": entry.id,
        "version": entry.version,
        "name": entry.name,
        "event": entry.event,
        "applied_at": entry.at,
        "duration": nanos(entry.duration),
        "applied_by": entry.actor,
        "db_user": entry.db_user,
        "error": entry.error,
        "note": entry.note,
    })
}

/// `GET /admin/migrations/history`.
pub(super) fn history(report: &HistoryReport) -> Value {
    json!({
        "total": report.entries.len(),
        "migrations": report.entries.iter().map(journal_entry).collect::<Vec<_>>(),
    })
}

fn applied(list: &[AppliedMigration]) -> Vec<Value> {
    list.iter()
        .map(|a| {
            json!({
                "version": a.migration.version.as_str(),
                "name": a.migration.name,
                "duration": a.duration.as_nanos() as u64,
            })
        })
        .collect()
}

/// A run that applied migrations.
pub(super) fn run_applied(report: &UpReport) -> Value {
    let count = report.done.applied.len();
    json!({
        "status": "success",
        "message": format!("applied {count} migration{}", if count == 1 { "" } else { "s" }),
        "applied_count": count,
        "applied_migrations": applied(&report.done.applied),
    })
}

/// Who holds the migration lock: `{"held": false}`, or its holder, also in
/// the words `migrate lock` uses.
pub(super) fn lock(report: &LockReport) -> Value {
    json!({
        "key": report.key.to_string(),
        "held": report.holder.is_some(),
        "holder": report.holder,
        "description": report.holder.as_ref().map(ToString::to_string),
    })
}

/// A run refused because another session holds the migration lock: who.
pub(super) fn locked(holder: Option<&LockHolder>) -> Value {
    json!({
        "error": "another run holds the migration lock",
        "details": match holder {
            Some(holder) => format!("held by {holder}"),
            None => "the lock was held; try again".to_owned(),
        },
        "holder": holder,
    })
}

/// A run with nothing to apply.
pub(super) fn run_up_to_date() -> Value {
    json!({ "status": "up_to_date", "message": "no pending migrations" })
}

/// A run that failed: what committed before the failure stays applied, so
/// the body says which.
pub(super) fn run_failed(title: &str, details: String, done: &[AppliedMigration]) -> Value {
    json!({
        "error": title,
        "details": details,
        "applied_migrations": applied(done),
    })
}
