//! The one place that writes to the terminal: messages, tables, progress,
//! JSON documents and the confirmation prompt. Human output goes to stdout
//! (Kubernetes collects it as the log); errors and the prompt go to
//! stderr. With `--json`, stdout carries only the JSON document and every
//! message goes to stderr.

pub mod json;
mod table;

pub use table::{
    fleet_table, fleet_totals_line, history_table, lock_table, status_table, totals_line,
};

use crate::settings::Verbosity;

use crate::dsn::redact_secrets;
use crate::duration::format_duration;
use crate::report::{Event, Reporter};
use console::{Term, style};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// How the terminal looks from here.
#[derive(Clone, Copy, Debug)]
pub struct Terminal {
    pub stdout_tty: bool,
    pub stdin_tty: bool,
    pub stderr_tty: bool,
    pub color: bool,
}

impl Terminal {
    /// Colour only on a TTY, never with `NO_COLOR` (any non-empty value) or
    /// `TERM=dumb`.
    pub fn detect() -> Terminal {
        let stdout_tty = std::io::stdout().is_terminal();
        let stdin_tty = std::io::stdin().is_terminal();
        let stderr_tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let color = stdout_tty && !no_color && !dumb;
        console::set_colors_enabled(color);
        console::set_colors_enabled_stderr(stderr_tty && !no_color && !dumb);
        Terminal {
            stdout_tty,
            stdin_tty,
            stderr_tty,
            color,
        }
    }
}

/// What goes where.
#[derive(Clone, Copy, Debug, Default)]
pub struct Output {
    /// `--json`: the document on stdout, messages on stderr.
    pub json: bool,
    pub verbosity: Verbosity,
}

/// Prints the engine's events.
pub struct Printer {
    terminal: Terminal,
    /// `--yes`: never prompt.
    assume_yes: bool,
    output: Output,
    progress: Mutex<Option<ProgressBar>>,
    /// What the run is doing, for the line an interrupted run prints.
    activity: Mutex<Activity>,
    /// Where results and messages go (the process's stdout), and errors
    /// (its stderr); buffers in tests.
    stdout: Mutex<Box<dyn Write + Send>>,
    stderr: Mutex<Box<dyn Write + Send>>,
}

