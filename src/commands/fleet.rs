//! `up`, `down`, `status`, `validate` and `wait` across a fleet: the
//! targets found and checked, a prompt at a terminal, a bar (or a line per
//! target), the summary table or the JSON document, the metrics, and the
//! most severe exit code.

use super::{down_options, folder_migrator, folder_migrator_with_bootstrap, libc_signal};
use crate::cli::{Command, GlobalArgs};
use crate::error::{Error, exit};
use crate::fleet::{
    Fleet, FleetReport, FleetReporter, FleetTarget, Operation, Outcome, Quiet, Selection,
    TargetReport,
};
use crate::metrics;
use crate::render::{Printer, fleet_table, json};
use crate::report::Reporter;
use crate::settings::Settings;
use crate::settings::fleet::{FleetSettings, Source};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs the command across the fleet; returns the exit code.
pub(super) async fn run(
    command: &Command,
    args: &GlobalArgs,
    settings: &Settings,
    fleet: &FleetSettings,
    printer: &Printer,
) -> i32 {
    match run_fleet(command, args, settings, fleet, printer).await {
        Ok(code) => code,
        Err(err) => super::fail(printer, command.name(), &err),
    }
}

async fn run_fleet(
    command: &Command,
    args: &GlobalArgs,
    settings: &Settings,
    fleet: &FleetSettings,
    printer: &Printer,
) -> Result<i32, Error> {
    let mut signals = Signals::catch();
    let operation = operation(command, settings)?;
    if let Source::EachSchema(pattern) = &fleet.source
        && let Some(origin) = args.schema.as_ref().map(|_| "--schema").or_else(|| {
            settings
                .environment
                .get("MIGRATE_SCHEMA")
                .map(|_| "MIGRATE_SCHEMA")
        })
    {
        return Err(Error::Usage(format!(
            "{origin} and --each-schema {pattern} both say which schema to migrate: each \
             schema that matches the pattern is a target of its own; drop {origin}"
        )));
    }
    let migrator = match operation {
        Operation::Up(_) => folder_migrator_with_bootstrap(settings)?,
        _ => folder_migrator(settings)?,
    };
    let targets = fleet.targets(&settings.environment)?;
    // The table shows each target's totals; the JSON document its rows.
    let options = crate::fleet::FleetOptions {
        details: settings.json,
        ..fleet.options.clone()
    };
    let runner = Fleet::new(migrator, options);
    let selection = tokio::select! {
        selection = runner.select(&targets) => selection?,
        error = signals.next() => return Err(error),
    };
    let options = runner.options();
    let shard = match selection.shard {
        Some(shard) => format!(" (shard {shard} of {} found)", selection.found),
        None => String::new(),
    };
    if selection.targets.is_empty() {
        printer.line(format!(
            "shard {} holds none of the {} targets found: nothing to do",
            selection.shard.map(|s| s.to_string()).unwrap_or_default(),
            selection.found
        ));
        let report = FleetReport {
            operation: operation.name(),
            targets: Vec::new(),
            stopped: None,
            interrupted: None,
            duration: std::time::Duration::ZERO,
        };
        return Ok(finish(settings, printer, &report, &selection));
    }
    printer.line(format!(
        "{} {}{shard}, {} at a time{}{}",
        selection.targets.len(),
        if selection.targets.len() == 1 {
            "target"
        } else {
            "targets"
        },
        options.parallel,
        match options.canary {
            0 => String::new(),
            k => format!(", the first {} alone first", k.min(selection.targets.len())),
        },
        if options.keep_going {
            ", going on after a failure"
        } else {
            ""
        },
    ));
    if !ask(&runner, &selection, &operation, printer).await? {
        if printer.prompt_interrupted() {
            return Err(Error::Interrupted {
                signal: libc_signal::SIGINT,
                message: "interrupted at the prompt: nothing was changed".into(),
            });
        }
        return Err(Error::Aborted);
    }
    let reporter = Lines::new(printer, selection.targets.len());
    let report = runner
        .run_until(&selection, &operation, &reporter, signals.next())
        .await?;
    printer.end_progress();
    if report.interrupted.is_some() {
        // A lease a dropped target held goes now, rather than running out.
        crate::store::give_up_leases(std::time::Duration::from_secs(2)).await;
    }
    Ok(finish(settings, printer, &report, &selection))
}

