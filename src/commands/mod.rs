//! One module per command: settings in, engine call, output through the
//! printer (text, or one JSON document), an exit code out.

mod fleet;
mod sandbox;

use crate::cli::{Cli, Command, DownArgs, RepairArgs};
use crate::engine::{DownOptions, Migrator, RepairOptions, UpOptions};
use crate::error::{Error, exit};
use crate::metrics;
use crate::migration::{MigrationSet, Version, new_migration, scan};
use crate::render::{Output, Printer, Terminal, history_table, json, lock_table, status_table};
use crate::report::{Progress, RunFailed, UpReport};
use crate::settings::{self, Environment, Settings, Verbosity};

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let terminal = Terminal::detect();
    let early = Output {
        json: cli.global.json,
        ..Output::default()
    };
    let command = match cli.command() {
        Ok(command) => command,
        Err(message) => {
            return fail(
                &Printer::with_output(terminal, false, early),
                "migrate",
                &Error::Usage(message),
            );
        }
    };
    // The API never honours SKIP_MIGRATIONS, so the variable's value, good
    // or bad, is none of the server's business (one shared with the app's
    // replicas is common). A bad `skip-migrations` in the config folder is
    // a broken config, refused by every command.
    let env = match command {
        Command::Serve(_) => Environment::capture().without("SKIP_MIGRATIONS"),
        _ => Environment::capture(),
    };
    if let Command::Up = command {
        // Decided first: a replica that skips needs nothing else right.
        match Settings::skip_migrations(&cli.global, &env) {
            Ok(Some(origin)) => {
                let output = Output {
                    json: cli.global.json,
                    verbosity: Verbosity::from_flags(cli.global.quiet, cli.global.verbose),
                };
                skipped(&Printer::with_output(terminal, false, output), &origin);
                return exit::OK;
            }
            Ok(None) => {}
            Err(err) => return fail(&Printer::with_output(terminal, false, early), "up", &err),
        }
    }
    let settings = match Settings::resolve(&cli.global, &env) {
        Ok(settings) => settings,
        Err(err) => {
            let printer = Printer::with_output(terminal, false, early);
            // A run that could not even start still says so in its
            // metrics file, if it was to write one.
            if matches!(command, Command::Up | Command::Down(_))
                && !cli.global.dry_run
                && let Some(path) = settings::metrics_file(&cli.global, &env)
                && let Err(write) = metrics::write_run(&path, &Progress::default(), false)
            {
                printer.warn(write.to_string());
            }
            return fail(&printer, command.name(), &err);
        }
    };
    let fleet_command = matches!(
        command,
        Command::Up | Command::Down(_) | Command::Status | Command::Validate | Command::Wait(_)
    );
    let fleet = match settings::fleet::resolve(&cli.global, &env, fleet_command) {
        Ok(fleet) => fleet,
        Err(err) => {
            return fail(
                &Printer::with_output(terminal, false, early),
                command.name(),
                &err,
            );
        }
    };
    let output = Output {
        json: settings.json,
        verbosity: settings.verbosity,
    };
    let printer = Printer::with_output(terminal, settings.yes, output);
    // The server spreads requests over the cores; everything else is one
    // connection at a time.
    let runtime = match command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            printer.error(format!("cannot start the async runtime: {err}"));
            return exit::FAILED;
        }
    };
    if let Some(fleet) = &fleet {
        let code = runtime.block_on(fleet::run(
            &command,
            &cli.global,
            &settings,
            fleet,
            &printer,
        ));
        runtime.shutdown_background();
        return code;
    }
    let result = match command {
        // A person or Kubernetes may stop a run: say what that leaves.
        // (repair asks too: Ctrl-C at its prompt is handled the same way.)
        Command::Up | Command::Down(_) | Command::Repair(_) => runtime.block_on(interruptible(
            run_command(&command, &settings, &printer),
            &printer,
        )),
        _ => runtime.block_on(run_command(&command, &settings, &printer)),
    };
    // Nothing is left to wait for (connections closed, leases given up):
    // the idle threads of the runtime need not be joined on the way out.
    // The server's are: dropping its requests writes their audit lines.
    if !matches!(command, Command::Serve(_)) {
        runtime.shutdown_background();
    }
    match result {
        Ok(()) => exit::OK,
        Err(Failure { error, done }) => {
            printer.error(error.to_string());
            if printer.output().json {
                printer.document(&json::failed_run(command.name(), &error, done.as_deref()));
            }
            error.exit_code()
        }
    }
}

