//! Typed errors of the engine, each naming what it is about, and the exit
//! code each one maps to.

use crate::migration::FileProblem;
use crate::store::{DbFailure, LockHolder};
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

    /// The first connection failed.
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },

    /// Another instance kept the migration lock for longer than allowed.
    #[error(
        "the migration lock was not acquired within {}: {}",
        crate::duration::format_duration(*.waited),
        holder_message(.holder)
    )]
    LockTimeout {
        waited: Duration,
        holder: Option<LockHolder>,
    },

    /// A migration's SQL failed; its transaction was rolled back and the
    /// failure recorded.
    #[error(
        "migration {label} ({}) failed: {failure}{}",
        .path.display(),
        .note.as_ref().map(|n| format!("\n  ({n})")).unwrap_or_default()
    )]
    MigrationFailed {
        label: String,
        path: PathBuf,
        failure: Box<DbFailure>,
        note: Option<String>,
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

    /// The operator answered no at the prompt.
    #[error("aborted; nothing was changed")]
    Aborted,

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
            | Error::ForeignStateTable { .. } => exit::USAGE,
            Error::Connect { .. } => exit::UNREACHABLE,
            Error::LockTimeout { .. } => exit::LOCK_TIMEOUT,
            Error::MigrationFailed { .. }
            | Error::Database { .. }
            | Error::Aborted
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

fn holder_message(holder: &Option<LockHolder>) -> String {
    match holder {
        Some(holder) => format!("it is held by {holder}"),
        None => "it was released just as the wait ran out; try again".into(),
    }
}
