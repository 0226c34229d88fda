//! The boxed tables of `status`, `history` and `lock`.

use crate::duration::format_duration;
use crate::plan::{Status, Totals};
use crate::report::{LockReport, StatusReport};
use crate::state::DETAILS_HIDDEN;
use crate::state::JournalEntry;
use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};

fn new_table(color: bool, header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED.with_rounded_corners())
        .set_content_arrangement(ContentArrangement::Dynamic);
    if color {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(
        header
            .iter()
            .map(|h| Cell::new(h).add_attribute(Attribute::Bold)),
    );
    table
}

/// `2026-11-21T10:32:05.123456Z` → `2026-11-21 10:32:05`.
fn timestamp(rfc3339: &str) -> String {
    rfc3339.get(..19).unwrap_or(rfc3339).replace('T', " ")
}

fn status_cell(status: Status) -> Cell {
    let cell = Cell::new(status.label());
    match status {
        Status::Applied => cell.fg(Color::Green),
        Status::Pending => cell.fg(Color::Yellow),
        Status::Failed | Status::Changed | Status::Missing => {
            cell.fg(Color::Red).add_attribute(Attribute::Bold)
        }
    }
}

/// The status table, the totals line, and a line per failure with the
/// server's message and per out-of-order file.
pub fn status_table(report: &StatusReport, color: bool) -> String {
    let rows = &report.rows;
    let totals = &report.totals;
    let mut table = new_table(
        color,
        &["Version", "Name", "Status", "Applied at (UTC)", "Took"],
    );
    for row in rows {
        table.add_row(vec![
            Cell::new(row.version.as_str()),
            Cell::new(&row.name),
            status_cell(row.status),
            Cell::new(row.applied_at.as_deref().map(timestamp).unwrap_or_default()),
            Cell::new(row.duration.map(format_duration).unwrap_or_default()),
        ]);
    }
    let mut out = if rows.is_empty() {
        "no migrations: the folder is empty and nothing is recorded".to_owned()
    } else {
        table.to_string()
    };
    out.push('\n');
    out.push_str(&totals_line(rows.len(), totals));
    for row in rows.iter().filter(|r| r.status == Status::Failed) {
        if let Some(error) = &row.error {
            out.push_str(&format!(
                "\n{}_{} failed{}: {}",
                row.version,
                row.name,
                if row.has_file {
                    ""
                } else {
                    " (its file is gone)"
                },
                error.lines().next().unwrap_or("")
            ));
        }
    }
    for late in &report.out_of_order {
        out.push_str(&format!(
            "\n{} is older than {}, the newest applied version: up applies it only with \
             --out-of-order",
            late.label, late.newest_applied
        ));
    }
    for lost in &report.unrecorded {
        out.push_str(&format!(
            "\n{lost}: up refuses to; `migrate repair {}` restores its row",
            lost.version
        ));
    }
    let failed_and_gone = rows
        .iter()
        .any(|r| r.status == Status::Failed && !r.has_file);
    if totals.changed + totals.missing > 0 || failed_and_gone {
        out.push_str(
            "\nup refuses to run over CHANGED or MISSING migrations, or FAILED ones whose file is \
             gone: restore the files, or accept them with `migrate repair`",
        );
    }
    out
}

/// Who holds the migration lock.
pub fn lock_table(report: &LockReport, color: bool) -> String {
    let Some(holder) = &report.holder else {
        return format!("nobody holds the migration lock (key {})", report.key);
    };
    if let Some(lease) = &holder.lease {
        let mut table = new_table(
            color,
            &[
                "Held by",
                "Process",
                "Application",
                "User",
                "Claimed (UTC)",
                "Runs out (UTC)",
            ],
        );
        table.add_row(vec![
            Cell::new(&lease.actor),
            Cell::new(holder.pid),
            Cell::new(&holder.application),
            Cell::new(holder.user.as_deref().unwrap_or("(unknown)")),
            Cell::new(holder.since.as_deref().map_or_else(String::new, timestamp)),
            Cell::new(timestamp(&lease.expires_at)),
        ]);
        return format!(
            "{table}\nthe migration lock (key {}) is held as a lease, through a pooler; it runs \
             out in {} s unless its run renews it",
            report.key, lease.expires_in_seconds
        );
    }
    let mut table = new_table(
        color,
        &[
            "PID",
            "Application",
            "User",
            "Client",
            "Connected since (UTC)",
        ],
    );
    // What pg_stat_activity hid from the role, or never had, is said so,
    // not left as an empty cell.
    let hidden = if holder.details_hidden() {
        "(hidden)"
    } else {
        "(unknown)"
    };
    let application = match holder.application.as_str() {
        "" => "(none set)",
        application => application,
    };
    table.add_row(vec![
        Cell::new(holder.pid),
        Cell::new(application),
        Cell::new(holder.user.as_deref().unwrap_or("(unknown)")),
        Cell::new(holder.client.as_deref().unwrap_or(hidden)),
        Cell::new(
            holder
                .since
                .as_deref()
                .map_or_else(|| hidden.to_owned(), timestamp),
        ),
    ]);
    let mut text = format!("{table}\nthe migration lock (key {}) is held", report.key);
    if holder.details_hidden() {
        text.push_str(&format!(" ({DETAILS_HIDDEN})"));
    }
    text
}