/// Runs `up` or `down` until it ends or SIGINT / SIGTERM arrives. On a
/// signal the run is dropped, so its connection closes and the server
/// rolls back the transaction in progress; the error names what was
/// running. Ctrl-C at the prompt is an interruption too.
async fn interruptible(
    run: impl std::future::Future<Output = Result<(), Failure>>,
    printer: &Printer,
) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return run.await;
    };
    let signal = tokio::select! {
        biased;
        result = run => {
            return match result {
                Err(failure) if matches!(*failure.error, Error::Aborted) && printer.prompt_interrupted() => {
                    Err(Failure::from(Error::Interrupted {
                        signal: libc_signal::SIGINT,
                        message: "interrupted at the prompt: nothing was changed".into(),
                    }))
                }
                other => other,
            };
        }
        _ = int.recv() => ("SIGINT", libc_signal::SIGINT),
        _ = term.recv() => ("SIGTERM", libc_signal::SIGTERM),
    };
    // The run is gone; a lease it held goes too, rather than running out.
    crate::store::give_up_leases(std::time::Duration::from_secs(2)).await;
    // Ctrl-C at the prompt raises SIGINT too, which may arrive while the
    // run is still closing its connection after the refusal.
    let message = if printer.prompt_interrupted() {
        "interrupted at the prompt: nothing was changed".to_owned()
    } else {
        printer.interrupted(signal.0)
    };
    Err(Failure::from(Error::Interrupted {
        signal: signal.1,
        message,
    }))
}

/// Signal numbers, for the exit code a shell would show.
mod libc_signal {
    pub const SIGINT: i32 = nix::sys::signal::Signal::SIGINT as i32;
    pub const SIGTERM: i32 = nix::sys::signal::Signal::SIGTERM as i32;
}

/// A command line the parser refused (or `--help`, `--version`): clap's
/// message, and with `--json` anywhere on the line the error document too.
pub fn parse_failed(err: clap::Error) -> i32 {
    // clap quotes what it refused: a DSN given without --dsn, say.
    let shown = |styled: bool| {
        let rendered = err.render();
        crate::dsn::redact_secrets(&if styled {
            rendered.ansi().to_string()
        } else {
            rendered.to_string()
        })
    };
    if !err.use_stderr() {
        // --help, --version: not an error, and nothing the user typed.
        let _ = err.print();
        return exit::OK;
    }
    eprint!(
        "{}",
        shown(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    );
    if std::env::args_os().any(|a| a == "--json") {
        let rendered = shown(false);
        let message = rendered
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        let output = Output {
            json: true,
            ..Output::default()
        };
        Printer::with_output(Terminal::detect(), false, output)
            .document(&json::error_document("migrate", &Error::Usage(message)));
    }
    exit::USAGE
}

/// Reports an error: the message on stderr, and with `--json` the error
/// document on stdout. Returns the exit code.
fn fail(printer: &Printer, command: &str, err: &Error) -> i32 {
    printer.error(err.to_string());
    if printer.output().json {
        printer.document(&json::error_document(command, err));
    }
    err.exit_code()
}

/// A command that failed, and for `up` and `down` what it committed
/// before it did.
struct Failure {
    error: Box<Error>,
    done: Option<Box<Progress>>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error: Box::new(error),
            done: None,
        }
    }
}

async fn run_command(
    command: &Command,
    settings: &Settings,
    printer: &Printer,
) -> Result<(), Failure> {
    let color = printer.terminal().color;
    let json = settings.json;
    match command {
        Command::Up => up(settings, printer).await?,
        Command::Down(args) => {
            let result = match down_options(args, settings)
                .and_then(|options| Ok((options, folder_migrator(settings)?)))
            {
                Ok((options, migrator)) => migrator.down(&options, printer).await,
                Err(cause) => Err(RunFailed {
                    done: Progress::default(),
                    cause: Box::new(cause),
                }),
            };
            let report = finished_run(settings, printer, result.map(|r| (r.done.clone(), r)))?;
            if json {
                printer.document(&json::down(&report));
            }
        }
        Command::Status => {
            let report = folder_migrator(settings)?.status(printer).await?;
            if json {
                printer.document(&json::status(&report));
            } else {
                printer.result(status_table(&report, color));
            }
        }
        Command::History => {
            // The journal does not depend on the files, so a bad file name
            // does not hide it.
            let migrator = Migrator::new(MigrationSet::default(), settings.database()?);
            let report = migrator.history(printer).await?;
            if json {
                printer.document(&json::history(&report));
            } else {
                printer.result(history_table(&report.entries, color));
            }
        }
        Command::Validate => {
            let report = folder_migrator(settings)?.validate(printer).await?;
            if json {
                printer.document(&json::validate(&report));
            } else {
                printer.result(agreement(&report.totals));
            }
        }
        Command::Repair(args) => {
            let options = repair_options(args, settings)?;
            let report = folder_migrator(settings)?.repair(&options, printer).await?;
            if json {
                printer.document(&json::repair(&report));
            }
        }
        Command::Lock => {
            let migrator = Migrator::new(MigrationSet::default(), settings.database()?);
            let report = migrator.lock_status(printer).await?;
            if json {
                printer.document(&json::lock(&report));
            } else {
                printer.result(lock_table(&report, color));
            }
        }
        Command::New(args) => {
            let (up, down) =
                new_migration(&settings.migrations_dir, &args.name).map_err(Error::Files)?;
            if json {
                printer.document(&serde_json::json!({
                    "json_version": json::JSON_VERSION,
                    "command": "new",
                    "ok": true,
                    "up": up.display().to_string(),
                    "down": down.display().to_string(),
                }));
            } else {
                printer.result(format!(
                    "created {}\ncreated {}",
                    up.display(),
                    down.display()
                ));
            }
        }
        Command::Wait(args) => {
            let timeout = settings.wait_timeout(args.timeout.as_deref())?;
            let started = std::time::Instant::now();
            let report = folder_migrator(settings)?
                .wait_until_applied(timeout, printer)
                .await?;
            if json {
                printer.document(&json::wait(&report, started.elapsed()));
            } else {
                printer.result(agreement(&report.totals));
            }
        }
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Written whole and without panicking when the reader goes
            // away (`migrate completions bash | head`).
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command, "migrate", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), &script);
        }
        Command::Sandbox => sandbox::run(settings, printer).await?,
        Command::Serve(args) => crate::serve::run(settings, args, printer).await?,
    }
    Ok(())
}