/// What a [`Printer::capture`] printer wrote.
#[derive(Clone, Default)]
pub struct Captured {
    stdout: std::sync::Arc<Mutex<Vec<u8>>>,
    stderr: std::sync::Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// One end of a captured stream.
struct Capture(std::sync::Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the run is doing now, as far as its events tell.
#[derive(Default)]
struct Activity {
    run: crate::report::Activity,
    /// Ctrl-C at the prompt.
    prompt_interrupted: bool,
}

impl Printer {
    pub fn with_output(terminal: Terminal, assume_yes: bool, output: Output) -> Printer {
        Printer::with_writers(
            terminal,
            assume_yes,
            output,
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
        )
    }

    /// A printer over the writers given, for stdout and stderr.
    pub fn with_writers(
        terminal: Terminal,
        assume_yes: bool,
        output: Output,
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
    ) -> Printer {
        Printer {
            terminal,
            assume_yes,
            output,
            progress: Mutex::new(None),
            activity: Mutex::new(Activity::default()),
            stdout: Mutex::new(stdout),
            stderr: Mutex::new(stderr),
        }
    }

    /// A printer as without a terminal, writing into buffers: what a run
    /// prints can be checked without the binary.
    pub fn capture(output: Output) -> (Printer, Captured) {
        // Buffers are no terminal (colour is the process's setting).
        console::set_colors_enabled(false);
        console::set_colors_enabled_stderr(false);
        let captured = Captured::default();
        let terminal = Terminal {
            stdout_tty: false,
            stdin_tty: false,
            stderr_tty: false,
            color: false,
        };
        let printer = Printer::with_writers(
            terminal,
            true,
            output,
            Box::new(Capture(std::sync::Arc::clone(&captured.stdout))),
            Box::new(Capture(std::sync::Arc::clone(&captured.stderr))),
        );
        (printer, captured)
    }

    fn out(&self) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
        self.stdout.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ctrl-C was pressed at the confirmation prompt.
    pub fn prompt_interrupted(&self) -> bool {
        self.activity().prompt_interrupted
    }

    /// What an interrupted run leaves behind, in one line: the migration
    /// that was running, and what the server does with it.
    pub fn interrupted(&self, signal: &str) -> String {
        self.finish_progress();
        let activity = self.activity();
        activity.run.interrupted_line(signal)
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps track of what is running, for `interrupted`.
    fn follow(&self, event: &Event<'_>) {
        self.activity().run.follow(event);
    }

    pub fn terminal(&self) -> Terminal {
        self.terminal
    }

    pub fn output(&self) -> Output {
        self.output
    }

    /// A message: on stdout (stderr with `--json`), above the progress bar
    /// when one is drawn; nothing with `--quiet`.
    pub fn line(&self, text: impl AsRef<str>) {
        if self.output.verbosity == Verbosity::Quiet {
            return;
        }
        self.emit(text.as_ref());
    }

    /// A message only `--verbose` shows.
    pub fn detail(&self, text: impl AsRef<str>) {
        if self.output.verbosity == Verbosity::Verbose {
            self.emit(text.as_ref());
        }
    }

    /// What the command is for (a table, a summary): on stdout, even with
    /// `--quiet`. Not used with `--json`, whose document takes its place.
    pub fn result(&self, text: impl AsRef<str>) {
        let _ = writeln!(self.out(), "{}", redact_secrets(text.as_ref()));
    }

    /// The `--json` document, alone on stdout.
    pub fn document(&self, document: &serde_json::Value) {
        self.finish_progress();
        let _ = writeln!(self.out(), "{:#}", redact_strings(document.clone()));
    }

    fn emit(&self, text: &str) {
        let text = &redact_secrets(text);
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        match progress.as_ref() {
            Some(bar) => bar.println(text),
            None if self.output.json => {
                let _ = writeln!(self.err(), "{text}");
            }
            None => {
                let _ = writeln!(self.out(), "{text}");
            }
        }
    }

    /// A warning, even with `--quiet`.
    pub fn warn(&self, text: impl AsRef<str>) {
        self.emit(&format!(
            "{} {}",
            style("warning:").yellow().bold(),
            text.as_ref()
        ));
    }

    /// An error on stderr, after clearing any progress bar.
    pub fn error(&self, text: impl AsRef<str>) {
        self.finish_progress();
        let label = style("error:").for_stderr().red().bold();
        let _ = writeln!(self.err(), "{label} {}", redact_secrets(text.as_ref()));
    }

    /// A bar across `total` steps (a fleet's targets), drawn only at a
    /// terminal and not with `--quiet`; returns whether it is drawn.
    pub fn begin_progress(&self, total: usize) -> bool {
        self.start_progress(total);
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// One step of the bar done; `message` shows beside it.
    pub fn advance_progress(&self, message: &str) {
        self.with_progress(|bar| {
            bar.inc(1);
            bar.set_message(redact_secrets(message));
        });
    }

    /// Clears the bar.
    pub fn end_progress(&self) {
        self.finish_progress();
    }

    fn finish_progress(&self) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = progress.take() {
            bar.finish_and_clear();
        }
    }

    fn start_progress(&self, total: usize) {
        let target = match (self.output.json, self.output.verbosity) {
            (_, Verbosity::Quiet) => return,
            (false, _) if self.terminal.stdout_tty => ProgressDrawTarget::stdout(),
            (true, _) if self.terminal.stderr_tty => ProgressDrawTarget::stderr(),
            _ => return,
        };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn with_progress(&self, f: impl FnOnce(&ProgressBar)) {
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = progress.as_ref() {
            f(bar);
        }
    }
}

/// A JSON document with passwords hidden in each of its strings (so the
/// document stays valid JSON).
fn redact_strings(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(redact_secrets(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_strings).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, redact_strings(value)))
                .collect(),
        ),
        other => other,
    }
}

/// A name from the database (a schema, a tenant) as a terminal may show
/// it: control characters (an escape sequence would repaint the screen)
/// written as `\u{1b}` and the like.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Reporter for Printer {
    fn event(&self, event: Event<'_>) {
        self.follow(&event);
        match event {
            Event::UpToDate {
                applied,
                after_target: 0,
            } => self.line(format!(
                "up to date: {} applied, none pending",
                plural(applied, "migration", "migrations")
            )),
            Event::UpToDate {
                applied,
                after_target,
            } => self.line(format!(
                "nothing to apply up to the target: {} applied, {after_target} pending after it",
                plural(applied, "migration", "migrations")
            )),
            Event::Plan {
                steps,
                after_target,
                bootstrap,
                dry_run,
            } => {
                let what = plural(steps.len(), "migration", "migrations");
                if steps.is_empty() {
                    // A dry run with nothing pending: only the scripts.
                    self.line(format!(
                        "dry run: the bootstrap scripts would run: {}",
                        bootstrap.join(", ")
                    ));
                    self.line("nothing was changed (dry run)");
                    return;
                }
                if dry_run {
                    self.line(format!("dry run: {what} would be applied:"));
                } else {
                    self.line(format!("{what} to apply:"));
                }
                for step in steps {
                    let retry = if step.failed_row_version.is_some() {
                        " (failed before; retrying)"
                    } else {
                        ""
                    };
                    self.line(format!("  {}{retry}", step.migration.label()));
                }
                if after_target > 0 {
                    self.line(format!(
                        "  ({} pending after the target, left for later)",
                        plural(after_target, "more migration", "more migrations")
                    ));
                }
                if !bootstrap.is_empty() {
                    self.line(format!("then the bootstrap scripts: {}", bootstrap.join(", ")));
                }
                if dry_run {
                    self.line("nothing was changed (dry run)");
                }
            }
            Event::LockDisabled => self.warn(
                "--safe=false: running without the migration lock; no other instance may run now",
            ),
            Event::LockWaiting {
                holder,
                waited,
                limit,
            } => {
                let held_by = match holder {
                    Some(holder) => format!("held by {holder}"),
                    None => "just released".to_owned(),
                };
                if waited.is_zero() {
                    self.line(format!(
                        "waiting up to {} for the migration lock, {held_by}",
                        format_duration(limit)
                    ));
                } else {
                    self.line(format!(
                        "still waiting for the migration lock after {}, {held_by}",
                        format_duration(waited)
                    ));
                }
            }
            Event::LockAcquired { waited } => self.line(format!(
                "acquired the migration lock after {}",
                format_duration(waited)
            )),
            Event::LockSkipped { holder } => {
                let held_by = holder.map(|h| format!(" ({h})")).unwrap_or_default();
                self.line(format!(
                    "another instance holds the migration lock{held_by}; skipping (--skip-if-locked)"
                ));
            }
            Event::DoneElsewhere { applied } => self.line(format!(
                "another instance applied the pending migrations while this one waited; nothing to do ({} applied)",
                plural(applied, "migration", "migrations")
            )),
            Event::Applying {
                migration,
                index,
                total,
            } => {
                if index == 0 {
                    self.start_progress(total);
                }
                self.with_progress(|bar| {
                    bar.set_position(index as u64);
                    bar.set_message(format!("applying {}", migration.label()));
                });
            }
            Event::Applied {
                migration, applied, ..
            } => {
                self.with_progress(|bar| bar.inc(1));
                self.line(format!(
                    "{} {} ({})",
                    style("applied").green(),
                    migration.label(),
                    format_duration(applied.duration)
                ));
            }
            Event::Failed {
                migration,
                duration,
                ..
            } => {
                self.finish_progress();
                self.line(format!(
                    "{} {} ({})",
                    style("failed").red().bold(),
                    migration.label(),
                    format_duration(duration)
                ));
            }
            Event::Blocked { migration, blockers } => {
                for blocker in blockers {
                    self.line(format!("{} waits for {blocker}", migration.label()));
                }
            }
            Event::Retrying {
                migration,
                attempt,
                attempts,
                pause,
            } => self.line(format!(
                "{} hit lock_timeout; rolled back, trying again in {} (attempt {attempt} of {attempts})",
                migration.label(),
                format_duration(pause)
            )),
            Event::RollbackPlan { steps, dry_run } => {
                let what = plural(steps.len(), "migration", "migrations");
                if dry_run {
                    self.line(format!("dry run: {what} would be rolled back:"));
                } else {
                    self.line(format!("{what} to roll back:"));
                }
                for step in steps {
                    let changed = if step.up_changed {
                        "; its up file changed since it was applied"
                    } else {
                        ""
                    };
                    self.line(format!(
                        "  {} (with {}{changed})",
                        step.migration.label(),
                        step.down.file_name()
                    ));
                }
                if dry_run {
                    self.line("nothing was changed (dry run)");
                }
            }
            Event::NothingToRollBack => self.line("nothing to roll back: no migration is applied"),
            Event::RollingBack {
                migration,
                index,
                total,
            } => {
                if index == 0 {
                    self.start_progress(total);
                }
                self.with_progress(|bar| {
                    bar.set_position(index as u64);
                    bar.set_message(format!("rolling back {}", migration.label()));
                });
            }
            Event::RolledBack {
                migration, done, ..
            } => {
                self.with_progress(|bar| bar.inc(1));
                self.line(format!(
                    "{} {} ({})",
                    style("rolled back").yellow(),
                    migration.label(),
                    format_duration(done.duration)
                ));
            }
            Event::DownFinished { count, elapsed } => {
                self.finish_progress();
                self.line(format!(
                    "done: {} rolled back in {}",
                    plural(count, "migration", "migrations"),
                    format_duration(elapsed)
                ));
            }
            Event::RepairPlan { items, dry_run } => {
                let what = plural(items.len(), "record", "records");
                if dry_run {
                    self.line(format!("dry run: {what} would be repaired:"));
                } else {
                    self.line(format!("{what} to repair:"));
                }
                for item in items {
                    let action = match &item.drift {
                        crate::plan::Drift::Changed { .. } => {
                            "accept the file as it is now (its new checksum is recorded)"
                        }
                        crate::plan::Drift::Missing => {
                            "forget it (its row is removed; the journal keeps its history)"
                        }
                        crate::plan::Drift::Unrecorded { .. } => {
                            "restore its row as the journal has it (applied), so up does not run \
                             it again"
                        }
                    };
                    self.line(format!("  {item}\n    -> {action}"));
                }
                if dry_run {
                    self.line("nothing was changed (dry run)");
                }
            }
            Event::NothingToRepair => {
                self.line("nothing to repair: every applied file matches its record")
            }
            Event::Repaired { count } => self.line(format!(
                "done: {} repaired",
                plural(count, "record", "records")
            )),
            Event::Connected {
                target,
                server_version,
            } => self.detail(format!("connected to {target} (PostgreSQL {server_version})")),
            Event::LockKey { key, kind } => {
                self.detail(format!("migration lock key {key}: {kind}"))
            }
            Event::LeaseTakenOver { holder, ran_out } => self.warn(format!(
                "took over the migration lease of {holder}, which ran out at {ran_out} without \
                 being renewed (its run was killed, stopped or cut off from the database)"
            )),
            Event::SkippedByEnvironment => self.line("SKIP_MIGRATIONS is set: not migrating"),
            Event::Bootstrapping { .. } => {}
            Event::BootstrapHeldBack { after_target } => self.line(format!(
                "the bootstrap scripts are not run: {} pending after the target (they run once the newest is applied)",
                plural(after_target, "migration", "migrations")
            )),
            Event::WaitingForMigrations {
                pending,
                failed,
                waited,
            } => self.line(format!(
                "waiting for migrations ({} so far): {pending} pending, {failed} failed",
                format_duration(waited)
            )),
            Event::Bootstrapped { script, duration } => self.line(format!(
                "{} {script} ({})",
                style("bootstrap").cyan(),
                format_duration(duration)
            )),
            Event::ServerBusy { error, limit } => self.line(format!(
                "the server turned the connection away ({error}); trying again for up to {}",
                format_duration(limit)
            )),
            Event::WaitingForDatabase { error, waited } => self.line(format!(
                "waiting for the database ({} so far): {error}",
                format_duration(waited)
            )),
            Event::Finished { applied, elapsed } => {
                self.finish_progress();
                self.line(format!(
                    "done: {} applied in {}",
                    plural(applied, "migration", "migrations"),
                    format_duration(elapsed)
                ));
            }
        }
    }

