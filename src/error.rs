//! Typed errors of the engine, each naming what it is about, and the exit
//! code each one maps to.

use crate::migration::FileProblem;
use crate::migration::sql::Location;
use crate::plan::Drifted;
use crate::state::LockHolder;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Exit codes, as documented in the README and SPEC.
pub mod exit {
    /// Done, or nothing to do.
    pub const OK: i32 = 0;
    /// A migration or the run failed.
    pub const FAILED: i32 = 1;
    /// Bad usage, configuration or migration files.
    pub const USAGE: i32 = 2;
    /// Drift between files and database.
    pub const DRIFT: i32 = 3;
    /// The migration lock was not acquired in time.
    pub const LOCK_TIMEOUT: i32 = 4;
    /// The database could not be reached.
    pub const UNREACHABLE: i32 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag, environment variable or argument.
    #[error("{0}")]
    Usage(String),

    /// A bad config file or setting; `origin` names the file and line or
    /// the flag or variable.
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },

    /// Misnamed, duplicated or unreadable migration files, all of them.
    #[error("{}", files_message(.0))]
    Files(Vec<FileProblem>),

    /// The first connection failed. `retryable`: the failure may pass
    /// (the server is down or starting), as opposed to a refused password.
    #[error("cannot connect to {target}: {message}")]
    Connect {
        target: String,
        message: String,
        retryable: bool,
        /// The server turned the connection away for now: too many
        /// clients, or starting up or shutting down.
        busy: bool,
    },

    /// Another instance kept the migration lock for longer than allowed.
    #[error(
        "the migration lock was not acquired within {}: {}",
        crate::duration::format_duration(*.waited),
        holder_message(.holder)
    )]
    LockTimeout {
        waited: Duration,
        holder: Option<Box<LockHolder>>,
    },

    /// A script failed: its transaction was rolled back (a statement-by-
    /// statement script stopped where it failed), and the failure recorded.
    #[error("{}", failed_message(.label, .path, .down, .failure, .notes))]
    MigrationFailed {
        label: String,
        /// The file that ran: the up file, or the down file.
        path: PathBuf,
        /// It was a rollback (`down`).
        down: bool,
        failure: Box<RunFailure>,
        /// What else the operator should know (lost connection, blockers).
        notes: Vec<String>,
    },

    /// A script released the migration lock while it ran
    /// (`pg_advisory_unlock_all()`, or `pg_advisory_unlock` of the key). A
    /// transactional one was rolled back; nothing further runs without the
    /// lock.
    /// Through a pooler (`lease`): the lease was no longer this run's when
    /// a record or a statement came, so nothing more was done.
    #[error("{}", lock_released_message(*.lease, .label, .path, .statements, .notes))]
    LockReleased {
        lease: bool,
        label: String,
        path: PathBuf,
        /// Of a statement-by-statement script: how many ran, of how many.
        statements: Option<(usize, usize)>,
        notes: Vec<String>,
    },

    /// Applied files changed or disappeared, or pending files are older
    /// than the newest applied one.
    #[error("{}", drift_message(.drifted, .out_of_order))]
    Drift {
        drifted: Vec<Drifted>,
        out_of_order: Vec<OutOfOrder>,
    },

    /// The tracking tables exist but are not this tool's.
    #[error(
        "{table} exists but is not migrate's state table (it lacks {missing}); another \
         migration tool may own it: choose another name with --table"
    )]
    ForeignStateTable { table: String, missing: String },

    /// The database failed outside a migration's own SQL (the connection
    /// dropped, a bookkeeping statement failed).
    #[error("{context}: {failure}")]
    Database {
        context: String,
        failure: Box<DbFailure>,
    },

    /// The records changed under a run that had read them (only possible
    /// without the lock, or by hand).
    #[error("{0}")]
    Conflict(String),

    /// A bootstrap script failed; its transaction was rolled back. The
    /// message never shows a bootstrap variable's value.
    #[error("bootstrap script {} failed: {failure}", .path.display())]
    BootstrapFailed {
        path: PathBuf,
        failure: Box<DbFailure>,
    },

    /// A bootstrap variable the configuration declares is not set.
    #[error(
        "{origin}: bootstrap variable {name} is not set in the environment; set it, or skip the bootstrap scripts with SKIP_BOOTSTRAP=true"
    )]
    MissingVariable { name: String, origin: String },

    /// `wait` ran out of time.
    #[error(
        "still not applied after {}: {}",
        crate::duration::format_duration(*.waited),
        .waiting.join(", ")
    )]
    WaitTimeout {
        waited: Duration,
        waiting: Vec<String>,
    },

    /// The operator answered no at the prompt.
    #[error("aborted; nothing was changed")]
    Aborted,

    /// SIGINT or SIGTERM ended the run (or Ctrl-C at the prompt); the
    /// message says what was running and what became of it.
    #[error("{message}")]
    Interrupted { signal: i32, message: String },

    /// `migrate serve` was told to stop again while a migration ran.
    #[error("{0}")]
    Stopped(String),

    /// `migrate sandbox` could not provide a server.
    #[error("{0}")]
    Sandbox(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::Config { .. }
            | Error::Files(_)
            | Error::MissingVariable { .. }
            | Error::ForeignStateTable { .. } => exit::USAGE,
            Error::Connect { .. } => exit::UNREACHABLE,
            // As a shell reports a process a signal ended.
            Error::Interrupted { signal, .. } => 128 + signal,
            Error::Drift { .. } => exit::DRIFT,
            Error::LockTimeout { .. } => exit::LOCK_TIMEOUT,
            Error::MigrationFailed { .. }
            | Error::LockReleased { .. }
            | Error::Database { .. }
            | Error::Aborted
            | Error::Stopped(_)
            | Error::WaitTimeout { .. }
            | Error::BootstrapFailed { .. }
            | Error::Conflict(_)
            | Error::Sandbox(_) => exit::FAILED,
        }
    }

    pub(crate) fn database(context: impl Into<String>, err: tokio_postgres::Error) -> Error {
        Error::Database {
            context: context.into(),
            failure: Box::new(DbFailure::from(err)),
        }
    }
}

