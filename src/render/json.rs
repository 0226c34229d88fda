//! The `--json` documents: one per run, on stdout. The shape is stable and
//! documented in the README; `json_version` changes if it ever must.
//! Versions are strings (as written in the file names), timestamps RFC 3339
//! in UTC, durations integer microseconds (`*_us`).

use crate::error::Error;
use crate::plan::{Drift, Drifted, Status, StatusRow, Totals};
use crate::report::{
    AppliedMigration, BootstrapRun, DownOutcome, DownReport, HistoryReport, LockReport,
    MigrationRef, Progress, RepairReport, StatusReport, UpOutcome, UpReport, ValidateReport,
};
use crate::state::LockHolder;
use crate::state::{JournalEntry, RowStatus};
use serde_json::{Value, json};
use std::time::Duration;

/// The version of these shapes.
pub const JSON_VERSION: u32 = 1;

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

fn envelope(command: &str, body: Value) -> Value {
    let mut doc = json!({ "json_version": JSON_VERSION, "command": command, "ok": true });
    if let (Value::Object(doc), Value::Object(body)) = (&mut doc, body) {
        doc.extend(body);
    }
    doc
}

/// The document for a command that failed: what it says, and the facts of
/// the error a program may act on.
pub fn error_document(command: &str, err: &Error) -> Value {
    json!({
        "json_version": JSON_VERSION,
        "command": command,
        "ok": false,
        "error": error_value(err),
    })
}

/// The document for a failed `up` or `down`: the error, and what the run
/// committed before it (`applied` and `bootstrap`, or `rolled_back`).
pub fn failed_run(command: &str, err: &Error, done: Option<&Progress>) -> Value {
    let mut doc = error_document(command, err);
    if let (Some(done), Value::Object(doc)) = (done, &mut doc) {
        let list = |items: &[AppliedMigration]| items.iter().map(applied_value).collect::<Vec<_>>();
        if command == "down" {
            doc.insert("rolled_back".into(), json!(list(&done.rolled_back)));
        } else {
            doc.insert("applied".into(), json!(list(&done.applied)));
            doc.insert(
                "bootstrap".into(),
                json!(
                    done.bootstrap
                        .iter()
                        .map(bootstrap_value)
                        .collect::<Vec<_>>()
                ),
            );
        }
    }
    doc
}

fn bootstrap_value(b: &BootstrapRun) -> Value {
    json!({ "script": b.script, "duration_us": micros(b.duration) })
}

pub fn error_value(err: &Error) -> Value {
    let mut value = json!({
        "exit_code": err.exit_code(),
        "kind": kind(err),
        "message": err.to_string(),
    });
    let details = match err {
        Error::Files(problems) => json!({
            "files": problems.iter().map(|p| json!({
                "path": p.path.display().to_string(),
                "reason": p.reason,
            })).collect::<Vec<_>>(),
        }),
        Error::Drift {
            drifted,
            out_of_order,
        } => json!({
            "drift": drifted.iter().map(drifted_value).collect::<Vec<_>>(),
            "out_of_order": out_of_order.iter().map(|o| json!({
                "migration": o.label,
                "newest_applied": o.newest_applied,
            })).collect::<Vec<_>>(),
        }),
        Error::LockTimeout { waited, holder } => json!({
            "waited_us": micros(*waited),
            "holder": holder.as_ref().map(holder_value),
        }),
        Error::MigrationFailed {
            label,
            path,
            down,
            failure,
            notes,
        } => json!({
            "migration": label,
            "file": path.display().to_string(),
            "rollback": down,
            "sqlstate": failure.failure.code,
            "server_message": failure.failure.message,
            "detail": failure.failure.detail,
            "hint": failure.failure.hint,
            "line": failure.location.as_ref().map(|l| l.line),
            "column": failure.location.as_ref().map(|l| l.column),
            "statements_ran": failure.statements.map(|(ran, _)| ran),
            "statements_total": failure.statements.map(|(_, total)| total),
            "invalid_indexes": failure.invalid_indexes,
            "duration_us": micros(failure.duration),
            "notes": notes,
        }),
        Error::LockReleased {
            label,
            path,
            statements,
            notes,
        } => json!({
            "migration": label,
            "file": path.display().to_string(),
            "statements_ran": statements.map(|(ran, _)| ran),
            "statements_total": statements.map(|(_, total)| total),
            "notes": notes,
        }),
        Error::WaitTimeout { waited, waiting } => json!({
            "waited_us": micros(*waited),
            "waiting": waiting,
        }),
        Error::BootstrapFailed { path, failure } => json!({
            "file": path.display().to_string(),
            "sqlstate": failure.code,
        }),
        _ => json!({}),
    };
    if let (Value::Object(value), Value::Object(details)) = (&mut value, details) {
        value.extend(details);
    }
    value
}

fn kind(err: &Error) -> &'static str {
    match err {
        Error::Usage(_) => "usage",
        Error::Config { .. } => "config",
        Error::Files(_) => "files",
        Error::Connect { .. } => "connect",
        Error::LockTimeout { .. } => "lock_timeout",
        Error::MigrationFailed { .. } => "migration_failed",
        Error::LockReleased { .. } => "lock_released",
        Error::Drift { .. } => "drift",
        Error::ForeignStateTable { .. } => "foreign_state_table",
        Error::Database { .. } => "database",
        Error::Conflict(_) => "conflict",
        Error::BootstrapFailed { .. } => "bootstrap_failed",
        Error::MissingVariable { .. } => "missing_variable",
        Error::Aborted => "aborted",
        Error::Stopped(_) => "stopped",
        Error::Interrupted { .. } => "interrupted",
        Error::WaitTimeout { .. } => "wait_timeout",
        Error::Sandbox(_) => "sandbox",
    }
}

