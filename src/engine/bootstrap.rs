//! Bootstrap scripts: run after every successful `up`, under the same lock,
//! each in a transaction (they must be idempotent). Values they need from
//! the environment reach them only as session settings set through bound
//! parameters.

use super::Database;
use crate::error::Error;
use crate::migration::{FileProblem, Script};
use crate::report::{BootstrapRun, Event, Reporter};
use crate::store::{DbFailure, Store};
use std::path::Path;

/// The scripts and the values they read.
#[derive(Clone)]
pub struct Bootstrap {
    /// In name order.
    pub scripts: Vec<Script>,
    /// Each variable's name and value; a script reads it as
    /// `current_setting('migrate.<name in lower case>')`.
    pub variables: Vec<(String, String)>,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field(
                "scripts",
                &self.scripts.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field(
                "variables",
                &self.variables.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Bootstrap {
    /// Reads every `*.sql` of `dir` in name order (hidden files and others
    /// ignored). A folder that does not exist has no scripts unless
    /// `required`.
    pub fn read(
        dir: &Path,
        required: bool,
        variables: Vec<(String, String)>,
    ) -> Result<Bootstrap, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Bootstrap {
                    scripts: Vec::new(),
                    variables,
                });
            }
            Err(err) => {
                return Err(Error::Files(vec![FileProblem {
                    path: dir.to_path_buf(),
                    reason: format!("cannot read the bootstrap folder: {err}"),
                }]));
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().is_some_and(|e| e == "sql")
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut scripts = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            match Script::read(&path) {
                Ok(script) if !script.transactional => problems.push(FileProblem {
                    path,
                    reason: "bootstrap scripts run in a transaction each; \
                             `-- migrate:no-transaction` does not apply to them"
                        .into(),
                }),
                Ok(script) => scripts.push(script),
                Err(reason) => problems.push(FileProblem { path, reason }),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Files(problems));
        }
        super::check_scripts(scripts.iter())?;
        Ok(Bootstrap { scripts, variables })
    }

    /// Bootstrap scripts from memory, as (file name, contents): the `*.sql`
    /// ones run in name order.
    pub fn from_files<'a>(
        label: &Path,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        variables: Vec<(String, String)>,
    ) -> Result<Bootstrap, Error> {
        let mut files: Vec<(&str, &[u8])> = files
            .into_iter()
            .filter(|(name, _)| name.ends_with(".sql") && !name.starts_with('.'))
            .collect();
        files.sort();
        let mut scripts = Vec::new();
        let mut problems = Vec::new();
        for (name, bytes) in files {
            let path = label.join(name);
            match Script::from_bytes(&path, bytes) {
                Ok(script) if script.transactional => scripts.push(script),
                Ok(_) => problems.push(FileProblem {
                    path,
                    reason: "bootstrap scripts run in a transaction each; \
                             `-- migrate:no-transaction` does not apply to them"
                        .into(),
                }),
                Err(reason) => problems.push(FileProblem { path, reason }),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Files(problems));
        }
        super::check_scripts(scripts.iter())?;
        Ok(Bootstrap { scripts, variables })
    }

    /// Bootstrap scripts compiled into the binary (the `bootstrap` folder
    /// of an embedded migrations folder).
    #[cfg(feature = "embed")]
    pub fn from_embedded(
        dir: &include_dir::Dir<'_>,
        variables: Vec<(String, String)>,
    ) -> Result<Bootstrap, Error> {
        Bootstrap::from_files(dir.path(), crate::migration::embedded_files(dir), variables)
    }

    /// The session setting a variable is read from.
    pub fn setting_name(variable: &str) -> String {
        format!("migrate.{}", variable.to_ascii_lowercase())
    }

    /// Hides every variable's value in `text` (an error message may quote
    /// it, as in "Key (email)=(...) already exists").
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (name, value) in &self.variables {
            if !value.is_empty() {
                text = text.replace(value.as_str(), &format!("<{name}>"));
            }
        }
        text
    }
}

/// Runs every script, each in its own transaction; stops at the first
/// failure.
pub(super) async fn run(
    store: &Store,
    database: &Database,
    bootstrap: &Bootstrap,
    reporter: &dyn Reporter,
) -> Result<Vec<BootstrapRun>, Error> {
    let mut runs = Vec::new();
    let names: Vec<String> = bootstrap
        .variables
        .iter()
        .map(|(n, _)| Bootstrap::setting_name(n))
        .collect();
    let values: Vec<String> = bootstrap.variables.iter().map(|(_, v)| v.clone()).collect();
    let total = bootstrap.scripts.len();
    for (index, script) in bootstrap.scripts.iter().enumerate() {
        let name = script.file_name();
        reporter.event(Event::Bootstrapping {
            script: &name,
            index,
            total,
        });
        match store
            .run_bootstrap_script(
                &database.tracking,
                &database.session,
                script,
                &names,
                &values,
            )
            .await
        {
            Ok(duration) => {
                reporter.event(Event::Bootstrapped {
                    script: &name,
                    duration,
                });
                runs.push(BootstrapRun {
                    script: name,
                    duration,
                });
            }
            Err(failure) => {
                let failure = redact_failure(bootstrap, failure);
                return Err(Error::BootstrapFailed {
                    path: script.path.clone(),
                    failure: Box::new(failure),
                });
            }
        }
    }
    Ok(runs)
}

fn redact_failure(bootstrap: &Bootstrap, mut failure: DbFailure) -> DbFailure {
    failure.message = bootstrap.redact(&failure.message);
    failure.detail = failure.detail.map(|d| bootstrap.redact(&d));
    failure.hint = failure.hint.map(|h| bootstrap.redact(&h));
    failure.context = failure.context.map(|c| bootstrap.redact(&c));
    failure
}