/// A pending version older than the newest applied one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OutOfOrder {
    #[serde(rename = "migration")]
    pub label: String,
    pub newest_applied: String,
}

/// What the server said about a failure, kept whole: the message alone
/// rarely tells an operator what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbFailure {
    pub severity: Option<String>,
    pub code: Option<String>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character position in the statement sent, when the server gives one.
    pub position: Option<u32>,
    pub context: Option<String>,
    /// The server said nothing: the connection failed, so whether the last
    /// request took effect is unknown.
    pub connection_lost: bool,
}

impl DbFailure {
    /// A failure the tool detected itself, not one the server reported.
    pub fn tool(message: &str) -> DbFailure {
        DbFailure {
            severity: None,
            code: None,
            message: message.to_owned(),
            detail: None,
            hint: None,
            position: None,
            context: None,
            connection_lost: false,
        }
    }
}

impl DbFailure {
    /// As `From`, without taking the error.
    pub(crate) fn from_ref(err: &tokio_postgres::Error) -> DbFailure {
        match err.as_db_error() {
            Some(db) => DbFailure {
                message: db.message().to_owned(),
                code: Some(db.code().code().to_owned()),
                ..DbFailure::tool("")
            },
            None => DbFailure::tool(&err.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for DbFailure {
    fn from(err: tokio_postgres::Error) -> DbFailure {
        match err.as_db_error() {
            Some(db) => DbFailure {
                severity: Some(db.severity().to_owned()),
                code: Some(db.code().code().to_owned()),
                message: db.message().to_owned(),
                detail: db.detail().map(str::to_owned),
                hint: db.hint().map(str::to_owned),
                position: match db.position() {
                    Some(tokio_postgres::error::ErrorPosition::Original(at)) => Some(*at),
                    _ => None,
                },
                context: db.where_().map(str::to_owned),
                connection_lost: false,
            },
            None => DbFailure {
                severity: None,
                code: None,
                message: if err.is_closed() {
                    "the connection to the server was lost".to_owned()
                } else {
                    // tokio-postgres' Display names the kind only
                    // ("error connecting to server"); the cause is the source.
                    let mut message = err.to_string();
                    let mut source = std::error::Error::source(&err);
                    while let Some(cause) = source {
                        message.push_str(": ");
                        message.push_str(&cause.to_string());
                        source = cause.source();
                    }
                    message
                },
                detail: None,
                hint: None,
                position: None,
                context: None,
                connection_lost: true,
            },
        }
    }
}

impl fmt::Display for DbFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.severity, &self.code) {
            (Some(severity), Some(code)) => {
                write!(f, "{severity}: {} (SQLSTATE {code})", self.message)?
            }
            _ => f.write_str(&self.message)?,
        }
        if let Some(detail) = &self.detail {
            write!(f, "\n  DETAIL: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  HINT: {hint}")?;
        }
        if let Some(context) = &self.context {
            write!(f, "\n  CONTEXT: {}", context.replace('\n', "\n    "))?;
        }
        Ok(())
    }
}

/// A script that failed: what the server said, where, and how far it got.
#[derive(Debug)]
pub struct RunFailure {
    pub failure: DbFailure,
    pub duration: Duration,
    /// Where in the file the server's error points.
    pub location: Option<Location>,
    /// For a statement-by-statement script: how many statements completed,
    /// of how many.
    pub statements: Option<(usize, usize)>,
    /// Indexes left INVALID (a failed `CREATE INDEX CONCURRENTLY`), as
    /// `schema.name`.
    pub invalid_indexes: Vec<String>,
    pub recorded: Result<(), DbFailure>,
}

impl RunFailure {
    /// A failure with nothing known yet of where or how far.
    pub(crate) fn new(failure: DbFailure, duration: Duration) -> RunFailure {
        RunFailure {
            failure,
            duration,
            location: None,
            statements: None,
            invalid_indexes: Vec::new(),
            recorded: Ok(()),
        }
    }