fn migration_ref(m: &MigrationRef) -> Value {
    json!({ "version": m.version.as_str(), "name": m.name })
}

fn applied_value(a: &AppliedMigration) -> Value {
    json!({
        "version": a.migration.version.as_str(),
        "name": a.migration.name,
        "duration_us": micros(a.duration),
    })
}

fn holder_value(h: &LockHolder) -> Value {
    json!({
        "pid": h.pid,
        "application": h.application,
        "user": h.user,
        "client": h.client,
        "connected_since": h.since,
    })
}

fn drifted_value(d: &Drifted) -> Value {
    let (kind, recorded, current) = match &d.drift {
        Drift::Changed { recorded, current } => ("changed", Some(recorded), Some(current)),
        Drift::Missing => ("missing", None, None),
        Drift::Unrecorded { checksum, .. } => ("unrecorded", Some(checksum), None),
    };
    json!({
        "version": d.version.as_str(),
        "name": d.name,
        "drift": kind,
        "recorded_status": match d.status { RowStatus::Applied => "applied", RowStatus::Failed => "failed" },
        "recorded_checksum": recorded,
        "file_checksum": current,
        "file": d.path.as_ref().map(|p| p.display().to_string()),
    })
}

fn totals_value(t: &Totals) -> Value {
    json!({
        "applied": t.applied,
        "pending": t.pending,
        "failed": t.failed,
        "changed": t.changed,
        "missing": t.missing,
    })
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Applied => "applied",
        Status::Pending => "pending",
        Status::Failed => "failed",
        Status::Changed => "changed",
        Status::Missing => "missing",
    }
}

fn status_row(row: &StatusRow) -> Value {
    json!({
        "version": row.version.as_str(),
        "name": row.name,
        "status": status_label(row.status),
        "applied_at": row.applied_at,
        "duration_us": row.duration.map(micros),
        "error": row.error,
        "has_file": row.has_file,
    })
}

pub fn status(report: &StatusReport) -> Value {
    envelope(
        "status",
        json!({
            "migrations": report.rows.iter().map(status_row).collect::<Vec<_>>(),
            "totals": totals_value(&report.totals),
            "out_of_order": report.out_of_order.iter().map(|o| o.label.clone()).collect::<Vec<_>>(),
            "unrecorded": report.unrecorded.iter().map(drifted_value).collect::<Vec<_>>(),
        }),
    )
}

fn journal_entry(e: &JournalEntry) -> Value {
    json!({
        "id": e.id,
        "at": e.at,
        "event": e.event,
        "version": e.version,
        "name": e.name,
        "checksum": e.checksum,
        "duration_us": e.duration.map(micros),
        "actor": e.actor,
        "db_user": e.db_user,
        "error": e.error,
        "note": e.note,
    })
}

pub fn history(report: &HistoryReport) -> Value {
    envelope(
        "history",
        json!({
            "entries": report.entries.iter().map(journal_entry).collect::<Vec<_>>(),
            "total": report.entries.len(),
        }),
    )
}

pub fn up(report: &UpReport) -> Value {
    let outcome = match report.outcome {
        UpOutcome::UpToDate => "up_to_date",
        UpOutcome::Applied => "applied",
        UpOutcome::DryRun => "dry_run",
        UpOutcome::SkippedLocked => "skipped_locked",
        UpOutcome::DoneElsewhere => "done_elsewhere",
        UpOutcome::Skipped => "skipped",
    };
    envelope(
        "up",
        json!({
            "outcome": outcome,
            "planned": report.planned.iter().map(migration_ref).collect::<Vec<_>>(),
            "applied": report.done.applied.iter().map(applied_value).collect::<Vec<_>>(),
            "planned_bootstrap": report.planned_bootstrap,
            "bootstrap": report.done.bootstrap.iter().map(bootstrap_value).collect::<Vec<_>>(),
            "lock_waited_us": micros(report.done.lock_waited),
        }),
    )
}

pub fn down(report: &DownReport) -> Value {
    let outcome = match report.outcome {
        DownOutcome::NothingToDo => "nothing_to_do",
        DownOutcome::RolledBack => "rolled_back",
        DownOutcome::DryRun => "dry_run",
        DownOutcome::SkippedLocked => "skipped_locked",
    };
    envelope(
        "down",
        json!({
            "outcome": outcome,
            "planned": report.planned.iter().map(migration_ref).collect::<Vec<_>>(),
            "rolled_back": report.done.rolled_back.iter().map(applied_value).collect::<Vec<_>>(),
        }),
    )
}

pub fn validate(report: &ValidateReport) -> Value {
    envelope(
        "validate",
        json!({ "agree": true, "totals": totals_value(&report.totals) }),
    )
}

/// `wait`: every migration of the folder is applied.
pub fn wait(report: &ValidateReport, waited: Duration) -> Value {
    envelope(
        "wait",
        json!({ "totals": totals_value(&report.totals), "waited_us": micros(waited) }),
    )
}

pub fn repair(report: &RepairReport) -> Value {
    envelope(
        "repair",
        json!({
            "dry_run": report.dry_run,
            "repaired": report.repaired.iter().map(drifted_value).collect::<Vec<_>>(),
        }),
    )
}

pub fn lock(report: &LockReport) -> Value {
    envelope(
        "lock",
        json!({
            // A string: a 64-bit key loses digits as a JSON number in
            // most readers.
            "key": report.key.to_string(),
            "held": report.holder.is_some(),
            "holder": report.holder.as_ref().map(holder_value),
        }),
    )
}