/// The summary (or the document), the metrics file, the exit code.
fn finish(
    settings: &Settings,
    printer: &Printer,
    report: &FleetReport,
    selection: &Selection,
) -> i32 {
    let changes = matches!(report.operation, "up" | "down");
    if changes
        && !settings.dry_run
        && let Some(path) = &settings.metrics_file
        && let Err(err) = metrics::write_fleet(path, report)
    {
        printer.warn(err.to_string());
    }
    if settings.json {
        printer.document(&json::fleet(report, selection));
    } else if !report.targets.is_empty() {
        printer.result(fleet_table(report, printer.terminal().color));
    }
    let code = report.exit_code();
    if code != exit::OK && !settings.json {
        let failed = report.count(Outcome::Failed);
        printer.error(format!(
            "{failed} of {} {} failed (exit {code}, the most severe)",
            report.targets.len(),
            if report.targets.len() == 1 {
                "target"
            } else {
                "targets"
            },
        ));
    }
    code
}

/// What each target gets.
fn operation(command: &Command, settings: &Settings) -> Result<Operation, Error> {
    Ok(match command {
        Command::Up => Operation::Up(crate::engine::UpOptions {
            target: settings.target.clone(),
            dry_run: settings.dry_run,
            out_of_order: settings.out_of_order,
            skip_bootstrap: settings.skip_bootstrap,
            expect: None,
        }),
        Command::Down(args) => {
            if args.steps.is_none() && args.to.is_none() {
                return Err(Error::Usage(
                    "down across a fleet needs --to VERSION or --steps N: \"the last migration\" \
                     is not the same one on every target"
                        .into(),
                ));
            }
            Operation::Down(crate::engine::DownOptions {
                to_may_be_ahead: true,
                ..down_options(args, settings)?
            })
        }
        Command::Status => Operation::Status,
        Command::Validate => Operation::Validate,
        Command::Wait(args) => Operation::Wait(settings.wait_timeout(args.timeout.as_deref())?),
        other => {
            return Err(Error::Usage(format!(
                "`{}` does not run across a fleet (--each-schema, --targets, --targets-query \
                 work with up, down, status, validate and wait)",
                other.name()
            )));
        }
    })
}

/// At a terminal, before `up` or `down` changes anything: what each
/// target would do (a dry run across the fleet), then `Continue?`.
async fn ask(
    runner: &Fleet,
    selection: &Selection,
    operation: &Operation,
    printer: &Printer,
) -> Result<bool, Error> {
    let dry = match operation {
        Operation::Up(options) if !options.dry_run => Operation::Up(crate::engine::UpOptions {
            dry_run: true,
            ..options.clone()
        }),
        Operation::Down(options) if !options.dry_run => {
            Operation::Down(crate::engine::DownOptions {
                dry_run: true,
                ..options.clone()
            })
        }
        _ => return Ok(true),
    };
    if !printer.asks() {
        return Ok(printer.confirm());
    }
    // Every target's plan, whatever fails: a dry run changes nothing.
    let planner = runner.with_options(crate::fleet::FleetOptions {
        canary: 0,
        keep_going: true,
        ..runner.options().clone()
    });
    let plan = planner.run(selection, &dry, &Quiet).await?;
    let mut with_work = Vec::new();
    let mut steps = 0;
    for target in &plan.targets {
        let planned = match &target.detail {
            crate::fleet::Detail::Up(r) => r.planned.len(),
            crate::fleet::Detail::Down(r) => r.planned.len(),
            _ => 0,
        };
        if planned > 0 {
            with_work.push(format!(
                "{} ({planned})",
                crate::render::printable(&target.name)
            ));
            steps += planned;
        }
    }
    let unreadable = plan.count(Outcome::Failed);
    let verb = if let Operation::Up(_) = operation {
        "to apply"
    } else {
        "to roll back"
    };
    let mut text = format!(
        "{} of {} targets have migrations {verb}, {steps} in all",
        with_work.len(),
        plan.targets.len()
    );
    if !with_work.is_empty() {
        let shown: Vec<&str> = with_work.iter().take(10).map(String::as_str).collect();
        text.push_str(&format!(": {}", shown.join(", ")));
        if with_work.len() > 10 {
            text.push_str(&format!(" and {} more", with_work.len() - 10));
        }
    }
    if unreadable > 0 {
        text.push_str(&format!(
            "; {unreadable} could not be planned (they will fail the same way)"
        ));
    }
    printer.line(text);
    Ok(printer.confirm())
}

