//! The `--json` documents: one per run, on stdout. The shape is stable and
//! documented in the README; `json_version` changes if it ever must.
//! Versions are strings (as written in the file names), timestamps RFC 3339
//! in UTC, durations integer microseconds (`*_us`).

use crate::error::Error;
use crate::report::{
    DownReport, HistoryReport, LockReport, Progress, RepairReport, StatusReport, UpReport,
    ValidateReport,
};
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
/// did before it (as a successful run's document has it).
pub fn failed_run(command: &str, err: &Error, done: Option<&Progress>) -> Value {
    let mut doc = error_document(command, err);
    if let (Some(done), Value::Object(doc)) = (done, &mut doc)
        && let Value::Object(done) = to_value(done)
    {
        doc.extend(done);
    }
    doc
}

/// A report as JSON; the report types' `Serialize` is the documented shape.
fn to_value(report: &impl serde::Serialize) -> Value {
    serde_json::to_value(report).expect("reports serialize to JSON")
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
            "drift": to_value(drifted),
            "out_of_order": to_value(out_of_order),
        }),
        Error::LockTimeout { waited, holder } => json!({
            "waited_us": micros(*waited),
            "holder": to_value(holder),
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
            ..
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
        Error::LockReleased { lease: true, .. } => "lease_lost",
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

pub fn status(report: &StatusReport) -> Value {
    envelope("status", to_value(report))
}

pub fn history(report: &HistoryReport) -> Value {
    envelope("history", to_value(report))
}

pub fn up(report: &UpReport) -> Value {
    envelope("up", to_value(report))
}

pub fn down(report: &DownReport) -> Value {
    envelope("down", to_value(report))
}

pub fn validate(report: &ValidateReport) -> Value {
    let mut doc = envelope("validate", to_value(report));
    doc["agree"] = json!(true);
    doc
}

/// `wait`: every migration of the folder is applied.
pub fn wait(report: &ValidateReport, waited: Duration) -> Value {
    let mut doc = envelope("wait", to_value(report));
    doc["waited_us"] = json!(micros(waited));
    doc
}

pub fn repair(report: &RepairReport) -> Value {
    envelope("repair", to_value(report))
}

pub fn lock(report: &LockReport) -> Value {
    envelope("lock", to_value(report))
}

/// A fleet's run: one entry per target, in the order they were given,
/// each with what that target's own document would hold (`detail`), and
/// the totals by outcome. `ok` is false when any target failed;
/// `exit_code` is the process's.
pub fn fleet(report: &crate::fleet::FleetReport, selection: &crate::fleet::Selection) -> Value {
    use crate::fleet::{Detail, Outcome};
    let targets: Vec<Value> = report
        .targets
        .iter()
        .map(|t| {
            let (before, after) = t.versions();
            let detail = match &t.detail {
                Detail::Up(r) => to_value(r),
                Detail::Down(r) => to_value(r),
                Detail::Status(r) => to_value(r),
                Detail::Validated(r) => to_value(r),
                Detail::None => to_value(&t.done),
            };
            json!({
                "name": t.name,
                "database": t.database,
                "schema": t.schema,
                "outcome": t.outcome,
                "version_before": before.map(|v| v.as_str()),
                "version_after": after.map(|v| v.as_str()),
                "applied": t.done.applied.len(),
                "rolled_back": t.done.rolled_back.len(),
                "duration_us": micros(t.duration),
                "exit_code": t.exit_code(),
                "error": t.error.as_deref().map(error_value),
                "detail": detail,
            })
        })
        .collect();
    let mut totals = serde_json::Map::new();
    for outcome in [
        Outcome::UpToDate,
        Outcome::Applied,
        Outcome::DryRun,
        Outcome::SkippedLocked,
        Outcome::DoneElsewhere,
        Outcome::RolledBack,
        Outcome::NothingToDo,
        Outcome::Checked,
        Outcome::Failed,
        Outcome::NotStarted,
    ] {
        let count = report.count(outcome);
        if count > 0 {
            totals.insert(
                to_value(&outcome).as_str().unwrap_or_default().to_owned(),
                json!(count),
            );
        }
    }
    let exit_code = report.exit_code();
    json!({
        "json_version": JSON_VERSION,
        "command": report.operation,
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "fleet": {
            "found": selection.found,
            "shard": selection.shard.map(|s| s.to_string()),
            "targets": report.targets.len(),
        },
        "totals": totals,
        "stopped": report.stopped,
        "duration_us": micros(report.duration),
        "targets": targets,
    })
}