    /// Asks `Continue? [y/N]` whenever a person can answer: stdin is a
    /// terminal, and so is stderr, where the prompt goes (or else stdout:
    /// `up 2>log`). `migrate up | tee run.log` at a terminal still asks.
    /// Without one, or with `--yes`, it proceeds, saying so.
    fn asks(&self) -> bool {
        let t = self.terminal;
        !self.assume_yes && t.stdin_tty && (t.stderr_tty || t.stdout_tty)
    }

    fn confirm(&self) -> bool {
        if self.assume_yes {
            return true;
        }
        let t = self.terminal;
        if !(t.stdin_tty && (t.stderr_tty || t.stdout_tty)) {
            self.line(
                "no terminal to ask on: going ahead without confirmation (--yes skips this note)",
            );
            return true;
        }
        let term = if t.stderr_tty {
            Term::stderr()
        } else {
            Term::stdout()
        };
        match dialoguer::Confirm::new()
            .with_prompt("Continue?")
            .default(false)
            .interact_on(&term)
        {
            Ok(answer) => answer,
            Err(dialoguer::Error::IO(err)) if err.kind() == std::io::ErrorKind::Interrupted => {
                // Ctrl-C: the prompt hid the cursor and did not get to show
                // it again.
                let _ = term.show_cursor();
                let _ = term.write_line("");
                self.activity().prompt_interrupted = true;
                false
            }
            Err(_) => {
                let _ = term.show_cursor();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::{Migration, Script, Version, checksum};
    use crate::plan::Step;
    use crate::store::Done;
    use std::path::PathBuf;
    use std::time::Duration;

    fn migration(version: &str, name: &str, transactional: bool) -> Migration {
        let sql = "SELECT 1;";
        Migration {
            version: Version::parse(version).unwrap(),
            name: name.into(),
            up: Script {
                path: PathBuf::from(format!("migrations/{version}_{name}.sql")),
                sql: sql.into(),
                checksum: checksum(sql.as_bytes()),
                transactional,
            },
            down_path: None,
            down: None,
        }
    }

    #[test]
    fn a_run_and_its_interruption_as_printed() {
        let (printer, captured) = Printer::capture(Output::default());
        let (first, second) = (
            migration("001", "users", true),
            migration("002", "index", false),
        );
        let steps = [
            Step {
                migration: &first,
                failed_row_version: None,
            },
            Step {
                migration: &second,
                failed_row_version: Some("002".into()),
            },
        ];
        printer.event(Event::Plan {
            steps: &steps,
            after_target: 1,
            bootstrap: &["001_admin.sql".to_owned()],
            dry_run: false,
        });
        printer.event(Event::Applying {
            migration: &first,
            index: 0,
            total: 2,
        });
        printer.event(Event::Applied {
            migration: &first,
            applied: &Done {
                duration: Duration::from_millis(12),
            },
            index: 0,
            total: 2,
        });
        printer.event(Event::Applying {
            migration: &second,
            index: 1,
            total: 2,
        });
        printer.error(printer.interrupted("SIGTERM"));
        insta::assert_snapshot!(captured.stdout(), @r"
        2 migrations to apply:
          001_users
          002_index (failed before; retrying)
          (1 more migration pending after the target, left for later)
        then the bootstrap scripts: 001_admin.sql
        applied 001_users (12ms)
        ");
        insta::assert_snapshot!(captured.stderr(), @"error: interrupted by SIGTERM while applying 002_index, which runs outside a transaction: the server cancels the statement that was running, the ones before it stay done, and its row says how far it got (the next `up` runs it again); the 1 migration that finished before stays so");
    }

    #[test]
    fn a_document_stays_json_with_its_secrets_hidden() {
        let (printer, captured) = Printer::capture(Output {
            json: true,
            verbosity: Verbosity::Normal,
        });
        printer.document(&serde_json::json!({
            "message": "host=h password=ab\"cd port=1",
            "nested": ["postgres://u:Zx9@Secret7@h/db"],
        }));
        let parsed: serde_json::Value = serde_json::from_str(&captured.stdout()).unwrap();
        assert_eq!(parsed["message"], "host=h password=*** port=1");
        assert_eq!(parsed["nested"][0], "postgres://u:***@h/db");
    }

    #[test]
    fn with_json_messages_go_to_stderr_and_the_document_alone_to_stdout() {
        let (printer, captured) = Printer::capture(Output {
            json: true,
            verbosity: Verbosity::Normal,
        });
        printer.event(Event::UpToDate {
            applied: 3,
            after_target: 0,
        });
        printer.document(&serde_json::json!({ "ok": true }));
        assert_eq!(
            captured.stderr(),
            "up to date: 3 migrations applied, none pending\n"
        );
        assert_eq!(captured.stdout(), "{\n  \"ok\": true\n}\n");
    }
}