/// `up`, with `SKIP_MIGRATIONS`, the bootstrap scripts and the metrics.
async fn up(settings: &Settings, printer: &Printer) -> Result<(), Failure> {
    if let Some(origin) = &settings.skip_migrations {
        skipped(printer, origin);
        return Ok(());
    }
    let options = UpOptions {
        target: settings.target.clone(),
        dry_run: settings.dry_run,
        out_of_order: settings.out_of_order,
        skip_bootstrap: settings.skip_bootstrap,
        expect: None,
    };
    let result = match folder_migrator_with_bootstrap(settings) {
        Ok(migrator) => migrator.up(&options, printer).await,
        Err(cause) => Err(RunFailed {
            done: Progress::default(),
            cause: Box::new(cause),
        }),
    };
    let report = finished_run(settings, printer, result.map(|r| (r.done.clone(), r)))?;
    if settings.json {
        printer.document(&json::up(&report));
    }
    Ok(())
}

/// `up` with `SKIP_MIGRATIONS`: says so (and with `--json`, the document).
fn skipped(printer: &Printer, origin: &str) {
    printer.line(format!("{origin} is set: not migrating"));
    if printer.output().json {
        printer.document(&json::up(&UpReport::skipped()));
    }
}

/// The end of an `up` or `down`: the metrics file written, if one is asked
/// for, from what the run did however it ended (a file that cannot be
/// written is a warning: the run's own outcome, exit code and JSON
/// document stand), and a failure turned into the command's.
fn finished_run<R>(
    settings: &Settings,
    printer: &Printer,
    result: Result<(Progress, R), RunFailed>,
) -> Result<R, Failure> {
    let (done, success) = match &result {
        Ok((done, _)) => (done, true),
        Err(failed) => (&failed.done, false),
    };
    if let (Some(path), false) = (&settings.metrics_file, settings.dry_run)
        && let Err(err) = metrics::write_run(path, done, success)
    {
        printer.warn(err.to_string());
    }
    match result {
        Ok((_, report)) => Ok(report),
        Err(failed) => Err(Failure {
            error: failed.cause,
            done: Some(Box::new(failed.done)),
        }),
    }
}

fn agreement(totals: &crate::plan::Totals) -> String {
    let mut line = format!(
        "files and database agree: {} applied, {} pending",
        totals.applied, totals.pending
    );
    if totals.failed > 0 {
        line.push_str(&format!(", {} failed (up retries them)", totals.failed));
    }
    line
}

fn down_options(args: &DownArgs, settings: &Settings) -> Result<DownOptions, Error> {
    let to = args
        .to
        .as_deref()
        .map(|t| {
            Version::parse(t)
                .ok_or_else(|| Error::Usage(format!("--to: `{t}` is not a version (digits only)")))
        })
        .transpose()?;
    Ok(DownOptions {
        steps: args.steps,
        to,
        dry_run: settings.dry_run,
        to_may_be_ahead: false,
    })
}

fn repair_options(args: &RepairArgs, settings: &Settings) -> Result<RepairOptions, Error> {
    let versions = args
        .versions
        .iter()
        .map(|v| {
            Version::parse(v)
                .ok_or_else(|| Error::Usage(format!("`{v}` is not a version (digits only)")))
        })
        .collect::<Result<_, _>>()?;
    Ok(RepairOptions {
        versions,
        dry_run: settings.dry_run,
    })
}

/// A migrator for the settings' folder; every naming problem is reported
/// here, before any connection.
fn folder_migrator(settings: &Settings) -> Result<Migrator, Error> {
    let scanned = scan(&settings.migrations_dir).map_err(Error::Files)?;
    Ok(Migrator::from_folder(scanned, settings.database()?))
}

/// As `folder_migrator`, with the bootstrap scripts (unless
/// `SKIP_BOOTSTRAP`); a declared variable the environment lacks is an error
/// here, before any migration runs.
fn folder_migrator_with_bootstrap(settings: &Settings) -> Result<Migrator, Error> {
    let scanned = scan(&settings.migrations_dir).map_err(Error::Files)?;
    let mut database = settings.database()?;
    database.bootstrap = settings.bootstrap_scripts()?;
    Ok(Migrator::from_folder(scanned, database))
}