/// SIGINT and SIGTERM, caught from before the prompt on (so Ctrl-C there
/// is an answer, not the end of the process).
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn catch() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals(
            signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok(),
        )
    }

    /// The next one, as the error each running target gets.
    async fn next(&mut self) -> Error {
        let Some((int, term)) = &mut self.0 else {
            return std::future::pending().await;
        };
        let (name, number) = tokio::select! {
            _ = int.recv() => ("SIGINT", libc_signal::SIGINT),
            _ = term.recv() => ("SIGTERM", libc_signal::SIGTERM),
        };
        Error::Interrupted {
            signal: number,
            message: format!("interrupted by {name}"),
        }
    }
}

/// A line per target as it ends, or a bar across them at a terminal
/// (failures are still a line each, above it).
struct Lines<'a> {
    printer: &'a Printer,
    bar: bool,
    done: AtomicUsize,
    total: usize,
}

impl<'a> Lines<'a> {
    fn new(printer: &'a Printer, total: usize) -> Lines<'a> {
        Lines {
            bar: printer.begin_progress(total),
            printer,
            done: AtomicUsize::new(0),
            total,
        }
    }
}

impl FleetReporter for Lines<'_> {
    fn started(&self, target: &FleetTarget) {
        self.printer
            .detail(format!("{}: starting ({})", target.name, target.describe()));
    }

    fn finished(&self, report: &TargetReport) {
        let n = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        let name = crate::render::printable(&report.name);
        let line = format!("[{n}/{}] {name}: {}", self.total, summary(report));
        if self.bar {
            if report.outcome == Outcome::Failed {
                self.printer.line(&line);
            }
            self.printer.advance_progress(&name);
        } else {
            self.printer.line(line);
        }
    }
}

/// What happened to one target, in a few words.
fn summary(report: &TargetReport) -> String {
    let (before, after) = report.versions();
    let show = |v: Option<&crate::migration::Version>| {
        v.map_or_else(|| "none".to_owned(), |v| v.to_string())
    };
    let took = crate::duration::format_duration(report.duration);
    match report.outcome {
        Outcome::Applied => format!(
            "applied {} ({} → {}) in {took}",
            report.done.applied.len(),
            show(before),
            show(after)
        ),
        Outcome::RolledBack => format!(
            "rolled back {} ({} → {}) in {took}",
            report.done.rolled_back.len(),
            show(before),
            show(after)
        ),
        Outcome::UpToDate => format!("up to date at {}", show(after)),
        Outcome::DryRun => match &report.detail {
            crate::fleet::Detail::Up(r) => format!("would apply {}", r.planned.len()),
            crate::fleet::Detail::Down(r) => format!("would roll back {}", r.planned.len()),
            _ => "dry run".into(),
        },
        Outcome::Checked => match report.totals() {
            Some(t) => format!(
                "{} applied, {} pending{}",
                t.applied,
                t.pending,
                if t.failed + t.changed + t.missing > 0 {
                    format!(
                        ", {} failed, {} changed, {} missing",
                        t.failed, t.changed, t.missing
                    )
                } else {
                    String::new()
                }
            ),
            None => "ok".into(),
        },
        Outcome::Failed => format!(
            "FAILED (exit {}): {}",
            report.exit_code(),
            report
                .error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default()
        ),
        other => other.label().to_owned(),
    }
}