/// `5 migrations: 3 applied, 2 pending`: the line under the status table.
pub fn totals_line(total: usize, totals: &Totals) -> String {
    let mut parts = vec![
        format!("{} applied", totals.applied),
        format!("{} pending", totals.pending),
    ];
    for (count, label) in [
        (totals.failed, "failed"),
        (totals.changed, "changed"),
        (totals.missing, "missing"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {label}"));
        }
    }
    format!(
        "{total} {}: {}",
        if total == 1 {
            "migration"
        } else {
            "migrations"
        },
        parts.join(", ")
    )
}

/// The journal as a table, oldest first.
pub fn history_table(entries: &[JournalEntry], color: bool) -> String {
    if entries.is_empty() {
        return "the journal is empty: nothing has been applied yet".to_owned();
    }
    let mut table = new_table(
        color,
        &[
            "#", "At (UTC)", "Event", "Version", "Name", "Took", "By", "Error",
        ],
    );
    for entry in entries {
        let event = Cell::new(&entry.event);
        let event = match entry.event.as_str() {
            "applied" => event.fg(Color::Green),
            "failed" => event.fg(Color::Red).add_attribute(Attribute::Bold),
            _ => event,
        };
        let error = entry
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .unwrap_or("");
        table.add_row(vec![
            Cell::new(entry.id),
            Cell::new(timestamp(&entry.at)),
            event,
            Cell::new(entry.version.as_deref().unwrap_or("")),
            Cell::new(entry.name.as_deref().unwrap_or("")),
            Cell::new(entry.duration.map(format_duration).unwrap_or_default()),
            Cell::new(format!("{} ({})", entry.actor, entry.db_user)),
            Cell::new(error),
        ]);
    }
    let mut out = table.to_string();
    out.push('\n');
    out.push_str(&format!(
        "{} {}",
        entries.len(),
        if entries.len() == 1 {
            "entry"
        } else {
            "entries"
        }
    ));
    out
}

/// A fleet's summary: one row per target, in the order given, then the
/// totals line. `up` and `down` show the version before and after and
/// what changed; `status`, `validate` and `wait` the version and what is
/// applied and pending.
pub fn fleet_table(report: &crate::fleet::FleetReport, color: bool) -> String {
    use crate::fleet::Outcome;
    let changes = matches!(report.operation, "up" | "down");
    let header: &[&str] = if changes {
        &[
            "Target", "Before", "After", "Changed", "Took", "Outcome", "Error",
        ]
    } else {
        &[
            "Target", "Version", "Applied", "Pending", "Took", "Outcome", "Error",
        ]
    };
    let mut table = new_table(color, header);
    let dash = || "-".to_owned();
    for t in &report.targets {
        let (before, after) = t.versions();
        let outcome = Cell::new(t.outcome.label());
        let outcome = match t.outcome {
            Outcome::Failed => outcome.fg(Color::Red).add_attribute(Attribute::Bold),
            Outcome::NotStarted | Outcome::SkippedLocked => outcome.fg(Color::Yellow),
            _ => outcome.fg(Color::Green),
        };
        let started = t.outcome != Outcome::NotStarted;
        let middle = if changes {
            let count = t.done.applied.len() + t.done.rolled_back.len();
            [
                before.map_or_else(dash, |v| v.to_string()),
                after.map_or_else(dash, |v| v.to_string()),
                if started { count.to_string() } else { dash() },
            ]
        } else {
            let totals = t.totals();
            [
                after.map_or_else(dash, |v| v.to_string()),
                totals.map_or_else(dash, |t| t.applied.to_string()),
                totals.map_or_else(dash, |t| t.pending.to_string()),
            ]
        };
        let error = t
            .error
            .as_ref()
            .map(|e| e.to_string().lines().next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let mut row = vec![Cell::new(super::printable(&t.name))];
        row.extend(middle.into_iter().map(Cell::new));
        row.push(Cell::new(if started {
            format_duration(t.duration)
        } else {
            String::new()
        }));
        row.push(outcome);
        row.push(Cell::new(error));
        table.add_row(row);
    }
    let mut text = table.to_string();
    text.push('\n');
    text.push_str(&fleet_totals_line(report));
    if let Some(stopped) = &report.stopped {
        text.push('\n');
        text.push_str(stopped);
    }
    text
}

/// `1000 targets in 3.2s: 998 applied, 1 FAILED, 1 not started`.
pub fn fleet_totals_line(report: &crate::fleet::FleetReport) -> String {
    use crate::fleet::Outcome;
    let parts: Vec<String> = [
        Outcome::Applied,
        Outcome::RolledBack,
        Outcome::UpToDate,
        Outcome::NothingToDo,
        Outcome::DoneElsewhere,
        Outcome::DryRun,
        Outcome::SkippedLocked,
        Outcome::Checked,
        Outcome::Failed,
        Outcome::NotStarted,
    ]
    .into_iter()
    .filter_map(|o| {
        let n = report.count(o);
        (n > 0).then(|| format!("{n} {}", o.label()))
    })
    .collect();
    let total = report.targets.len();
    format!(
        "{total} {} in {}: {}",
        if total == 1 { "target" } else { "targets" },
        format_duration(report.duration),
        parts.join(", ")
    )
}