    /// Of a statement-by-statement script: `ran` of `total` completed.
    pub(crate) fn after_statements(mut self, ran: usize, total: usize) -> RunFailure {
        self.statements = Some((ran, total));
        self
    }

    /// The text stored with the failure: the server's words, where, how far.
    pub(crate) fn record_text(&self) -> String {
        let mut text = self.failure.to_string();
        if let Some(at) = &self.location {
            text.push_str(&format!("\n  at line {}, column {}", at.line, at.column));
        }
        if let Some((ran, total)) = self.statements {
            text.push_str(&format!("\n  {ran} of {total} statements ran"));
        }
        for index in &self.invalid_indexes {
            text.push_str(&format!(
                "\n  index {index} is INVALID: DROP INDEX CONCURRENTLY IF EXISTS {index};"
            ));
        }
        text
    }
}

fn drift_message(drifted: &[Drifted], out_of_order: &[OutOfOrder]) -> String {
    let mut text = "the files and the database disagree; nothing was changed:".to_owned();
    for item in drifted {
        text.push_str(&format!("\n  {item}"));
    }
    for item in out_of_order {
        text.push_str(&format!(
            "\n  {} PENDING: older than {}, the newest applied version",
            item.label, item.newest_applied
        ));
    }
    if !drifted.is_empty() {
        text.push_str(
            "\nrestore the applied files as they were, or accept them as they are now with \
             `migrate repair`",
        );
    }
    if !out_of_order.is_empty() {
        text.push_str("\nto apply older files after newer ones, pass --out-of-order");
    }
    text
}

fn failed_message(
    label: &str,
    path: &std::path::Path,
    down: &bool,
    failure: &RunFailure,
    notes: &[String],
) -> String {
    let what = if *down { "rolling back" } else { "migration" };
    let mut text = match &failure.location {
        Some(at) => format!(
            "{what} {label} failed at {}:{}:{}: {}\n{}",
            path.display(),
            at.line,
            at.column,
            failure.failure,
            at.excerpt()
        ),
        None => format!(
            "{what} {label} ({}) failed: {}",
            path.display(),
            failure.failure
        ),
    };
    if let Some((ran, total)) = failure.statements {
        text.push_str(&format!(
            "\n  {ran} of {total} statements ran before it; it runs outside a transaction, so \
             they stay done: make them safe to run again"
        ));
    }
    for index in &failure.invalid_indexes {
        text.push_str(&format!(
            "\n  index {index} is INVALID (left by a failed or killed CREATE INDEX CONCURRENTLY or \
             REINDEX CONCURRENTLY); drop it \
             with: DROP INDEX CONCURRENTLY IF EXISTS {index};"
        ));
    }
    for note in notes {
        text.push_str(&format!("\n  ({note})"));
    }
    text
}

fn lock_released_message(
    lease: bool,
    label: &str,
    path: &std::path::Path,
    statements: &Option<(usize, usize)>,
    notes: &[String],
) -> String {
    let mut text = if lease {
        format!(
            "{label} ({}): the migration lease was no longer this run's (another run took it \
             over once it ran out: this process did not renew it within --lock-lease, being \
             stopped, paused or cut off from the database): ",
            path.display()
        )
    } else {
        format!(
            "{label} ({}) released the migration lock while it ran (pg_advisory_unlock_all(), \
             or pg_advisory_unlock of the lock's key): ",
            path.display()
        )
    };
    match statements {
        None => text
            .push_str("its transaction was rolled back, so nothing of it was applied or recorded"),
        Some((ran, total)) => text.push_str(&format!(
            "{ran} of {total} statements ran and stay done (it runs outside a transaction), and \
             its row still says it did not finish",
        )),
    }
    if lease {
        text.push_str(
            "; the run stops here, since nothing is recorded without the lock: see `migrate \
             status`, and run up again",
        );
    } else {
        text.push_str(
            "; the run stops here, since no migration runs without the lock: remove the unlock \
             from the file (or, if the connection goes through a pooler in transaction mode \
             that listens on the server's own port, say so with --pooler transaction)",
        );
    }
    for note in notes {
        text.push_str(&format!("\n  ({note})"));
    }
    text
}

fn files_message(problems: &[FileProblem]) -> String {
    let mut text = match problems.len() {
        1 => "a migration file cannot be used:".to_owned(),
        n => format!("{n} migration files cannot be used:"),
    };
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}

fn holder_message(holder: &Option<Box<LockHolder>>) -> String {
    match holder {
        Some(holder) => format!("it is held by {holder}"),
        None => "it was released just as the wait ran out; try again".into(),
    }
}
